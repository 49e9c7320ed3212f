"""Label-efficiency study: every model on the 1 %, 10 % and 100 % label splits with the same compute
budget, evaluated on the validation sequence; a table, a plot of mIoU vs label fraction, a JSON.

    python benchmarks/label_efficiency.py [--spec benchmarks/label_efficiency/synthetic.yaml]
        [--data_root ROOT] [--out benchmarks/out/label_efficiency] [--methods balvit,rangevit,...]
        [--fractions 1,10,100] [--seeds 0,1,2] [--steps N] [--batch-size B] [--subprocess] [--estimate]

What runs is a study spec (YAML, benchmarks/label_efficiency/*.yaml): the data to generate when no
--data_root is given (`balvit generate`), the label fractions, the compute budget (the same
train.steps x train.batch_size for every run), overrides common to all runs, the pretraining runs
done once (ScaLR's distillation, ELiTe's image teacher; not part of the per-run budget) and one entry
per method (a config under config/ + key=value overrides; `{fraction}` and `{pretrain:NAME}` are
filled in). Every run goes through the normal command line, in this process by default
(`balvit.cli.main`, i.e. `balvit train ... --save_path RUN` then `balvit eval ... --checkpoint
RUN/last.pt --save_path RUN/eval`) or as `python -m balvit.cli` child processes (--subprocess).

Resumable: a run whose result.json exists is skipped, a pretraining run whose done.json exists too,
and an interrupted training resumes from its last.pt (the trainer's own resume). Run the same
command again after a stop.

--estimate: instead of the study, time 1-step and 3-step trainings of every pretraining and method
(scratch runs under OUT/estimate) and extrapolate the whole study's duration from the per-step
times (+ one evaluation per run). Outputs: OUT/results.json (every number), OUT/label_efficiency.md
(the table), OUT/label_efficiency.png (mIoU vs label fraction).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, md_table, notes_md, write_json  # noqa: E402
from balvit.io import save_figure  # noqa: E402

SPECS = REPO / "benchmarks" / "label_efficiency"
SPEC_KEYS = {"description", "generate", "fractions", "budget", "common", "fraction_overrides", "train_overrides",
             "eval_overrides", "pretrain", "methods", "sizes", "seeds"}
METHOD_KEYS = {"name", "label", "config", "overrides", "needs"}


class SpecError(ValueError):
    pass


# ----------------------------------------------------------------------------- the spec


def load_spec(path: str | Path) -> dict:
    """Read and check a study spec; unknown keys and missing parts are errors naming the file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: study spec not found")
    spec = yaml.safe_load(path.read_text()) or {}
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)} (known: {sorted(SPEC_KEYS)})")
    for key in ("fractions", "budget", "methods"):
        if key not in spec:
            raise SpecError(f"{path}: missing {key!r}")
    if set(spec["budget"]) != {"steps", "batch_size"}:
        raise SpecError(f"{path}: budget needs exactly steps and batch_size, got {sorted(spec['budget'])}")
    seeds = spec.get("seeds", [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(x, int) for x in seeds) and len(set(seeds)) == len(seeds)):
        raise SpecError(f"{path}: seeds must be a list of distinct integers (train.seed of each repeat), got {seeds!r}")
    names = set()
    pretrain = spec.get("pretrain") or {}
    for m in spec["methods"]:
        bad = set(m) - METHOD_KEYS
        if bad or "name" not in m or "config" not in m:
            raise SpecError(f"{path}: method {m.get('name')!r}: needs name and config, unknown keys {sorted(bad)}")
        if m["name"] in names:
            raise SpecError(f"{path}: method {m['name']!r} appears twice")
        names.add(m["name"])
        for need in m.get("needs", []) or []:
            if need not in pretrain:
                raise SpecError(f"{path}: method {m['name']!r} needs pretraining {need!r}, which the spec does not define")
    for name, p in pretrain.items():
        if ("config" not in p and "checkpoint_dir" not in p) or set(p) - {"config", "overrides", "steps", "label",
                                                                         "per_fraction", "checkpoint_dir"}:
            raise SpecError(f"{path}: pretrain {name!r}: needs config (+ overrides, steps, label, per_fraction) "
                            "or checkpoint_dir (an existing run, used as it is)")
    spec["_path"] = str(path)
    return spec


