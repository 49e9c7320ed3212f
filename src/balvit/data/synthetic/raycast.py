"""Vectorised ray casting of a grid of rays against the synthetic world.

A `RayGrid` is an H x W image of rays from one origin: the LiDAR (rows = beams, columns = azimuth
steps) or a pinhole camera (rows, columns = pixels). The broad phase maps each primitive's bounding box
to a rectangular block of rays that may hit it (azimuth / elevation interval for the LiDAR, projected
box for a camera); every (ray, primitive) pair of all blocks is then intersected at once per primitive
kind (geometry.intersect) and the nearest hit per ray kept (a z-buffer kept with `np.minimum.at`).
The ground (world.Ground) is intersected separately and competes by distance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import BOX, CYL, ELL, Prims, intersect
from .geometry import normals as prim_normals
from .materials import COLORS, ground_albedo, ground_texture, prim_surface

PAIR_CHUNK = 2_000_000  # pairs evaluated per numpy batch (bounds memory)


@dataclass
class RayGrid:
    origin: np.ndarray  # (3,) world
    dirs: np.ndarray  # (H, W, 3) world directions
    kind: str  # "spherical" or "pinhole"
    # spherical: beam elevations (H,) descending, azimuth of column c = phase + pi - 2 pi (c + 0.5) / W,
    #            rot (3, 3) world <- sensor
    elev: np.ndarray | None = None
    phase: float = 0.0
    rot: np.ndarray | None = None
    # pinhole: K (3, 3) and cam_from_world (3, 3) = inverse of the world <- camera linear map
    K: np.ndarray | None = None
    cam_from_world: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.dirs.shape[0], self.dirs.shape[1]

    def blocks(self, prims: Prims, t_max: float):
        """Primitives -> ray blocks (pid, r0, r1, c0, c1, near): rows [r0, r1) x columns [c0, c1) hold every
        ray that can hit primitive pid, and no hit on it is nearer than `near` (ray parameter)."""
        if self.kind == "spherical":
            lo, hi = prims.aabb()
            return _spherical_blocks(self, lo, hi, t_max)
        return _pinhole_blocks(self, prims, t_max)


def _spherical_blocks(g: RayGrid, lo, hi, t_max):
    H, W = g.shape
    c = (lo + hi) / 2 - g.origin
    e = (hi - lo) / 2
    cs = c @ g.rot  # sensor-frame centres (M, 3) = rot^T c
    es = e @ np.abs(g.rot)  # conservative sensor-frame half extents
    ax, ay = np.abs(cs[:, 0]), np.abs(cs[:, 1])
    gx, gy = np.maximum(ax - es[:, 0], 0.0), np.maximum(ay - es[:, 1], 0.0)
    rho_min = np.hypot(gx, gy)
    rho_max = np.hypot(ax + es[:, 0], ay + es[:, 1])
    zlo, zhi = cs[:, 2] - es[:, 2], cs[:, 2] + es[:, 2]
    gz = np.maximum(np.maximum(zlo, -zhi), 0.0)
    keep = np.hypot(rho_min, gz) < t_max
    el_hi = np.where(zhi > 0, np.arctan2(zhi, rho_min), np.arctan2(zhi, rho_max))
    el_lo = np.where(zlo < 0, np.arctan2(zlo, rho_min), np.arctan2(zlo, rho_max))
    neg = -g.elev  # ascending
    r0 = np.searchsorted(neg, -el_hi - 1e-4, side="left")
    r1 = np.searchsorted(neg, -el_lo + 1e-4, side="right")
    # azimuth interval from the four footprint corners (exact for a convex footprint not around the origin)
    inside = (gx == 0) & (gy == 0)
    phi_c = np.arctan2(cs[:, 1], cs[:, 0])
    rel = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            phi = np.arctan2(cs[:, 1] + sy * es[:, 1], cs[:, 0] + sx * es[:, 0])
            rel.append(np.angle(np.exp(1j * (phi - phi_c))))
    rel = np.stack(rel, 1)
    phi_lo, phi_hi = phi_c + rel.min(1), phi_c + rel.max(1)
    scale = W / (2 * np.pi)
    c_lo = np.floor((g.phase + np.pi - phi_hi) * scale - 0.5).astype(np.int64) - 1
    c_hi = np.ceil((g.phase + np.pi - phi_lo) * scale - 0.5).astype(np.int64) + 2
    shift = np.floor_divide(c_lo, W) * W
    c_lo, c_hi = c_lo - shift, c_hi - shift
    full = inside | (c_hi - c_lo >= W)
    c_lo = np.where(full, 0, c_lo)
    c_hi = np.where(full, W, c_hi)
    keep &= r1 > r0
    near = np.hypot(rho_min, gz)
    pid = np.nonzero(keep)[0]
    r0, r1, c_lo, c_hi = r0[pid], r1[pid], c_lo[pid], c_hi[pid]
    wrap = c_hi > W
    # split wrapped intervals into [c_lo, W) and [0, c_hi - W)
    pid_all = np.concatenate([pid, pid[wrap]])
    r0_all = np.concatenate([r0, r0[wrap]])
    r1_all = np.concatenate([r1, r1[wrap]])
    c0_all = np.concatenate([c_lo, np.zeros(int(wrap.sum()), np.int64)])
    c1_all = np.concatenate([np.minimum(c_hi, W), c_hi[wrap] - W])
    return pid_all, r0_all, r1_all, c0_all, c1_all, near[pid_all]


def _pinhole_blocks(g: RayGrid, prims: Prims, t_max: float):
    """Pixel blocks from the projected primitive: corners of the oriented box (boxes, cylinders) or the exact
    image-space bounds of the projected ellipsoid (dual conic); primitives crossing the image plane get the
    whole image, primitives behind the camera or beyond t_max (depth) none."""
    H, W = g.shape
    M = len(prims)
    B = g.K @ g.cam_from_world  # world direction -> homogeneous pixel
    d = prims.center - g.origin  # (M, 3)
    cy, sy = np.cos(prims.yaw), np.sin(prims.yaw)
    # corners of the (oriented) box around every primitive
    corners = []
    for i in range(8):
        ex = prims.size[:, 0] * (1 if i & 1 else -1)
        ey = prims.size[:, 1] * (1 if i & 2 else -1)
        ez = prims.size[:, 2] * (1 if i & 4 else -1)
        corners.append(np.stack([d[:, 0] + cy * ex - sy * ey, d[:, 1] + sy * ex + cy * ey, d[:, 2] + ez], 1))
    pc = np.stack(corners, 1) @ B.T  # (M, 8, 3) homogeneous pixels, last = depth
    zn = 1e-3
    z = pc[..., 2]
    front = z > zn
    zs = np.where(front, z, 1.0)
    u, v = pc[..., 0] / zs, pc[..., 1] / zs
    umin, umax = np.where(front, u, np.inf).min(1), np.where(front, u, -np.inf).max(1)
    vmin, vmax = np.where(front, v, np.inf).min(1), np.where(front, v, -np.inf).max(1)
    # boxes crossing the image plane: add the points where their edges cross the plane depth = zn
    for a in range(8):
        for bit in (1, 2, 4):
            if a & bit:
                continue
            b = a | bit
            za, zb = z[:, a], z[:, b]
            cross = (za - zn) * (zb - zn) < 0
            if not cross.any():
                continue
            t = (zn - za) / np.where(cross, zb - za, 1.0)
            q = pc[:, a] + t[:, None] * (pc[:, b] - pc[:, a])
            qu, qv = np.clip(q[:, 0] / zn, -1e7, 1e7), np.clip(q[:, 1] / zn, -1e7, 1e7)
            umin = np.where(cross, np.minimum(umin, qu), umin)
            umax = np.where(cross, np.maximum(umax, qu), umax)
            vmin = np.where(cross, np.minimum(vmin, qv), vmin)
            vmax = np.where(cross, np.maximum(vmax, qv), vmax)
    all_front = front.any(1)
    near = np.where(front, z, np.inf).min(1)
    near = np.where(front.all(1), near, 0.0)
    behind = ~front.any(1)
    ell = prims.kind == ELL
    if ell.any():
        # dual conic C* = p p^T - S with p = B d, S = B A B^T, A = R diag(r^2) R^T
        e = np.nonzero(ell)[0]
        r2 = prims.size[e] ** 2
        A = np.zeros((len(e), 3, 3))
        A[:, 0, 0] = cy[e] ** 2 * r2[:, 0] + sy[e] ** 2 * r2[:, 1]
        A[:, 1, 1] = sy[e] ** 2 * r2[:, 0] + cy[e] ** 2 * r2[:, 1]
        A[:, 0, 1] = A[:, 1, 0] = cy[e] * sy[e] * (r2[:, 0] - r2[:, 1])
        A[:, 2, 2] = r2[:, 2]
        S = B @ A @ B.T
        p = d[e] @ B.T
        C = p[:, :, None] * p[:, None, :] - S
        ok = C[:, 2, 2] > 1e-9  # the ellipsoid lies entirely in front of the camera plane
        c22 = np.where(ok, C[:, 2, 2], 1.0)
        du = np.sqrt(np.maximum(C[:, 0, 2] ** 2 - C[:, 0, 0] * C[:, 2, 2], 0.0))
        dv = np.sqrt(np.maximum(C[:, 1, 2] ** 2 - C[:, 1, 1] * C[:, 2, 2], 0.0))
        umin[e] = np.where(ok, (C[:, 0, 2] - du) / c22, umin[e])
        umax[e] = np.where(ok, (C[:, 0, 2] + du) / c22, umax[e])
        vmin[e] = np.where(ok, (C[:, 1, 2] - dv) / c22, vmin[e])
        vmax[e] = np.where(ok, (C[:, 1, 2] + dv) / c22, vmax[e])
        depth_c = p[:, 2]
        ext = np.sqrt(np.maximum(S[:, 2, 2], 0.0))
        near[e] = np.maximum(depth_c - ext, 0.0)
        behind[e] = depth_c + ext <= zn
    c0 = np.where(all_front, np.floor(np.clip(umin, -1, W + 1)), 0).astype(np.int64)
    c1 = np.where(all_front, np.ceil(np.clip(umax, -1, W + 1)) + 1, W).astype(np.int64)
    r0 = np.where(all_front, np.floor(np.clip(vmin, -1, H + 1)), 0).astype(np.int64)
    r1 = np.where(all_front, np.ceil(np.clip(vmax, -1, H + 1)) + 1, H).astype(np.int64)
    c0, r0 = np.clip(c0, 0, W), np.clip(r0, 0, H)
    c1, r1 = np.clip(c1, 0, W), np.clip(r1, 0, H)
    keep = ~behind & (c1 > c0) & (r1 > r0) & (near < t_max)
    pid = np.nonzero(keep)[0] if M else np.zeros(0, np.int64)
    return pid, r0[pid], r1[pid], c0[pid], c1[pid], np.maximum(near[pid], 0.0)


def cast_prims(grid: RayGrid, prims: Prims, t_max: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest primitive hit of every ray: t (H*W,) float64 (inf = none), pid (H*W,) int64 (-1 = none).

    Blocks are processed nearest first in rounds; from the second round on, the part of a block that lies in
    a 16 x 16 tile where every ray already hit something nearer than the primitive can get is skipped
    (occlusion culling)."""
    H, W = grid.shape
    n_rays = H * W
    tbuf = np.full(n_rays, np.inf)
    ibuf = np.full(n_rays, -1, np.int64)
    if not len(prims):
        return tbuf, ibuf
    pid, r0, r1, c0, c1, near = grid.blocks(prims, t_max)
    order = np.argsort(near, kind="stable")
    pid, r0, r1, c0, c1, near = pid[order], r0[order], r1[order], c0[order], c1[order], near[order]
    cum = np.cumsum((r1 - r0) * (c1 - c0))
    per_round = max(n_rays, 300_000)
    edges = np.searchsorted(cum, np.arange(per_round, cum[-1] + per_round, per_round), side="right") if len(cum) else []
    edges = np.unique(np.concatenate([[0], np.minimum(edges, len(pid)), [len(pid)]]))
    dirs = grid.dirs.reshape(-1, 3)
    for a, b in zip(edges[:-1], edges[1:]):
        blk = (pid[a:b], r0[a:b], r1[a:b], c0[a:b], c1[a:b])
        if a > 0:
            blk = _cull_tiles(tbuf.reshape(H, W), *blk, near[a:b])
        kinds = prims.kind[blk[0]]
        for kind in (BOX, CYL, ELL):
            sel = kinds == kind
            if sel.any():
                _cast_kind(kind, grid, prims, dirs, W, *(x[sel] for x in blk), tbuf, ibuf)
    tbuf[tbuf > t_max] = np.inf
    ibuf[~np.isfinite(tbuf)] = -1
    return tbuf, ibuf


