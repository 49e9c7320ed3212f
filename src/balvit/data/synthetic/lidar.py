"""Rotating multi-beam LiDAR simulated by vectorised ray casting.

Two sensors: HDL-64E-like for SemanticKITTI (the 64 apparent beam elevations of the real SemanticKITTI
sensor, +2.6 to -23.75 deg with the uneven 1/3 and 1/2 deg spacing of its two laser blocks, measured on
real scans by benchmarks/realism.py; 2048 azimuth steps; returns up to 120 m; the KITTI car's shadow in
the lowest beams) and HDL-32E-like for nuScenes (32 beams evenly from +10 to -30 deg, 1084 steps, up to 70 m). Rays go out
on a regular (beam, azimuth) grid; azimuth of column c = phase + pi - 2 pi (c + 0.5) / W, which is the
column convention of the range-view projection (balvit.geometry), so column c of the generating grid is
column c of a range image of the scan.

Sensor effects: Gaussian range noise (2 cm), leaves let rays in a little (up to 0.25 m), ray dropout that
grows with range and on dark or glass surfaces, no return from the sky or beyond the maximum range.
Remission = gain(class) x albedo x (0.6 + 0.4 cos(incidence)) x (1 - 0.15 range / max range) x
log-normal noise (sigma 0.25), and 0 for a share of the returns of each class: gains and zero shares
bring the per-class medians and zero shares to those of the real SemanticKITTI scans (REMISSION_GAIN,
ZERO_REMISSION; benchmarks/realism.py measures both; the nuScenes sensor uses gain 1, no zeros).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import CLASSES, cid
from .geometry import Prims
from .raycast import RayGrid, trace

# Apparent elevations (deg) of the 64 lasers of the SemanticKITTI HDL-64E, top to bottom: the median pitch
# atan2(z, hypot(x, y)) of every ring beyond 2.5 m in the real SemanticKITTI sequence 00 frames 0-2
# (benchmarks/realism.py, ring_elevations; median over the frames). Upper block ~1/3 deg, lower ~1/2 deg apart.
KITTI_HDL64_ELEVATIONS = np.array([
    2.59, 2.20, 1.96, 1.51, 1.22, 0.81, 0.54, 0.17, -0.18, -0.59, -0.89, -1.23, -1.58, -1.89, -2.17, -2.53,
    -2.84, -3.25, -3.52, -3.92, -4.22, -4.59, -4.90, -5.17, -5.54, -5.85, -6.14, -6.41, -6.77, -7.14, -7.38, -7.76,
    -8.40, -8.92, -9.37, -9.76, -10.23, -10.83, -11.33, -11.76, -12.22, -12.64, -13.17, -13.69, -14.26, -14.69,
    -15.19, -15.55, -16.18, -16.70, -17.26, -17.72, -18.22, -18.64, -19.08, -19.64, -20.14, -20.79, -21.28, -21.70,
    -22.13, -22.77, -23.23, -23.75])

# Shadow of the KITTI recording car in the sensor frame: (elevation at or below which, azimuth from, to) in
# degrees (azimuth 0 = forward, positive to the left). Read off the 5-degree sectors without returns in the
# lowest rings of the real scans: the rear of the car, a mount on the right, the bonnet.
KITTI_EGO_SHADOW = ((-18.0, 165.0, 180.0), (-18.0, -180.0, -165.0), (-19.0, 158.0, 180.0), (-19.0, -180.0, -155.0),
                    (-16.0, -72.5, -62.5), (-19.0, -77.5, -57.5), (-21.0, -15.0, 15.0))


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
    shadow: tuple = ()  # ((elevation_max, azimuth_from, azimuth_to) deg, ...): no returns there (ego vehicle)
    remission_gain: np.ndarray | None = None  # (world classes,) factor on the remission model, None: 1
    zero_remission: np.ndarray | None = None  # (world classes,) share of returns with remission 0, None: none
    # apparent-elevation spread of a beam's points: Gaussian vertical offset (m) + elevation noise (deg)
    elev_jitter: tuple[float, float] = (0.0, 0.0)

    @property
    def beams(self) -> int:
        return len(self.elev_deg)


def _class_table(values: dict[str, float], default: float) -> np.ndarray:
    return np.array([values.get(c.name, default) for c in CLASSES], dtype=np.float64)


def hdl64(beams: int | None = None, azimuth_steps: int | None = None) -> LidarSpec:
    """The SemanticKITTI sensor; fewer beams than 64 take evenly spaced positions of the real table."""
    prof = KITTI_HDL64_ELEVATIONS
    B = 64 if beams is None else int(beams)
    elev = np.interp(np.linspace(0, 63, B), np.arange(64), prof) if B != 64 else prof.copy()
    return LidarSpec("HDL-64E", elev, 2160 if azimuth_steps is None else int(azimuth_steps), 120.0, 2.0, 0.02, 0.02,
                     False, KITTI_EGO_SHADOW, _class_table(REMISSION_GAIN, REMISSION_GAIN_DEFAULT),
                     _class_table(ZERO_REMISSION, ZERO_REMISSION_DEFAULT), KITTI_ELEV_JITTER)


# The apparent elevation of a real HDL-64E point spreads around its laser's (each laser sits off the
# sensor origin; the car moves during the sweep): robust sigma 0.50 deg at 2.5-5 m, 0.41 at 5-10 m, 0.23 at
# 10-20 m, 0.11 at 20-40 m, 0.06 at 40-80 m in the real scans (realism.py's rings), i.e. about a 3.5 cm
# vertical offset plus 0.05 deg: the generator adds both to every point's height.
KITTI_ELEV_JITTER = (0.02, 0.03)

# Per world class: factor on the remission model and share of returns reported with remission 0, fitted so
# that the generated SemanticKITTI scans have the per-class remission medians (of non-zero returns) and zero
# shares of the real scans of sequence 00 frames 0-2 (benchmarks/realism.py; classes absent there: defaults).
REMISSION_GAIN: dict[str, float] = {
    "road": 3.9, "parking": 3.05, "sidewalk": 1.57, "building": 2.1, "fence": 1.31, "vegetation": 0.86, "trunk": 1.43,
    "terrain": 1.32, "pole": 0.9, "traffic-sign": 1.13, "car": 1.37}
REMISSION_GAIN_DEFAULT = 1.4  # the median gain of the measured classes
ZERO_REMISSION: dict[str, float] = {
    "road": 0.125, "parking": 0.018, "sidewalk": 0.016, "building": 0.024, "fence": 0.041, "vegetation": 0.036,
    "trunk": 0.063, "terrain": 0.043, "pole": 0.27, "traffic-sign": 0.068, "car": 0.45}
ZERO_REMISSION_DEFAULT = 0.04


def hdl32(beams: int | None = None, azimuth_steps: int | None = None) -> LidarSpec:
    B = 32 if beams is None else int(beams)
    return LidarSpec("HDL-32E", np.linspace(10.0, -30.0, B), 1084 if azimuth_steps is None else int(azimuth_steps),
                     70.0, 0.4, 0.02, 0.03, True)


def shadow_mask(spec: LidarSpec, phase: float) -> np.ndarray:
    """(B, W) bool: rays inside the ego vehicle's shadow (spec.shadow) return nothing."""
    az = np.degrees(np.angle(np.exp(1j * (phase + np.pi - 2 * np.pi * (np.arange(spec.width) + 0.5) / spec.width))))
    mask = np.zeros((spec.beams, spec.width), bool)
    for el_max, lo, hi in spec.shadow:
        mask |= (spec.elev_deg[:, None] <= el_max) & (az[None, :] >= lo) & (az[None, :] <= hi)
    return mask


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
    if spec.shadow:
        ok &= ~shadow_mask(spec, phase).reshape(-1)
    rel = np.where(ok, t, 0.0) / spec.max_range
    cls = np.maximum(tr.cls, 0)
    if spec.remission_gain is None:  # the HDL-32E model
        signal = tr.albedo * (0.3 + 0.7 * cos_inc) * (1 - 0.15 * rel) * (1 + rng.normal(0, 0.04, t.shape))
        remission = np.clip(signal, 0.0, 1.0)
    else:
        signal = tr.albedo * (0.6 + 0.4 * cos_inc) * (1 - 0.15 * rel) * np.exp(rng.normal(0, 0.25, t.shape))
        remission = np.clip(spec.remission_gain[cls] * signal, 0.0, 1.0)
    p_drop = spec.dropout + 0.25 * rel**3 + 0.3 * (signal < 0.03) + 0.45 * tr.lowret
    ok &= rng.random(t.shape) >= p_drop
    if spec.zero_remission is not None:
        remission = np.where(rng.random(t.shape) < spec.zero_remission[cls], 0.0, remission)
    r = t + rng.normal(0, spec.noise, t.shape) + tr.foliage * rng.uniform(0, 0.25, t.shape)
    idx = np.nonzero(ok)[0]
    if spec.column_major:
        idx = idx[np.lexsort((rows[idx], cols[idx]))]
    xyz = r[idx, None] * dirs[idx]
    if spec.elev_jitter != (0.0, 0.0):
        dz_m, dz_deg = spec.elev_jitter
        rho = np.hypot(xyz[:, 0], xyz[:, 1])
        xyz[:, 2] += rng.normal(0, 1, len(idx)) * dz_m + rng.normal(0, 1, len(idx)) * rho * np.deg2rad(dz_deg)
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
