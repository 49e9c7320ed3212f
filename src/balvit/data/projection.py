"""Projections of a LiDAR scan to 2D grids, each point keeping the index of its cell.

- Range view: spherical projection (as in RangeNet++, Milioto et al. IROS 2019) of every point to
  (row, col) of an H x W image covering the sensor's vertical field of view; row 0 is the top beam,
  column W/2 looks along +x. The pixel keeps the *closest* point; points outside the field of view
  are clamped to the first/last row, so every point has a pixel and can be read back.
- Polar BEV: (radius bin, azimuth bin) over min_radius..max_radius (PolarNet, Zhang et al. CVPR
  2020); points beyond max_radius fall into the outermost ring.
- Cartesian BEV: (i, j) cells of a regular grid over an x/y extent, clamped at the borders.

All functions are vectorised numpy and run in data-loader workers.
"""

from __future__ import annotations

import numpy as np

RV_CHANNELS = ("range", "x", "y", "z", "intensity", "mask")


def spherical_coords(points: np.ndarray, height: int, width: int, fov_up: float, fov_down: float):
    """(N, >=3) points -> depth (N,), row (N,) int64, col (N,) int64 (clamped into the image).

    yaw = atan2(y, x) maps to col = (0.5 - yaw / 2 pi) * W; pitch = atan2(z, hypot(x, y)) maps to
    row = (fov_up - pitch) / (fov_up - fov_down) * H (floored, then clamped).
    """
    pts = points[:, :3].astype(np.float32, copy=False)
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    r2 = x * x + y * y
    depth = np.sqrt(r2 + z * z)
    up, down = np.deg2rad(fov_up), np.deg2rad(fov_down)
    yaw = np.arctan2(y, x)
    pitch = np.arctan2(z, np.sqrt(r2))
    # both values are clamped to >= 0 below, so truncation (astype) equals floor here
    col = ((np.float32(0.5) - yaw * np.float32(0.5 / np.pi)) * np.float32(width)).astype(np.int64)
    row = ((np.float32(up) - pitch) * np.float32(height / (up - down))).astype(np.int64)
    np.clip(col, 0, width - 1, out=col)
    np.clip(row, 0, height - 1, out=row)
    return depth, row, col


def closest_per_cell(cell: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Index of the closest point in every occupied cell (one argsort on a combined int64 key).

    cell: (N,) int64 flat cell ids; depth: (N,) float32 >= 0. Returns (M,) point indices, one per
    occupied cell, sorted by cell id. Ties in depth go to the lower point index.
    """
    if len(cell) == 0:
        return np.zeros(0, dtype=np.int64)
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    if depth.min() < 0:
        raise ValueError("closest_per_cell needs non-negative depths")
    # for non-negative float32 the IEEE bit pattern orders like the value
    key = (cell.astype(np.int64, copy=False) << 32) | depth.view(np.uint32).astype(np.int64)
    order = np.argsort(key, kind="stable")
    sorted_cell = cell[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_cell[1:] != sorted_cell[:-1]
    return order[first]


def range_image(points: np.ndarray, height: int, width: int, fov_up: float, fov_down: float):
    """Project a scan to a range image.

    points: (N, 4) x, y, z, intensity.
    Returns image (6, H, W) float32 (range, x, y, z, intensity, mask; zeros where empty),
    rc (N, 2) int64 (row, col) of every point, index (H, W) int64 (the point shown, -1 if empty).
    """
    depth, row, col = spherical_coords(points, height, width, fov_up, fov_down)
    flat = row * width + col
    winner = closest_per_cell(flat, depth)
    n = len(points)
    # per-point channels with one extra all-zero column for empty pixels: the image is one gather
    src = np.empty((6, n + 1), dtype=np.float32)
    src[0, :n] = depth
    src[1:5, :n] = points[:, :4].T
    src[5, :n] = 1.0
    src[:, n] = 0.0
    shown = np.full(height * width, n, dtype=np.int64)
    shown[flat[winner]] = winner
    image = np.take(src, shown, axis=1).reshape(6, height, width)  # (6, H, W)
    index = np.where(shown < n, shown, -1).reshape(height, width)
    return image, np.stack([row, col], axis=1), index


def polar_cells(points: np.ndarray, radius_bins: int, azimuth_bins: int, min_radius: float, max_radius: float) -> np.ndarray:
    """(N, >=2) points -> (N, 2) int64 (radius bin, azimuth bin); azimuth bin 0 starts at -pi."""
    x = points[:, 0].astype(np.float32, copy=False)
    y = points[:, 1].astype(np.float32, copy=False)
    r = np.sqrt(x * x + y * y)
    theta = np.arctan2(y, x)
    rb = np.floor((r - np.float32(min_radius)) * np.float32(radius_bins / (max_radius - min_radius))).astype(np.int64)
    ab = np.floor((theta + np.float32(np.pi)) * np.float32(azimuth_bins / (2 * np.pi))).astype(np.int64)
    np.clip(rb, 0, radius_bins - 1, out=rb)
    np.clip(ab, 0, azimuth_bins - 1, out=ab)
    return np.stack([rb, ab], axis=1)


def polar_cell_centers(radius_bins: int, azimuth_bins: int, min_radius: float, max_radius: float):
    """Centres of the polar cells: radius (R,) metres and azimuth (A,) radians."""
    dr = (max_radius - min_radius) / radius_bins
    da = 2 * np.pi / azimuth_bins
    radius = min_radius + (np.arange(radius_bins) + 0.5) * dr
    azimuth = -np.pi + (np.arange(azimuth_bins) + 0.5) * da
    return radius.astype(np.float32), azimuth.astype(np.float32)


def cartesian_cells(points: np.ndarray, grid: tuple[int, int], extent: tuple[float, float, float, float],
                    axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """(N, >=3) points -> (N, 2) int64 cells of a grid[0] x grid[1] raster over
    extent = (min_a, max_a, min_b, max_b) of the coordinate axes `axes` (clamped at the borders)."""
    a, b = axes
    lo_a, hi_a, lo_b, hi_b = extent
    ia = np.floor((points[:, a] - lo_a) / (hi_a - lo_a) * grid[0]).astype(np.int64)
    ib = np.floor((points[:, b] - lo_b) / (hi_b - lo_b) * grid[1]).astype(np.int64)
    np.clip(ia, 0, grid[0] - 1, out=ia)
    np.clip(ib, 0, grid[1] - 1, out=ib)
    return np.stack([ia, ib], axis=1)
