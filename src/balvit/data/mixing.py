"""Scan mixing for training: instance CutMix and PolarMix, as WaffleIron trains on SemanticKITTI.

Facts from valeoai/WaffleIron datasets/semantic_kitti.py (`InstanceCutMix`, `PolarMix`,
`SemanticKITTI.load_pc`; enabled by `instance_cutmix: True` in configs/WaffleIron-48-256__kitti.yaml,
the ICCV 2023 config), the PolarMix idea from Xiao et al., NeurIPS 2022. Code written here.

On a training scan A (before every other augmentation), in this order:

1. PolarMix (`data.augment.mix.polarmix`): draw another training scan B (uniformly, possibly A itself).
   With probability `polarmix_prob` (0.5) draw an azimuth a0 ~ U(-pi, pi) and replace A's points whose
   azimuth lies in the 180 deg sector (a0, a0 + pi) by B's points of that sector. Then, always, B's
   points of the mixing `classes` are added three times: as they are and rotated about z by two
   angles ~ U(-pi, pi).
2. Instance CutMix (`data.augment.mix.cutmix`): a bank holds every instance of the mixing `classes`
   of the training frames (at least `min_instance_points` points; centred: x, y mean 0, z min 0).
   Candidate places are the points of `ground_classes` among one random point per 1 m voxel of the
   scan (so places are about 1 m apart), shuffled. For each class, n ~ U{0 .. max_instances - 1}
   instances (at most the places left) are drawn from its bank with replacement; each is flipped
   along x or y, rotated about z by U(-pi, pi), scaled by U(0.9, 1.1) in x, y, z, and set down with
   its lowest point on its place (a different place for every pasted instance).

Instances are the reader's instance ids where it has them (SemanticKITTI; id 0 = no instance is not
banked), else connected components of the class's points closer than `cluster_radius` metres
(nuScenes-lidarseg has no instance ids). The bank is built once, when the training dataset is made,
from the training reader (only labelled training frames lend instances).

Per-point bookkeeping: `point_index` keeps the index of every point of scan A that survives (a sector
swap drops some, like a crop) and is -1 for every point from elsewhere (B's sector, pasted
instances): such points have no original index, no camera pixel (mixing is refused with camera
views) and are never evaluated (evaluation never mixes). Labels travel with their points.
Deterministic: every draw comes from the generator passed in (`transforms.mix_rng`).
"""

from __future__ import annotations

import logging

import numpy as np

from ..config import DataConfig, MixConfig
from ..errors import ConfigError
from .base import ScanDataset
from .labels import IGNORE

log = logging.getLogger(__name__)

PASTED = -1  # point_index of points that do not come from the sample's own scan


def load_labelled(reader: ScanDataset, i: int, intensity_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame i as the training dataset reads it: points (N, 4) float32 (intensity scaled, NaN/inf
    points moved to the origin by the reader's nan_policy) and train-id labels (N,) int64 (invalid
    points ignored)."""
    points, invalid = reader.load_points_checked(i)
    labels = reader.load_labels(i).astype(np.int64, copy=True)
    labels[invalid] = IGNORE
    points = points.astype(np.float32, copy=True)
    points[:, 3] *= intensity_scale
    return points, labels


def rotate_z(xyz: np.ndarray, angle: float) -> np.ndarray:
    """(P, >=2) -> copy with x, y rotated by `angle` (rows times [[c, s], [-s, c]], as WaffleIron)."""
    out = np.array(xyz, copy=True)
    c, s = np.cos(angle), np.sin(angle)
    out[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]], dtype=xyz.dtype)
    return out


def class_ids(names: list[str], class_names: list[str], key: str) -> list[int]:
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ConfigError(f"{key}: {unknown} are not classes of this dataset ({', '.join(class_names)})")
    return [class_names.index(n) for n in names]


# ------------------------------------------------------------------------------------ PolarMix


def polarmix(points: np.ndarray, labels: np.ndarray, index: np.ndarray, other: np.ndarray, other_labels: np.ndarray,
             classes: list[int], prob: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scan A (points (N, 4), labels (N,), point_index (N,)) mixed with scan B (other, other_labels)."""
    if rng.random() < prob:
        start = rng.uniform(-np.pi, np.pi)
        in_a = _in_half_sector(points, start)
        in_b = _in_half_sector(other, start)
        points = np.concatenate([points[~in_a], other[in_b]])
        labels = np.concatenate([labels[~in_a], other_labels[in_b]])
        index = np.concatenate([index[~in_a], np.full(int(in_b.sum()), PASTED, dtype=np.int64)])
    things = np.isin(other_labels, classes)
    if things.any():
        inst, inst_labels = other[things], other_labels[things]
        copies = [inst, rotate_z(inst, rng.uniform(-np.pi, np.pi)), rotate_z(inst, rng.uniform(-np.pi, np.pi))]
        points = np.concatenate([points, *copies])
        labels = np.concatenate([labels, inst_labels, inst_labels, inst_labels])
        index = np.concatenate([index, np.full(3 * len(inst), PASTED, dtype=np.int64)])
    return points, labels, index


def _in_half_sector(points: np.ndarray, start: float) -> np.ndarray:
    """Points whose azimuth lies strictly inside (start, start + pi) (mod 2 pi)."""
    theta = np.mod(np.arctan2(points[:, 1], points[:, 0]) - start, 2 * np.pi)
    return (theta > 0) & (theta < np.pi)


# ------------------------------------------------------------------------------ instance CutMix


class InstanceBank:
    """Centred instances (P, 4) float32 of each class id: x, y mean 0, lowest z 0."""

    def __init__(self, by_class: dict[int, list[np.ndarray]]):
        self.by_class = by_class

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_class.values())

    @staticmethod
    def centred(points: np.ndarray) -> np.ndarray:
        out = np.array(points, dtype=np.float32, copy=True)
        out[:, :2] -= out[:, :2].mean(0, keepdims=True)
        out[:, 2] -= out[:, 2].min()
        return out

    @classmethod
    def from_reader(cls, reader: ScanDataset, classes: list[int], cfg: MixConfig, intensity_scale: float,
                    progress: bool = True) -> "InstanceBank":
        from tqdm import tqdm

        from .pseudo_labels.boxes import instance_clusters

        by_class: dict[int, list[np.ndarray]] = {c: [] for c in classes}
        has_ids = hasattr(reader, "load_instances")
        for i in tqdm(range(len(reader)), desc="instance bank", disable=not progress):
            points, labels = load_labelled(reader, i, intensity_scale)
            if not np.isin(labels, classes).any():
                continue
            instances = reader.load_instances(i) if has_ids else None
            for members, c in instance_clusters(points, labels, classes, instances, cfg.cluster_radius,
                                                cfg.min_instance_points):
                by_class[c].append(cls.centred(points[members]))
        return cls(by_class)