TILE = 16


def _cull_tiles(tb: np.ndarray, pid, r0, r1, c0, c1, near):
    """Split blocks into their TILE x TILE tiles and drop the tiles fully occluded at depth `near`."""
    H, W = tb.shape
    Ht, Wt = -(-H // TILE), -(-W // TILE)
    pad = np.full((Ht * TILE, Wt * TILE), -np.inf)
    pad[:H, :W] = tb
    tmax = pad.reshape(Ht, TILE, Wt, TILE).max(axis=(1, 3))
    tr0, tr1 = r0 // TILE, (r1 - 1) // TILE + 1
    tc0, tc1 = c0 // TILE, (c1 - 1) // TILE + 1
    wt = tc1 - tc0
    n = (tr1 - tr0) * wt
    blk = np.repeat(np.arange(len(pid)), n)
    k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    tr = tr0[blk] + k // wt[blk]
    tc = tc0[blk] + k % wt[blk]
    keep = tmax[tr, tc] > near[blk]
    blk, tr, tc = blk[keep], tr[keep], tc[keep]
    return (pid[blk], np.maximum(r0[blk], tr * TILE), np.minimum(r1[blk], (tr + 1) * TILE),
            np.maximum(c0[blk], tc * TILE), np.minimum(c1[blk], (tc + 1) * TILE))


def _cast_kind(kind, grid, prims, dirs, W, pid, r0, r1, c0, c1, tbuf, ibuf) -> None:
    w = c1 - c0
    sizes = (r1 - r0) * w
    ends = np.cumsum(sizes)
    start = 0
    while start < len(pid):
        # blocks [start, stop) hold at most PAIR_CHUNK pairs (a single larger block goes alone)
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + PAIR_CHUNK, side="right")), start + 1)
        sl = slice(start, stop)
        n = sizes[sl]
        P = int(n.sum())
        blk = np.repeat(np.arange(stop - start), n)
        k = np.arange(P) - np.repeat(np.cumsum(n) - n, n)
        wb = w[sl][blk]
        rows = r0[sl][blk] + k // wb
        cols = c0[sl][blk] + k % wb
        ray = rows * W + cols
        pp = pid[sl][blk]
        t = intersect(kind, grid.origin, dirs[ray], prims.center[pp], prims.size[pp], prims.yaw[pp])
        hit = np.isfinite(t)
        ray, t, pp = ray[hit], t[hit], pp[hit]
        np.minimum.at(tbuf, ray, t)
        win = t <= tbuf[ray]
        ibuf[ray[win]] = pp[win]
        start = stop


