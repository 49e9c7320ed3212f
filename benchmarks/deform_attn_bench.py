"""Time multi-scale deformable attention (Deformable DETR, Zhu et al. ICLR 2021): the grid_sample path
against the naive reference on a BALViT-sized injector call, on CPU (forward and forward+backward).

    python benchmarks/deform_attn_bench.py [--queries 4096] [--repeats 3]

Default size: 16 x 256 range-view tokens (64 x 2048 image, 4 x 8 patches) attending to three polar BEV
scales (240 x 180, 120 x 90, 60 x 45), 6 heads of 64 channels, 4 points per level. Runs in < 1 minute.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from balvit.models.deform_attn import ms_deform_attn, ms_deform_attn_naive


def make_inputs(queries: int, heads: int, dh: int, points: int, sizes: list[tuple[int, int]], seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(sizes, dtype=torch.long)
    area = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([area.new_zeros(1), area.cumsum(0)[:-1]])
    value = torch.randn(1, int(area.sum()), heads, dh, generator=g)
    loc = torch.rand(1, queries, heads, len(sizes), points, 2, generator=g)
    w = torch.randn(1, queries, heads, len(sizes) * points, generator=g).softmax(-1).view(1, queries, heads, len(sizes), points)
    return value, shapes, starts, loc, w


def timed(fn, args, repeats: int, backward: bool) -> float:
    best = float("inf")
    for _ in range(repeats):
        inputs = [a.detach().requires_grad_(backward) if a.is_floating_point() else a for a in args]
        t0 = time.perf_counter()
        out = fn(*inputs)
        if backward:
            out.sum().backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=16 * 256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/out/deform_attn_bench.json)")
    args = ap.parse_args()
    sizes = [(240, 180), (120, 90), (60, 45)]
    inputs = make_inputs(args.queries, heads=6, dh=64, points=4, sizes=sizes)
    with torch.no_grad():
        diff = (ms_deform_attn(*inputs) - ms_deform_attn_naive(*inputs)).abs().max().item()
    print(f"Q={args.queries}, S={inputs[0].shape[1]}, levels={sizes}, heads=6x64, points=4, "
          f"threads={torch.get_num_threads()}; max |fast - naive| = {diff:.2e}")
    result = {"queries": args.queries, "values": int(inputs[0].shape[1]), "levels": sizes, "heads": 6, "head_dim": 64,
              "points": 4, "threads": torch.get_num_threads(), "max_abs_diff": diff}
    for backward in (False, True):
        tf = timed(ms_deform_attn, inputs, args.repeats, backward)
        tn = timed(ms_deform_attn_naive, inputs, args.repeats, backward)
        label = "forward+backward" if backward else "forward"
        print(f"{label:17s} fast {tf * 1e3:8.1f} ms   naive {tn * 1e3:8.1f} ms   naive/fast = {tn / tf:5.2f}x")
        result[label] = {"fast_ms": tf * 1e3, "naive_ms": tn * 1e3, "ratio_naive_over_fast": tn / tf}
    from common import OUT, write_json

    write_json(Path(args.out) if args.out else OUT / "deform_attn_bench.json", result)


if __name__ == "__main__":
    main()
