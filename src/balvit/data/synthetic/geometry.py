"""Geometric primitives of the synthetic world and vectorised ray intersection.

Three primitive kinds describe every object: boxes rotated about the vertical axis (yaw), vertical
cylinders and ellipsoids rotated about the vertical axis. Rays are (origin, direction) with one shared
origin per sensor; directions need not be unit length (the ray parameter t is then in units of the
direction's length, e.g. camera depth for pinhole rays with direction z = 1).

`intersect` works on *pairs* (ray, primitive) produced by the broad phase (raycast.py): all pairs of one
kind are evaluated at once with numpy (slab test for boxes, quadratics for cylinders and ellipsoids).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOX, CYL, ELL = 0, 1, 2

# material flags
MAT_PLAIN, MAT_GLASS, MAT_RETRO, MAT_FACADE, MAT_FOLIAGE, MAT_RUBBER, MAT_SKIN = 0, 1, 2, 3, 4, 5, 6


@dataclass
class Prims:
    """Struct of arrays of M primitives (world frame unless stated otherwise)."""

    kind: np.ndarray  # (M,) int8: BOX, CYL, ELL
    center: np.ndarray  # (M, 3) float64
    size: np.ndarray  # (M, 3) float64: box half extents / cyl (r, r, half height) / ellipsoid radii
    yaw: np.ndarray  # (M,) float64, rotation about +z
    cls: np.ndarray  # (M,) int16 world class id (classes.py)
    inst: np.ndarray  # (M,) int32 object id, 0 = none
    albedo: np.ndarray  # (M,) float32 LiDAR reflectivity
    color: np.ndarray  # (M, 3) float32 RGB 0..1
    mat: np.ndarray  # (M,) int8 material flag
    vel: np.ndarray  # (M, 3) float64 m/s (0 for static primitives)

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def moving(self) -> np.ndarray:
        return np.any(self.vel != 0.0, axis=1)

    def at(self, t: float) -> "Prims":
        """The primitives at time t (seconds): centres moved by vel * t."""
        if not len(self) or not np.any(self.vel):
            return self
        return Prims(self.kind, self.center + self.vel * t, self.size, self.yaw, self.cls, self.inst,
                     self.albedo, self.color, self.mat, self.vel)

    def select(self, idx: np.ndarray) -> "Prims":
        return Prims(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def concat(parts: list["Prims"]) -> "Prims":
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_prims()
        return Prims(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """World axis-aligned bounding boxes: lo (M, 3), hi (M, 3)."""
        c, s = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        ex = c * self.size[:, 0] + s * self.size[:, 1]
        ey = s * self.size[:, 0] + c * self.size[:, 1]
        e = np.stack([ex, ey, self.size[:, 2]], axis=1)
        return self.center - e, self.center + e


_FIELDS = ("kind", "center", "size", "yaw", "cls", "inst", "albedo", "color", "mat", "vel")


def empty_prims() -> Prims:
    return Prims(np.zeros(0, np.int8), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, np.int16),
                 np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, 3), np.float32),
                 np.zeros(0, np.int8), np.zeros((0, 3)))


class PrimBuffer:
    """Accumulates primitives one object at a time, then freezes them into `Prims`."""

    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def add(self, kind: int, center, size, yaw: float, cls: int, inst: int, albedo: float, color, mat: int,
            vel=(0.0, 0.0, 0.0)) -> None:
        self.rows.append((kind, tuple(center), tuple(size), yaw, cls, inst, albedo, tuple(color), mat, tuple(vel)))

    def freeze(self) -> Prims:
        if not self.rows:
            return empty_prims()
        cols = list(zip(*self.rows))
        return Prims(
            np.array(cols[0], np.int8), np.array(cols[1], np.float64), np.array(cols[2], np.float64),
            np.array(cols[3], np.float64), np.array(cols[4], np.int16), np.array(cols[5], np.int32),
            np.array(cols[6], np.float32), np.array(cols[7], np.float32), np.array(cols[8], np.int8),
            np.array(cols[9], np.float64),
        )


def intersect(kind: int, origin: np.ndarray, d: np.ndarray, center: np.ndarray, size: np.ndarray, yaw: np.ndarray,
              eps: float = 1e-6) -> np.ndarray:
    """Ray parameter of the first hit in front of the origin for P (ray, primitive) pairs, inf where missed.

    origin (3,), d (P, 3) directions, center (P, 3), size (P, 3), yaw (P,) of the primitive of each pair.
    A ray starting inside a primitive does not hit it.
    """
    ox = origin[0] - center[:, 0]
    oy = origin[1] - center[:, 1]
    oz = origin[2] - center[:, 2]
    dx, dy, dz = d[:, 0], d[:, 1], d[:, 2]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == CYL:
            return _cylinder(ox, oy, oz, dx, dy, dz, size, eps)
        cy, sy = np.cos(yaw), np.sin(yaw)
        lx, ly = cy * ox + sy * oy, -sy * ox + cy * oy  # origin in the primitive frame
        ldx, ldy = cy * dx + sy * dy, -sy * dx + cy * dy
        if kind == BOX:
            return _box(lx, ly, oz, ldx, ldy, dz, size, eps)
        return _ellipsoid(lx, ly, oz, ldx, ldy, dz, size, eps)


def _box(lx, ly, lz, dx, dy, dz, h, eps):
    """Slab test: t_near = max over axes of the entering t, t_far = min of the leaving t."""
    tnear = np.full(len(lx), -np.inf)
    tfar = np.full(len(lx), np.inf)
    for o, d, e in ((lx, dx, h[:, 0]), (ly, dy, h[:, 1]), (lz, dz, h[:, 2])):
        inv = 1.0 / d
        t1 = (-e - o) * inv
        t2 = (e - o) * inv
        np.maximum(tnear, np.minimum(t1, t2), out=tnear)
        np.minimum(tfar, np.maximum(t1, t2), out=tfar)
    hit = (tnear <= tfar) & (tnear > eps)
    return np.where(hit, tnear, np.inf)


def _cylinder(ox, oy, oz, dx, dy, dz, size, eps):
    """Vertical cylinder: side from the quadratic in x, y; the top cap from the plane z = top."""
    r, hz = size[:, 0], size[:, 2]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    c = ox * ox + oy * oy - r * r
    disc = b * b - a * c
    ts = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    zs = oz + ts * dz
    side = (disc >= 0) & (ts > eps) & (np.abs(zs) <= hz) & (a > 0)
    t = np.where(side, ts, np.inf)
    tc = (hz - oz) / dz
    cx, cyy = ox + tc * dx, oy + tc * dy
    cap = (dz < 0) & (tc > eps) & (cx * cx + cyy * cyy <= r * r)
    return np.where(cap & (tc < t), tc, t)


def _ellipsoid(lx, ly, lz, dx, dy, dz, r, eps):
    """Scale to the unit sphere and solve |o + t d|^2 = 1."""
    ox, oy, oz = lx / r[:, 0], ly / r[:, 1], lz / r[:, 2]
    ex, ey, ez = dx / r[:, 0], dy / r[:, 1], dz / r[:, 2]
    a = ex * ex + ey * ey + ez * ez
    b = ox * ex + oy * ey + oz * ez
    c = ox * ox + oy * oy + oz * oz - 1.0
    disc = b * b - a * c
    t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    hit = (disc >= 0) & (t > eps)
    return np.where(hit, t, np.inf)


def local_point(prims: Prims, idx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """World points (n, 3) on primitives idx (n,) -> coordinates in each primitive's frame (n, 3)."""
    c = prims.center[idx]
    yaw = prims.yaw[idx]
    cy, sy = np.cos(yaw), np.sin(yaw)
    px, py = points[:, 0] - c[:, 0], points[:, 1] - c[:, 1]
    return np.stack([cy * px + sy * py, -sy * px + cy * py, points[:, 2] - c[:, 2]], axis=1)


