"""Speed and memory of every model side by side, at SemanticKITTI and nuScenes resolution.

    python benchmarks/speed_bench.py [--device cpu|cuda] [--repeats 5] [--resolutions kitti,nuscenes]
                                     [--models balvit,rangevit,...] [--train-batch 2] [--amp] [--quick]

Models (benchmarks/common.py MODELS, each with its own full-size config): BALViT (frozen DINOv2
ViT-S/14), BALViT with a randomly initialised frozen ViT (same network, same cost), RangeViT (also
MultiViT's LiDAR branch), WaffleIron from scratch, ScaLR's WaffleIron (WI-48-768), ELiTe student.
Data: synthetic scans (no download) of a SemanticKITTI-format HDL-64E (64 x 2048 range image,
~120 k points) and a nuScenes-format HDL-32E (32 x 1024, ~30 k points), or real roots
(--kitti-data / --nuscenes-data).

Per model and resolution, each in a fresh process (so that peak memory is its own):
  - inference: batch 1, one scan, no grad -> s/scan and scans/s;
  - training: forward + backward + AdamW step on a batch of --train-batch training samples as the
    config trains (its crops / point sampling);
  - peak memory (process RSS; CUDA: max allocated), trainable and total parameters.
Every time is the median of --repeats runs after a warm-up run; ratios to BALViT compare figures of
the same invocation. --quick: test-size models on a tiny generated dataset, 1 repeat, measured in
this process (a smoke test: its peak memory is the process's, not the model's).
Results: benchmarks/out/speed_bench.json (--out). --merge: keep what that file already holds and
replace only the (resolution, model) pairs measured now - e.g. add nuScenes rows to KITTI ones, or
re-measure one model with a longer --timeout. Every row records the invocation that measured it; a
row measured in another invocation than its resolution's BALViT row is flagged in the report, since
its ratio then compares figures of two runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUT, dataset_overrides, fmt_cell, load_bench_config, machine, machine_line,  # noqa: E402
                    md_table, measure_model, model_table, run_child, synthetic_data, write_json)

RESOLUTIONS = {"kitti": "semantickitti", "nuscenes": "nuscenes"}


def model_config(entry, resolution: str, root: str | Path, quick: bool):
    """The config of one MODELS entry pointed at `root` of `resolution`."""
    name, kitti_cfg, nus_cfg, extra, _ = entry
    dataset = RESOLUTIONS[resolution]
    if dataset == "nuscenes" and nus_cfg:
        overrides = dataset_overrides(dataset, root)[:2]  # its own nuScenes data section
    else:
        size = (16, 256) if quick else (None, None)
        overrides = dataset_overrides(dataset, root, *size)
    return load_bench_config(nus_cfg if (dataset == "nuscenes" and nus_cfg) else kitti_cfg, [*overrides, *extra])


def prepare_data(args) -> dict[str, str]:
    tmp = Path(tempfile.gettempdir())
    roots = {}
    for res in args.resolutions:
        given = args.kitti_data if res == "kitti" else args.nuscenes_data
        if given:
            roots[res] = given
        elif args.quick:
            roots[res] = str(synthetic_data(RESOLUTIONS[res], tmp / f"balvit_bench_quick_{res}", frames=1, beams=16, azimuth_steps=256))
        else:
            roots[res] = str(synthetic_data(RESOLUTIONS[res], tmp / f"balvit_bench_{res}", frames=2))
    return roots


def child(args) -> dict:
    entry = model_table(args.quick, [args.model])[0]
    cfg = model_config(entry, args.resolution, args.root, args.quick)
    return measure_model(cfg, args.mode, torch.device(args.device), args.repeats, warmup=args.warmup, amp=args.amp,
                         train_batch=args.train_batch)


def measure(args, entry, res: str, root: str, mode: str) -> dict:
    """One measurement: in a fresh process (default) or in this one (--quick / --inprocess)."""
    try:
        if args.quick or args.inprocess:
            cfg = model_config(entry, res, root, args.quick)
            return measure_model(cfg, mode, torch.device(args.device), args.repeats, warmup=args.warmup,
                                 amp=args.amp, train_batch=args.train_batch)
        flags = ["--child", mode, "--model", entry[0], "--resolution", res, "--root", root, "--device", args.device,
                 "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--train-batch", str(args.train_batch),
                 *(["--amp"] if args.amp else [])]
        return run_child(Path(__file__), flags, timeout=args.timeout)
    except subprocess.TimeoutExpired:  # too slow for this machine: still a lower bound per run
        return {"error": f"timed out after {args.timeout:.0f} s ({args.warmup} warm-up + {args.repeats} runs)",
                "timeout_s": args.timeout, "runs": args.warmup + args.repeats}
    except Exception as e:  # noqa: BLE001 - one failing model (e.g. out of memory) must not lose the others
        return {"error": f"{type(e).__name__}: {str(e)[-500:]}"}


def summarize(raw: dict, models: list) -> dict:
    """Rows per resolution: the measurements of each model and its ratios to BALViT's."""
    rows: dict[str, list[dict]] = {}
    for res, per_model in raw.items():
        base = per_model.get("balvit", {})
        out = []
        for name, _, _, _, note in models:
            if name not in per_model:
                continue
            inf, tr = per_model[name].get("model", {}), per_model[name].get("train", {})
            row = {"model": name, "note": note, "points": inf.get("points"), "range_image": inf.get("image"),
                   "infer_s": inf.get("seconds"), "train_step_s": tr.get("seconds"),
                   "train_batch": tr.get("image"), "train_points": tr.get("points"),
                   "infer_peak_rss_mb": inf.get("peak_rss_mb"), "train_peak_rss_mb": tr.get("peak_rss_mb"),
                   "infer_peak_gpu_mb": inf.get("peak_gpu_mb"), "train_peak_gpu_mb": tr.get("peak_gpu_mb"),
                   "trainable_params": (inf.get("params") or tr.get("params") or {}).get("trainable"),
                   "total_params": (inf.get("params") or tr.get("params") or {}).get("total"),
                   "errors": {m: v["error"] for m, v in per_model[name].items() if isinstance(v, dict) and "error" in v}}
            row["scans_per_s"] = 1.0 / row["infer_s"] if row["infer_s"] else None
            for key, m in (("infer_s", inf), ("train_step_s", tr)):  # a timed-out measurement: at least timeout / runs
                row[f"{key}_at_least"] = m["timeout_s"] / m["runs"] if m.get("timeout_s") and m.get("runs") else None
            row["invocation"] = per_model[name].get("invocation", 0)
            row["separate_invocation"] = "balvit" in per_model and row["invocation"] != base.get("invocation", 0)
            for key, ref in (("infer_s", base.get("model", {}).get("seconds")), ("train_step_s", base.get("train", {}).get("seconds"))):
                row[f"{key}_vs_balvit"] = row[key] / ref if (row[key] and ref) else None
            out.append(row)
        rows[res] = out
    return rows


