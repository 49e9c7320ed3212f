"""`make bench`: run every benchmark script, then write benchmarks/RESULTS.md from their JSON.

    python benchmarks/run_all.py [--quick] [--skip-study] [--only-report] [--repeats N] [--device auto|cpu|cuda]

Runs data_bench.py, model_bench.py, deform_attn_bench.py, speed_bench.py (CPU always, and CUDA
when the machine has one), export_bench.py (onnxruntime vs PyTorch), scaling_bench.py and the
label-efficiency study (label_efficiency.py, resumable: finished runs are kept), then writes
benchmarks/RESULTS.md; the prior diagnosis (prior_probe.py), the realism comparison (realism.py) and
sim-to-real (sim2real.py) are run on their own (hours on 2 cores; --with-prior runs them too) and
their JSON sections join the report: the machine, every table,
the plots (copied to benchmarks/plots/ so that the committed RESULTS.md shows them) and the
papers' reported numbers beside ours, marked "reported, not reproduced".

--quick: smoke run (1 repeat, test-size models for speed/scaling, the quick study spec) - its
numbers mean nothing. --only-report: rewrite RESULTS.md from the JSON already in benchmarks/out/.
Each script can also be run on its own (see its --help).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PLOTS = HERE / "plots"
sys.path.insert(0, str(HERE))

# The papers' numbers (mIoU %, validation sets unless said otherwise) - reported, not reproduced.
BALVIT_SOURCE = ("checkpoint table of the authors' re-implementation's README (robot-learning-freiburg/BALViT, "
                 "as quoted in issue 15; not readable here)")
REPORTED = [
    ("BALViT", "SemanticKITTI val, 1 % labels", 51.87, BALVIT_SOURCE),
    ("BALViT", "nuScenes val, 1 % labels (split rule not stated)", 59.30, BALVIT_SOURCE),
    ("RangeViT (ViT-S, Cityscapes init.)", "nuScenes val, 100 % (all 700 train scenes)", 75.2, "github.com/valeoai/rangevit README"),
    ("RangeViT (ViT-S, DINO init.)", "nuScenes val, 100 % (all 700 train scenes)", 73.3, "github.com/valeoai/rangevit README"),
    ("RangeViT (ViT-S, random init.)", "nuScenes val, 100 % (all 700 train scenes)", 72.4, "github.com/valeoai/rangevit README"),
    ("RangeViT (ViT-S, Cityscapes init.)", "SemanticKITTI test, 100 %", 64.0, "github.com/valeoai/rangevit README"),
    ("ScaLR WI-48-768 (DINOv2 ViT-L/14), linear probing", "nuScenes val, probe on all 700 train scenes", 67.8, "github.com/valeoai/ScaLR README (v0.1.0 models)"),
    ("ScaLR WI-48-768 (DINOv2 ViT-L/14), linear probing", "SemanticKITTI val", 55.8, "github.com/valeoai/ScaLR README (v0.1.0 models)"),
    ("ScaLR WI-48-768 (DINOv2 ViT-L/14), fine-tuned", "nuScenes val, 100 % (all 700 train scenes)", 78.4, "github.com/valeoai/ScaLR README (v0.1.0 models)"),
    ("ScaLR WI-48-768 (DINOv2 ViT-L/14), fine-tuned", "SemanticKITTI val, 100 %", 65.8, "github.com/valeoai/ScaLR README (v0.1.0 models)"),
    ("WaffleIron WI-48-768, no pretraining", "nuScenes val, 100 % (all 700 train scenes)", 78.7, "github.com/valeoai/ScaLR README (v0.1.0 models)"),
]


def run(script: str, *args: str) -> None:
    print(f"\n==> {script} {' '.join(args)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
    print(f"    ({time.time() - t0:.0f} s)", flush=True)


def load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def results_md(quick: bool = False) -> str:
    from common import machine, machine_line

    lines = ["# Benchmark results", "", "Written by `make bench` (`benchmarks/run_all.py`); every figure is a median of",
             "repeated runs after a warm-up, measured on the machine named in each section; ratios compare figures",
             "of the same invocation.", "", f"This report was written on: {machine_line(machine())}.", ""]
    n_header = len(lines)
    sp = load("speed_bench")
    if sp:
        import speed_bench

        lines.append(speed_bench.markdown(sp))
    spc = load("speed_bench_cuda")
    if spc:
        import speed_bench

        lines.append(speed_bench.markdown(spc).replace("## Speed and memory of every model", "## Speed and memory of every model (CUDA)"))
    sc = load("scaling_bench")
    if sc:
        import scaling_bench

        lines.append(scaling_bench.markdown(sc, plot_link=plot_link(OUT / "scaling_bench.png")))
    le_dir = OUT / ("label_efficiency_quick" if quick else "label_efficiency")
    le_path = le_dir / "results.json"
    if le_path.is_file():
        import label_efficiency

        le = json.loads(le_path.read_text())
        lines += ["## Label efficiency (synthetic world)", "", f"Machine: {machine_line(le['machine'])}.",
                  f"Spec: {le.get('description', '')}; sizes: " + "; ".join(f"{k} {v}" for k, v in (le.get("sizes") or {}).items()) + ".",
                  "", label_efficiency.markdown(le, plot_link=plot_link(le_dir / "label_efficiency.png"))]
    lines += prior_sections(quick)
    d = load("data_bench")
    if d:
        m = d["machine"]
        lines += ["## Data loading (one core)", "", f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}.",
                  f"{d['frames']} SemanticKITTI-format scans of {d['points_per_scan']:.0f} points, range image "
                  f"{d['range_image'][0]} x {d['range_image'][1]}, polar BEV {d['bev'][0]} x {d['bev'][1]}.", "",
                  "| stage | scans/s |", "|---|---:|",
                  f"| read | {d['read_scans_per_s']:.1f} |",
                  f"| read + range view + BEV projection (target >= 50) | {d['read_project_scans_per_s']:.1f} |",
                  f"| full training sample (labels, projections, normalisation, tensors) | {d['sample_scans_per_s']:.1f} |", ""]
        if "generator" in d:
            lines += ["Synthetic generator:", "", "| setting | s/scan | LiDAR s/scan | points |", "|---|---:|---:|---:|"]
            for k, v in d["generator"].items():
                lines.append(f"| {k} | {v['seconds_per_scan']:.2f} | {v['lidar_seconds_per_scan']:.2f} | {v['points_per_scan']:.0f} |")
            lines.append("")
    mb = load("model_bench")
    if mb:
        m = mb["machine"]
        lines += ["## BALViT speed and memory", "",
                  f"Machine: {m.get('gpu', m['cpu'])} ({mb['machine']['device']}), {m['threads']} threads, torch {m['torch']}. "
                  f"Config `{Path(mb['config']).name}`, backbone weights `{mb['weights']}`.", "",
                  "| measure | value |", "|---|---:|",
                  f"| inference, 1 scan ({mb['inference_points']} points, {mb['tokens']} tokens): whole model | {mb['model_latency_s']:.3f} s |",
                  f"| same token grid, frozen ViT alone | {mb['vit_latency_s']:.3f} s |",
                  f"| ratio whole model / frozen ViT (target <= 1.6) | {mb['ratio_model_over_vit']:.2f} |",
                  f"| peak memory, inference (process RSS) | {mb['model_peak_rss_mb']:.0f} MB |",
                  f"| training step, batch {mb['train_batch']} (forward + backward + AdamW) | {mb['train_step_s']:.3f} s |",
                  f"| peak memory, training (process RSS) | {mb['train_peak_rss_mb']:.0f} MB |",
                  f"| trainable / frozen parameters | {mb['trainable_params']:,} / {mb['frozen_params']:,} |", ""]
    ex = load("export_bench")
    if ex:
        import export_bench

        lines.append(export_bench.markdown(ex))
    da = load("deform_attn_bench")
    if da:
        lines += ["## Multi-scale deformable attention (grid_sample path vs naive loops)", "",
                  f"{da['queries']} queries, {da['values']} values over levels {da['levels']}, {da['heads']} heads x "
                  f"{da['head_dim']}, {da['points']} points, {da['threads']} threads; max |fast - naive| = {da['max_abs_diff']:.1e}.", "",
                  "| pass | grid_sample | naive | naive / grid_sample |", "|---|---:|---:|---:|"]
        for k in ("forward", "forward+backward"):
            v = da[k]
            lines.append(f"| {k} | {v['fast_ms']:.1f} ms | {v['naive_ms']:.1f} ms | {v['ratio_naive_over_fast']:.2f} |")
        lines.append("")
    if len(lines) == n_header:  # nothing measured yet
        lines += ["**Nothing measured yet**: run `make bench` (or `python benchmarks/run_all.py`) on a quiet machine;",
                  "the tables of every script and the label-efficiency study then appear here.", ""]
    lines += reported_md()
    return "\n".join(lines) + "\n"


def prior_sections(quick: bool = False) -> list[str]:
    """Issue 18's sections: the prior diagnosis, realism of the generator, sim-to-real (whatever exists)."""
    from common import machine_line

    out: list[str] = []
    pp, rl = load("prior_probe"), load("realism")
    s2r_path = OUT / ("sim2real_quick" if quick else "sim2real") / "results.json"
    if pp:
        import prior_probe

        out += ["## Does the frozen prior count? (prior diagnosis)", "", f"Machine: {machine_line(pp['machine'])}; "
                f"{pp['seconds'] / 60:.1f} min for the script.", "", prior_probe.markdown(pp)]
    if rl:
        import realism

        out += ["## Realism of the synthetic world against real HDL-64E scans", "", f"Machine: {machine_line(rl['machine'])}.",
                "", realism.markdown(rl, plot_link=plot_link(OUT / "realism.png"))]
    if s2r_path.is_file():
        import sim2real

        d = json.loads(s2r_path.read_text())
        out += ["## Sim-to-real: trained on the synthetic world, evaluated on real SemanticKITTI scans", "",
                sim2real.markdown(d, plot_link=plot_link(s2r_path.parent / "sim2real.png"))]
        # the same runs with other budgets (`sim2real.py --out benchmarks/out/sim2real_<name> --steps-... N`)
        for longer in sorted(OUT.glob("sim2real_*/results.json")) if not quick else []:
            if longer.parent.name == "sim2real_quick":
                continue
            d = json.loads(longer.read_text())
            out += [f"### Sim-to-real with another budget (`benchmarks/out/{longer.parent.name}`)", "",
                    sim2real.markdown(d)]
    return out


