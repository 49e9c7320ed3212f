"""WaffleIron: a point-token backbone that mixes space on 2D planes.

Implements the backbone of "Using a Waffle Iron for Automotive Point Cloud Semantic Segmentation"
(Puy, Boulch, Marlet; ICCV 2023), as used by ScaLR ("Three Pillars improving Vision Foundation
Model Distillation for Lidar", Puy et al., CVPR 2024), in pure PyTorch from the papers' description
and the hyper-parameters of their public configs (no code taken from them):

    point features f = (intensity, x, y, z, radius)                        (M, 5), BN-normalised
    embedding:   e = W_m [W_p f ; max_k MLP(f_nbr_k - f)]                  (M, F), k = 16 neighbours
    for layer l = 1..L  (projection p = projections[l mod P], grid H_p x W_p):
        spatial mix:  t += DropPath(s_l * Gather_p(DW3x3(ReLU(DW3x3(Mean_p(Norm(t)))))))
        channel mix:  t += DropPath(c_l * W_2 ReLU(W_1 Norm(t)))
    head:        logits = Linear(BN(t))  (or Linear(t), head_norm false)    (M, C), up-sampled to all N points

Mean_p averages the tokens of the points falling into each cell of the 2D grid of projection p
(a scatter-mean, empty cells 0) and Gather_p reads each point's cell back; the cells are those of
the official code (`balvit.geometry.PlaneGrid`), computed by the loader (sample["plane_cells"]) or,
for a batch without them, here; DW3x3 is a
depthwise 3 x 3 convolution; s_l, c_l are per-channel layer scales. Tokens of a batch are
concatenated (M_1 + M_2 + ...), so no padding is needed: a cell index includes the scan's batch id.

The head is BatchNorm + linear, initialised to zero (ScaLR's downstream head), so that linear probing
(`freeze_backbone`: only the head trains, the backbone stays in eval mode) and fine-tuning with
layer-wise learning-rate decay (`lr_scales`) start from the same model. `encode(batch)` gives the
backbone tokens of the kept points and the up-sampling index, for tasks that need features
(distillation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..config import not_architecture
from ..errors import ConfigError
from ..geometry import LoaderGeometry, knn_torch, offsets_of, plane_grids
from .base import SegModel
from .ops import inverse_counts, scatter_mean

IN_FEATURES = 5  # intensity, x, y, z, radius


@dataclass
class WaffleIronConfig:
    """Config section `model.waffleiron`. Defaults: WI-48-256 of the WaffleIron SemanticKITTI config
    (one 250 x 250 (x, y) grid over +-50 m: 0.4 m cells)."""

    sections: ClassVar[tuple[str, ...]] = ("waffleiron",)
    data_fields: ClassVar[tuple[str, ...]] = ("dataset", "intensity_scale", "sampling.voxel_size")

    width: int = 256  # F, channels of every point token
    depth: int = 48  # L, number of (spatial mix + channel mix) layers
    # axis removed by the projection of layer l (cycled over the layers): 2 -> (x, y) plane,
    # 1 -> (x, z), 0 -> (y, z); one grid (rows, cols) per entry
    projections: list[int] = field(default_factory=lambda: [2])
    grids: list[list[int]] = field(default_factory=lambda: [[250, 250]])
    # field of view [[x_min, y_min, z_min], [x_max, y_max, z_max]] (metres) mapped onto the grids;
    # points outside fall into the border cells
    fov: list[list[float]] = field(default_factory=lambda: [[-50.0, -50.0, -5.0], [50.0, 50.0, 3.0]])
    norm: Literal["batch", "layer"] = "batch"  # token norm of every layer (layer norm for wide models)
    drop_path: float = not_architecture(0.0)  # stochastic depth probability of every residual branch
    layer_scale: float = not_architecture(0.1)  # initial per-channel scale of every residual branch
    neighbors: int = 16  # k of the neighbourhood embedding when the batch brings no `knn` (searched in the model)
    freeze_backbone: bool = not_architecture(False)  # linear probing: only the BN + linear head trains
    # fine-tuning: lr scale decay^(depth + 1 - layer id) (embedding 0, layer i -> i + 1, head depth + 1);
    # 0: off
    layer_decay: float = not_architecture(0.0)
    grad_checkpoint: bool = not_architecture(False)  # recompute each layer in backward to save memory
    # classifier: BatchNorm + linear (ScaLR's downstream head, finetune.py); false: the linear layer
    # alone (WaffleIron's `classif`, waffleiron/segmenter.py)
    head_norm: bool = True
    # points outside `fov`: "crop" leaves them out of the model's input (training drops them, evaluation
    # predicts them from the nearest kept point), as the official code crops (utils/transforms.py Crop);
    # "border": the model runs on them too, in the border cells of the planes
    outside_fov: Literal["crop", "border"] = "border"

    def check(self, cfg) -> None:
        if len(self.projections) != len(self.grids) or not self.projections:
            raise ConfigError(f"model.waffleiron.projections ({self.projections}) and grids ({self.grids}) need one "
                              "grid per projection")
        if any(a not in (0, 1, 2) for a in self.projections):
            raise ConfigError(f"model.waffleiron.projections are axes 0 (x), 1 (y) or 2 (z), got {self.projections}")
        if any(len(g) != 2 or min(g) <= 0 for g in self.grids):
            raise ConfigError(f"model.waffleiron.grids must be [rows, cols] pairs of positive sizes, got {self.grids}")
        if len(self.fov) != 2 or any(len(f) != 3 for f in self.fov) or any(lo >= hi for lo, hi in zip(*self.fov)):
            raise ConfigError("model.waffleiron.fov must be [[x_min, y_min, z_min], [x_max, y_max, z_max]] with "
                              f"min < max, got {self.fov}")
        if self.width <= 0 or self.depth <= 0 or self.neighbors <= 0:
            raise ConfigError("model.waffleiron.width, depth and neighbors must be positive")
        if not 0 <= self.drop_path < 1 or not 0 <= self.layer_decay <= 1:
            raise ConfigError("model.waffleiron.drop_path must be in [0, 1) and layer_decay in [0, 1]")
        sp = cfg.data.sampling
        if sp.neighbors and sp.neighbors != self.neighbors:
            raise ConfigError(f"data.sampling.neighbors ({sp.neighbors}) differs from model.waffleiron.neighbors "
                              f"({self.neighbors})")


# ----------------------------------------------------------------------------------- layers


class DropPath(nn.Module):
    """Stochastic depth per scan: the residual branch of a whole scan is dropped with probability p
    (and the kept ones scaled by 1 / (1 - p)) in training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = (torch.rand(batch_size, device=x.device) >= self.p).to(x.dtype) / (1.0 - self.p)
        return x * keep[batch][:, None]

    def extra_repr(self) -> str:
        return f"p={self.p}"