def markdown(d: dict) -> str:
    """The RESULTS.md section of a speed_bench.json."""
    m = d["machine"]
    lines = ["## Speed and memory of every model", "",
             f"Machine: {machine_line(m)}; device `{d['device']}`{' (bf16 autocast)' if d.get('amp') else ''}. "
             f"Every figure is a median of repeated runs after warm-up run(s), each model in a fresh process; "
             f"ratios are to BALViT in the same invocation.{' QUICK smoke run (test-size models): not a measurement.' if d.get('quick') else ''}",
             ""]
    invocations = d.get("invocations") or [{"repeats": d["repeats"], "warmup": d["warmup"]}]

    def invocation(row: dict) -> dict:
        return invocations[min(row.get("invocation", 0), len(invocations) - 1)]

    gpu = d["device"] == "cuda"
    for res, rows in d["rows"].items():
        if not rows:
            continue
        r0 = rows[0]
        lines += [f"### {'SemanticKITTI' if res == 'kitti' else 'nuScenes'} resolution "
                  f"(range image {'x'.join(map(str, (r0['range_image'] or [0, 0, 0, 0])[2:]))}, {fmt_cell(r0['points'])} points per scan)", ""]
        inv = invocation(r0)
        lines += [f"Median of {inv.get('repeats', '?')} runs after {inv.get('warmup', '?')} warm-up run(s)"
                  + (f", measured {inv['started']}" if inv.get("started", "?") != "?" else "") + ".", ""]
        header = ["model", "scans/s", "inference s/scan", "vs BALViT", f"train step s (batch {d['train_batch']})", "vs BALViT",
                  "peak MB inference", "peak MB training", "trainable params", "total params"]
        if gpu:
            header[6:8] = ["peak GPU MB inference", "peak GPU MB training"]
        body = []
        for r in rows:
            mem = ("infer_peak_gpu_mb", "train_peak_gpu_mb") if gpu else ("infer_peak_rss_mb", "train_peak_rss_mb")
            infer, train = (r[k] if r[k] is not None or not r.get(f"{k}_at_least") else f"> {fmt_cell(r[f'{k}_at_least'])}"
                            for k in ("infer_s", "train_step_s"))
            body.append([r["model"], r["scans_per_s"], infer, r["infer_s_vs_balvit"], train,
                         r["train_step_s_vs_balvit"], r[mem[0]], r[mem[1]], r["trainable_params"], r["total_params"]])
        lines += [md_table(header, body), ""]
        notes = []
        for r in rows:
            note = f"- `{r['model']}`: {r['note']}"
            if r.get("separate_invocation"):
                inv = invocation(r)
                note += (f"; measured in a separate invocation ({inv.get('started', '?')}, median of {inv.get('repeats', '?')} "
                         f"after {inv.get('warmup', '?')} warm-up), so its ratios compare two runs")
            if r["errors"]:
                note += f"; FAILED: {r['errors']}"
            notes.append(note)
        lines += notes + [""]
    lines += ["MultiViT's LiDAR branch is RangeViT (same network and cost); its camera branch is used in training only.", ""]
    return "\n".join(lines)


