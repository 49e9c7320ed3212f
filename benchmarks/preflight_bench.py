"""Pre-flight check speed (issue: "seconds for 19,130 scans, stat only") on a synthetic SemanticKITTI
tree with the official frame counts: 19,130 training scans (sequences 00-07, 09, 10) and 4,071
validation scans (08), each a 1-point .bin (16 bytes) with its .label (4 bytes), plus calib.txt and
poses.txt. The check reads only the sizes, so tiny files time it as well as real ones would (the
stat of a 2 MB file costs what the stat of a 16-byte file does, on a warm page cache).

    python benchmarks/preflight_bench.py [--root DIR] [--repeats 3]

Results go to benchmarks/out/preflight_bench.json: files checked, seconds, files/s (median run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

import numpy as np  # noqa: E402

from common import OUT, machine, write_json  # noqa: E402

VALID_COUNT = 4071  # official SemanticKITTI sequence 08 scans


def write_tree(root: Path) -> int:
    """The official SemanticKITTI layout with 1-point scans; returns the number of frames."""
    from balvit.data.splits import KITTI_TRAIN_COUNTS

    counts = {**KITTI_TRAIN_COUNTS, "08": VALID_COUNT}
    scan, label = np.zeros(4, np.float32).tobytes(), np.full(1, 40, np.uint32).tobytes()
    calib = "".join(f"{k}: " + " ".join(["0"] * 12) + "\n" for k in ("P0", "P1", "P2", "P3", "Tr"))
    for seq, n in counts.items():
        base = root / "sequences" / seq
        (base / "velodyne").mkdir(parents=True, exist_ok=True)
        (base / "labels").mkdir(exist_ok=True)
        (base / "calib.txt").write_text(calib)
        (base / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n" * n)
        for k in range(n):
            (base / "velodyne" / f"{k:06d}.bin").write_bytes(scan)
            (base / "labels" / f"{k:06d}.label").write_bytes(label)
    return sum(counts.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="where to write the tree (default: a temporary folder)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from balvit.run_config import load_config
    from balvit.data.preflight import run_preflight

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        frames = write_tree(root)
        cfg = load_config(None, [f"data.root={root}"])
        runs = [run_preflight(cfg) for _ in range(args.repeats)]
    assert all(not r.problems for r in runs), runs[0].problems[:5]
    seconds = statistics.median(r.seconds for r in runs)
    result = {
        "machine": machine(),
        "frames": frames,
        "files": runs[0].files,
        "seconds": [round(r.seconds, 4) for r in runs],
        "median_seconds": round(seconds, 4),
        "files_per_s": round(runs[0].files / seconds),
        "frames_per_s": round(frames / seconds),
        "note": "stat only, warm page cache; first run after writing the tree",
    }
    write_json(OUT / "preflight_bench.json", result)
    print(f"pre-flight: {frames} frames, {result['files']} files in {seconds:.2f} s "
          f"({result['files_per_s']:,} files/s, {result['frames_per_s']:,} frames/s)")


if __name__ == "__main__":
    main()