def token_norm(kind: str, width: int) -> nn.Module:
    return nn.LayerNorm(width) if kind == "layer" else nn.BatchNorm1d(width)


class SpatialMix(nn.Module):
    """t + DropPath(scale * Gather(DW3x3(ReLU(DW3x3(Mean(Norm(t))))))) on one 2D plane."""

    def __init__(self, width: int, grid: tuple[int, int], norm: str, drop_path: float, layer_scale: float):
        super().__init__()
        self.grid = tuple(grid)
        self.norm = token_norm(norm, width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.scale = nn.Parameter(torch.full((width,), float(layer_scale)))
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor, cells: torch.Tensor, inv_count: torch.Tensor, batch: torch.Tensor,
                batch_size: int) -> torch.Tensor:
        h, w = self.grid
        c = x.shape[1]
        plane = scatter_mean(self.norm(x), cells, batch_size * h * w, inv_count)  # (B*H*W, C)
        plane = plane.view(batch_size, h, w, c).permute(0, 3, 1, 2)  # (B, C, H, W), channels-last memory
        plane = self.conv2(F.relu(self.conv1(plane)))
        plane = plane.permute(0, 2, 3, 1).reshape(batch_size * h * w, c)
        return x + self.drop(plane.index_select(0, cells) * self.scale, batch, batch_size)

    def extra_repr(self) -> str:
        return f"grid={self.grid}"


