"""Label definitions of each dataset (labels/*.yaml): class names, colours, raw id <-> train id.

Inside the library labels are train ids 0..C-1 with 255 = ignore. `LabelSpec.to_train` maps raw ids
read from disk and refuses ids the dataset does not define (naming the file); `LabelSpec.to_raw`
maps predictions back to what the official tools read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

from ..errors import DataError

IGNORE = 255
LABEL_DIR = Path(__file__).parent / "labels"


@dataclass(frozen=True)
class LabelSpec:
    name: str
    class_names: tuple[str, ...]  # (C,) train id order
    colors: np.ndarray  # (C, 3) uint8 RGB
    train_to_raw: np.ndarray  # (C,) id each train class is written back as
    raw_to_train: np.ndarray  # (R,) int64 lookup, 255 = ignored raw class, -1 = unknown raw id
    raw_names: dict  # raw id -> raw class name
    miou: str  # "all" (semantic-kitti-api) or "nanmean" (nuScenes devkit)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_train(self, raw: np.ndarray, source: str | Path = "?") -> np.ndarray:
        """Raw ids (N,) -> train ids (N,) int64 with 255 for ignored classes; unknown ids are an error."""
        raw = np.asarray(raw).astype(np.int64, copy=False)
        if raw.size == 0:
            return raw.astype(np.int64)
        bad = (raw < 0) | (raw >= len(self.raw_to_train))
        if not bad.any():
            out = self.raw_to_train[raw]
            bad = out < 0
        if bad.any():
            ids, counts = np.unique(raw[bad], return_counts=True)
            listing = ", ".join(f"{i} ({c} points)" for i, c in zip(ids[:10].tolist(), counts[:10].tolist()))
            raise DataError(f"{source}: unknown raw label id(s) for {self.name}: {listing}")
        return out

    def to_raw(self, train: np.ndarray) -> np.ndarray:
        """Train ids (N,) -> raw ids (N,) int64. Every value must be a real class (no 255)."""
        train = np.asarray(train).astype(np.int64, copy=False)
        if train.size and (train.min() < 0 or train.max() >= self.num_classes):
            raise ValueError(f"predictions must be train ids in 0..{self.num_classes - 1}")
        return self.train_to_raw[train]

    def color(self, train: np.ndarray, ignore_color=(0, 0, 0)) -> np.ndarray:
        """Train ids (...) -> RGB (..., 3) uint8; 255 gets `ignore_color`."""
        table = np.concatenate([self.colors, np.zeros((256 - self.num_classes, 3), np.uint8)])
        table[IGNORE] = ignore_color
        return table[np.asarray(train).clip(0, 255).astype(np.int64)]


def _from_yaml(data: dict, raw_to_name: dict[int, str], raw_to_train_name: dict[int, str | None]) -> LabelSpec:
    classes = data["classes"]
    names = tuple(c["name"] for c in classes)
    index = {n: i for i, n in enumerate(names)}
    size = max(raw_to_name) + 1
    lut = np.full(size, -1, dtype=np.int64)
    for raw, tname in raw_to_train_name.items():
        lut[raw] = IGNORE if tname is None else index[tname]
    return LabelSpec(
        name=data["name"],
        class_names=names,
        colors=np.array([c["color"] for c in classes], dtype=np.uint8),
        train_to_raw=np.array([c["raw"] for c in classes], dtype=np.int64),
        raw_to_train=lut,
        raw_names=dict(raw_to_name),
        miou=data["miou"],
    )


@lru_cache(maxsize=None)
def load_yaml(name: str) -> dict:
    return yaml.safe_load((LABEL_DIR / f"{name}.yaml").read_text())


def semantickitti_labels() -> LabelSpec:
    data = load_yaml("semantickitti")
    raw = data["raw_labels"]
    return _from_yaml(data, {int(k): v["name"] for k, v in raw.items()}, {int(k): v["train"] for k, v in raw.items()})


def nuscenes_labels(category_index: dict[str, int] | None = None) -> LabelSpec:
    """The nuScenes spec; `category_index` (name -> raw index, from a dataset's category.json) decides
    the raw ids. Without it the official indices listed in nuscenes.yaml are used."""
    data = load_yaml("nuscenes")
    cats = data["categories"]
    if category_index is None:
        category_index = {name: v["index"] for name, v in cats.items()}
    unknown = sorted(set(category_index) - set(cats))
    if unknown:
        raise DataError(f"nuScenes category table has categories this library does not know: {unknown}")
    raw_to_name = {int(i): n for n, i in category_index.items()}
    raw_to_train = {int(i): cats[n]["train"] for n, i in category_index.items()}
    return _from_yaml(data, raw_to_name, raw_to_train)


def labels_for(dataset: str) -> LabelSpec:
    if dataset == "semantickitti":
        return semantickitti_labels()
    if dataset == "nuscenes":
        return nuscenes_labels()
    raise ValueError(f"unknown dataset {dataset!r}")