def previous_result(args) -> tuple[dict[str, dict], list[dict], dict]:
    """--merge: the raw measurements, invocations and data roots of the --out file already there
    (empty when there is none); refuses a file measured on another device / batch / precision."""
    path = Path(args.out)
    if not (args.merge and path.is_file()):
        return {}, [], {}
    try:
        prev = json.loads(path.read_text())
        raw, invocations = prev["raw"], prev.get("invocations")
    except (ValueError, KeyError) as e:
        raise SystemExit(f"--merge: {path} is not a speed_bench result ({type(e).__name__}: {e}); move it away or drop --merge")
    mine = {"device": args.device, "amp": args.amp, "train_batch": args.train_batch, "quick": args.quick}
    theirs = {k: prev.get(k) for k in mine}
    if theirs != mine:
        raise SystemExit(f"--merge: {path} was measured with {theirs}, this run uses {mine}; figures of the two cannot "
                         "share one table - write to another --out")
    if not invocations:  # a file from before invocations were recorded: one invocation, the file's settings
        invocations = [{"started": "?", "repeats": prev.get("repeats"), "warmup": prev.get("warmup"),
                        "resolutions": list(raw), "models": sorted({m for r in raw.values() for m in r})}]
    return raw, invocations, prev.get("data") or {}


def write_result(args, roots: dict, raw: dict[str, dict], models: list, invocations: list[dict]) -> dict:
    """The JSON of everything measured so far (the rows of the (resolution, model) pairs done)."""
    result = {"machine": machine(), "device": args.device, "amp": args.amp, "repeats": invocations[-1]["repeats"],
              "warmup": invocations[-1]["warmup"], "train_batch": args.train_batch, "quick": args.quick, "data": roots,
              "invocations": invocations, "rows": summarize(raw, models), "raw": raw}
    write_json(Path(args.out), result)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--resolutions", default="kitti,nuscenes")
    p.add_argument("--models", default="", help="comma-separated subset of the model names (default: all)")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--kitti-data", default=None, help="SemanticKITTI root with sequence 08 (default: synthetic)")
    p.add_argument("--nuscenes-data", default=None, help="nuScenes root (default: synthetic)")
    p.add_argument("--quick", action="store_true", help="test-size models, tiny data, 1 repeat, in this process")
    p.add_argument("--inprocess", action="store_true", help="measure in this process (peak memory is cumulative)")
    p.add_argument("--timeout", type=float, default=1200,
                   help="seconds per child measurement (one model, one mode); a timed-out one is reported as a lower bound")
    p.add_argument("--out", default=str(OUT / "speed_bench.json"))
    p.add_argument("--merge", action="store_true", help="keep the other rows already in --out, replace the ones measured now")
    # child mode (internal)
    p.add_argument("--child", dest="mode", default=None, choices=["model", "train"])
    p.add_argument("--model", default=None)
    p.add_argument("--resolution", default=None, choices=list(RESOLUTIONS))
    p.add_argument("--root", default=None)
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    if args.mode:
        print(json.dumps(child(args)))
        return
    if args.quick:
        args.repeats, args.warmup = 1, 1
    args.resolutions = [r.strip() for r in args.resolutions.split(",") if r.strip()]
    bad = [r for r in args.resolutions if r not in RESOLUTIONS]
    if bad:
        raise SystemExit(f"unknown resolution(s) {bad}; choose from {list(RESOLUTIONS)}")
    models = model_table(args.quick, [m.strip() for m in args.models.split(",") if m.strip()] or None)
    raw, invocations, prev_roots = previous_result(args)
    roots = {**prev_roots, **prepare_data(args)}
    if args.quick:
        torch.set_num_threads(1)
    invocations.append({"started": time.strftime("%Y-%m-%d %H:%M"), "repeats": args.repeats, "warmup": args.warmup,
                        "resolutions": args.resolutions, "models": [e[0] for e in models]})
    index = len(invocations) - 1
    table = model_table(args.quick, None) if args.merge else models  # rows in the usual order, old and new
    for res in args.resolutions:
        raw.setdefault(res, {})
        for entry in models:
            measured = {mode: measure(args, entry, res, roots[res], mode) for mode in ("model", "train")}
            raw[res][entry[0]] = {**measured, "invocation": index}
            inf, tr = measured["model"], measured["train"]
            print(f"{res:8s} {entry[0]:14s} inference {fmt_cell(inf.get('seconds'))} s  train step "
                  f"{fmt_cell(tr.get('seconds'))} s  {inf.get('error') or tr.get('error') or ''}", flush=True)
            write_result(args, roots, raw, table, invocations)  # after every model: an interrupted run keeps what it measured
    result = write_result(args, roots, raw, table, invocations)
    print(markdown(result))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
