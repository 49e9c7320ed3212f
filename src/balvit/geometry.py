"""The 2D maps of a LiDAR scan, once: spherical (range view), polar and Cartesian, plus k-NN.

Every map has a numpy form (data-loader workers) and a torch form (models, any device) that compute
the same numbers with the same operations (tests/test_geometry.py holds them against each other):

- Spherical projection (RangeNet++, Milioto et al., IROS 2019): a point at yaw = atan2(y, x) and
  pitch = atan2(z, hypot(x, y)) has the continuous image coordinates

      col = (0.5 - yaw / 2 pi) * W          (column W/2 looks along +x, +y is left of it)
      row = (fov_up - pitch) / (fov_up - fov_down) * H     (row 0 is the top of the field of view)

  and lies in pixel (floor(row), floor(col)), clamped into the image: points outside the vertical
  field of view go to the first / last row, so every point has a pixel and can be read back. A
  pixel (r, c) covers [r, r + 1) x [c, c + 1). `image_to_angles` is the inverse map. Where a scan
  carries the laser ring of every point (nuScenes .pcd.bin, 5th float; ring 0 = lowest beam), the
  row is the ring instead (`ring_rows`): exact, one ring per row.
- Range image: the pixel keeps the *closest* point (`closest_per_cell`); points nearer than
  `min_range` (the ego vehicle's own returns) keep their pixel but never show in it, so they do not
  hide the scene behind them.
- Polar grid (PolarNet, Zhang et al., CVPR 2020): (radius bin, azimuth bin) over
  min_radius..max_radius x -pi..pi; points beyond max_radius fall into the outermost ring.
- Cartesian planes (WaffleIron, Puy et al., ICCV 2023): the plane that drops one axis, a
  H x W grid over the field of view of the two other axes. The arithmetic is the official
  `PCDataset.get_occupied_2d_cells` (valeoai/WaffleIron, datasets/pc_dataset.py): in float64,
  res = (fov_max - fov_min) / grid, cell = int((p - fov_min) / res), so both codes put every point
  into the same cell; points outside the field of view fall into the border cells (the official
  code crops them away beforehand).
- k nearest neighbours (`knn`, `knn_torch`): one contract everywhere: (N, k) int64 indices, the
  point itself first, then its k - 1 nearest other points by increasing distance (the layout of
  scipy's cKDTree query that both official codes use; a duplicate point never displaces the point
  itself from column 0); a scan with fewer than k points repeats its last neighbour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

F32 = np.float32


# ------------------------------------------------------------------------ spherical (range view)


def spherical_coords(points: np.ndarray, height: int, width: int, fov_up: float, fov_down: float):
    """(N, >=3) points -> depth (N,), row (N,), col (N,) float32 continuous image coordinates
    (not clamped; see the module docstring). Angles in degrees."""
    pts = points[:, :3].astype(F32, copy=False)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    r2 = x * x + y * y
    depth = np.sqrt(r2 + z * z)
    row, col = angles_to_image(np.arctan2(z, np.sqrt(r2)), np.arctan2(y, x), height, width, fov_up, fov_down)
    return depth, row, col


def spherical_coords_torch(xyz: torch.Tensor, height: int, width: int, fov_up: float, fov_down: float):
    """Torch twin of `spherical_coords`: (N, >=3) -> depth, row, col (N,) in xyz's dtype."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    r2 = x * x + y * y
    depth = torch.sqrt(r2 + z * z)
    row, col = angles_to_image_torch(torch.atan2(z, torch.sqrt(r2)), torch.atan2(y, x), height, width,
                                     fov_up, fov_down)
    return depth, row, col


def angles_to_image(pitch: np.ndarray, yaw: np.ndarray, height: int, width: int, fov_up: float, fov_down: float):
    """pitch, yaw (radians, float32) -> continuous row, col (float32). fov in degrees."""
    up, down = math.radians(fov_up), math.radians(fov_down)
    col = (F32(0.5) - yaw * F32(0.5 / math.pi)) * F32(width)
    row = (F32(up) - pitch) * F32(height / (up - down))
    return row, col


