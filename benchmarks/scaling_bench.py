"""Scaling: data loading and inference time as the number of points per scan grows.

    python benchmarks/scaling_bench.py [--points 30000,60000,120000,250000] [--models balvit,rangevit,waffleiron,elite_student]
                                       [--frames 2] [--repeats 3] [--device cpu|cuda] [--quick]

Scans of a given size are made from full-size synthetic SemanticKITTI-format scans (HDL-64E, ~120 k
points; --data for a real root with sequence 08): a seeded random subset of the points when fewer
are wanted, all points plus jittered copies (1 cm Gaussian on x, y, z, same label) when more. They
are written as SemanticKITTI files, so the read is measured too. Every model keeps its configured
range image (64 x 2048): extra points share pixels, and the per-point parts of the models (point
gathers and heads, KPConv refiner, WaffleIron's whole network) grow with the points.

Per model and size (median over --repeats passes over --frames scans, after a warm-up):
  - data loading: read + the evaluation sample dict (projections / sampling of that model's config),
    one thread;
  - inference: the forward pass, batch 1, no grad.
A least-squares line (seconds = slope x points + intercept) and its R^2 per model and measure show
how linear the growth is. Results: benchmarks/out/scaling_bench.json and scaling_bench.png.
--quick: test-size models on tiny scans (1 k to 8 k points), 1 repeat.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (OUT, autocast_ctx, build_bench_model, dataset_overrides, linear_fit, load_bench_config,  # noqa: E402
                    machine, machine_line, md_table, model_table, notes_md, synthetic_data, write_json)
from balvit.io import save_figure  # noqa: E402

DEFAULT_MODELS = "balvit,rangevit,waffleiron,elite_student"


def resample_scan(points: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator,
                  jitter: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """`n` points from a scan: a random subset (n <= len) or every point plus jittered copies."""
    m = len(points)
    if n <= m:
        idx = np.sort(rng.choice(m, n, replace=False))
        return points[idx], labels[idx]
    extra = rng.choice(m, n - m, replace=True)
    copies = points[extra].copy()
    copies[:, :3] += rng.normal(0.0, jitter, size=(n - m, 3)).astype(np.float32)
    return np.concatenate([points, copies]), np.concatenate([labels, labels[extra]])


def make_sized_root(base: Path, out: Path, n: int, frames: int, seed: int = 0) -> Path:
    """A SemanticKITTI-format copy of sequence 08 of `base` whose first `frames` scans hold `n` points."""
    marker = out / f".scaling_{n}_{frames}_{seed}"
    if marker.exists():
        return out
    src, dst = base / "sequences" / "08", out / "sequences" / "08"
    if out.exists():
        shutil.rmtree(out)
    (dst / "velodyne").mkdir(parents=True)
    (dst / "labels").mkdir()
    for name in ("calib.txt", "poses.txt", "times.txt"):
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)
    scans = sorted((src / "velodyne").glob("*.bin"))[:frames]
    if not scans:
        raise SystemExit(f"{src / 'velodyne'}: no scans")
    rng = np.random.default_rng(seed)
    for scan in scans:
        pts = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
        lab = np.fromfile(src / "labels" / (scan.stem + ".label"), dtype=np.uint32)
        p, lb = resample_scan(pts, lab, n, rng)
        p.astype(np.float32).tofile(dst / "velodyne" / scan.name)
        lb.astype(np.uint32).tofile(dst / "labels" / (scan.stem + ".label"))
    if (src / "poses.txt").is_file():  # keep only the poses / times of the frames written
        for name in ("poses.txt", "times.txt"):
            if (dst / name).is_file():
                lines = (dst / name).read_text().splitlines()[:len(scans)]
                (dst / name).write_text("\n".join(lines) + "\n")
    marker.write_text("ok")
    return out


def per_scan_median(fn, n: int, repeats: int, device: torch.device) -> float:
    """Median over `repeats` passes of the mean seconds of fn(i), i < n (after one warm-up pass)."""
    from common import sync

    for i in range(n):
        fn(i)
    sync(device)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        sync(device)
        runs.append((time.perf_counter() - t0) / n)
    return statistics.median(runs)


def measure_model_scaling(entry, roots: dict[int, Path], args) -> dict:
    from balvit.data.dataset import SegmentationDataset, build_reader, collate, to_device

    device = torch.device(args.device)
    name, kitti_cfg, _, extra, _ = entry
    size = (16, 256) if args.quick else (None, None)
    model = None
    out = {"points": [], "load_s": [], "infer_s": []}
    for n, root in sorted(roots.items()):
        cfg = load_bench_config(kitti_cfg, [*dataset_overrides("semantickitti", root, *size), *extra])
        if model is None:
            model = build_bench_model(cfg, device).eval()
        reader = build_reader(cfg.data, cfg.data.val_split)
        ds = SegmentationDataset(reader, cfg.data, train=False)
        frames = min(args.frames, len(ds))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # data loading: one loader worker's core
        load = per_scan_median(lambda i: ds[i], frames, args.repeats, torch.device("cpu"))
        torch.set_num_threads(threads)
        batches = [to_device(collate([ds[i]]), device) for i in range(frames)]

        def infer(i):
            with torch.no_grad(), autocast_ctx(device, args.amp):
                model(batches[i])

        inf = per_scan_median(infer, frames, args.repeats, device)
        pts = float(np.mean([b["points"].shape[0] for b in batches]))
        out["points"].append(pts)
        out["load_s"].append(load)
        out["infer_s"].append(inf)
        print(f"{name:14s} {pts:9.0f} points: load {load * 1000:8.1f} ms  inference {inf * 1000:9.1f} ms", flush=True)
    out["load_fit"] = linear_fit(out["points"], out["load_s"])
    out["infer_fit"] = linear_fit(out["points"], out["infer_s"])
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in ((axes[0], "load", "data loading (read + sample dict, 1 thread)"),
                           (axes[1], "infer", "inference (batch 1)")):
        for name, r in result["models"].items():
            if "error" in r:
                continue
            x = np.asarray(r["points"]) / 1000.0
            y = np.asarray(r[f"{key}_s"]) * 1000.0
            fit = r[f"{key}_fit"]
            line = ax.plot(x, y, "o", label=f"{name} (R² {fit['r2']:.3f})")[0]
            xs = np.linspace(0, x.max() * 1.05, 20)
            ax.plot(xs, (fit["slope"] * xs * 1000.0 + fit["intercept"]) * 1000.0, "--", color=line.get_color(), lw=1)
        ax.set_xlabel("points per scan (thousands)")
        ax.set_ylabel("ms per scan")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scaling with points per scan ({result['machine']['cpu']}, {result['device']})", fontsize=10)
    fig.tight_layout()
    save_figure(path, fig)


def markdown(d: dict, plot_link: str | None = "out/scaling_bench.png") -> str:
    m = d["machine"]
    lines = ["## Scaling with the number of points per scan", "",
             f"Machine: {machine_line(m)}; device `{d['device']}`. Scans resampled from full-size synthetic "
             f"SemanticKITTI-format scans (subset, or jittered copies beyond ~120 k); each model keeps its "
             f"configured range image. Median of {d['repeats']} passes over {d['frames']} scans after a warm-up. "
             f"Fit: seconds = slope x points + intercept.{' QUICK smoke run: not a measurement.' if d.get('quick') else ''}", ""]
    sizes = None
    rows = []
    for name, r in d["models"].items():
        if "error" in r:
            rows.append([name, f"FAILED: {r['error'][:120]}"] + [None] * (len(sizes or []) * 2 + 4))
            continue
        sizes = sizes or r["points"]
        rows.append([name, *[v * 1000 for v in r["load_s"]], r["load_fit"]["slope"] * 1e8, r["load_fit"]["r2"],
                     *[v * 1000 for v in r["infer_s"]], r["infer_fit"]["slope"] * 1e8, r["infer_fit"]["r2"]])
    if sizes:
        k = len(sizes)
        header = ["model", *[f"load ms @{p / 1000:.0f}k" for p in sizes], "load ms / 100k pts", "load R²",
                  *[f"infer ms @{p / 1000:.0f}k" for p in sizes], "infer ms / 100k pts", "infer R²"]
        rows = [r if len(r) == len(header) else (r + [None] * (len(header) - len(r)))[:len(header)] for r in rows]
        assert len(header) == 2 * k + 5
        lines += [md_table(header, rows), ""]
    lines += notes_md(d)
    if plot_link:
        lines += [f"![scaling]({plot_link})", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", default="30000,60000,120000,250000")
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--frames", type=int, default=2, help="scans per size")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    p.add_argument("--data", default=None, help="SemanticKITTI root with sequence 08 (default: synthetic)")
    p.add_argument("--quick", action="store_true", help="test-size models, 1 k - 8 k points, 1 repeat")
    p.add_argument("--out", default=str(OUT / "scaling_bench.json"))
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device on this machine")
    tmp = Path(tempfile.gettempdir())
    if args.quick:
        args.repeats, args.frames = 1, 1
        if args.points == p.get_default("points"):
            args.points = "1000,2000,4000,8000"
        base = Path(args.data) if args.data else synthetic_data("semantickitti", tmp / "balvit_bench_quick_kitti", frames=1,
                                                                beams=16, azimuth_steps=256)
    else:
        base = Path(args.data) if args.data else synthetic_data("semantickitti", tmp / "balvit_bench_kitti", frames=max(2, args.frames))
    sizes = [int(float(s)) for s in args.points.split(",") if s.strip()]
    if len(sizes) < 2:
        raise SystemExit("--points: at least two sizes are needed for a fit")
    roots = {n: make_sized_root(base, tmp / f"balvit_bench_scaling{'_quick' if args.quick else ''}" / str(n), n, args.frames)
             for n in sizes}
    models = model_table(args.quick, [m.strip() for m in args.models.split(",") if m.strip()])
    result = {"machine": machine(), "device": args.device, "repeats": args.repeats, "frames": args.frames,
              "sizes": sizes, "quick": args.quick, "models": {}}
    for entry in models:
        try:
            result["models"][entry[0]] = measure_model_scaling(entry, roots, args)
        except Exception as e:  # noqa: BLE001 - a failing model must not lose the others
            result["models"][entry[0]] = {"error": f"{type(e).__name__}: {str(e)[-500:]}"}
            print(f"{entry[0]}: FAILED {result['models'][entry[0]]['error']}", flush=True)
    out = Path(args.out)
    write_json(out, result)
    plot(result, out.with_suffix(".png"))
    print(markdown(result, plot_link=None))
    print(f"written {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
