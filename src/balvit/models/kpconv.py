"""KPConv point convolution over k nearest neighbours, in pure PyTorch.

Implements the rigid kernel point convolution of "KPConv: Flexible and Deformable Convolution for
Point Clouds" (Thomas, Qi, Deschaud, Marcotegui, Goulette, Guibas; ICCV 2019) as RangeViT (Ando et
al., CVPR 2023) uses it for its 3D refiner: 15 kernel points, the k = 7 nearest neighbours of each
point (the point itself included), linear kernel-point influence. Facts taken from the papers and the
RangeViT release: K = 15, kernel radius 0.6 m, influence extent 1.2 m, k = 7.

For a point x_i with neighbours x_j (j in N_i) carrying features f_j (C_in):

    g(y) = sum_k h(y, x~_k) W_k,   h(y, x~_k) = max(0, 1 - ||y - x~_k|| / sigma)
    f'_i = sum_{j in N_i} g(x_j - x_i) f_j                                       (C_out)

with kernel points x~_k inside a sphere of radius R (one at the centre, the others spread by a
repulsion/attraction energy, as the paper describes) and W_k (C_in, C_out) learned.

Neighbours: the loader's `knn` (data.sampling.neighbors = k - 1) or `balvit.geometry.knn_torch`
(the point itself first, then its k - 1 nearest others).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint


def kernel_points(num: int = 15, radius: float = 0.6, seed: int = 0, iters: int = 400) -> np.ndarray:
    """(num, 3) float32 kernel point positions: the first at the centre, the others placed by
    minimising sum_{a<b} 1 / |p_a - p_b| + sum_a |p_a|^2 (repulsion between points, attraction to
    the centre), then scaled so the farthest lies at 0.9 * radius. Deterministic for a seed."""
    if num < 1:
        raise ValueError(f"kernel_points needs at least 1 point, got {num}")
    if num == 1:
        return np.zeros((1, 3), dtype=np.float32)
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(num, 3))
    p[0] = 0.0
    step = 0.01
    for _ in range(iters):
        diff = p[:, None, :] - p[None, :, :]  # (K, K, 3)
        dist = np.linalg.norm(diff, axis=-1) + np.eye(num)
        repulse = (diff / dist[..., None] ** 3).sum(1)  # -grad of the repulsion energy
        grad = -repulse + 2.0 * p * (num / 4.0)  # grad of the total energy
        grad[0] = 0.0  # the centre point stays at the centre
        p -= step * grad / max(1.0, np.abs(grad).max())
    p *= 0.9 * radius / np.linalg.norm(p, axis=1).max()
    return p.astype(np.float32)


class KPConv(nn.Module):
    """Rigid KPConv: features (N, C_in) at points (N, 3) with neighbours (N, k) -> (N, C_out)."""

    def __init__(self, in_channels: int, out_channels: int, num_kernel_points: int = 15, radius: float = 0.6,
                 extent: float = 1.2, chunk: int = 32768):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.radius, self.extent, self.chunk = float(radius), float(extent), int(chunk)
        # kernel point positions (K, 3): stored in checkpoints, so that converted official weights keep theirs
        self.register_buffer("kernel", torch.from_numpy(kernel_points(num_kernel_points, radius)))
        self.weight = nn.Parameter(torch.empty(num_kernel_points, in_channels, out_channels))
        bound = 1.0 / math.sqrt(in_channels)  # kaiming-uniform-like, per kernel point
        nn.init.uniform_(self.weight, -bound, bound)

    def influence(self, rel: torch.Tensor) -> torch.Tensor:
        """rel (n, k, 3) neighbour offsets -> (n, k, K) linear influence of every kernel point."""
        d = torch.linalg.vector_norm(rel[:, :, None, :] - self.kernel.to(rel.dtype), dim=-1)
        return (1.0 - d / self.extent).clamp_min(0.0)

    def _block(self, q_xyz: torch.Tensor, nb_xyz: torch.Tensor, nb_feat: torch.Tensor) -> torch.Tensor:
        h = self.influence(nb_xyz - q_xyz[:, None, :])  # (n, k, K)
        weighted = torch.einsum("njk,njc->nkc", h, nb_feat)  # (n, K, C_in)
        kdim = self.weight.shape[0]
        return weighted.flatten(1) @ self.weight.reshape(kdim * self.in_channels, -1)  # (n, K * C_in) @ (K * C_in, C_out)

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """xyz (N, 3), feats (N, C_in), neighbours (N, k) indices into the same N points -> (N, C_out).

        Points are processed in chunks (with activation checkpointing when training) so that the
        (chunk, K, C_in) intermediate stays small for 100 k-point scans."""
        xyz = xyz[:, :3].to(feats.dtype)
        if torch.onnx.is_in_onnx_export():  # one block: a chunk loop would freeze the traced point count
            return self._block(xyz, xyz[neighbours], feats[neighbours])
        outs = []
        for s in range(0, len(xyz), self.chunk):
            nb = neighbours[s:s + self.chunk]
            args = (xyz[s:s + self.chunk], xyz[nb], feats[nb])
            if torch.is_grad_enabled() and feats.requires_grad and len(xyz) > self.chunk:
                outs.append(checkpoint(self._block, *args, use_reentrant=False))
            else:
                outs.append(self._block(*args))
        if not outs:
            return feats.new_zeros(0, self.out_channels)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_points={self.weight.shape[0]}, "
                f"radius={self.radius}, extent={self.extent}")


def kpconv_reference(xyz: torch.Tensor, feats: torch.Tensor, neighbours: torch.Tensor, kernel: torch.Tensor,
                     weight: torch.Tensor, extent: float) -> torch.Tensor:
    """The formula above as plain Python loops (tests): (N, C_out)."""
    n, k = neighbours.shape
    out = torch.zeros(n, weight.shape[2], dtype=feats.dtype)
    for i in range(n):
        for jj in range(k):
            j = int(neighbours[i, jj])
            y = xyz[j] - xyz[i]
            for m in range(kernel.shape[0]):
                h = max(0.0, 1.0 - float(torch.linalg.vector_norm(y - kernel[m])) / extent)
                if h > 0:
                    out[i] += h * (feats[j] @ weight[m])
    return out
