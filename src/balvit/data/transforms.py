"""Training augmentation of LiDAR scans, deterministic under a seed.

Point-level: rotation about z, flips of x / y, isotropic scaling, Gaussian translation (the usual
set of range-view and point-based segmentation training recipes), and the optional forms of two
official recipes: WaffleIron's one-axis flip (valeoai/WaffleIron utils/transforms.py FlipXY under
RandomApply(p=2/3)) and RangeViT's per-axis uniform translations and small roll / pitch / yaw
rotations, each applied with a probability (valeoai/rangevit dataset/preprocess/augmentor.py
Augmentor.doAugmentation). Image-level: a random width crop of the range image (RangeViT trains on
64 x 384 crops of 64 x 2048 images). Scan mixing (CutMix / PolarMix) is data/mixing.py.
Every function takes an explicit `numpy.random.Generator`; the dataset seeds it from
(seed, epoch, frame index), so a resumed run draws exactly the same augmentations.
"""

from __future__ import annotations

import numpy as np

from ..config import AugmentConfig


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample: independent of worker count, order and process."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0xBA1])


def mix_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one sample's scan mixing, a stream apart from `sample_rng`'s (turning mixing
    on or off leaves every other augmentation draw unchanged)."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0x313])


def augment_points(points: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """(N, 4) -> (N, 4) float32 with rotated / flipped / scaled / translated xyz (intensity kept)."""
    out = points.copy()
    xyz = out[:, :3].astype(np.float64)
    # draws happen in a fixed order whether or not an option is enabled, so options do not shift
    # each other's random streams
    angle = rng.uniform(-np.pi, np.pi)
    flips = rng.integers(0, 2, size=2)
    scale = rng.uniform(cfg.scale[0], cfg.scale[1])
    shift = rng.normal(0.0, 1.0, size=3) * cfg.translate_std
    if cfg.rotate:
        c, s = np.cos(angle), np.sin(angle)
        xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
    if cfg.flip and cfg.flip_mode == "xy":
        if flips[0]:
            xyz[:, 0] = -xyz[:, 0]
        if flips[1]:
            xyz[:, 1] = -xyz[:, 1]
    elif cfg.flip:  # the optional forms draw after the fixed block above, and only when enabled
        axis = {"x": 0, "y": 1}.get(cfg.flip_mode)
        apply = rng.random() < cfg.flip_prob
        if axis is None:  # one_axis
            axis = int(rng.integers(0, 2))
        if apply:
            xyz[:, axis] = -xyz[:, axis]
    xyz *= scale
    xyz += shift
    if cfg.translate_range:
        for k, (lo, hi) in enumerate(cfg.translate_range):
            apply = rng.random() < cfg.translate_prob
            value = rng.uniform(lo, hi)
            if apply:
                xyz[:, k] += value
    if cfg.tilt_deg:
        from scipy.spatial.transform import Rotation

        angles = []
        for limit in cfg.tilt_deg:  # roll, pitch, yaw
            apply = rng.random() < cfg.tilt_prob
            value = rng.uniform(-limit, limit)
            angles.append(value if apply else 0.0)
        roll, pitch, yaw = angles
        rot = Rotation.from_euler("zyx", [yaw, pitch, roll], degrees=True).as_matrix()
        xyz = xyz @ rot.T
    out[:, :3] = xyz.astype(np.float32)
    return out


def crop_start(width: int, crop_width: int, rng: np.random.Generator) -> int:
    """First column of a random crop of `crop_width` columns out of `width`."""
    if crop_width <= 0 or crop_width >= width:
        return 0
    return int(rng.integers(0, width - crop_width + 1))