def plot_link(src: Path) -> str | None:
    """Copy a plot next to RESULTS.md (benchmarks/plots/, tracked) and return its relative link."""
    if not src.is_file():
        return None
    PLOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, PLOTS / src.name)
    return f"plots/{src.name}"


def reported_md() -> list[str]:
    from common import md_table

    rows = [[m, s, f"{v:.2f}", src] for m, s, v, src in REPORTED]
    return ["## Published numbers (reported, not reproduced)", "",
            "Numbers from the papers / official repositories, trained on the real datasets with the authors' full",
            "recipes. They are NOT reproduced here: the label-efficiency study above runs on the synthetic world",
            "with reduced models, so its mIoU values are not comparable with these.", "",
            md_table(["model (reported, not reproduced)", "setting", "mIoU %", "source"], rows, "llrl"), ""]


def main() -> None:
    global OUT, PLOTS
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, test-size models, the quick study")
    p.add_argument("--skip-study", action="store_true", help="do not run the label-efficiency study")
    p.add_argument("--with-prior", action="store_true", help="also run prior_probe.py, realism.py and sim2real.py")
    p.add_argument("--only-report", action="store_true", help="only rewrite RESULTS.md from benchmarks/out/")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="speed/scaling device besides the CPU")
    p.add_argument("--repeats", type=int, default=None, help="repeats of every timing script (default: each script's own)")
    p.add_argument("--out-dir", default=str(OUT), help="where the scripts' JSON / plots go (default benchmarks/out)")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="the report (plots are copied to its plots/ folder)")
    args = p.parse_args()
    OUT = Path(args.out_dir)
    PLOTS = Path(args.results).parent / "plots"
    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    reps = ["--repeats", "1"] if args.quick else (["--repeats", str(args.repeats)] if args.repeats else [])
    quick = ["--quick"] if args.quick else []
    if not args.only_report:
        run("data_bench.py", *reps, "--out", str(OUT / "data_bench.json"),
            *(["--frames", "2", "--skip-generator"] if args.quick else []))
        if not args.quick:
            run("model_bench.py", *reps, "--out", str(OUT / "model_bench.json"))
        run("deform_attn_bench.py", *reps, "--out", str(OUT / "deform_attn_bench.json"))
        run("speed_bench.py", "--device", "cpu", "--out", str(OUT / "speed_bench.json"), *quick, *reps)
        if cuda:
            run("speed_bench.py", "--device", "cuda", "--out", str(OUT / "speed_bench_cuda.json"), *quick, *reps)
        run("export_bench.py", "--out", str(OUT / "export_bench.json"), *quick, *reps)
        run("scaling_bench.py", "--device", "cuda" if cuda else "cpu", "--out", str(OUT / "scaling_bench.json"), *quick, *reps)
        if not args.skip_study:
            run("label_efficiency.py", *quick, "--keep-going",
                "--out", str(OUT / ("label_efficiency_quick" if args.quick else "label_efficiency")))
        if args.with_prior:
            run("prior_probe.py", *quick, "--out", str(OUT / "prior_probe.json"))
            run("realism.py", *quick, "--label", "after", "--out", str(OUT / "realism.json"))
            run("sim2real.py", *quick, "--keep-going", "--out", str(OUT / ("sim2real_quick" if args.quick else "sim2real")))
    from balvit.io import write_text

    path = Path(args.results)
    write_text(path, results_md(args.quick))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
