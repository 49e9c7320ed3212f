"""Point subsets and neighbourhoods for point-based models, computed once in the loader workers.

The preprocessing of WaffleIron (Puy et al., ICCV 2023) and ScaLR (Puy et al., CVPR 2024), written
for this toolkit's sample dict:

- voxel down-sampling: one point per `voxel_size` cube (0.1 m in both papers), a random one in
  training, the first one (in scan order) in evaluation;
- a cap on the points of a training scan (20 000 in both papers): a random subset, or, as the
  official code does (valeoai/WaffleIron utils/transforms.py LimitNumPoints(random=True), also
  ScaLR's), the points nearest to a randomly drawn point of the scan (a ball-shaped crop);
- k nearest neighbours (k = 16) of every kept point among the kept points, for the neighbourhood
  embedding: `knn` (M, 1 + k), the point itself first (`balvit.geometry.knn`, scipy cKDTree; the
  layout of the official `neighbors_emb`, which the embedding reads from column 1 on);
- nearest-neighbour up-sampling in evaluation: every original point reads the output of its nearest
  kept point, so that metrics and predictions are on all original points.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ..geometry import knn


def voxel_subsample(xyz: np.ndarray, voxel_size: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """Indices (M,) (ascending) of one point per occupied voxel: a random point of each voxel when
    `rng` is given, else the first point of each voxel in scan order.

    The voxel grid starts at the scan's minimum corner, in float32, as the official
    `Voxelize` (valeoai/WaffleIron utils/transforms.py): key = int((p - min(p)) / voxel_size)."""
    n = len(xyz)
    if voxel_size <= 0 or n == 0:
        return np.arange(n, dtype=np.int64)
    p = np.asarray(xyz[:, :3], dtype=np.float32)
    keys = ((p - p.min(0, keepdims=True)) / np.float32(voxel_size)).astype(np.int64)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    _, first = np.unique(keys[order], axis=0, return_index=True)  # first occurrence in `order`
    return np.sort(order[first]).astype(np.int64)


def cap_points(n: int, max_points: int, rng: np.random.Generator, xyz: np.ndarray | None = None) -> np.ndarray:
    """Indices (ascending) of at most `max_points` of n points: drawn without replacement, or, with
    `xyz` (n, >=3), the `max_points` points nearest (3D) to a point drawn uniformly among them."""
    if max_points <= 0 or n <= max_points:
        return np.arange(n, dtype=np.int64)
    if xyz is None:
        return np.sort(rng.choice(n, size=max_points, replace=False)).astype(np.int64)
    pts = np.asarray(xyz[:, :3], dtype=np.float64)
    centre = pts[int(rng.integers(n))]
    dist = np.square(pts - centre).sum(1)
    return np.sort(np.argsort(dist, kind="stable")[:max_points]).astype(np.int64)


def point_subset(xyz: np.ndarray, voxel_size: float, neighbors: int, subsample: bool,
                 inside: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The index tensors of one sample: `sub_index` (M,) kept points, `up_index` (N,) nearest kept
    point of every point, and `knn` (M, 1 + neighbors) (when neighbors > 0): each kept point itself,
    then its `neighbors` nearest kept points (positions in sub_index).

    `subsample=False` (training, where voxelisation already dropped the other points) keeps all.
    `inside` (N,) bool: only these points may be kept (the official crop to the field of view,
    applied after the voxel choice as valeoai/WaffleIron datasets/pc_dataset.py does)."""
    n = len(xyz)
    xyz = np.ascontiguousarray(xyz[:, :3], dtype=np.float64)
    sub = voxel_subsample(xyz, voxel_size) if subsample else np.arange(n, dtype=np.int64)
    if inside is not None:
        sub = sub[inside[sub]]
        if len(sub) == 0:
            raise ValueError("no point inside the model's field of view")
    out = {"sub_index": sub}
    tree = None
    if len(sub) == n:
        out["up_index"] = np.arange(n, dtype=np.int64)
    else:
        tree = cKDTree(xyz[sub])
        _, nearest = tree.query(xyz, k=1)
        out["up_index"] = np.asarray(nearest, dtype=np.int64)
    if neighbors > 0:
        out["knn"] = knn(xyz[sub], neighbors + 1, tree)
    return out