def fill(text: str, fraction: float | None, pretrain_dirs: dict[str, Path]) -> str:
    """`{fraction}` -> 1 / 10 / 100 (as %g), `{pretrain:NAME}` -> that pretraining run's folder."""
    if fraction is not None:
        text = text.replace("{fraction}", f"{fraction:g}")
    for name, d in pretrain_dirs.items():
        text = text.replace("{pretrain:" + name + "}", str(d))
    if "{" in text and ("{fraction}" in text or "{pretrain:" in text):
        raise SpecError(f"unfilled placeholder in {text!r}")
    return text


def config_path(text: str) -> str:
    p = Path(text)
    return str(p if p.is_absolute() else REPO / p)


def pretrain_dirs(spec: dict, out: Path, fraction: float | None) -> dict[str, Path]:
    """The folder of every pretraining run as seen from a run on `fraction` (per_fraction ones have
    one folder per label fraction: they learn from labels, so they may only see the fraction's)."""
    dirs = {}
    for name, p in (spec.get("pretrain") or {}).items():
        if p.get("checkpoint_dir"):  # done elsewhere (e.g. ScaLR's multi-GPU pretraining): used as it is
            dirs[name] = Path(fill(str(p["checkpoint_dir"]), fraction, {}))
            continue
        tag = f"_f{fraction:g}" if (p.get("per_fraction") and fraction is not None) else ""
        dirs[name] = out / "runs" / f"pretrain_{name}{tag}"
    return dirs


def run_plan(spec: dict, out: Path, data_root: str | None, fractions: list[float], methods: list[str] | None,
             steps: int | None, batch_size: int | None, seeds: list[int] | None = None) -> dict:
    """Every pretraining and training run of the study as ready-to-run argument lists: one run per
    method, fraction and seed (train.seed; seed 0, the trainer's default, adds no override and keeps
    the folder name of a single-seed study, so a study can be widened to more seeds later and keep
    its finished runs). Pretraining runs are done once, with the default seed."""
    seeds = seeds or list(spec.get("seeds", [0]))
    budget = {"steps": steps or int(spec["budget"]["steps"]), "batch_size": batch_size or int(spec["budget"]["batch_size"])}
    root = ["--data_root", data_root] if data_root else []
    common = [str(o) for o in spec.get("common", []) or []]
    frac_ov = [str(o) for o in spec.get("fraction_overrides", []) or []]
    if methods:
        unknown = set(methods) - {m["name"] for m in spec["methods"]}
        if unknown:
            raise SpecError(f"{spec['_path']}: no method(s) {sorted(unknown)} (has {[m['name'] for m in spec['methods']]})")
    selected = [m for m in spec["methods"] if not methods or m["name"] in methods]
    needed = {n for m in selected for n in (m.get("needs") or [])}
    pretrain, seen = [], set()
    for name, p in (spec.get("pretrain") or {}).items():
        if name not in needed or p.get("checkpoint_dir"):
            continue
        for f in (fractions if p.get("per_fraction") else [None]):
            dirs = pretrain_dirs(spec, out, f)
            if dirs[name] in seen:
                continue
            seen.add(dirs[name])
            extra = frac_ov if p.get("per_fraction") else []
            overrides = [fill(str(o), f, dirs) for o in [*common, *extra, *(p.get("overrides") or [])]]
            if p.get("steps"):
                overrides.append(f"train.steps={int(p['steps'])}")
            label = p.get("label", name) + (f" ({f:g} %)" if f is not None else "")
            pretrain.append({"name": name, "fraction": f, "label": label, "config": config_path(p["config"]),
                             "dir": dirs[name], "train": [*root, *overrides, "train.eval_every=0", "eval.pictures=0"]})
    runs = []
    budget_overrides = [f"train.steps={budget['steps']}", f"train.batch_size={budget['batch_size']}",
                        "train.eval_every=0", f"train.save_every={max(1, budget['steps'] // 4)}", "eval.pictures=0"]
    for m in selected:
        for f in fractions:
            dirs = pretrain_dirs(spec, out, f)
            overrides = [fill(str(o), f, dirs) for o in [*common, *frac_ov, *(m.get("overrides") or [])]]
            for seed in seeds:
                runs.append({"method": m["name"], "label": m.get("label", m["name"]), "fraction": f, "seed": seed,
                             "config": config_path(fill(m["config"], f, dirs)),
                             "dir": out / "runs" / m["name"] / (f"f{f:g}" + (f"_seed{seed}" if seed else "")),
                             "needs": [str(dirs[n]) for n in (m.get("needs") or [])],
                             "train": [*root, *overrides, *budget_overrides,
                                       *[fill(str(o), f, dirs) for o in spec.get("train_overrides", []) or []],
                                       *([f"train.seed={seed}"] if seed else [])],
                             "eval": [*root, *overrides, "eval.pictures=0",
                                      *[fill(str(o), f, dirs) for o in spec.get("eval_overrides", []) or []]]})
    return {"budget": budget, "seeds": seeds, "pretrain": pretrain, "runs": runs}


