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


# The smallest config of every model of the registry (tests and the registry-wide checks use these):
# config file under config/synthetic and overrides.
TINY_DINO = ["model.backbone.name=tiny", "model.backbone.weights=random", "model.elite_teacher.image_size=[28,84]",
             "model.elite_teacher.decoder_channels=[16,8]", "model.elite_teacher.peft=lora"]
SMALL_STUDENT = ["data.range.height=16", "data.range.width=256", "data.augment.crop_width=128",
                 "model.elite_student.channels=[8,16,16,16]", "model.elite_student.blocks=[1,1,1,1]",
                 "model.elite_student.decoder_channels=8", "model.elite_student.point_channels=8",
                 "model.elite_student.head_hidden=8", "data.num_workers=0", "elite.teacher_cache_mb=0"]
TINY_MODELS: dict[str, tuple[str, list[str]]] = {
    "balvit": ("tiny.yaml", []),
    "rangevit": ("rangevit_tiny.yaml", []),
    "multivit": ("multivit_tiny.yaml", ["task=segmentation"]),
    "waffleiron": ("scalr_tiny.yaml", ["task=segmentation", "data.cameras=false"]),
    "elite_student": ("elite_student.yaml", ["task=segmentation", *SMALL_STUDENT]),
    "elite_teacher": ("elite_teacher.yaml", [*TINY_DINO, "data.num_workers=0", "data.max_val_frames=0"]),
}
# one tiny run of every task: (config file, overrides); elite_student needs a teacher checkpoint
TINY_TASKS: dict[str, tuple[str, list[str]]] = {
    "segmentation": ("tiny.yaml", []),
    "distill": ("scalr_tiny.yaml", []),
    "multivit_camera": ("multivit_tiny.yaml", []),
    "multivit_joint": ("multivit_tiny.yaml", ["task=multivit_joint"]),
    "elite_teacher": TINY_MODELS["elite_teacher"],
    "elite_student": ("elite_student.yaml", [*SMALL_STUDENT, *TINY_DINO]),
}


def config_of(path, root=None, *more):
    """load_config of a config file (a name under config/synthetic, or a path) with data.root=root."""
    from balvit.run_config import load_config

    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = REPO / "config" / "synthetic" / path
    return load_config(path, ([f"data.root={root}"] if root is not None else []) + list(more))


def tiny_model_config(name: str, root=None, *more):
    path, overrides = TINY_MODELS[name]
    return config_of(path, root, *overrides, *more)


def batch_of(cfg, sizes, train, seed=0):
    """One collated batch of in-memory toy scans (`MemoryScans`) of the given point counts."""
    from balvit.data.dataset import SegmentationDataset, collate

    ds = SegmentationDataset(MemoryScans(sizes, seed=seed), cfg.data, train=train, seed=seed)
    return collate([ds[(i, 0)] for i in range(len(sizes))])


def task_context(cfg, reader, val_reader=None):
    """A TaskContext over one reader (training and, unless given, validation), on the CPU."""
    from balvit.tasks import TaskContext

    return TaskContext(cfg, reader.labels, [(reader, cfg.data, "test frames")], val_reader or reader,
                       torch.device("cpu"), None)


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