def ground_places(points: np.ndarray, labels: np.ndarray, ground: list[int], rng: np.random.Generator) -> np.ndarray:
    """Indices of candidate places: one random point per 1 m voxel, those of a ground class, shuffled."""
    order = rng.permutation(len(points))
    xyz = points[order, :3].astype(np.float64)
    keys = np.floor(xyz - xyz.min(0, keepdims=True)).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    picked = order[first]
    picked = picked[np.isin(labels[picked], ground)]
    return picked[rng.permutation(len(picked))]


def cutmix(points: np.ndarray, labels: np.ndarray, index: np.ndarray, bank: InstanceBank, ground: list[int],
           max_instances: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste bank instances onto the ground of scan (points (N, 4), labels (N,), point_index (N,))."""
    places = ground_places(points, labels, ground, rng)
    new_points, new_labels = [points], [labels]
    used = 0
    for c, instances in bank.by_class.items():
        n = min(int(rng.integers(max_instances)), len(places) - used)
        if n <= 0 or not instances:
            continue
        for k in rng.integers(len(instances), size=n):
            inst = np.array(instances[k], copy=True)
            axis = int(rng.integers(2))
            inst[:, axis] = -inst[:, axis]
            inst = rotate_z(inst, rng.uniform(-np.pi, np.pi))
            inst[:, :3] *= np.float32(1.0 + rng.uniform(-0.1, 0.1))
            inst[:, :3] += points[places[used], :3]
            new_points.append(inst)
            new_labels.append(np.full(len(inst), c, dtype=labels.dtype))
            used += 1
    added = sum(len(p) for p in new_points[1:])
    return (np.concatenate(new_points), np.concatenate(new_labels),
            np.concatenate([index, np.full(added, PASTED, dtype=np.int64)]))


# ------------------------------------------------------------------------------------ the mixer


class ScanMixer:
    """The training dataset's mixing hook: (points, labels, point_index, rng) -> the same, mixed."""

    def __init__(self, reader: ScanDataset, cfg: DataConfig, progress: bool = True):
        mix = cfg.augment.mix
        if not reader.has_labels:
            raise ConfigError(f"data.augment.mix needs labelled training frames; split {reader.split!r} has none")
        names = reader.labels.class_names
        self.reader = reader
        self.cfg = mix
        self.intensity_scale = cfg.intensity_scale
        self.classes = class_ids(list(mix.classes), names, "data.augment.mix.classes")
        self.ground = class_ids(list(mix.ground_classes), names, "data.augment.mix.ground_classes") if mix.cutmix else []
        self.bank = None
        if mix.cutmix:
            self.bank = InstanceBank.from_reader(reader, self.classes, mix, cfg.intensity_scale, progress)
            counts = {names[c]: len(v) for c, v in self.bank.by_class.items()}
            log.info("instance CutMix bank from %d training frames: %s", len(reader), counts)
            if not len(self.bank):
                log.warning("instance CutMix: no instance of %s with >= %d points in the training frames; nothing "
                            "will be pasted", list(mix.classes), mix.min_instance_points)

    def __call__(self, points: np.ndarray, labels: np.ndarray, index: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.cfg.polarmix:
            other, other_labels = load_labelled(self.reader, int(rng.integers(len(self.reader))), self.intensity_scale)
            points, labels, index = polarmix(points, labels, index, other, other_labels, self.classes,
                                             self.cfg.polarmix_prob, rng)
        if self.bank is not None:
            points, labels, index = cutmix(points, labels, index, self.bank, self.ground, self.cfg.max_instances, rng)
        return points, labels, index


def build_mixer(reader: ScanDataset, cfg: DataConfig, train: bool) -> ScanMixer | None:
    """The mixer of a training dataset whose config enables mixing, else None."""
    mix = cfg.augment.mix
    if not (train and cfg.augment.enabled and (mix.polarmix or mix.cutmix)):
        return None
    return ScanMixer(reader, cfg)