# ----------------------------------------------------------------------------- running


def balvit_cli(argv: list[str], subprocess_mode: bool, log_path: Path | None = None) -> int:
    """`balvit <argv>`: in this process (balvit.cli.main) or as a child process (its output to log_path)."""
    if subprocess_mode:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        with open(log_path or os.devnull, "a") as logf:
            return subprocess.run([sys.executable, "-m", "balvit.cli", *argv], stdout=logf, stderr=subprocess.STDOUT,
                                  env=env).returncode
    import contextlib

    from balvit.cli import main as cli_main

    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    lg = logging.getLogger("balvit")
    saved = (lg.level, lg.propagate)
    with open(log_path or os.devnull, "a") as logf, contextlib.redirect_stdout(logf):
        handler = logging.StreamHandler(logf)  # the run's log gets balvit's INFO lines, the console only errors
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
        lg.propagate = False
        try:
            return int(cli_main(argv) or 0)
        except SystemExit as e:  # argparse errors, a stop signal
            return int(e.code or 0) if isinstance(e.code, int) else 1
        finally:
            lg.removeHandler(handler)
            lg.setLevel(saved[0])
            lg.propagate = saved[1]


def generate_data(spec: dict, out: Path, subprocess_mode: bool) -> str:
    """`balvit generate` the spec's data under OUT/data (once; a marker records it)."""
    gens = spec.get("generate")
    if not gens:
        raise SpecError(f"{spec['_path']}: no --data_root given and the spec has no 'generate' section")
    root = out / "data"
    marker = root / ".generated.json"
    if marker.is_file() and json.loads(marker.read_text()) == gens:
        return str(root)
    if root.exists():  # other data than the spec asks for: never mix it with runs trained on it
        if any((out / "runs").glob("**/result.json")):
            raise SpecError(f"{root} was generated for another spec and runs in {out / 'runs'} used it: "
                            "use another --out (or delete that folder)")
        import shutil

        shutil.rmtree(root)
    t0 = time.time()
    for g in gens if isinstance(gens, list) else [gens]:
        argv = ["generate", "--format", g.get("format", "semantickitti"), "--out", str(root), "--no-progress"]
        for key in ("sequences", "frames", "seed", "beams", "azimuth_steps", "image_scale"):
            if key in g:
                value = ",".join(map(str, g[key])) if isinstance(g[key], list) else str(g[key])
                argv += [f"--{key.replace('_', '-')}", value]
        if g.get("no_cameras"):
            argv.append("--no-cameras")
        print(f"==> balvit {' '.join(argv)}", flush=True)
        if balvit_cli(argv, subprocess_mode, out / "generate.log") != 0:
            raise RuntimeError(f"balvit {' '.join(argv)} failed")
    marker.write_text(json.dumps(gens))
    print(f"    data generated in {time.time() - t0:.0f} s", flush=True)
    return str(root)


