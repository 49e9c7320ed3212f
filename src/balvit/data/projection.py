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
    """(N, >=3) points -> depth (N,), row (N,) int64, col (N,) int64 (clamped into the image)."""
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    depth = np.sqrt(x * x + y * y + z * z)
    up, down = np.deg2rad(fov_up), np.deg2rad(fov_down)
    yaw = -np.arctan2(y, x)  # (-pi, pi], 0 straight ahead
    with np.errstate(invalid="ignore", divide="ignore"):
        pitch = np.where(depth > 0, np.arcsin(np.clip(z / np.where(depth > 0, depth, 1), -1, 1)), 0.0)
    col = np.floor(0.5 * (yaw / np.pi + 1.0) * width).astype(np.int64)
    row = np.floor((1.0 - (pitch - down) / (up - down)) * height).astype(np.int64)
    np.clip(col, 0, width - 1, out=col)
    np.clip(row, 0, height - 1, out=row)
    return depth.astype(np.float32), row, col


def closest_per_cell(cell: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Index of the closest point in every occupied cell (one argsort on a combined int64 key).

    cell: (N,) int64 flat cell ids; depth: (N,) float32 >= 0. Returns (M,) point indices, one per
    occupied cell, sorted by cell id. Ties in depth go to the lower point index.
    """
    if len(cell) == 0:
        return np.zeros(0, dtype=np.int64)
    # for non-negative float32 the IEEE bit pattern orders like the value
    key = (cell.astype(np.int64) << 32) | np.abs(depth).astype(np.float32).view(np.uint32).astype(np.int64)
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
    image = np.zeros((6, height * width), dtype=np.float32)
    pix = flat[winner]
    image[0, pix] = depth[winner]
    image[1:5, pix] = points[winner, :4].T
    image[5, pix] = 1.0
    index = np.full(height * width, -1, dtype=np.int64)
    index[pix] = winner
    rc = np.stack([row, col], axis=1)
    return image.reshape(6, height, width), rc, index.reshape(height, width)


def polar_cells(points: np.ndarray, radius_bins: int, azimuth_bins: int, min_radius: float, max_radius: float) -> np.ndarray:
    """(N, >=2) points -> (N, 2) int64 (radius bin, azimuth bin); azimuth bin 0 starts at -pi."""
    r = np.hypot(points[:, 0], points[:, 1])
    theta = np.arctan2(points[:, 1], points[:, 0])
    rb = np.floor((r - min_radius) / (max_radius - min_radius) * radius_bins).astype(np.int64)
    ab = np.floor((theta + np.pi) / (2 * np.pi) * azimuth_bins).astype(np.int64)
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
