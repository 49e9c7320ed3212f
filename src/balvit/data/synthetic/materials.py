"""Surface appearance shared by the LiDAR and the cameras: reflectivity, colour and texture of every hit.

Both sensors look up the same functions of the world position, so a facade window that the camera draws
dark is also a low-reflectivity, often-dropped LiDAR return, and road paint is bright in both. Textures
are lattice value noise from an integer hash of the position (deterministic, no random state).
"""

from __future__ import annotations

import numpy as np

from .classes import albedo_range, base_colors, cid
from .geometry import MAT_FACADE, MAT_FOLIAGE, MAT_GLASS, MAT_RETRO, Prims, local_point

ALBEDO = albedo_range()
COLORS = base_colors()
GLASS_COLOR = np.array([0.16, 0.2, 0.26])
WINDOW_COLOR = np.array([0.2, 0.25, 0.32])
TERRAIN_CLS, OTHER_CLS, SIDEWALK_CLS, ROAD_CLS, PARK_CLS, MARK_CLS = (
    cid("terrain"), cid("other-ground"), cid("sidewalk"), cid("road"), cid("parking"), cid("lane-marking"))


def _hash(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Integer lattice hash -> float in [0, 1)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = h.astype(np.uint64) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    h = (h * np.uint64(0x2C1B3C6D)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(12)
    h = (h * np.uint64(0x297A2D39)) & np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(15)
    return h.astype(np.float64) / 4294967296.0


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, salt: int = 0) -> np.ndarray:
    """Smooth noise in [-1, 1] with feature size `scale` metres."""
    gx, gy = x / scale, y / scale
    ix, iy = np.floor(gx), np.floor(gy)
    fx, fy = gx - ix, gy - iy
    fx, fy = fx * fx * (3 - 2 * fx), fy * fy * (3 - 2 * fy)
    v00, v10 = _hash(ix, iy, salt), _hash(ix + 1, iy, salt)
    v01, v11 = _hash(ix, iy + 1, salt), _hash(ix + 1, iy + 1, salt)
    v = (v00 * (1 - fx) + v10 * fx) * (1 - fy) + (v01 * (1 - fx) + v11 * fx) * fy
    return 2 * v - 1


def window_mask(prims: Prims, pid: np.ndarray, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """True where a facade point lies in a window (grid of windows per storey on vertical faces)."""
    out = np.zeros(len(pid), bool)
    fac = np.nonzero(prims.mat[pid] == MAT_FACADE)[0]
    if not len(fac):
        return out
    p = local_point(prims, pid[fac], points[fac])
    half = prims.size[pid[fac]]
    z = p[:, 2] + half[:, 2]  # height above the primitive's bottom
    n = normals[fac]
    vertical = np.abs(n[:, 2]) < 0.5
    yaw = prims.yaw[pid[fac]]
    # horizontal coordinate along the face: local y on x faces, local x on y faces
    nx_local = np.abs(np.cos(yaw) * n[:, 0] + np.sin(yaw) * n[:, 1])
    h = np.where(nx_local > 0.7, p[:, 1], p[:, 0])
    inst = prims.inst[pid[fac]]
    pitch = 2.4 + 1.2 * _hash(inst, inst * 7 + 1, 3)  # window spacing per building
    storey = 3.0
    fh = np.mod(h, pitch) / pitch
    fz = np.mod(z - 0.3, storey) / storey
    win = (fh > 0.25) & (fh < 0.75) & (fz > 0.3) & (fz < 0.8) & (z > 3.3)
    shop = (z > 0.6) & (z < 2.6) & (np.mod(h, 6.0) < 4.2) & (_hash(inst, inst, 9) < 0.5)
    out[fac] = vertical & (win | shop)
    return out


def ground_texture(cls: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Multiplicative texture (n,) around 1 for ground points."""
    n1 = value_noise(x, y, 0.7, 1)
    n2 = value_noise(x, y, 4.0, 2)
    tex = 1.0 + 0.08 * n1 + 0.06 * n2
    grass = cls == TERRAIN_CLS
    tex = np.where(grass, 1.0 + 0.22 * n1 + 0.18 * n2, tex)
    other = cls == OTHER_CLS
    tex = np.where(other, 1.0 + 0.18 * value_noise(x, y, 0.25, 3), tex)
    side = cls == SIDEWALK_CLS
    joints = (np.mod(x, 0.6) < 0.03) | (np.mod(y, 0.6) < 0.03)
    tex = np.where(side & joints, tex * 0.8, tex)
    return tex


def ground_albedo(cls: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    lo, hi = ALBEDO[cls, 0], ALBEDO[cls, 1]
    mid = (lo + hi) / 2
    return mid + (hi - lo) / 2 * value_noise(x, y, 2.5, 5) * 0.9


def prim_surface(prims: Prims, pid: np.ndarray, points: np.ndarray, normals: np.ndarray, want_color: bool = True):
    """Per hit on a primitive: albedo (n,), colour (n, 3) (zeros unless want_color), glass / window (n,) bool
    (weak LiDAR returns), foliage (n,) bool."""
    albedo = prims.albedo[pid].astype(np.float64)
    color = prims.color[pid].astype(np.float64)
    mat = prims.mat[pid]
    side = np.abs(normals[:, 2]) < 0.5
    glass = (mat == MAT_GLASS) & side
    albedo = np.where(glass, 0.04, albedo)
    color = np.where(glass[:, None], GLASS_COLOR, color)
    win = window_mask(prims, pid, points, normals)
    albedo = np.where(win, 0.06, albedo)
    color = np.where(win[:, None], WINDOW_COLOR, color)
    retro = mat == MAT_RETRO
    if retro.any():
        yaw = prims.yaw[pid]
        front = (np.cos(yaw) * normals[:, 0] + np.sin(yaw) * normals[:, 1]) > 0.5
        back = retro & ~front
        albedo = np.where(back, 0.3, albedo)
        color = np.where(back[:, None], np.array([0.55, 0.55, 0.57]), color)
    foliage = mat == MAT_FOLIAGE
    if want_color and foliage.any():
        nz = value_noise(points[:, 0] * 3 + points[:, 2], points[:, 1] * 3 - points[:, 2], 0.5, 7)
        color = np.where(foliage[:, None], color * (1 + 0.25 * nz)[:, None], color)
    return albedo, np.clip(color, 0, 1) if want_color else color, glass | win, foliage