def run_pretrain(p: dict, subprocess_mode: bool) -> dict:
    done = p["dir"] / "done.json"
    if done.is_file():
        info = json.loads(done.read_text())
        if info.get("config") != p["config"] or info.get("overrides") != p["train"]:
            raise SpecError(f"{done}: a finished pretraining with another config / overrides: use another --out, "
                            "or delete that folder to redo it")
        return info
    print(f"==> pretraining {p['name']}: balvit train {Path(p['config']).name} {' '.join(p['train'])}", flush=True)
    t0 = time.time()
    p["dir"].mkdir(parents=True, exist_ok=True)
    rc = balvit_cli(["train", p["config"], "--save_path", str(p["dir"]), "--no-progress", *p["train"]], subprocess_mode,
                    p["dir"] / "train.log")
    if rc != 0:
        raise RuntimeError(f"pretraining {p['name']} failed (exit {rc}; see {p['dir']})")
    info = {"name": p["name"], "fraction": p["fraction"], "label": p["label"], "config": p["config"], "overrides": p["train"],
            "seconds": time.time() - t0, "checkpoint": str(p["dir"] / "last.pt")}
    write_json(done, info)
    return info


def run_name(r: dict) -> str:
    return f"{r['method']} {r['fraction']:g} %" + (f" seed {r['seed']}" if r.get("seed") else "")


def run_one(r: dict, subprocess_mode: bool) -> dict:
    """Train then evaluate one (method, fraction); the result (also OUT/runs/.../result.json)."""
    result_path = r["dir"] / "result.json"
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("config") != r["config"] or done.get("train_overrides") != r["train"]:
            raise SpecError(f"{result_path}: a finished run with another config / overrides (another spec, budget or "
                            "data root?): use another --out, or delete that run folder to redo it")
        return done
    r["dir"].mkdir(parents=True, exist_ok=True)
    print(f"==> {run_name(r)}: balvit train {Path(r['config']).name} {' '.join(r['train'])}", flush=True)
    t0 = time.time()
    rc = balvit_cli(["train", r["config"], "--save_path", str(r["dir"]), "--no-progress", *r["train"]], subprocess_mode,
                    r["dir"] / "train.log")
    train_s = time.time() - t0
    if rc != 0:
        raise RuntimeError(f"training {run_name(r)} failed (exit {rc}; see {r['dir']})")
    t1 = time.time()
    rc = balvit_cli(["eval", r["config"], "--checkpoint", str(r["dir"] / "last.pt"), "--save_path", str(r["dir"] / "eval"),
                     "--no-progress", *r["eval"]], subprocess_mode, r["dir"] / "eval.log")
    if rc != 0:
        raise RuntimeError(f"evaluating {run_name(r)} failed (exit {rc}; see {r['dir']})")
    metrics = json.loads((r["dir"] / "eval" / "metrics.json").read_text())
    frames = None
    try:
        import torch

        state = torch.load(r["dir"] / "last.pt", map_location="cpu", weights_only=False)
        frames = (state.get("extra") or {}).get("frames")
    except Exception:  # noqa: BLE001 - only descriptive
        pass
    result = {"method": r["method"], "label": r["label"], "fraction": r["fraction"], "seed": r.get("seed", 0),
              "miou": metrics["miou"],
              "iou": metrics.get("iou"), "train_seconds": train_s, "eval_seconds": time.time() - t1,
              "steps": metrics.get("checkpoint_step"), "params": metrics.get("params"), "training_frames": frames,
              "config": r["config"], "train_overrides": r["train"], "eval_overrides": r["eval"]}
    write_json(result_path, result)
    return result


# ----------------------------------------------------------------------------- outputs


def cell_stats(d: dict, method: str, fraction: float) -> tuple[float, float, int] | None:
    """mean, sample standard deviation (0 for one run) and number of seeds of one table cell."""
    vals = [r["miou"] for r in d["results"] if r["method"] == method and r["fraction"] == fraction]
    if not vals:
        return None
    mean = sum(vals) / len(vals)
    std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
    return mean, std, len(vals)


