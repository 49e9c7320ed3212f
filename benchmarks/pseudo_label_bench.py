"""Camera pseudo-label quality (MultiViT) against the renderer's per-pixel classes.

    python benchmarks/pseudo_label_bench.py [--frames 4] [--image-scale 0.5] [--radius 2,4,6] [--sam DIR]

Generates synthetic SemanticKITTI-format frames (64 beams, 2048 azimuth steps, camera images and
per-pixel class masks), builds MultiViT's pseudo-labels for image_2 from the frames' LiDAR labels (background class for pixels
without LiDAR evidence, depth-aware densification) with
  - projection + densification only (pseudo_labels.method=densify),
  - plus the stand-in box-prompt predictor (convex hull of the instance's points; method=boxes),
  - plus a SAM model from a local directory (--sam DIR; none exists on the reference machine),
and scores each against the true per-pixel classes with the camera-pixel scores (balvit/metrics.py:
mIoU over the classes in truth or labels, unlabelled and background pixels counted as misses;
coverage; precision). Results: benchmarks/out/pseudo_label_bench.json.
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

    from balvit.data.camera import load_image, load_mask
    from balvit.data.pseudo_labels import PseudoLabelConfig, PseudoLabels
    from balvit.data.semantickitti import SemanticKITTI
    from balvit.metrics import camera_pixel_scores, pixel_confusion
    from balvit.data.synthetic import generate

    root = Path(args.data) if args.data else Path(tempfile.gettempdir()) / f"balvit_pl_bench_{args.frames}_{args.image_scale}"
    if not args.data and not (root / ".done").exists():
        generate("semantickitti", root, sequences=["00"], frames=args.frames, seed=11, image_scale=args.image_scale,
                 progress=False)
        (root / ".done").write_text("ok")
    reader = SemanticKITTI(root, "train", sequences=["00"])
    modes = ["none", "standin"] + ([f"sam:{args.sam}"] if args.sam else [])  # box predictor (none: densify only)
    c = reader.labels.num_classes
    radii = [int(r) for r in args.radius.split(",")]
    results = []
    for radius in radii:
        for mode in modes:
            cfg = PseudoLabelConfig(method="densify" if mode == "none" else "boxes", densify_radius=radius,
                                    occlusion_ratio=1.3, box_predictor="standin" if mode == "none" else mode)
            labeller = PseudoLabels(cfg, reader.labels, background=c)
            pooled_conf = np.zeros((c + 1, c + 1), dtype=np.int64)
            per_frame, seconds = [], []
            for i in range(len(reader)):
                cam = reader.load_cameras(i)[0]
                image, truth = load_image(cam), reader.labels.to_train(load_mask(cam))
                t0 = time.perf_counter()
                out = labeller.compute(cam, image, reader.load_points(i)[:, :3], reader.load_labels(i),
                                       reader.load_instances(i))
                seconds.append(time.perf_counter() - t0)
                conf = pixel_confusion(out, truth, c)
                per_frame.append(camera_pixel_scores(conf)["miou"])
                pooled_conf += conf
            pooled = camera_pixel_scores(pooled_conf, reader.labels.class_names)
            background = pooled_conf[:c, c].sum() / max(pooled_conf[:c].sum(), 1) * 100
            row = {"radius": radius, "mode": mode, "miou": pooled["miou"], "coverage": pooled["coverage"],
                   "precision": pooled["precision"], "background_on_labelled": float(background),
                   "miou_per_frame": per_frame, "seconds_per_image": float(np.mean(seconds)), "iou": pooled["iou"]}
            results.append(row)
            print(f"radius {radius}  {mode:<10} camera-pixel mIoU {row['miou']:5.1f} %  coverage {row['coverage']:5.1f} %  "
                  f"precision {row['precision']:5.1f} %  no class on labelled pixels {background:5.1f} %  "
                  f"{row['seconds_per_image'] * 1000:.0f} ms/image")
    h, w = load_image(reader.load_cameras(0)[0]).shape[:2]
    write_json(Path(args.out), {"machine": machine(), "frames": len(reader), "image": [h, w], "results": results})
    print(f"{len(reader)} frames, {w} x {h} images; written {args.out}")


if __name__ == "__main__":
    main()
