"""Multi-scale deformable attention (Zhu et al., "Deformable DETR: Deformable Transformers for
End-to-End Object Detection", ICLR 2021), in pure PyTorch.

Each query looks at a few (P) learned sampling points around its reference point on each of L
feature levels, per head, and takes a softmax-weighted sum of the bilinearly sampled values:

    out(q, h) = sum_l sum_p  A[q, h, l, p] * V_l,h( ref_q + dp[q, h, l, p] / (w_l, h_l) )

Sampling uses normalised coordinates (x = col / w, y = row / h, pixel centres at (i + 0.5) / size),
bilinear interpolation with zeros outside the map, i.e. `grid_sample(..., align_corners=False)`.
`ms_deform_attn` is the fast path (grid_sample level by level); `ms_deform_attn_naive` is the slow
reference (explicit loops and 4-corner interpolation, no grid_sample) that the tests check it against.
The `ratio` of the value width follows the ViT-Adapter use of this layer (Chen et al., ICLR 2023).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def _check(value: Tensor, shapes: Tensor, level_start: Tensor, locations: Tensor, weights: Tensor) -> list[tuple[int, int]]:
    """Validate the argument shapes; -> per-level (h, w) as python ints."""
    if value.dim() != 4 or locations.dim() != 6 or weights.dim() != 5 or locations.shape[-1] != 2:
        raise ValueError(
            f"expected value (B,S,H,Dh), locations (B,Q,H,L,P,2), weights (B,Q,H,L,P); got "
            f"{tuple(value.shape)}, {tuple(locations.shape)}, {tuple(weights.shape)}"
        )
    sizes = [(int(h), int(w)) for h, w in shapes.tolist()]
    b, s, heads, _ = value.shape
    if sum(h * w for h, w in sizes) != s:
        raise ValueError(f"value has {s} positions but the level shapes {sizes} sum to {sum(h * w for h, w in sizes)}")
    starts = [0]
    for h, w in sizes[:-1]:
        starts.append(starts[-1] + h * w)
    if level_start.tolist() != starts:
        raise ValueError(f"level_start {level_start.tolist()} does not match the level shapes {sizes}")
    if locations.shape[:5] != weights.shape or locations.shape[0] != b or locations.shape[2] != heads:
        raise ValueError(f"locations {tuple(locations.shape)} / weights {tuple(weights.shape)} / value {tuple(value.shape)} disagree")
    if locations.shape[3] != len(sizes):
        raise ValueError(f"locations have {locations.shape[3]} levels, shapes have {len(sizes)}")
    return sizes


def ms_deform_attn(value: Tensor, shapes: Tensor, level_start: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
    """Fast path. value (B, S, H, Dh), shapes (L, 2) (h, w), level_start (L,), locations
    (B, Q, H, L, P, 2) in [0, 1] as (x, y), weights (B, Q, H, L, P) -> (B, Q, H*Dh)."""
    sizes = _check(value, shapes, level_start, locations, weights)
    b, _, heads, dh = value.shape
    q, points = locations.shape[1], locations.shape[4]
    grids = 2.0 * locations - 1.0  # grid_sample coordinates: -1 / +1 are the outer pixel edges
    out = value.new_zeros(b * heads, dh, q)
    for lvl, v in enumerate(value.split([h * w for h, w in sizes], dim=1)):
        h, w = sizes[lvl]
        v = v.permute(0, 2, 3, 1).reshape(b * heads, dh, h, w)  # (B*H, Dh, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * heads, q, points, 2)  # (B*H, Q, P, 2)
        s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # (B*H, Dh, Q, P)
        a = weights[:, :, :, lvl].transpose(1, 2).reshape(b * heads, 1, q, points)  # (B*H, 1, Q, P)
        out = out + (s * a).sum(-1)
    return out.view(b, heads * dh, q).transpose(1, 2).contiguous()


def _bilinear_naive(v: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """v (N, h, w, Dh) sampled at pixel coordinates x, y (N, Q) (pixel centres at integers), zeros
    outside -> (N, Q, Dh). Explicit four-corner interpolation."""
    n, h, w, dh = v.shape
    x0, y0 = torch.floor(x), torch.floor(y)
    out = v.new_zeros(n, x.shape[1], dh)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            wx = (x - x0) if dx else (1 - (x - x0))
            wy = (y - y0) if dy else (1 - (y - y0))
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            flat = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()  # (N, Q)
            corner = torch.gather(v.reshape(n, h * w, dh), 1, flat[..., None].expand(-1, -1, dh))
            out = out + corner * (wx * wy * inside)[..., None]
    return out


def ms_deform_attn_naive(value: Tensor, shapes: Tensor, level_start: Tensor, locations: Tensor, weights: Tensor) -> Tensor:
    """Reference: loops over levels and points, explicit bilinear interpolation (align_corners=False:
    pixel coordinate = normalised * size - 0.5), zeros outside. Same arguments as `ms_deform_attn`."""
    sizes = _check(value, shapes, level_start, locations, weights)
    b, _, heads, dh = value.shape
    q, levels, points = locations.shape[1], locations.shape[3], locations.shape[4]
    out = value.new_zeros(b, heads, q, dh)
    for lvl in range(levels):
        h, w = sizes[lvl]
        start = int(level_start[lvl])
        v = value[:, start:start + h * w].permute(0, 2, 1, 3).reshape(b * heads, h, w, dh)  # (B*H, h, w, Dh)
        for p in range(points):
            loc = locations[:, :, :, lvl, p].permute(0, 2, 1, 3).reshape(b * heads, q, 2)  # (B*H, Q, 2)
            x = loc[..., 0] * w - 0.5
            y = loc[..., 1] * h - 0.5
            sampled = _bilinear_naive(v, x, y).view(b, heads, q, dh)
            a = weights[:, :, :, lvl, p].permute(0, 2, 1)  # (B, H, Q)
            out = out + sampled * a[..., None]
    return out.permute(0, 2, 1, 3).reshape(b, q, heads * dh)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention module (sampling offsets and weights predicted from the query).

    dim: query / output width D; levels L; heads H; points P per head and level; value_dim: width of
    the value input (default D); ratio: the value is projected to int(D * ratio) channels
    (split over the heads) before sampling.
    """

    def __init__(
        self, dim: int, levels: int, heads: int, points: int, value_dim: int | None = None, ratio: float = 1.0
    ) -> None:
        super().__init__()
        inner = int(dim * ratio)
        if inner % heads:
            raise ValueError(f"value width int({dim} * {ratio}) = {inner} is not divisible by {heads} heads")
        self.dim, self.levels, self.heads, self.points, self.inner = dim, levels, heads, points, inner
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(value_dim or dim, inner)
        self.output_proj = nn.Linear(inner, dim)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Deformable DETR initialisation: zero offset weights, offset biases on directional rings (head
        k points along angle 2*pi*k/H, point p at distance p + 1 pixels, the direction scaled so that
        its larger component is 1); uniform attention (zero weights); xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.heads, dtype=torch.float32) * (2.0 * math.pi / self.heads)
        dirs = torch.stack([angles.cos(), angles.sin()], dim=-1)  # (H, 2)
        dirs = dirs / dirs.abs().max(dim=-1, keepdim=True).values
        rings = torch.arange(1, self.points + 1, dtype=torch.float32)  # (P,)
        bias = dirs[:, None, None, :] * rings[None, None, :, None]  # (H, 1, P, 2)
        self.sampling_offsets.bias.copy_(bias.expand(self.heads, self.levels, self.points, 2).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: Tensor,
        reference: Tensor,
        value: Tensor,
        shapes: Tensor,
        level_start: Tensor,
        value_mask: Tensor | None = None,
    ) -> Tensor:
        """query (B, Q, D); reference (B, Q, 2) or (B, Q, L, 2) in [0, 1] as (x, y); value (B, S, Dv)
        with S = sum_l h_l * w_l; value_mask (B, S) True = padding (ignored) -> (B, Q, D).

        locations = reference + offset / (w_l, h_l) (offsets in pixels of each level)."""
        b, q, _ = query.shape
        s = value.shape[1]
        if shapes.shape != (self.levels, 2):
            raise ValueError(f"shapes {tuple(shapes.shape)} != ({self.levels}, 2)")
        v = self.value_proj(value)  # (B, S, inner)
        if value_mask is not None:
            v = v.masked_fill(value_mask[..., None], 0.0)
        v = v.view(b, s, self.heads, self.inner // self.heads)  # (B, S, H, Dh)

        offsets = self.sampling_offsets(query).view(b, q, self.heads, self.levels, self.points, 2)
        weights = self.attention_weights(query).view(b, q, self.heads, self.levels * self.points)
        weights = weights.softmax(-1).view(b, q, self.heads, self.levels, self.points)

        if reference.dim() == 3:  # (B, Q, 2): the same point on every level
            reference = reference[:, :, None, :].expand(b, q, self.levels, 2)
        if reference.shape != (b, q, self.levels, 2):
            raise ValueError(f"reference {tuple(reference.shape)} must be (B, Q, 2) or (B, Q, {self.levels}, 2)")
        normaliser = shapes.flip(-1).to(offsets.dtype)  # (L, 2) as (w, h)
        locations = reference[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        out = ms_deform_attn(v, shapes, level_start, locations, weights)  # (B, Q, inner)
        return self.output_proj(out)


__all__ = ["ms_deform_attn", "ms_deform_attn_naive", "MSDeformAttn"]