def markdown(d: dict, plot_link: str | None = "label_efficiency.png") -> str:
    """The study's table: mIoU per method and label fraction (mean +- standard deviation over seeds
    when there are several), seconds per run, parameters."""
    fr = d["fractions"]
    b = d["budget"]
    seeds = d.get("seeds") or [0]
    per_seed = (f" Each cell: mean ± sample standard deviation over {len(seeds)} seeds (train.seed {', '.join(map(str, seeds))}; "
                "the same data, split and pretraining)." if len(seeds) > 1 else " One seed per cell.")
    lines = [f"Label efficiency ({d.get('data', 'synthetic')}): mIoU (%) on the validation split after "
             f"{b['steps']} steps x batch {b['batch_size']} for every run (the same compute budget in samples seen; "
             f"pretraining runs are done once, outside it).{per_seed} Spec `{Path(d['spec']).name}`.", ""]
    header = ["method", *[f"{f:g} %" for f in fr], "train s / run", "trainable params"]
    rows = []
    for name, label in d["methods"].items():
        mine = [r for r in d["results"] if r["method"] == name]
        secs = [r["train_seconds"] for r in mine]
        cells = []
        for f in fr:
            st = cell_stats(d, name, f)
            if st is None or len(seeds) == 1:
                cells.append(st[0] if st else None)
            else:
                cells.append(f"{st[0]:.1f} ± {st[1]:.1f}" + (f" (n={st[2]})" if st[2] != len(seeds) else ""))
        rows.append([label, *cells, (sum(secs) / len(secs)) if secs else None,
                     ((mine[0] if mine else {}).get("params") or {}).get("trainable")])
    lines += [md_table(header, rows), ""]
    if d.get("pretrain"):
        lines += ["Pretraining (once): " + "; ".join(f"{p['label']} {p['seconds']:.0f} s" for p in d["pretrain"]) + ".", ""]
    if d.get("failures"):
        lines += ["Failed runs: " + "; ".join(d["failures"]), ""]
    lines += notes_md(d)
    if plot_link:
        lines += [f"![mIoU vs label fraction]({plot_link})", ""]
    return "\n".join(lines)


