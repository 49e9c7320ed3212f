"""Rotating multi-beam LiDAR simulated by vectorised ray casting.

Two sensors: HDL-64E-like for SemanticKITTI (64 beams from +2.0 to -24.8 deg in two blocks of 32 with
1/3 and 1/2 deg spacing, as in the Velodyne HDL-64E datasheet; 2048 azimuth steps; returns up to 120 m)
and HDL-32E-like for nuScenes (32 beams evenly from +10 to -30 deg, 1084 steps, up to 70 m). Rays go out
on a regular (beam, azimuth) grid; azimuth of column c = phase + pi - 2 pi (c + 0.5) / W, which is the
column convention of the range-view projection (balvit.geometry), so column c of the generating grid is
column c of a range image of the scan.

Sensor effects: Gaussian range noise (2 cm), leaves let rays in a little (up to 0.25 m), ray dropout that
grows with range and on dark or glass surfaces, no return from the sky or beyond the maximum range.
Remission = albedo x (0.3 + 0.7 cos(incidence)) x (1 - 0.15 range / max range) x (1 + 4 % noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Prims
from .raycast import RayGrid, trace


@dataclass(frozen=True)
class LidarSpec:
    name: str
    elev_deg: np.ndarray  # (B,) beam elevations, descending (row 0 = top beam)
    width: int  # azimuth steps per revolution
    max_range: float
    min_range: float
    noise: float  # range noise sigma (m)
    dropout: float  # base dropout probability
    column_major: bool  # point order in the file: azimuth-major (nuScenes) or beam-major (KITTI)

    @property
    def beams(self) -> int:
        return len(self.elev_deg)


def hdl64(beams: int | None = None, azimuth_steps: int | None = None) -> LidarSpec:
    prof = np.concatenate([np.linspace(2.0, -8.33, 32), np.linspace(-8.83, -24.8, 32)])
    B = 64 if beams is None else int(beams)
    elev = np.interp(np.linspace(0, 63, B), np.arange(64), prof) if B != 64 else prof
    return LidarSpec("HDL-64E", elev, 2048 if azimuth_steps is None else int(azimuth_steps), 120.0, 2.0, 0.02, 0.02,
                     False)


def hdl32(beams: int | None = None, azimuth_steps: int | None = None) -> LidarSpec:
    B = 32 if beams is None else int(beams)
    return LidarSpec("HDL-32E", np.linspace(10.0, -30.0, B), 1084 if azimuth_steps is None else int(azimuth_steps),
                     70.0, 0.4, 0.02, 0.03, True)


def sensor_dirs(spec: LidarSpec, phase: float) -> np.ndarray:
    """Unit ray directions in the sensor frame (x forward, y left, z up), (B, W, 3)."""
    el = np.deg2rad(spec.elev_deg)[:, None]
    az = phase + np.pi - 2 * np.pi * (np.arange(spec.width) + 0.5) / spec.width
    az = az[None, :]
    return np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)), -1)


def scan(spec: LidarSpec, prims: Prims, ground, T_world_sensor: np.ndarray, rng: np.random.Generator,
         frame_to_sensor: np.ndarray | None = None) -> dict:
    """Simulate one revolution.

    T_world_sensor (4, 4): pose of the scanning frame (x forward, y left, z up). frame_to_sensor (3, 3)
    optionally rotates the output points into the dataset's sensor frame (nuScenes: x right, y forward).
    Returns dict of arrays over the N returned points, in file order: xyz (N, 3) float32, remission (N,)
    0..1, cls (N,) world class, inst (N,), moving (N,) bool, ring (N,) beam index (0 = lowest beam),
    row (N,), col (N,).
    """
    phase = float(rng.uniform(0, 2 * np.pi / spec.width))
    d_s = sensor_dirs(spec, phase)  # (B, W, 3)
    R = T_world_sensor[:3, :3]
    origin = T_world_sensor[:3, 3].copy()
    grid = RayGrid(origin=origin, dirs=d_s @ R.T, kind="spherical", elev=np.deg2rad(spec.elev_deg), phase=phase, rot=R)
    lo, hi = prims.aabb()
    near = np.all((lo - origin < spec.max_range + 1) & (origin - hi < spec.max_range + 1), axis=1)
    prims = prims.select(np.nonzero(near)[0])
    g = ground.restrict(origin[:2], spec.max_range)
    tr = trace(grid, prims, g, spec.max_range, color=False)
    B, W = spec.beams, spec.width
    rows, cols = np.divmod(np.arange(B * W), W)
    t = tr.t
    ok = tr.hit & (t >= spec.min_range)
    dirs = d_s.reshape(-1, 3)
    wdirs = grid.dirs.reshape(-1, 3)
    cos_inc = np.abs(np.sum(tr.normal * wdirs, axis=1))
    rel = np.where(ok, t, 0.0) / spec.max_range
    remission = tr.albedo * (0.3 + 0.7 * cos_inc) * (1 - 0.15 * rel) * (1 + rng.normal(0, 0.04, t.shape))
    remission = np.clip(remission, 0.0, 1.0)
    p_drop = spec.dropout + 0.25 * rel**3 + 0.3 * (remission < 0.03) + 0.45 * tr.lowret
    ok &= rng.random(t.shape) >= p_drop
    r = t + rng.normal(0, spec.noise, t.shape) + tr.foliage * rng.uniform(0, 0.25, t.shape)
    idx = np.nonzero(ok)[0]
    if spec.column_major:
        idx = idx[np.lexsort((rows[idx], cols[idx]))]
    xyz = r[idx, None] * dirs[idx]
    if frame_to_sensor is not None:
        xyz = xyz @ frame_to_sensor.T
    return {
        "xyz": xyz.astype(np.float32),
        "remission": remission[idx].astype(np.float32),
        "cls": tr.cls[idx].astype(np.int64),
        "inst": tr.inst[idx].astype(np.int64),
        "moving": tr.moving[idx],
        "ring": (B - 1 - rows[idx]).astype(np.int64),
        "row": rows[idx],
        "col": cols[idx],
    }