class ChannelMix(nn.Module):
    """t + DropPath(scale * W2 ReLU(W1 Norm(t))) per point."""

    def __init__(self, width: int, norm: str, drop_path: float, layer_scale: float):
        super().__init__()
        self.norm = token_norm(norm, width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.scale = nn.Parameter(torch.full((width,), float(layer_scale)))
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
        return x + self.drop(self.fc2(F.relu(self.fc1(self.norm(x)))) * self.scale, batch, batch_size)


class WaffleLayer(nn.Module):
    def __init__(self, width: int, grid: tuple[int, int], norm: str, drop_path: float, layer_scale: float):
        super().__init__()
        self.spatial = SpatialMix(width, grid, norm, drop_path, layer_scale)
        self.channel = ChannelMix(width, norm, drop_path, layer_scale)

    def forward(self, x, cells, inv_count, batch, batch_size: int):
        return self.channel(self.spatial(x, cells, inv_count, batch, batch_size), batch, batch_size)


class PointEmbedding(nn.Module):
    """Per-point features + k-NN neighbourhood branch -> F channels.

    x = BN(f); point = W_p x; nbr = max_k W_b ReLU(BN(W_a BN(x_nbr - x))); out = W_m [point ; nbr]."""

    def __init__(self, cin: int, width: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(cin)
        self.point = nn.Linear(cin, width)
        self.nbr = nn.Sequential(
            nn.BatchNorm1d(cin), nn.Linear(cin, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, width, bias=False),
        )
        self.merge = nn.Linear(2 * width, width)

    def forward(self, feat: torch.Tensor, knn: torch.Tensor) -> torch.Tensor:
        """feat (M, cin), knn (M, k) -> (M, width)."""
        x = self.norm(feat)
        m, k = knn.shape
        rel = (x.index_select(0, knn.reshape(-1)).view(m, k, -1) - x[:, None]).reshape(m * k, -1)  # neighbour - centre
        nbr = self.nbr(rel).view(m, k, -1).amax(1)
        return self.merge(torch.cat([self.point(x), nbr], dim=1))


# ------------------------------------------------------------------------------------ model


class WaffleIron(SegModel):
    """WaffleIron backbone + BN/linear point head (see the module docstring)."""

    def __init__(
        self,
        num_classes: int,
        width: int = 256,
        depth: int = 48,
        projections: tuple[int, ...] = (2,),
        grids: tuple[tuple[int, int], ...] = ((250, 250),),
        fov: tuple[tuple[float, ...], tuple[float, ...]] = ((-50.0, -50.0, -5.0), (50.0, 50.0, 3.0)),
        norm: str = "batch",
        drop_path: float = 0.0,
        layer_scale: float = 0.1,
        neighbors: int = 16,
        freeze_backbone: bool = False,
        layer_decay: float = 0.0,
        grad_checkpoint: bool = False,
        head_norm: bool = True,
    ):
        super().__init__()
        if len(projections) != len(grids):
            raise ValueError("one grid per projection")
        self.width, self.depth = width, depth
        self.projections = [int(a) for a in projections]
        self.grids = [tuple(int(v) for v in g) for g in grids]
        self.neighbors = neighbors
        self.freeze_backbone = freeze_backbone
        self.layer_decay = layer_decay
        self.grad_checkpoint = grad_checkpoint
        self.planes = plane_grids(self.projections, self.grids, fov)  # geometry.PlaneGrid per projection
        self.embed = PointEmbedding(IN_FEATURES, width)
        self.layers = nn.ModuleList(
            WaffleLayer(width, self.grids[i % len(self.grids)], norm, drop_path, layer_scale) for i in range(depth)
        )
        self.head = nn.Sequential(nn.BatchNorm1d(width) if head_norm else nn.Identity(), nn.Linear(width, num_classes))
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)
        if freeze_backbone:
            for module in (self.embed, self.layers):
                module.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "WaffleIron":
        w = cfg.model.waffleiron
        return cls(
            num_classes, width=w.width, depth=w.depth, projections=tuple(w.projections),
            grids=tuple(tuple(g) for g in w.grids), fov=(tuple(w.fov[0]), tuple(w.fov[1])), norm=w.norm,
            drop_path=w.drop_path, layer_scale=w.layer_scale, neighbors=w.neighbors,
            freeze_backbone=w.freeze_backbone, layer_decay=w.layer_decay, grad_checkpoint=w.grad_checkpoint,
            head_norm=w.head_norm,
        )

    @staticmethod
    def loader_geometry(cfg) -> LoaderGeometry:
        """The loader computes the plane cells (sample["plane_cells"]) and, with outside_fov "crop",
        keeps the points outside the field of view out of the model's input."""
        w = cfg.model.waffleiron
        crop = (tuple(w.fov[0]), tuple(w.fov[1])) if w.outside_fov == "crop" else None
        return LoaderGeometry(planes=plane_grids(w.projections, w.grids, w.fov), crop=crop)

    @property
    def feature_dim(self) -> int:
        return self.width

    def train(self, mode: bool = True) -> "WaffleIron":
        super().train(mode)
        if self.freeze_backbone:  # linear probing: backbone statistics stay as pretrained
            self.embed.eval()
            self.layers.eval()
        return self

    # -- optimisation -----------------------------------------------------------------------------

    def layer_id(self, name: str) -> int:
        """0 for the embedding, i + 1 for layer i, depth + 1 for the head."""
        if name.startswith("embed."):
            return 0
        if name.startswith("layers."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1

    def lr_scales(self) -> dict[str, float]:
        """Layer-wise learning-rate decay: decay^(depth + 1 - layer id) (BEiT's rule, as ScaLR's
        fine-tuning uses it); empty when layer_decay is 0."""
        if not self.layer_decay:
            return {}
        top = self.depth + 1
        return {n: self.layer_decay ** (top - self.layer_id(n)) for n, p in self.named_parameters() if p.requires_grad}

    # -- forward ----------------------------------------------------------------------------------

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone tokens (M, F) of the kept points and up_index (N,): token of every point of the
        batch is tokens[up_index]."""
        points = batch["points"]
        bid = batch["batch"]
        n = len(points)
        sub = batch.get("sub_index")
        if sub is None:
            sub = torch.arange(n, device=points.device)
            up = sub
        else:
            up = batch["up_index"]
        pts = points[sub].to(self.embed.point.weight.dtype)  # float32 (float64 for a double model)
        sbatch = bid[sub]
        batch_size = len(batch["offsets"]) - 1
        xyz = pts[:, :3]
        knn = batch.get("knn")  # (M, 1 + k): the point itself, then its k nearest kept points
        if knn is None:  # data.sampling.neighbors = 0: search here (slower, on the main process)
            knn = knn_torch(xyz.detach(), offsets_of(sbatch, batch_size), self.neighbors + 1)
        feat = torch.cat([pts[:, 3:4], xyz, xyz.norm(dim=1, keepdim=True)], dim=1)  # (M, 5)
        local = batch.get("plane_cells")  # (M, P) cell of each kept point in each plane
        if local is None:  # a loader without this model's LoaderGeometry: compute them here
            local = torch.stack([p.cells_torch(xyz) for p in self.planes], dim=1)
        elif local.shape != (len(xyz), len(self.planes)):
            raise ValueError(f"batch['plane_cells'] has shape {tuple(local.shape)}, this WaffleIron expects "
                             f"({len(xyz)}, {len(self.planes)}): was the loader built for another model config?")
        planes = []
        for k, plane in enumerate(self.planes):
            cells = sbatch * plane.num_cells + local[:, k]  # (M,) into the (B * H * W) raster
            planes.append((cells, inverse_counts(cells, batch_size * plane.num_cells)))
        x = self.embed(feat, knn[:, 1:])
        for i, layer in enumerate(self.layers):
            cells, inv_count = planes[i % len(planes)]
            if self.grad_checkpoint and torch.is_grad_enabled() and x.requires_grad:
                x = checkpoint(layer, x, cells, inv_count, sbatch, batch_size, use_reentrant=False)
            else:
                x = layer(x, cells, inv_count, sbatch, batch_size)
        return x, up

    def forward(self, batch: dict) -> dict:
        """batch -> {"logits": (N, C) for every point of the batch}."""
        tokens, up = self.encode(batch)
        return {"logits": self.head(tokens)[up]}

    def extra_repr(self) -> str:
        return (f"width={self.width}, depth={self.depth}, projections={self.projections}, grids={self.grids}, "
                f"layer_decay={self.layer_decay}, freeze_backbone={self.freeze_backbone}")


__all__ = ["WaffleIron"]