def normals(prims: Prims, idx: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Outward unit surface normals (n, 3) at world points lying on primitives idx (n,)."""
    n_local = np.zeros((len(idx), 3))
    if not len(idx):
        return n_local
    p = local_point(prims, idx, points)
    size = prims.size[idx]
    kind = prims.kind[idx]
    # boxes: the face whose slab the point is closest to leaving
    q = np.abs(p) / size
    axis = np.argmax(q, axis=1)
    box_n = np.zeros_like(p)
    rows = np.arange(len(idx))
    box_n[rows, axis] = np.sign(p[rows, axis])
    # cylinders: top cap or radial
    rho = np.hypot(p[:, 0], p[:, 1])
    on_cap = (size[:, 2] - p[:, 2] < 1e-3 * np.maximum(size[:, 2], 1.0)) & (rho < size[:, 0] * 0.999)
    cyl_n = np.where(on_cap[:, None], np.array([0.0, 0.0, 1.0]),
                     np.stack([p[:, 0], p[:, 1], np.zeros(len(p))], axis=1) / np.maximum(rho, 1e-9)[:, None])
    # ellipsoids: gradient of |p / r|^2
    ell_n = p / (size * size)
    n_local = np.where((kind == BOX)[:, None], box_n, np.where((kind == CYL)[:, None], cyl_n, ell_n))
    yaw = prims.yaw[idx]
    cy, sy = np.cos(yaw), np.sin(yaw)
    n = np.stack([cy * n_local[:, 0] - sy * n_local[:, 1], sy * n_local[:, 0] + cy * n_local[:, 1], n_local[:, 2]], 1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return n
