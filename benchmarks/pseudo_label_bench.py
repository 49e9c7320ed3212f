"""Camera pseudo-label quality (MultiViT) against the renderer's per-pixel classes.

    python benchmarks/pseudo_label_bench.py [--frames 4] [--image-scale 0.5] [--radius 2,4,6] [--sam DIR]

Generates synthetic SemanticKITTI-format frames (64 beams, 2048 azimuth steps, camera images and
per-pixel class masks), builds pseudo-labels for image_2 from the frames' LiDAR labels with
  - projection + densification only (pseudo_labels.sam=none),
  - plus the stand-in box-prompt predictor (convex hull of the instance's points; sam=standin),
  - plus a SAM model from a local directory (--sam DIR; none exists on the reference machine),
and scores each against the true per-pixel classes: pixel mIoU over the classes present (percent),
coverage (labelled pixels that are not ignore) and the share of labelled pixels left background
(mostly image regions above the LiDAR's vertical field of view). Results: benchmarks/out/pseudo_label_bench.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, machine, write_json  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=4)
    p.add_argument("--image-scale", type=float, default=0.5)
    p.add_argument("--radius", default="2,4,6", help="densification radii (pixels) to compare")
    p.add_argument("--sam", default=None, help="a local transformers SAM directory (optional)")
    p.add_argument("--data", default=None, help="SemanticKITTI-format root with masks (default: generated)")
    p.add_argument("--out", default=str(OUT / "pseudo_label_bench.json"))
    args = p.parse_args()

    from balvit.config import PseudoLabelConfig
    from balvit.data.camera import load_image, load_mask
    from balvit.data.pseudo_labels import PseudoLabeller, build_predictor, label_image_miou
    from balvit.data.semantickitti import SemanticKITTI
    from balvit.data.synthetic import generate

    root = Path(args.data) if args.data else Path(tempfile.gettempdir()) / f"balvit_pl_bench_{args.frames}_{args.image_scale}"
    if not args.data and not (root / ".done").exists():
        generate("semantickitti", root, sequences=["00"], frames=args.frames, seed=11, image_scale=args.image_scale,
                 progress=False)
        (root / ".done").write_text("ok")
    reader = SemanticKITTI(root, "train", sequences=["00"])
    modes = ["none", "standin"] + ([f"sam:{args.sam}"] if args.sam else [])
    radii = [int(r) for r in args.radius.split(",")]
    results = []
    for radius in radii:
        for mode in modes:
            cfg = PseudoLabelConfig(densify_radius=radius, sam=mode)
            labeller = PseudoLabeller(reader.labels, cfg, build_predictor(cfg))
            conf_rows, per_frame, seconds = [], [], []
            for i in range(len(reader)):
                cam = reader.load_cameras(i)[0]
                image, truth = load_image(cam), reader.labels.to_train(load_mask(cam))
                t0 = time.perf_counter()
                out = labeller(reader.load_points(i)[:, :3], reader.load_labels(i), cam, image, reader.load_instances(i))
                seconds.append(time.perf_counter() - t0)
                score = label_image_miou(out, truth, reader.labels.num_classes)
                per_frame.append(score)
                conf_rows.append((out, truth))
            pooled = label_image_miou(np.concatenate([o.ravel() for o, _ in conf_rows]),
                                      np.concatenate([t.ravel() for _, t in conf_rows]), reader.labels.num_classes)
            row = {"radius": radius, "mode": mode, "miou": pooled["miou"], "coverage": pooled["coverage"],
                   "background_on_labelled": pooled["background_on_labelled"],
                   "miou_per_frame": [s["miou"] for s in per_frame], "seconds_per_image": float(np.mean(seconds)),
                   "iou": dict(zip(reader.labels.class_names, pooled["iou"].values()))}
            results.append(row)
            print(f"radius {radius}  {mode:<10} pixel mIoU {row['miou']:5.1f} %  coverage {row['coverage']:5.1f} %  "
                  f"background on labelled pixels {row['background_on_labelled']:5.1f} %  "
                  f"{row['seconds_per_image'] * 1000:.0f} ms/image")
    h, w = load_image(reader.load_cameras(0)[0]).shape[:2]
    write_json(Path(args.out), {"machine": machine(), "frames": len(reader), "image": [h, w], "results": results})
    print(f"{len(reader)} frames, {w} x {h} images; written {args.out}")


if __name__ == "__main__":
    main()