@dataclass
class Trace:
    """Per-ray result of `trace` (all arrays (N,) or (N, 3) over the H*W rays, row-major)."""

    t: np.ndarray  # ray parameter of the hit (inf = none)
    hit: np.ndarray  # bool
    cls: np.ndarray  # int16 world class, -1 = none
    inst: np.ndarray  # int32 object id (0 = none / ground)
    moving: np.ndarray  # bool
    normal: np.ndarray  # (N, 3)
    albedo: np.ndarray  # LiDAR reflectivity
    color: np.ndarray  # (N, 3) RGB 0..1 (camera base colour incl. texture)
    lowret: np.ndarray  # glass / window: weak LiDAR returns
    foliage: np.ndarray  # leaves: LiDAR rays penetrate a little
    ground: np.ndarray  # bool: hit the ground


def trace(grid: RayGrid, prims: Prims, ground, t_max: float, color: bool = True, albedo: bool = True) -> Trace:
    """Cast all rays of the grid against primitives and ground; describe the surfaces hit (camera colour and
    LiDAR albedo only when asked for)."""
    H, W = grid.shape
    N = H * W
    dirs = grid.dirs.reshape(-1, 3)
    t_p, pid = cast_prims(grid, prims, t_max)
    t_g, c_g = ground.intersect(grid.origin, dirs, np.minimum(t_p, t_max))
    is_g = t_g < t_p
    t = np.where(is_g, t_g, t_p)
    hit = np.isfinite(t) & (t <= t_max)
    cls = np.full(N, -1, np.int16)
    inst = np.zeros(N, np.int32)
    moving = np.zeros(N, bool)
    normal = np.zeros((N, 3))
    albedo_on = albedo
    alb = np.zeros(N)
    rgb = np.zeros((N, 3))
    lowret = np.zeros(N, bool)
    foliage = np.zeros(N, bool)
    gi = np.nonzero(hit & is_g)[0]
    if len(gi):
        pts = grid.origin + t[gi, None] * dirs[gi]
        gc = ground.paint(pts[:, 0], pts[:, 1], c_g[gi])
        cls[gi] = gc
        normal[gi] = (0.0, 0.0, 1.0)
        if albedo_on:
            alb[gi] = ground_albedo(gc, pts[:, 0], pts[:, 1])
        if color:
            rgb[gi] = COLORS[gc] * ground_texture(gc, pts[:, 0], pts[:, 1])[:, None]
    pi = np.nonzero(hit & ~is_g)[0]
    if len(pi):
        pts = grid.origin + t[pi, None] * dirs[pi]
        ids = pid[pi]
        nrm = prim_normals(prims, ids, pts)
        cls[pi] = prims.cls[ids]
        inst[pi] = prims.inst[ids]
        moving[pi] = np.any(prims.vel[ids] != 0, axis=1)
        normal[pi] = nrm
        a, c, lr, fo = prim_surface(prims, ids, pts, nrm, color)
        alb[pi], rgb[pi], lowret[pi], foliage[pi] = a, c, lr, fo
    return Trace(t, hit, cls, inst, moving, normal, alb, rgb, lowret, foliage, is_g & hit)