def angles_to_image_torch(pitch: torch.Tensor, yaw: torch.Tensor, height: int, width: int, fov_up: float,
                          fov_down: float):
    """Torch twin of `angles_to_image`."""
    up, down = math.radians(fov_up), math.radians(fov_down)
    col = (F32(0.5).item() - yaw * F32(0.5 / math.pi).item()) * F32(width).item()
    row = (F32(up).item() - pitch) * F32(height / (up - down)).item()
    return row, col


def image_to_angles(row, col, height: int, width: int, fov_up: float, fov_down: float):
    """Inverse of `angles_to_image` (numpy or torch, elementwise): continuous row, col -> pitch, yaw
    (radians); e.g. the ray through a pixel centre is (row + 0.5, col + 0.5)."""
    return pitch_of_row(row, height, fov_up, fov_down), yaw_of_col(col, width)


def pitch_of_row(row, height: int, fov_up: float, fov_down: float):
    """Continuous row (numpy or torch) -> pitch (radians): fov_up - row / H * (fov_up - fov_down)."""
    up, down = math.radians(fov_up), math.radians(fov_down)
    return F32(up).item() - row * F32((up - down) / height).item()


def yaw_of_col(col, width: int):
    """Continuous column (numpy or torch) -> yaw (radians): (0.5 - col / W) * 2 pi."""
    return (F32(0.5).item() - col * F32(1.0 / width).item()) * F32(2.0 * math.pi).item()


def pixel_of(row: np.ndarray, col: np.ndarray, height: int, width: int) -> np.ndarray:
    """Continuous (row, col) -> (N, 2) int64 pixel (floored, clamped into the image)."""
    # truncation equals floor here: negative values are clamped to 0 anyway
    r = row.astype(np.int64)
    c = col.astype(np.int64)
    np.clip(r, 0, height - 1, out=r)
    np.clip(c, 0, width - 1, out=c)
    return np.stack([r, c], axis=1)


