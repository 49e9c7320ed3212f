"""From a reader to model inputs: the sample dict of DESIGN.md section 1, and its batch collation.

A sample (all torch tensors unless noted):
    points       (N, 4) float32   x, y, z (augmented in training), intensity * intensity_scale
    labels       (N,)   int64     train ids, 255 = ignore (all 255 for unlabelled splits)
    point_index  (N,)   int64     index of each point in the original scan (crops drop points); -1 for
                                  points pasted from other scans by data.augment.mix (training only)
    rv           (6, H, W) float32 range, x, y, z, intensity normalised by data.range.mean/std, mask
    rv_rc        (N, 2) int64     (row, col) of every point in `rv` (rows: the laser ring where the
                                  data.range.rows is "ring", else from the field of view)
    rv_coord     (N, 2) float32   continuous (row, col) of every point in `rv` (balvit.geometry: floor =
                                  rv_rc inside the image; a ring row's centre is row + 0.5)
    rv_index     (H, W) int64     point shown by each pixel (the closest), -1 where empty; points nearer
                                  than data.range.min_range (the ego vehicle) are never shown, but keep
                                  their rv_rc / rv_coord and get a prediction like every point
    rv_col0      int              first column of the crop in the full-width image (0 without crop)
    bev_cell     (N, 2) int64     (radius bin, azimuth bin) of the polar BEV grid
    frame        str              frame id; index (int) position in the reader
    num_invalid  int              points whose NaN/inf coordinates were zeroed (nan_policy "zero")
    cameras      list[dict]       camera views (data/views.py): with data.cameras every camera's full image,
                                  or the views a task asks for (one random camera, resized, labelled, ...)
  with data.sampling (point-based models; see data/sampling.py):
    sub_index    (M,)   int64     points the model runs on (one per voxel in evaluation; all in training,
                                  where voxelisation and data.sampling.max_points already dropped points;
                                  only those inside the model's LoaderGeometry.crop box, if it has one)
    up_index     (N,)   int64     for every point, its nearest point among sub_index (position in sub_index)
    knn          (M, 1 + k) int64 each sub_index point itself, then its k = data.sampling.neighbors
                                  nearest sub_index points (positions in sub_index; balvit.geometry.knn)
  with a model's `LoaderGeometry` (balvit.models.loader_geometry(cfg)):
    plane_cells  (M, P) int64     WaffleIron: cell (row * W + col) of each point the model runs on
                                  (sub_index, or all points) in each of its P planes (geometry.PlaneGrid)

Everything is computed once here, in the loader workers, so models only gather with these indices
and evaluation always happens on the original points.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import fields, replace

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..config import DataConfig, ExtraDataConfig
from ..errors import DataError
from ..geometry import LoaderGeometry, polar_cells, range_image
from .base import ScanDataset
from .labels import IGNORE
from .mixed import MixedDataset
from .sampling import cap_points, point_subset, voxel_subsample
from .mixing import build_mixer
from .transforms import augment_points, crop_start, mix_rng, sample_rng
from .views import CameraViews

log = logging.getLogger(__name__)


def build_reader(cfg: DataConfig, split: str, frames: list[str] | None = None) -> ScanDataset:
    """The reader of `split` ("train", "valid", "test", ...) of the configured dataset."""
    if not cfg.root:
        raise DataError("no dataset root given: pass --data_root DIR (or set data.root)")
    if cfg.dataset == "semantickitti":
        from .semantickitti import SemanticKITTI

        sequences = {cfg.train_split: cfg.train_sequences, cfg.val_split: cfg.val_sequences}.get(split) or None
        key = {cfg.train_split: "data.train_sequences=[...]", cfg.val_split: "data.val_sequences=[...]"}.get(
            split, f"data.val_split={split} data.val_sequences=[...] (they go together)")
        return SemanticKITTI(cfg.root, split, sequences=sequences, frames=frames, nan_policy=cfg.nan_policy,
                             sequences_hint=key)
    if cfg.dataset == "nuscenes":
        from .nuscenes import NuScenes

        return NuScenes(cfg.root, split, version=cfg.version, frames=frames, cameras=cfg.cameras,
                        nan_policy=cfg.nan_policy, frame=cfg.nuscenes_frame)
    raise DataError(f"unknown dataset {cfg.dataset!r}")


def training_frames(cfg: DataConfig) -> tuple[list[str], str]:
    """The labelled training frames and a description of where they came from."""
    from .splits import read_split_file, resolve_split_file, select_frames

    full = build_reader(cfg, cfg.train_split)
    if cfg.split_file:
        path = resolve_split_file(cfg.split_file)
        frames = read_split_file(path)
        missing = sorted(set(frames) - set(full.frames))
        if missing:
            raise DataError(f"{path}: names {len(missing)} frame(s) that are not in the {full.describe()}: "
                            f"{missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return frames, f"{len(frames)} frames from {path}"
    if cfg.label_fraction >= 100:
        return list(full.frames), f"all {len(full.frames)} {cfg.train_split} frames"
    frames = select_frames(full, cfg.label_fraction, cfg.split_method, cfg.split_seed)
    return frames, (f"{len(frames)} of {len(full.frames)} {cfg.train_split} frames "
                    f"({cfg.label_fraction:g} %, {cfg.split_method}, seed {cfg.split_seed})")


def extra_data_config(base: DataConfig, j: int) -> DataConfig:
    """The data section of `data.extra_datasets[j]`: its own identity and sensor, the rest from `base`."""
    extra = base.extra_datasets[j]
    if not extra.root:
        raise DataError(f"data.extra_datasets[{j}].root is empty: give the dataset's root directory")
    own = {f.name: getattr(extra, f.name) for f in fields(ExtraDataConfig)}
    return replace(base, **own, extra_datasets=[])


def training_readers(cfg: DataConfig) -> list[tuple[ScanDataset, DataConfig, str]]:
    """(reader of the labelled training frames, its data section, where the frames came from) of the
    dataset and of every `data.extra_datasets` entry (mixed into one training set)."""
    out = []
    for j in range(-1, len(cfg.extra_datasets)):
        dcfg = cfg if j < 0 else extra_data_config(cfg, j)
        frames, desc = training_frames(dcfg)
        out.append((build_reader(dcfg, dcfg.train_split, frames=frames), dcfg, desc))
    return out


def mixed_training_set(readers: list[tuple[ScanDataset, DataConfig, str]], make, seed: int) -> Dataset:
    """make(reader, data_cfg, seed) for every training reader; several are mixed in one MixedDataset
    (dataset j is seeded with seed + 7919 j, so that their augmentations differ)."""
    sets = [make(reader, dcfg, seed + 7919 * j) for j, (reader, dcfg, _) in enumerate(readers)]
    return sets[0] if len(sets) == 1 else MixedDataset(sets)


def load_rings(reader: ScanDataset, rv, i: int) -> np.ndarray | None:
    """(N,) laser rings of frame i under data.range.rows "ring" (a DataError when the reader has
    none), None under "fov"."""
    if rv.rows != "ring":
        return None
    ring = reader.load_rings(i)
    if ring is None:
        raise DataError(f"{reader.scan_path(i)}: data.range.rows=ring, but {reader.name} scans store no ring "
                        f"index (use data.range.rows=fov)")
    return ring


class SegmentationDataset(Dataset):
    """Reader + projections (+ augmentation when `train`) -> sample dicts.

    `geometry`: the model's extra per-point maps (`balvit.models.loader_geometry(cfg)`), e.g.
    WaffleIron's plane cells; empty: none. `views`: the camera views every sample carries (None:
    every camera's full image when data.cameras is set, else none)."""

    def __init__(self, reader: ScanDataset, cfg: DataConfig, train: bool, seed: int = 0,
                 views: CameraViews | None = None, geometry: LoaderGeometry = LoaderGeometry()):
        self.reader = reader
        self.cfg = cfg
        self.train = train
        self.seed = seed
        if views is None and cfg.cameras:
            views = CameraViews(reader, which="all", train=train, seed=seed)
        self.views = views
        self.geometry = geometry
        self.mean = np.asarray(cfg.range.mean, dtype=np.float32)[:, None, None]
        self.std = np.asarray(cfg.range.std, dtype=np.float32)[:, None, None]
        self.mixer = build_mixer(reader, cfg, train)  # CutMix / PolarMix (data/mixing.py); None when off

    def __len__(self) -> int:
        return len(self.reader)

    def rings(self, i: int) -> np.ndarray | None:
        """The laser ring of every point of frame i when the range-view rows come from it
        (data.range.rows "ring"), else None."""
        return load_rings(self.reader, self.cfg.range, i)

    def project(self, points: np.ndarray, ring: np.ndarray | None, i: int):
        rv = self.cfg.range
        try:
            return range_image(points, rv.height, rv.width, rv.fov_up, rv.fov_down, ring=ring,
                               min_range=rv.min_range, source=str(self.reader.scan_path(i)))
        except ValueError as exc:
            raise DataError(str(exc)) from exc

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """key = frame index, or (frame index, epoch) from `StreamSampler` (seeds the augmentation)."""
        i, epoch = key if isinstance(key, tuple) else (key, 0)
        cfg = self.cfg
        reader = self.reader
        points, invalid = reader.load_points_checked(i)
        n_invalid = int(invalid.sum())
        if n_invalid:
            log.warning("%s: %d points with NaN/inf coordinates moved to the origin and ignored",
                        reader.scan_path(i), n_invalid)
        if reader.has_labels:
            labels = reader.load_labels(i)
            if len(labels) != len(points):
                raise DataError(f"{reader.label_path(i)}: {len(labels)} labels for {len(points)} points")
            labels = labels.copy()
            labels[invalid] = IGNORE
        else:
            labels = np.full(len(points), IGNORE, dtype=np.int64)
        points = points.astype(np.float32, copy=True)
        points[:, 3] *= cfg.intensity_scale
        ring = self.rings(i)

        aug = cfg.augment
        c0, cw = 0, cfg.range.width
        rng = sample_rng(self.seed, epoch, i) if self.train else None
        point_index = np.arange(len(points), dtype=np.int64)
        if self.mixer is not None:
            points, labels, point_index = self.mixer(points, labels, point_index, mix_rng(self.seed, epoch, i))
        if self.train and aug.enabled:
            points = augment_points(points, rng, aug)
            if aug.crop_width:
                cw = aug.crop_width
                c0 = self.choose_crop(i, epoch, points, rng)
        sp = cfg.sampling
        if self.train and (sp.voxel_size > 0 or sp.max_points > 0):  # drop points, like a crop
            if cw != cfg.range.width:  # crop first, so that the cap counts the points of the crop
                rc = self.project(points, ring, i).rc
                keep = (rc[:, 1] >= c0) & (rc[:, 1] < c0 + cw)
                points, labels, point_index = points[keep], labels[keep], point_index[keep]
                ring = ring[keep] if ring is not None else None
            keep = voxel_subsample(points, sp.voxel_size, rng)
            inside = self.geometry.inside(points[keep])
            if inside is not None:  # the model's field of view: crop before the cap counts
                keep = keep[inside]
            keep = keep[cap_points(len(keep), sp.max_points, rng, points[keep] if sp.cap == "nearest" else None)]
            points, labels, point_index = points[keep], labels[keep], point_index[keep]
            ring = ring[keep] if ring is not None else None
        elif self.train and self.geometry.crop is not None:
            keep = self.geometry.inside(points)
            points, labels, point_index = points[keep], labels[keep], point_index[keep]
            ring = ring[keep] if ring is not None else None
        if len(points) == 0:
            raise DataError(f"{reader.scan_path(i)}: no point left for the model (outside its field of view?)")

        image, rc, index, coords = self.project(points, ring, i)
        if cw != cfg.range.width:
            keep = (rc[:, 1] >= c0) & (rc[:, 1] < c0 + cw)
            image, index = image[:, :, c0:c0 + cw], index[:, c0:c0 + cw]
            remap = np.full(len(points), -1, dtype=np.int64)
            remap[keep] = np.arange(int(keep.sum()))
            index = np.where(index >= 0, remap[np.maximum(index, 0)], -1)
            points, labels, rc, point_index = points[keep], labels[keep], rc[keep], point_index[keep]
            coords = coords[keep]
            rc = rc - np.array([0, c0])
            coords[:, 1] -= np.float32(c0)
        mask = image[5:6]
        image[:5] = (image[:5] - self.mean) / self.std * mask
        bev = cfg.bev
        cells = polar_cells(points, bev.radius_bins, bev.azimuth_bins, bev.min_radius, bev.max_radius)

        sample = {
            "points": torch.from_numpy(np.ascontiguousarray(points)),
            "labels": torch.from_numpy(labels.astype(np.int64)),
            "point_index": torch.from_numpy(point_index),
            "rv": torch.from_numpy(np.ascontiguousarray(image)),
            "rv_rc": torch.from_numpy(rc),
            "rv_coord": torch.from_numpy(np.ascontiguousarray(coords)),
            "rv_index": torch.from_numpy(np.ascontiguousarray(index)),
            "rv_col0": c0,
            "bev_cell": torch.from_numpy(cells),
            "frame": reader.frames[i],
            "index": i,
            "num_invalid": n_invalid,
        }
        if sp.voxel_size > 0 or sp.neighbors > 0 or self.geometry.crop is not None:
            inside = None if self.train else self.geometry.inside(points)  # training: already cropped
            try:
                subset = point_subset(points, sp.voxel_size, sp.neighbors, subsample=not self.train, inside=inside)
            except ValueError as exc:
                raise DataError(f"{reader.scan_path(i)}: {exc}") from exc
            sample.update({k: torch.from_numpy(v) for k, v in subset.items()})
        if self.geometry.planes:
            kept = points[subset["sub_index"]] if "sub_index" in sample else points
            sample["plane_cells"] = torch.from_numpy(np.stack([p.cells(kept) for p in self.geometry.planes], axis=1))
        if self.views is not None:
            sample["cameras"] = self.views.views(i, epoch, point_index)
        return sample

    def choose_crop(self, i: int, epoch: int, points: np.ndarray, rng: np.random.Generator) -> int:
        """First column of the training crop of frame i (`points`: the augmented scan, before the
        crop): aimed at the drawn camera when the views ask for it, else uniform over the width."""
        width, cw = self.cfg.range.width, self.cfg.augment.crop_width
        if self.views is not None and self.views.aim_crop:
            start = self.views.crop_start(i, epoch, points, width, cw, rng)
            if start is not None:
                return start
        return crop_start(width, cw, rng)


