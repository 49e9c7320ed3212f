"""Helpers shared by the benchmark scripts: machine description, robust timing, peak memory, and a
full-size synthetic scan to measure on (no download)."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, repeats: int, warmup: int = 1, device: torch.device | None = None) -> tuple[float, list[float]]:
    """Median wall time of `fn()` over `repeats` runs after `warmup` runs (seconds)."""
    dev = device or torch.device("cpu")
    for _ in range(warmup):
        fn()
    sync(dev)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_child(script: Path, args: list[str], timeout: float = 3600) -> dict:
    """Run `script --child ...` in a fresh process (so peak memory is its own) and parse its last
    stdout line as JSON."""
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synthetic_kitti(root: Path, frames: int = 2, seed: int = 7) -> Path:
    """A full-resolution (64 x 2048) synthetic SemanticKITTI sequence 08 under `root` (cached)."""
    marker = root / f".bench_{frames}_{seed}"
    if not marker.exists():
        from balvit.data.synthetic import generate

        generate("semantickitti", root, sequences=["08"], frames=frames, seed=seed, cameras=False, progress=False)
        marker.write_text("ok")
    return root


def write_json(path: Path, obj) -> None:
    from balvit.io import write_json as atomic_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_json(path, obj)
