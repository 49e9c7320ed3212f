"""Data throughput (issue target: read + project a full 64 x 2048 scan at >= 50 scans/s on one core,
so that data loading never limits a GPU) and synthetic-generator speed.

    python benchmarks/data_bench.py [--frames 8] [--repeats 5] [--data ROOT]

Measured on one core (torch and numpy single-threaded), full-size SemanticKITTI-format scans
(synthetic unless --data names a real SemanticKITTI root; sequence 08 is read):
  - read: the .bin file -> checked (N, 4) points;
  - read + project: read, range image (64 x 2048, closest point wins, per-point row/col) and polar
    BEV cells (480 x 360);
  - sample: the whole training-loader sample (labels, projections, normalisation, torch tensors);
  - generator: seconds per scan for the LiDAR alone and with cameras (image_scale 1.0 and 0.5),
    SemanticKITTI and nuScenes.
Results go to benchmarks/out/data_bench.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, REPO, machine, synthetic_kitti, write_json  # noqa: E402


def per_scan(fn, n: int, repeats: int) -> float:
    """Median over `repeats` passes of the mean seconds per scan of fn(i) for i < n."""
    fn(0)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--data", default=None)
    p.add_argument("--skip-generator", action="store_true")
    p.add_argument("--out", default=str(OUT / "data_bench.json"))
    args = p.parse_args()
    torch.set_num_threads(1)

    from balvit.run_config import load_config
    from balvit.data.dataset import SegmentationDataset, build_reader
    from balvit.geometry import polar_cells, range_image

    root = args.data or str(synthetic_kitti(Path(tempfile.gettempdir()) / f"balvit_bench_kitti{args.frames}", frames=args.frames))
    cfg = load_config(REPO / "config/kitti.yaml", [f"data.root={root}", "data.val_sequences=['08']"])
    reader = build_reader(cfg.data, "valid")
    n = min(args.frames, len(reader))
    rv, bev = cfg.data.range, cfg.data.bev
    points = [len(reader.load_points(i)) for i in range(n)]

    def read(i):
        reader.load_points_checked(i)

    def read_project(i):
        pts, _ = reader.load_points_checked(i)
        range_image(pts, rv.height, rv.width, rv.fov_up, rv.fov_down)
        polar_cells(pts, bev.radius_bins, bev.azimuth_bins, bev.min_radius, bev.max_radius)

    ds = SegmentationDataset(reader, cfg.data, train=False)

    def sample(i):
        ds[i]

    res = {"machine": machine(), "data": root, "frames": n, "points_per_scan": statistics.mean(points),
           "range_image": [rv.height, rv.width], "bev": [bev.radius_bins, bev.azimuth_bins]}
    res["read_s"] = per_scan(read, n, args.repeats)
    res["read_project_s"] = per_scan(read_project, n, args.repeats)
    res["sample_s"] = per_scan(sample, n, args.repeats)
    for k in ("read", "read_project", "sample"):
        res[f"{k}_scans_per_s"] = 1.0 / res[f"{k}_s"]
    print(f"{n} scans, {res['points_per_scan']:.0f} points each, one core ({res['machine']['cpu']}):")
    print(f"  read                     {res['read_scans_per_s']:7.1f} scans/s")
    print(f"  read + range view + BEV  {res['read_project_scans_per_s']:7.1f} scans/s   (target >= 50)")
    print(f"  full training sample     {res['sample_scans_per_s']:7.1f} scans/s")

    if not args.skip_generator:
        from balvit.data.synthetic import generate

        gen = {}
        with tempfile.TemporaryDirectory() as tmp:
            for fmt, label, kw in [
                ("semantickitti", "kitti_lidar", {"cameras": False}),
                ("semantickitti", "kitti_cameras_1.0", {"image_scale": 1.0}),
                ("semantickitti", "kitti_cameras_0.5", {"image_scale": 0.5}),
                ("nuscenes", "nuscenes_lidar", {"cameras": False}),
                ("nuscenes", "nuscenes_cameras_0.5", {"image_scale": 0.5}),
            ]:
                frames = 2 if "nuscenes_cameras" in label else 4
                kwargs = {"sequences": ["00"]} if fmt == "semantickitti" else {}
                s = generate(fmt, Path(tmp) / label, frames=frames, seed=1, progress=False, **kwargs, **kw)
                gen[label] = {"seconds_per_scan": s["seconds_per_scan"], "lidar_seconds_per_scan": s["lidar_seconds_per_scan"],
                              "points_per_scan": s["points_per_scan"]}
                print(f"  generator {label:22s} {s['seconds_per_scan']:6.2f} s/scan (LiDAR {s['lidar_seconds_per_scan']:.2f} s, "
                      f"{s['points_per_scan']:.0f} points)")
        res["generator"] = gen
    write_json(Path(args.out), res)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