def plot(d: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, label in d["methods"].items():
        pts = [(f, cell_stats(d, name, f)) for f in d["fractions"]]
        pts = [(f, st) for f, st in pts if st]
        if pts:
            ax.errorbar([f for f, _ in pts], [st[0] for _, st in pts], yerr=[st[1] for _, st in pts], fmt="o-",
                        capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(d["fractions"])
    ax.set_xticklabels([f"{f:g} %" for f in d["fractions"]])
    ax.set_xlabel("labelled training frames")
    ax.set_ylabel("validation mIoU (%)")
    n_seeds = len(d.get("seeds") or [0])
    ax.set_title(f"Label efficiency, {d['budget']['steps']} steps x batch {d['budget']['batch_size']} per run"
                 + (f", mean ± std of {n_seeds} seeds" if n_seeds > 1 else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(path, fig)


def write_outputs(d: dict, out: Path) -> None:
    from balvit.io import write_text

    write_json(out / "results.json", d)
    plot(d, out / "label_efficiency.png")
    write_text(out / "label_efficiency.md", "# " + markdown(d) )


# ----------------------------------------------------------------------------- estimate


def estimate(plan: dict, out: Path, subprocess_mode: bool) -> dict:
    """Predict the study's duration on this machine from short scratch runs under OUT/estimate:
    per step = (t(3-step training) - t(1-step training)) / 2, start-up = t(1 step) - per step
    (build, data, the closing 1-frame validation), and one `balvit eval` of the 3-step checkpoint on
    the full validation split per method. Total = sum over pretraining runs of start-up + steps x
    per step, plus over study runs of start-up + steps x per step + evaluation. Timings are kept
    in OUT/estimate/<name>.json, so a second call only recomputes the total."""
    est_dir = out / "estimate"
    est_dir.mkdir(parents=True, exist_ok=True)

    def timed(argv: list[str], tag: str) -> float:
        t0 = time.time()
        rc = balvit_cli(argv, subprocess_mode, est_dir / f"{tag}.log")
        if rc != 0:
            raise RuntimeError(f"estimate: {tag} failed (exit {rc}; see {est_dir / (tag + '.log')})")
        return time.time() - t0

    def train_argv(config: str, overrides: list[str], steps: int, d: Path) -> list[str]:
        if d.exists():
            import shutil

            shutil.rmtree(d)
        ov = [o for o in overrides if not o.startswith(("train.steps=", "train.save_every="))]
        return ["train", config, "--save_path", str(d), "--no-progress", *ov, f"train.steps={steps}",
                f"train.save_every={steps}", "data.max_val_frames=1"]

    items, seen = [], set()
    for p in plan["pretrain"]:  # one per pretraining (a per-fraction one costs the same per step)
        if p["name"] not in seen:
            seen.add(p["name"])
            items.append((p["name"], p["config"], p["train"], None))
    for r in plan["runs"]:  # one fraction per method (the largest: the most varied frames)
        if r["method"] not in seen and r["fraction"] == max(x["fraction"] for x in plan["runs"] if x["method"] == r["method"]):
            seen.add(r["method"])
            items.append((r["method"], r["config"], r["train"], r))
    # the methods that need a pretraining start from its 3-step scratch checkpoint here
    swap = {str(p["dir"]): str(est_dir / f"{p['name']}_3") for p in plan["pretrain"]}

    def scratch(args: list[str]) -> list[str]:
        out_args = []
        for a in args:
            for real in sorted(swap, key=len, reverse=True):  # ..._f100 before its prefix ..._f1
                a = a.replace(real + "/", swap[real] + "/")
            out_args.append(a)
        return out_args

    per: dict[str, dict] = {}
    for name, config, overrides, r in items:
        cache = est_dir / f"{name}.json"
        e = json.loads(cache.read_text()) if cache.is_file() else {}
        if "t3_s" not in e:
            e["t1_s"] = timed(train_argv(config, scratch(overrides), 1, est_dir / f"{name}_1"), name)
            e["t3_s"] = timed(train_argv(config, scratch(overrides), 3, est_dir / f"{name}_3"), name)
            write_json(cache, e)
        if r is not None and "eval_s" not in e:
            e["eval_s"] = timed(["eval", config, "--checkpoint", str(est_dir / f"{name}_3" / "last.pt"), "--no-progress",
                                 *scratch(r["eval"])], name)
            write_json(cache, e)
        per[name] = e
        e = per[name]
        e["per_step_s"] = max((e["t3_s"] - e["t1_s"]) / 2, 1e-3)
        e["startup_s"] = max(e["t1_s"] - e["per_step_s"], 0.0)
        print(f"{name:16s} {e['per_step_s']:6.2f} s/step, start-up {e['startup_s']:5.0f} s"
              + (f", evaluation {e['eval_s']:5.0f} s" if "eval_s" in e else ""), flush=True)
    lines, total = [], 0.0
    for p in plan["pretrain"]:
        e = per[p["name"]]
        steps = next(int(o.split("=", 1)[1]) for o in reversed(p["train"]) if o.startswith("train.steps="))
        t = e["startup_s"] + steps * e["per_step_s"]
        lines.append((p["label"], steps, t))
        total += t
    for r in plan["runs"]:
        e = per[r["method"]]
        steps = plan["budget"]["steps"]
        t = e["startup_s"] + steps * e["per_step_s"] + e.get("eval_s", 0.0)
        lines.append((f"{r['method']} {r['fraction']:g} %", steps, t))
        total += t
    for label, steps, t in lines:
        print(f"  {label:40s} {steps:5d} steps  ~{t / 60:5.1f} min")
    res = {"per_method": per, "runs": [{"run": l, "steps": s, "seconds": t} for l, s, t in lines],
           "estimated_total_s": total, "machine": machine(), "how": estimate.__doc__}
    write_json(est_dir / "estimate.json", res)
    print(f"estimated study duration on this machine: {total / 60:.1f} min for {len(plan['runs'])} runs and "
          f"{len(plan['pretrain'])} pretraining runs (+ data generation)")
    return res


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(SPECS / "synthetic.yaml"), help="study spec (YAML)")
    p.add_argument("--quick", action="store_true", help="the smoke-test spec (quick.yaml): tiny data and models")
    p.add_argument("--data_root", "--data-root", dest="data_root", default=None, help="use this dataset, do not generate")
    p.add_argument("--out", default=None, help="output folder (default benchmarks/out/label_efficiency[_quick])")
    p.add_argument("--methods", default="", help="comma-separated subset of the spec's methods")
    p.add_argument("--fractions", default="", help="comma-separated label fractions in %% (default: the spec's)")
    p.add_argument("--steps", type=int, default=None, help="override the budget's steps")
    p.add_argument("--batch-size", type=int, default=None, help="override the budget's batch size")
    p.add_argument("--seeds", default="", help="comma-separated train.seed values, one run each (default: the spec's, else 0)")
    p.add_argument("--subprocess", action="store_true", help="run every balvit command as a child process")
    p.add_argument("--estimate", action="store_true", help="time 1- and 3-step trainings and estimate the duration")
    p.add_argument("--keep-going", action="store_true", help="record a failed run and continue with the others")
    args = p.parse_args(argv)
    spec_path = SPECS / "quick.yaml" if args.quick and args.spec == p.get_default("spec") else Path(args.spec)
    spec = load_spec(spec_path)
    out = Path(args.out) if args.out else OUT / ("label_efficiency_quick" if args.quick else "label_efficiency")
    out.mkdir(parents=True, exist_ok=True)
    fractions = [float(f) for f in args.fractions.split(",") if f.strip()] or [float(f) for f in spec["fractions"]]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] or None
    data_root = args.data_root or generate_data(spec, out, args.subprocess)
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()] or None
    except ValueError:
        raise SpecError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    if seeds and len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {args.seeds!r}: a seed appears twice")
    plan = run_plan(spec, out, data_root, fractions, methods, args.steps, args.batch_size, seeds)
    if args.estimate:
        estimate(plan, out, args.subprocess)
        return 0
    t0 = time.time()
    pre, failures, failed_pre = [], [], set()
    for pr in plan["pretrain"]:
        try:
            pre.append(run_pretrain(pr, args.subprocess))
        except RuntimeError as e:
            if not args.keep_going:
                raise
            failures.append(str(e))
            failed_pre.add(str(pr["dir"]))
    results = []
    for r in plan["runs"]:
        if set(r["needs"]) & failed_pre:
            failures.append(f"{run_name(r)}: skipped, its pretraining failed")
            continue
        try:
            res = run_one(r, args.subprocess)
        except RuntimeError as e:
            if not args.keep_going:
                raise
            failures.append(str(e))
            continue
        results.append(res)
        print(f"    {run_name(r)}: mIoU {res['miou']:.2f} (train {res['train_seconds']:.0f} s)", flush=True)
    labels = {}
    for r in plan["runs"]:
        labels.setdefault(r["method"], r["label"])
    d = {"spec": str(spec_path), "description": spec.get("description", ""), "sizes": spec.get("sizes", {}),
         "data": data_root if args.data_root else "synthetic, `balvit generate` as the spec says",
         "generate": spec.get("generate"),
         "machine": machine(), "fractions": fractions, "budget": plan["budget"], "seeds": plan["seeds"], "methods": labels,
         "pretrain": pre, "results": results, "failures": failures, "seconds_this_invocation": time.time() - t0}
    write_outputs(d, out)
    print(markdown(d, plot_link=None))
    print(f"written {out / 'results.json'}, {out / 'label_efficiency.md'}, {out / 'label_efficiency.png'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
