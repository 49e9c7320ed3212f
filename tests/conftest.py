"""Shared fixtures: an in-memory dataset of random-but-structured scans and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from balvit.data.base import ScanDataset
from balvit.data.labels import semantickitti_labels
from balvit.engine.dist import DistInfo

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
REPO = Path(__file__).resolve().parents[1]
CPU = DistInfo(0, 1, 0, torch.device("cpu"))  # a single-process run on the CPU


def generated_dataset(tmp_path_factory, name: str, fmt: str = "semantickitti", **kw) -> Path:
    """A small `balvit generate` dataset in a fresh temporary folder: a 16-beam x 256-step sensor;
    SemanticKITTI sequences 00 and 08 of 3 frames, or 2 nuScenes v1.0-mini frames (`kw` overrides)."""
    from balvit.data.synthetic import generate

    root = tmp_path_factory.mktemp(name)
    defaults = ({"frames": 2, "seed": 3, "image_scale": 0.1, "version": "v1.0-mini"} if fmt == "nuscenes" else
                {"sequences": ["00", "08"], "frames": 3, "seed": 2, "image_scale": 0.25})
    generate(fmt, root, **{"beams": 16, "azimuth_steps": 256, "progress": False, **defaults, **kw})
    return root


def ring_scan(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A toy scan: ground ring (road / sidewalk by radius) plus boxes (cars) and poles, with raw ids."""
    rng = np.random.default_rng(seed)
    az = rng.uniform(-np.pi, np.pi, n)
    kind = rng.integers(0, 4, n)
    r = np.where(kind == 0, rng.uniform(3, 12, n), rng.uniform(12, 30, n))
    z = np.where(kind <= 1, -1.7 + rng.normal(0, 0.02, n), rng.uniform(-1.7, 0.5, n))
    raw = np.select([kind == 0, kind == 1, kind == 2, kind == 3], [40, 48, 10, 80])
    pts = np.stack([r * np.cos(az), r * np.sin(az), z, rng.uniform(0, 1, n)], 1).astype(np.float32)
    return pts, raw.astype(np.uint32)


class MemoryScans(ScanDataset):
    """A ScanDataset over arrays held in memory (SemanticKITTI label space)."""

    name = "semantickitti"

    def __init__(self, sizes: list[int], seed: int = 0, labelled: bool = True):
        self.labels = semantickitti_labels()
        self.split = "memory"
        self.scans = [ring_scan(n, seed + k) for k, n in enumerate(sizes)]
        self.frames = [f"00/{k:06d}" for k in range(len(sizes))]
        self._labelled = labelled

    @property
    def has_labels(self) -> bool:
        return self._labelled

    def load_points(self, i):
        return self.scans[i][0].copy()

    def load_raw_labels(self, i):
        return self.scans[i][1].copy()

    def label_path(self, i):
        return Path(f"memory/{self.frames[i]}.label")

    def load_cameras(self, i):
        return []

    def prediction_path(self, out_root, i):
        return Path(out_root) / f"{self.frames[i]}.label"

    def encode_prediction(self, train_ids):
        return self.labels.to_raw(train_ids).astype(np.uint32).tobytes()


@pytest.fixture
def memory_scans():
    return MemoryScans([900, 1300, 700], seed=3)
