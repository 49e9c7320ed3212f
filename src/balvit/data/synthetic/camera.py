"""Pinhole camera rendering of the synthetic world, with per-pixel class masks.

The camera frame is OpenCV's (x right, y down, z forward). Pixel (col, row) shows what the ray through
the image point (u, v) = (col, row) hits, i.e. pixel centres sit at integer image coordinates, so a 3D
point X maps to the pixel (round(u), round(v)) of (u, v, 1) ~ K X_cam. The ray goes through the same
primitives and ground as the LiDAR (raycast.trace); colour = per-class / per-object base colour with
procedural texture (materials.py), Lambert shading from the sequence's sun, a sky gradient and a little
distance haze. The mask holds the world class of the surface seen by each pixel (-1 for sky).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Prims
from .raycast import RayGrid, trace


@dataclass
class PinholeCamera:
    K: np.ndarray  # (3, 3)
    width: int
    height: int
    T_world_cam: np.ndarray  # (4, 4) world <- camera (OpenCV axes)


def scaled_intrinsics(fx: float, fy: float, cx: float, cy: float, scale: float) -> np.ndarray:
    return np.array([[fx * scale, 0.0, cx * scale], [0.0, fy * scale, cy * scale], [0.0, 0.0, 1.0]])


STRIP_PIXELS = 160_000  # rays traced at once (image strips keep the working set small)


def render(cam: PinholeCamera, prims: Prims, ground, sun: np.ndarray, sky: np.ndarray, zfar: float = 160.0):
    """Render one image. Returns rgb (H, W, 3) uint8, cls (H, W) int16 (-1 = sky), moving (H, W) bool."""
    H, W = cam.height, cam.width
    origin = cam.T_world_cam[:3, 3].copy()
    lo, hi = prims.aabb()
    near = np.all((lo - origin < zfar) & (origin - hi < zfar), axis=1)
    prims = prims.select(np.nonzero(near)[0])
    g = ground.restrict(origin[:2], zfar)
    rgb = np.zeros((H, W, 3), np.uint8)
    cls = np.full((H, W), -1, np.int16)
    moving = np.zeros((H, W), bool)
    step = max(1, STRIP_PIXELS // W)
    for r0 in range(0, H, step):
        r1 = min(H, r0 + step)
        K = cam.K.copy()
        K[1, 2] -= r0  # the strip is an image whose first row is row r0
        rgb[r0:r1], cls[r0:r1], moving[r0:r1] = _render_strip(K, W, r1 - r0, cam.T_world_cam, prims, g, sun, sky, zfar)
    return rgb, cls, moving


def _render_strip(K, W, H, T_world_cam, prims, g, sun, sky, zfar):
    u = np.arange(W, dtype=np.float64)
    v = np.arange(H, dtype=np.float64)
    dc = np.stack(np.broadcast_arrays((u[None, :] - K[0, 2]) / K[0, 0], (v[:, None] - K[1, 2]) / K[1, 1],
                                      np.ones((1, 1))), -1)  # (H, W, 3) camera rays with z = 1
    R = T_world_cam[:3, :3]
    origin = T_world_cam[:3, 3].copy()
    grid = RayGrid(origin=origin, dirs=dc @ R.T, kind="pinhole", K=K, cam_from_world=np.linalg.inv(R))
    tr = trace(grid, prims, g, zfar, albedo=False)
    dirs = grid.dirs.reshape(-1, 3)
    norm = np.linalg.norm(dirs, axis=1)
    # sky gradient by elevation
    el = np.clip(dirs[:, 2] / norm / 0.45, 0.0, 1.0)[:, None]
    sky_col = sky[0] * (1 - el) + sky[1] * el
    lam = np.clip(tr.normal @ sun, 0.0, 1.0)
    col = tr.color * (0.5 + 0.5 * lam)[:, None]
    dist = np.where(tr.hit, tr.t * norm, 0.0)
    fog = (1.0 - np.exp(-dist / 450.0))[:, None]
    col = col * (1 - fog) + sky[0] * fog
    rgb = np.where(tr.hit[:, None], col, sky_col)
    rgb = np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8).reshape(H, W, 3)
    return rgb, tr.cls.reshape(H, W), tr.moving.reshape(H, W)
