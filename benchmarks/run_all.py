"""`make bench`: run every benchmark script, then write benchmarks/RESULTS.md from their JSON.

    python benchmarks/run_all.py [--quick]

--quick: fewer repeats (for a smoke run). Each script can also be run on its own (see its --help).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


def run(script: str, *args: str) -> None:
    print(f"\n==> {script} {' '.join(args)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, str(HERE / script), *args], check=True)
    print(f"    ({time.time() - t0:.0f} s)", flush=True)


def load(name: str) -> dict | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def results_md() -> str:
    lines = ["# Benchmark results", "", "Written by `make bench` (`benchmarks/run_all.py`); every figure is a median of",
             "repeated runs after a warm-up, measured on the machine named in each section.", ""]
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
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    reps = ["--repeats", "1"] if args.quick else []
    run("data_bench.py", *reps)
    run("model_bench.py", *reps)
    run("deform_attn_bench.py", *reps)
    from balvit.io import write_text

    path = HERE / "RESULTS.md"
    write_text(path, results_md())
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