def pixel_of_torch(row: torch.Tensor, col: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Torch twin of `pixel_of`."""
    r = row.long().clamp(0, height - 1)
    c = col.long().clamp(0, width - 1)
    return torch.stack([r, c], dim=1)


def ring_rows(ring: np.ndarray, height: int, source: str = "scan") -> np.ndarray:
    """Laser ring (N,) (0 = lowest beam) -> image row (N,) int64 = height - 1 - ring (row 0 on top).

    A ring outside 0..height-1 raises ValueError naming `source`."""
    ring = np.asarray(ring)
    if len(ring) and (ring.min() < 0 or ring.max() >= height):
        raise ValueError(f"{source}: ring index {int(ring.min())}..{int(ring.max())} does not fit the "
                         f"{height} rows of the range image (set data.range.height to the sensor's ring count, "
                         f"or data.range.rows=fov)")
    return (height - 1 - ring).astype(np.int64)


def closest_per_cell(cell: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Index of the closest point in every occupied cell (one argsort on a combined int64 key).

    cell: (N,) int64 flat cell ids; depth: (N,) float32 >= 0. Returns (M,) point indices, one per
    occupied cell, sorted by cell id. Ties in depth go to the lower point index.
    """
    if len(cell) == 0:
        return np.zeros(0, dtype=np.int64)
    depth = np.ascontiguousarray(depth, dtype=F32)
    if depth.min() < 0:
        raise ValueError("closest_per_cell needs non-negative depths")
    # for non-negative float32 the IEEE bit pattern orders like the value
    key = (cell.astype(np.int64, copy=False) << 32) | depth.view(np.uint32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_cell = cell[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_cell[1:] != sorted_cell[:-1]
    return order[first]


class RangeProjection(NamedTuple):
    image: np.ndarray  # (6, H, W) float32: range, x, y, z, intensity, mask (zeros where empty)
    rc: np.ndarray  # (N, 2) int64 pixel (row, col) of every point
    index: np.ndarray  # (H, W) int64 point shown by each pixel, -1 where empty
    coords: np.ndarray  # (N, 2) float32 continuous (row, col) of every point (floor = rc inside the image)


def range_image(points: np.ndarray, height: int, width: int, fov_up: float, fov_down: float,
                ring: np.ndarray | None = None, min_range: float = 0.0, source: str = "scan") -> RangeProjection:
    """Project a scan (N, 4) x, y, z, intensity to a range image.

    ring (N,) given: the row is `ring_rows(ring)` and the continuous row the centre of that row
    (ring row + 0.5). Points nearer than `min_range` metres keep their pixel (rc, coords) but are
    never shown by it (not in the image, not in `index`)."""
    depth, row, col = spherical_coords(points, height, width, fov_up, fov_down)
    if ring is not None:
        row = ring_rows(ring, height, source).astype(F32) + F32(0.5)
    rc = pixel_of(row, col, height, width)
    flat = rc[:, 0] * width + rc[:, 1]
    if min_range > 0:
        shown_pts = np.flatnonzero(depth >= F32(min_range))
        winner = shown_pts[closest_per_cell(flat[shown_pts], depth[shown_pts])]
    else:
        winner = closest_per_cell(flat, depth)
    n = len(points)
    # per-point channels with one extra all-zero column for empty pixels: the image is one gather
    src = np.empty((6, n + 1), dtype=F32)
    src[0, :n] = depth
    src[1:5, :n] = points[:, :4].T
    src[5, :n] = 1.0
    src[:, n] = 0.0
    shown = np.full(height * width, n, dtype=np.int64)
    shown[flat[winner]] = winner
    image = np.take(src, shown, axis=1).reshape(6, height, width)  # (6, H, W)
    index = np.where(shown < n, shown, -1).reshape(height, width)
    return RangeProjection(image, rc, index, np.stack([row, col], axis=1))


# ------------------------------------------------------------------------------------ polar


def polar_coords(points: np.ndarray):
    """(N, >=2) -> radius (N,), azimuth (N,) in -pi..pi, float32."""
    x = points[:, 0].astype(F32, copy=False)
    y = points[:, 1].astype(F32, copy=False)
    return np.sqrt(x * x + y * y), np.arctan2(y, x)


def polar_coords_torch(xy: torch.Tensor):
    """Torch twin of `polar_coords` (hypot = sqrt(x^2 + y^2), correctly rounded in both)."""
    return torch.hypot(xy[:, 0], xy[:, 1]), torch.atan2(xy[:, 1], xy[:, 0])


def polar_cells(points: np.ndarray, radius_bins: int, azimuth_bins: int, min_radius: float, max_radius: float) -> np.ndarray:
    """(N, >=2) points -> (N, 2) int64 (radius bin, azimuth bin); azimuth bin 0 starts at -pi."""
    r, theta = polar_coords(points)
    rb = np.floor((r - F32(min_radius)) * F32(radius_bins / (max_radius - min_radius))).astype(np.int64)
    ab = np.floor((theta + F32(np.pi)) * F32(azimuth_bins / (2 * np.pi))).astype(np.int64)
    np.clip(rb, 0, radius_bins - 1, out=rb)
    np.clip(ab, 0, azimuth_bins - 1, out=ab)
    return np.stack([rb, ab], axis=1)


def polar_cells_torch(xy: torch.Tensor, radius_bins: int, azimuth_bins: int, min_radius: float,
                      max_radius: float) -> torch.Tensor:
    """Torch twin of `polar_cells` (float32 inputs)."""
    r = torch.sqrt(xy[:, 0] * xy[:, 0] + xy[:, 1] * xy[:, 1])
    theta = torch.atan2(xy[:, 1], xy[:, 0])
    rb = torch.floor((r - F32(min_radius).item()) * F32(radius_bins / (max_radius - min_radius)).item()).long()
    ab = torch.floor((theta + F32(np.pi).item()) * F32(azimuth_bins / (2 * np.pi)).item()).long()
    return torch.stack([rb.clamp(0, radius_bins - 1), ab.clamp(0, azimuth_bins - 1)], dim=1)


def polar_cell_centers(radius_bins: int, azimuth_bins: int, min_radius: float, max_radius: float):
    """Centres of the polar cells, float32: radius (R,) = min + (i + 0.5) * dr metres and azimuth (A,)
    = -pi + (j + 0.5) * da radians, dr = (max - min) / R, da = 2 pi / A."""
    dr = (max_radius - min_radius) / radius_bins
    da = 2 * math.pi / azimuth_bins
    radius = F32(min_radius) + (np.arange(radius_bins, dtype=F32) + F32(0.5)) * F32(dr)
    azimuth = F32(-math.pi) + (np.arange(azimuth_bins, dtype=F32) + F32(0.5)) * F32(da)
    return radius, azimuth


def polar_cell_centers_torch(radius_index: torch.Tensor, azimuth_index: torch.Tensor, radius_bins: int,
                             azimuth_bins: int, min_radius: float, max_radius: float):
    """Torch twin of `polar_cell_centers` at given (integer or float) bin indices: e.g.
    `polar_cell_centers_torch(cells[:, 0], cells[:, 1], ...)` gives every point's cell centre."""
    dr = (max_radius - min_radius) / radius_bins
    da = 2 * math.pi / azimuth_bins
    ri = radius_index.float() if not radius_index.is_floating_point() else radius_index
    ai = azimuth_index.float() if not azimuth_index.is_floating_point() else azimuth_index
    radius = F32(min_radius).item() + (ri + 0.5) * F32(dr).item()
    azimuth = F32(-math.pi).item() + (ai + 0.5) * F32(da).item()
    return radius, azimuth


# -------------------------------------------------------------------------- Cartesian planes


PLANE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}  # dropped axis -> (row axis, column axis)


@dataclass(frozen=True)
class PlaneGrid:
    """One WaffleIron plane: drop `axis` (2: the (x, y) plane, 1: (x, z), 0: (y, z)), a
    shape[0] x shape[1] grid over fov_min..fov_max (metres, (x, y, z)) of the two other axes."""

    axis: int
    shape: tuple[int, int]
    fov_min: tuple[float, float, float]
    fov_max: tuple[float, float, float]

    @property
    def num_cells(self) -> int:
        return self.shape[0] * self.shape[1]

    def _bounds(self):
        dims = PLANE_AXES[self.axis]
        lo = np.array([self.fov_min[d] for d in dims], dtype=np.float64)
        hi = np.array([self.fov_max[d] for d in dims], dtype=np.float64)
        return dims, lo, (hi - lo) / np.array(self.shape, dtype=np.float64)

    def cells(self, xyz: np.ndarray) -> np.ndarray:
        """(N, >=3) -> (N,) int64 flat cell row * W + col (the official float64 arithmetic, clamped)."""
        dims, lo, res = self._bounds()
        q = np.floor((xyz[:, list(dims)].astype(np.float64) - lo) / res).astype(np.int64)
        np.clip(q[:, 0], 0, self.shape[0] - 1, out=q[:, 0])
        np.clip(q[:, 1], 0, self.shape[1] - 1, out=q[:, 1])
        return q[:, 0] * self.shape[1] + q[:, 1]

    def cells_torch(self, xyz: torch.Tensor) -> torch.Tensor:
        """Torch twin of `cells` (computed in float64 like the numpy form)."""
        dims, lo, res = self._bounds()
        p = xyz[:, list(dims)].to(torch.float64)
        q = torch.floor((p - torch.from_numpy(lo).to(p.device)) / torch.from_numpy(res).to(p.device)).long()
        row = q[:, 0].clamp(0, self.shape[0] - 1)
        col = q[:, 1].clamp(0, self.shape[1] - 1)
        return row * self.shape[1] + col


def plane_grids(projections, grids, fov) -> tuple[PlaneGrid, ...]:
    """WaffleIron's config (model.waffleiron projections, grids, fov) -> its planes."""
    lo, hi = (tuple(float(v) for v in fov[0]), tuple(float(v) for v in fov[1]))
    return tuple(PlaneGrid(int(a), (int(g[0]), int(g[1])), lo, hi) for a, g in zip(projections, grids))


# ------------------------------------------------------------------------------------- k-NN


def knn(xyz: np.ndarray, k: int, tree=None) -> np.ndarray:
    """(M, 3) -> (M, k) int64: every point itself, then its k - 1 nearest others (scipy cKDTree;
    see the module docstring for the contract). `tree`: a cKDTree of xyz, if already built."""
    from scipy.spatial import cKDTree

    m = len(xyz)
    if m == 0:
        return np.zeros((0, k), dtype=np.int64)
    tree = tree if tree is not None else cKDTree(np.asarray(xyz, dtype=np.float64))
    kk = min(k, m)
    _, idx = tree.query(xyz, k=kk)
    idx = np.asarray(idx, dtype=np.int64).reshape(m, kk)
    idx = _self_first(idx)
    if kk < k:
        idx = np.concatenate([idx, np.repeat(idx[:, -1:], k - kk, axis=1)], axis=1)
    return idx


def _self_first(idx):
    """Put each row's own index in column 0 (a duplicate point at distance 0 may come first);
    numpy or torch (M, k) -> the same array, modified in place."""
    own = np.arange(len(idx)) if isinstance(idx, np.ndarray) else torch.arange(len(idx), device=idx.device)
    hit = idx == own[:, None]
    if isinstance(idx, np.ndarray):
        pos = hit.argmax(1)
        rows = np.flatnonzero(hit.any(1) & (pos > 0))
    else:
        pos = hit.to(torch.uint8).argmax(1)  # first True
        rows = (hit.any(1) & (pos > 0)).nonzero()[:, 0]
    if len(rows):
        idx[rows, pos[rows]] = idx[rows, 0]
        idx[rows, 0] = rows
    return idx


@torch.no_grad()
def knn_torch(points: torch.Tensor, offsets: torch.Tensor, k: int, backend: str = "auto",
              chunk: int = 2048) -> torch.Tensor:
    """Torch form of `knn` within each scan of a batch: points (N, >=3), offsets (B + 1,) scan
    boundaries -> (N, k) int64 global point indices (the point itself first).

    backend: "kdtree" (scipy, via `knn`), "torch" (chunked cdist + topk, any device) or "auto"
    (kdtree on CPU, torch elsewhere). Both give the same neighbours, ties aside."""
    if backend == "auto":
        backend = "kdtree" if points.device.type == "cpu" else "torch"
    if backend not in ("kdtree", "torch"):
        raise ValueError(f"unknown knn backend {backend!r}")
    xyz = points[:, :3].float()
    out = torch.empty(len(points), k, dtype=torch.long, device=points.device)
    bounds = offsets.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        n = e - s
        if n == 0:
            continue
        if backend == "kdtree":
            idx = torch.from_numpy(knn(xyz[s:e].cpu().numpy().astype(np.float64), k)).to(points.device)
        else:
            p = xyz[s:e]
            kk = min(k, n)
            parts = [torch.cdist(p[c:c + chunk], p).topk(kk, dim=1, largest=False).indices for c in range(0, n, chunk)]
            idx = _self_first(torch.cat(parts))
            if kk < k:
                idx = torch.cat([idx, idx[:, -1:].expand(n, k - kk)], dim=1)
        out[s:e] = idx + s
    return out


def offsets_of(batch: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Sorted per-point scan ids (M,) -> scan boundaries (B + 1,)."""
    counts = torch.bincount(batch, minlength=batch_size)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


# ------------------------------------------------------------------------- loader requests


@dataclass(frozen=True)
class LoaderGeometry:
    """Model-specific per-point maps the data loader adds to every sample, so that the model only
    gathers (`SegModel.loader_geometry(cfg)` says what a model needs; the dataset computes it)."""

    planes: tuple[PlaneGrid, ...] = ()  # WaffleIron: sample["plane_cells"] (M, P), see data/dataset.py
    # the model runs only on points strictly inside this box (metres, ((x, y, z) min, (x, y, z) max),
    # shrunk by 1e-4 as the official Crop of valeoai/WaffleIron utils/transforms.py): training drops the
    # others, evaluation predicts them from their nearest kept point (up_index); None: every point
    crop: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None

    def inside(self, xyz: np.ndarray) -> np.ndarray | None:
        """(N,) bool: points inside `crop` (the official float32 comparisons), or None without a crop."""
        if self.crop is None:
            return None
        lo, hi = self.crop
        keep = np.ones(len(xyz), dtype=bool)
        for d in range(3):
            keep &= (xyz[:, d] > lo[d] + 1e-4) & (xyz[:, d] < hi[d] - 1e-4)
        return keep
