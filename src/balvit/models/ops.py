"""Pure-PyTorch point <-> grid operations shared by the models (no compiled extension needed).

One function, one contract each:
- `scatter_max` / `scatter_mean`: per-point features (N, C) pooled into cells (size, C) with
  `torch.Tensor.scatter_reduce` / `index_add` (empty cells are 0); `scatter_count` counts the points
  of each cell and `inverse_counts` gives 1 / count once, so that the layers of one WaffleIron plane
  share it (a sum times 1 / count is ~5x faster forward + backward on CPU than scatter_reduce "mean":
  44 ms vs 250 ms for 20 k tokens x 64 channels on 32 k cells).
- `gather_grid`: per-point features read back from a (B, C, H, W) map at integer cells.
- k nearest neighbours: `balvit.geometry.knn_torch` (the loader uses its numpy twin).
"""

from __future__ import annotations

import torch


def scatter_max(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """src (N, C), index (N,) in 0..size-1 -> (size, C): max over the points of each cell, 0 if empty."""
    out = src.new_zeros(size, src.shape[1])
    idx = index[:, None].expand(-1, src.shape[1])
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)


def scatter_count(index: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """index (N,) -> (size,) number of points in each cell (as `dtype`)."""
    return torch.zeros(size, dtype=dtype, device=index.device).index_add_(0, index, torch.ones_like(index, dtype=dtype))


def inverse_counts(index: torch.Tensor, size: int) -> torch.Tensor:
    """(size, 1) float32: 1 / (points in the cell), 1 for empty cells (the `inv_count` of scatter_mean)."""
    return (1.0 / scatter_count(index, size).clamp_min(1.0))[:, None]


def scatter_mean(src: torch.Tensor, index: torch.Tensor, size: int,
                 inv_count: torch.Tensor | None = None) -> torch.Tensor:
    """src (N, C), index (N,) -> (size, C): mean of the points of each cell, 0 where empty.

    The sum (index_add) divided by the count, or times `inv_count` = `inverse_counts(index, size)`
    when given (computed once for many calls on the same cells)."""
    total = src.new_zeros(size, src.shape[1]).index_add_(0, index, src)
    if inv_count is not None:
        return total * inv_count.to(src.dtype)
    return total / scatter_count(index, size, src.dtype).clamp_min(1)[:, None]


def grid_index(batch: torch.Tensor, row: torch.Tensor, col: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Flat index of (batch, row, col) into a (B * H * W) raster."""
    return (batch * height + row) * width + col


def to_grid(values: torch.Tensor, batch_size: int, height: int, width: int) -> torch.Tensor:
    """(B * H * W, C) -> (B, C, H, W)."""
    return values.view(batch_size, height, width, -1).permute(0, 3, 1, 2).contiguous()


def gather_grid(feat: torch.Tensor, batch: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """feat (B, C, H, W), per-point batch/row/col (N,) -> (N, C) (no copy of the whole map)."""
    b, c, h, w = feat.shape
    return feat.reshape(b, c, h * w)[batch, :, row * w + col]
