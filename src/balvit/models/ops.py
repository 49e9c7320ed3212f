"""Pure-PyTorch point <-> grid operations shared by the models (no compiled extension needed).

- `scatter_max` / `scatter_mean`: per-point features pooled into grid cells with
  `torch.Tensor.scatter_reduce` / `index_add_` (empty cells are 0).
- `gather_grid`: per-point features read back from a (B, C, H, W) map at integer cells.
"""

from __future__ import annotations

import torch


def scatter_max(src: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    """src (N, C), index (N,) in 0..size-1 -> (size, C): max over the points of each cell, 0 if empty."""
    out = src.new_zeros(size, src.shape[1])
    idx = index[:, None].expand(-1, src.shape[1])
    return out.scatter_reduce(0, idx, src, reduce="amax", include_self=False)


def scatter_mean(src: torch.Tensor, index: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """src (N, C), index (N,) -> mean (size, C) (0 where empty) and point counts (size,)."""
    total = src.new_zeros(size, src.shape[1]).index_add_(0, index, src)
    count = torch.zeros(size, dtype=src.dtype, device=src.device).index_add_(
        0, index, torch.ones_like(index, dtype=src.dtype))
    return total / count.clamp_min(1)[:, None], count


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