class StreamSampler(Sampler):
    """Batches of (frame index, epoch) keys from an endless stream of seeded permutations.

    The stream is perm(epoch 0) + perm(epoch 1) + ...; global step s takes positions
    [s * B * W + rank * B, ... + B) of it (B = batch per rank, W = world size), so the data of every
    step is a pure function of (seed, step): a run resumed at step s sees exactly the batches the
    uninterrupted run saw, and small labelled sets (a 1 % split may hold 2 frames) cycle without
    short epochs.
    """

    def __init__(self, n: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, start_step: int = 0):
        if n <= 0:
            raise DataError("the training set is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.start_step = rank, world_size, start_step
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}
        return self._perms[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        start = (step * self.world + self.rank) * self.batch_size
        out = []
        for pos in range(start, start + self.batch_size):
            epoch, j = divmod(pos, self.n)
            out.append((self._perm(epoch)[j], epoch))
        return out

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.keys(step)
            step += 1

    def __len__(self) -> int:  # endless; DataLoader only needs this for its repr
        return 2**62


CONCAT_KEYS = ("points", "labels", "point_index", "rv_rc", "rv_coord", "bev_cell")
# per-point tensors a model may ask for (`LoaderGeometry`), concatenated when present
OPTIONAL_CONCAT_KEYS = ("plane_cells",)
# per-sample index tensors whose values are row positions in another per-sample tensor (key -> that
# tensor): concatenated with the running row offsets, so they index the concatenated batch
INDEX_KEYS = {"sub_index": "points", "up_index": "sub_index", "knn": "sub_index"}


def _stack_padded(tensors: list[torch.Tensor], fill) -> torch.Tensor:
    """Stack (..., H_i, W_i) tensors into (B, ..., max H, max W), padding bottom / right with `fill`."""
    h = max(t.shape[-2] for t in tensors)
    w = max(t.shape[-1] for t in tensors)
    if all(t.shape[-2:] == (h, w) for t in tensors):
        return torch.stack(tensors)
    out = tensors[0].new_full((len(tensors), *tensors[0].shape[:-2], h, w), fill)
    for k, t in enumerate(tensors):
        out[k, ..., :t.shape[-2], :t.shape[-1]] = t
    return out


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: loader workers ignore SIGINT / SIGTERM. Ctrl-C, `kill -- -PGID`,
    Slurm's scancel or a preemption signal the whole process group; the main process then finishes its
    step, saves last.pt and shuts the workers down itself, instead of dying because a worker did."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(samples: list[dict]) -> dict:
    """Concatenate per-point tensors (with `batch` ids and `offsets`), stack images.

    Range images of different sizes (datasets mixed in one loader) are padded at the bottom / right
    with empty pixels (all channels 0, including the mask; `rv_index` -1); `rv_rc` stays valid."""
    out: dict = {}
    counts = torch.tensor([len(s["points"]) for s in samples], dtype=torch.long)
    out["offsets"] = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
    out["batch"] = torch.repeat_interleave(torch.arange(len(samples)), counts)
    for key in CONCAT_KEYS:
        out[key] = torch.cat([s[key] for s in samples])
    for key in OPTIONAL_CONCAT_KEYS:
        if key in samples[0]:
            if not all(key in s for s in samples):
                raise ValueError(f"'{key}' is in some samples of the batch but not in others")
            out[key] = torch.cat([s[key] for s in samples])
    for key, ref in INDEX_KEYS.items():
        if key in samples[0]:
            if not all(key in s for s in samples):
                raise ValueError(f"'{key}' is in some samples of the batch but not in others")
            start = 0
            parts = []
            for s in samples:
                parts.append(s[key] + start)
                start += len(s[ref])
            out[key] = torch.cat(parts)
    out["rv"] = _stack_padded([s["rv"] for s in samples], 0.0)
    out["rv_index"] = _stack_padded([s["rv_index"] for s in samples], -1)
    out["frame"] = [s["frame"] for s in samples]
    out["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
    out["rv_col0"] = torch.tensor([s["rv_col0"] for s in samples], dtype=torch.long)
    out["num_invalid"] = sum(s["num_invalid"] for s in samples)
    if "cameras" in samples[0]:
        out["cameras"] = [s["cameras"] for s in samples]
    return out


def to_device(batch: dict, device: torch.device) -> dict:
    """Move every tensor of a batch (also inside camera lists) to `device`."""
    def move(v):
        if torch.is_tensor(v):
            return v.to(device, non_blocking=True)
        if isinstance(v, list):
            return [move(x) for x in v]
        if isinstance(v, dict):
            return {k: move(x) for k, x in v.items()}
        return v

    return {k: move(v) for k, v in batch.items()}


def range_statistics(reader: ScanDataset, cfg: DataConfig, max_frames: int = 200, progress: bool = True) -> dict:
    """Per-channel mean / std of (range, x, y, z, intensity * intensity_scale) over the occupied
    pixels of the range images of up to `max_frames` evenly spaced frames: the values for
    data.range.mean / data.range.std of a new dataset or sensor."""
    from tqdm import tqdm

    n = len(reader)
    picks = sorted({int(k) for k in np.linspace(0, n - 1, num=min(n, max_frames))})
    total = np.zeros(5)
    total_sq = np.zeros(5)
    count = 0
    rv = cfg.range
    for i in tqdm(picks, desc="statistics", disable=not progress):
        points = reader.load_points(i)
        points = points.astype(np.float32, copy=True)
        points[:, 3] *= cfg.intensity_scale
        ring = load_rings(reader, rv, i)
        image = range_image(points, rv.height, rv.width, rv.fov_up, rv.fov_down, ring=ring,
                            min_range=rv.min_range, source=str(reader.scan_path(i))).image
        vals = image[:5, image[5] > 0].astype(np.float64)  # (5, M)
        total += vals.sum(1)
        total_sq += (vals ** 2).sum(1)
        count += vals.shape[1]
    mean = total / max(count, 1)
    std = np.sqrt(np.maximum(total_sq / max(count, 1) - mean ** 2, 0.0))
    return {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std],
            "frames": len(picks), "pixels": count}
