"""BALViT: a frozen 2D vision foundation model as a LiDAR encoder, with a 2D-3D adapter.

Implements "Label-Efficient LiDAR Semantic Segmentation with 2D-3D Vision Transformer Adapters"
(Hindel, Mohan, Bratulic, Cattaneo, Brox, Valada; IROS 2025, arXiv:2503.03299) from the paper's
description (the official code was not obtainable here: the stored copy of
robot-learning-freiburg/BALViT is its March 2025 placeholder README). The interaction scheme (injector before and extractor
after each group of frozen blocks, zero-initialised injector scale, ConvFFN) follows ViT-Adapter
(Chen et al., ICLR 2023), with the spatial prior replaced by a polar bird's-eye-view branch and the
reference points computed from 3D geometry:

    range image (6, H, W) --stem--> skip (Cs, H, W) --pool/1x1--> RV tokens (D, H/ph, W/pw) + pos
    points --PointNet--> scatter-max into polar cells --2D CNN--> BEV maps at strides 4, 8, 16 (-> Db)
    for each of K groups of frozen ViT blocks:
        tokens += gamma_k * DeformAttn(tokens -> BEV maps; ref = BEV position of the token's mean point)
        tokens  = frozen_blocks_k(tokens)
        bev    += DeformAttn(bev -> tokens; ref = range-image position of the cell's 3D centre)
        bev    += ConvFFN(bev)
    RV decoder (pixel shuffle + skip) and BEV decoder (FPN to half the polar grid + skip); every
    point concatenates its pixel feature, its bilinearly read BEV feature and its PointNet feature
    -> MLP -> logits.
    Auxiliary heads classify from the RV-only and BEV-only features.

Options of the prior diagnosis (benchmarks/prior_probe.py, all off by default): `vit_blocks=identity`
skips the frozen blocks (tokens pass the groups unchanged, the final norm stays) to measure what the
ViT adds at all; `token_norm=layernorm` normalises every token over its channels before the position
embedding (weight initialised to `token_scale`), so that the frozen blocks receive tokens of the
scale they were trained on; `embed_lr_scale` / `adapter_lr_scale` / `head_lr_scale` balance the
learning rates of the embedding, the adapter and the rest (BEV encoder, decoders, heads).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import not_architecture
from ..errors import ConfigError
from ..geometry import (angles_to_image_torch, pitch_of_row, polar_cell_centers_torch, polar_coords_torch,
                        yaw_of_col)
from .base import SegModel
from .deform_attn import MSDeformAttn
from .layers import ConvBNAct, PointMLP, PolarConv, ResContextBlock, SegHead, patch_unshuffle
from .ops import gather_grid, grid_index, scatter_count, scatter_max, scatter_mean, to_grid
from .vit import FoundationViT, check_patch_grid
from .weights import load_vit

POINT_FEATURES = 9  # x, y, z, intensity, radius, sin/cos azimuth, offsets to the cell centre


@dataclass
class BALViTConfig:
    """Config section `model.balvit` (plus `model.backbone`, the frozen ViT)."""

    sections: ClassVar[tuple[str, ...]] = ("backbone", "balvit")  # the ModelConfig sections of its architecture
    data_fields: ClassVar[tuple[str, ...]] = ("dataset", "intensity_scale", "range", "bev")  # what it sees

    patch_size: list[int] = field(default_factory=lambda: [4, 8])  # (rows, cols) per token
    stem_channels: int = 64  # range-view conv stem width at full resolution
    stem_blocks: int = 2
    bev_point_channels: int = 64  # PointNet width before scatter-max into polar cells
    bev_channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per BEV scale
    adapter_dim: int = 192  # width of the BEV spatial prior the injectors read and the extractors update
    interaction_groups: int = 4  # K injector/extractor stages over the frozen blocks
    deform_heads: int = 6
    deform_points: int = 4
    deform_ratio: float = 0.5  # value width of the deformable attention / ViT width
    injector_init: float = not_architecture(0.0)  # learnable injector scale at start (0: frozen ViT unchanged)
    ffn_ratio: float = 0.25  # ConvFFN hidden width / ViT width in the extractor
    decoder_channels: int = 64
    head_hidden: int = 128
    empty_token_range: float = 10.0  # metres along the ray for tokens without points
    default_z: float = -1.7  # height used for empty BEV cells' reference points
    # Diagnostics and options of the prior study (benchmarks/prior_probe.py, sim2real.py; every default
    # keeps the model as it was):
    vit_blocks: Literal["frozen", "identity"] = "frozen"  # identity: skip the frozen blocks (the final norm stays)
    token_norm: Literal["none", "layernorm"] = "none"  # LayerNorm on the embedding tokens before the position embedding
    token_scale: float = not_architecture(1.0)  # initial LayerNorm weight (per-channel std of the tokens the ViT gets)
    embed_lr_scale: float = not_architecture(1.0)  # lr factor of the range embedding (stem, 1x1 projection, token norm)
    adapter_lr_scale: float = not_architecture(1.0)  # lr factor of the injectors, extractors and BEV projections
    head_lr_scale: float = not_architecture(1.0)  # lr factor of the BEV encoder, both decoders and the heads

    def check(self, cfg) -> None:
        """Checks against the run config `cfg` (range-image size vs patch size)."""
        check_patch_grid("balvit", self.patch_size, cfg)
        if self.interaction_groups <= 0:
            raise ConfigError("model.balvit.interaction_groups must be positive")
        if not self.bev_channels or min(self.bev_channels) <= 0:
            raise ConfigError(f"model.balvit.bev_channels needs positive widths, got {self.bev_channels}")


def window_sums(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, h, w): the sum over each window of `F.adaptive_avg_pool2d(x, size)`
    (output i spans inputs floor(i H / h) .. ceil((i + 1) H / h) - 1), as products with 0/1 matrices:
    the ONNX-exportable form (ONNX has no adaptive pooling to sizes that do not divide the input)."""

    def windows(n_out: int, n_in: int) -> torch.Tensor:  # (n_out, n_in) 0/1
        i = torch.arange(n_out, device=x.device)
        start, end = (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out
        j = torch.arange(n_in, device=x.device)
        return ((j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])).to(x.dtype)

    return windows(size[0], x.shape[-2]) @ x @ windows(size[1], x.shape[-1]).T


def flatten_levels(maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[(B, D, h_l, w_l)] -> values (B, S, D), shapes (L, 2) long, level starts (L,) long."""
    shapes = torch.tensor([m.shape[-2:] for m in maps], dtype=torch.long, device=maps[0].device)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    values = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
    return values, shapes, starts


def unflatten_levels(values: torch.Tensor, shapes: torch.Tensor) -> list[torch.Tensor]:
    """(B, S, D) -> [(B, D, h_l, w_l)]."""
    out, start = [], 0
    for h, w in shapes.tolist():
        out.append(values[:, start:start + h * w].transpose(1, 2).reshape(values.shape[0], -1, h, w))
        start += h * w
    return out


class RangeEmbedding(nn.Module):
    """Trainable patch embedding: residual conv stem at full resolution, average pooling to the
    token grid, 1x1 conv to the ViT width. (B, 6, H, W) -> skip (B, Cs, H, W), tokens (B, D, H/ph, W/pw)."""

    def __init__(self, channels: int, blocks: int, patch: tuple[int, int], dim: int, in_channels: int = 6,
                 token_norm: str = "none", token_scale: float = 1.0):
        super().__init__()
        layers = [ResContextBlock(in_channels, channels)]
        layers += [ResContextBlock(channels, channels) for _ in range(blocks - 1)]
        self.stem = nn.Sequential(*layers)
        self.patch = patch
        self.proj = nn.Conv2d(channels, dim, 1)
        if token_norm not in ("none", "layernorm"):
            raise ValueError(f"token_norm must be none or layernorm, got {token_norm!r}")
        self.norm = nn.LayerNorm(dim) if token_norm == "layernorm" else None
        if self.norm is not None:
            nn.init.constant_(self.norm.weight, float(token_scale))

    def forward(self, rv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.stem(rv)
        tokens = self.proj(F.avg_pool2d(skip, self.patch))  # (B, D, Ht, Wt)
        if self.norm is not None:  # over the channels of every token
            tokens = self.norm(tokens.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return skip, tokens


class PolarBEVEncoder(nn.Module):
    """PointNet features max-pooled into polar cells, a stride-2 stem, then a 2D CNN whose stages
    halve the resolution again: maps at 1/4, 1/8, 1/16 of the polar grid (the spatial prior).

    Returns per-point features (N, Cp), the stem output (B, Cp, R/2, A/2) (the decoder's skip) and
    the maps of each scale.
    """

    def __init__(self, point_channels: int, channels: list[int]):
        super().__init__()
        self.point_mlp = PointMLP(POINT_FEATURES, [point_channels // 2, point_channels])
        self.stem = PolarConv(point_channels, point_channels, stride=2)
        stages, cin = [], point_channels
        for c in channels:
            stages.append(nn.Sequential(PolarConv(cin, c, stride=2), PolarConv(c, c)))
            cin = c
        self.stages = nn.ModuleList(stages)

    def forward(self, feats: torch.Tensor, cell_flat: torch.Tensor, batch_size: int, grid: tuple[int, int]):
        r, a = grid
        point_feat = self.point_mlp(feats)  # (N, Cp)
        pooled = to_grid(scatter_max(point_feat, cell_flat, batch_size * r * a), batch_size, r, a)  # (B, Cp, R, A)
        half = self.stem(pooled)  # (B, Cp, R/2, A/2)
        maps, x = [], half
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return point_feat, half, maps


class ConvFFN(nn.Module):
    """Linear -> depthwise 3x3 conv on each level's grid -> GELU -> Linear, on flattened levels."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        x = self.fc1(x)
        maps = [self.dw(m) for m in unflatten_levels(x, shapes)]
        x = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], dim=1)
        return self.fc2(F.gelu(x))


class Injector(nn.Module):
    """RV tokens (width D) attend to the BEV maps (width Db):
    tokens + gamma * DeformAttn(LN(tokens), ref, LN(bev))."""

    def __init__(self, dim: int, bev_dim: int, levels: int, heads: int, points: int, ratio: float, init: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_v = nn.LayerNorm(bev_dim)
        self.attn = MSDeformAttn(dim, levels, heads, points, value_dim=bev_dim, ratio=ratio)
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, tokens, ref, bev, shapes, starts):
        return tokens + self.gamma * self.attn(self.norm_q(tokens), ref, self.norm_v(bev), shapes, starts)


class Extractor(nn.Module):
    """BEV cells (width Db) attend to the RV tokens (width D), then a ConvFFN: both residual."""

    def __init__(self, dim: int, bev_dim: int, heads: int, points: int, ratio: float, ffn_ratio: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(bev_dim)
        self.norm_v = nn.LayerNorm(dim)
        self.attn = MSDeformAttn(bev_dim, 1, heads, points, value_dim=dim, ratio=ratio)
        self.norm_ffn = nn.LayerNorm(bev_dim)
        self.ffn = ConvFFN(bev_dim, max(1, int(bev_dim * ffn_ratio)))

    def forward(self, bev, ref, tokens, token_shape, token_start, bev_shapes):
        bev = bev + self.attn(self.norm_q(bev), ref, self.norm_v(tokens), token_shape, token_start)
        return bev + self.ffn(self.norm_ffn(bev), bev_shapes)


class RangeDecoder(nn.Module):
    """Tokens -> pixel shuffle to full resolution -> concat the stem skip -> two conv blocks."""

    def __init__(self, dim: int, skip_channels: int, channels: int, patch: tuple[int, int]):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(dim, channels * patch[0] * patch[1], 1)
        self.fuse = nn.Sequential(ConvBNAct(channels + skip_channels, channels), ConvBNAct(channels, channels))

    def forward(self, tokens: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = patch_unshuffle(self.proj(tokens), *self.patch)
        return self.fuse(torch.cat([x, skip], dim=1))


class BEVDecoder(nn.Module):
    """Feature-pyramid fusion of the BEV scales, up-sampled to half the polar grid and fused with
    the stem's skip: -> (B, C, R/2, A/2). Points read it bilinearly at their exact polar position."""

    def __init__(self, dim: int, levels: int, skip_channels: int, channels: int):
        super().__init__()
        self.lateral = nn.ModuleList([nn.Conv2d(dim, channels, 1) for _ in range(levels)])
        self.fuse = nn.Sequential(PolarConv(channels + skip_channels, channels), PolarConv(channels, channels))

    def forward(self, maps: list[torch.Tensor], skip: torch.Tensor) -> torch.Tensor:
        size0 = maps[0].shape[-2:]
        x = sum(F.interpolate(lat(m), size=size0, mode="bilinear", align_corners=False) if i else lat(m)
                for i, (lat, m) in enumerate(zip(self.lateral, maps)))
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([x, skip], dim=1))


class BALViT(SegModel):
    frozen_modules = ("backbone",)

    def __init__(
        self,
        num_classes: int,
        backbone: FoundationViT,
        *,
        patch_size: tuple[int, int] = (4, 8),
        stem_channels: int = 64,
        stem_blocks: int = 2,
        bev_point_channels: int = 64,
        bev_channels: tuple[int, ...] = (64, 128, 256),
        adapter_dim: int = 192,
        interaction_groups: int = 4,
        deform_heads: int = 6,
        deform_points: int = 4,
        deform_ratio: float = 0.5,
        injector_init: float = 0.0,
        ffn_ratio: float = 0.25,
        decoder_channels: int = 64,
        head_hidden: int = 128,
        empty_token_range: float = 10.0,
        default_z: float = -1.7,
        range_height: int = 64,
        range_width: int = 2048,
        fov: tuple[float, float] = (3.0, -25.0),
        bev_grid: tuple[int, int] = (480, 360),
        bev_radius: tuple[float, float] = (0.0, 50.0),
        bev_z: tuple[float, float] = (-4.0, 2.0),
        vit_blocks: str = "frozen",
        token_norm: str = "none",
        token_scale: float = 1.0,
        embed_lr_scale: float = 1.0,
        adapter_lr_scale: float = 1.0,
        head_lr_scale: float = 1.0,
    ):
        super().__init__()
        if vit_blocks not in ("frozen", "identity"):
            raise ValueError(f"vit_blocks must be frozen or identity, got {vit_blocks!r}")
        self.vit_blocks = vit_blocks
        self.group_lr = {"embed": float(embed_lr_scale), "adapter": float(adapter_lr_scale), "head": float(head_lr_scale)}
        if interaction_groups > backbone.depth:
            raise ValueError(f"interaction_groups ({interaction_groups}) exceeds the backbone depth ({backbone.depth})")
        self.backbone = backbone
        dim = backbone.width
        self.num_classes = num_classes
        self.patch = (int(patch_size[0]), int(patch_size[1]))
        self.range_height, self.range_width = range_height, range_width
        self.fov_up, self.fov_down = float(fov[0]), float(fov[1])  # degrees
        self.bev_grid = (int(bev_grid[0]), int(bev_grid[1]))
        self.r_min, self.r_max = bev_radius
        self.z_min, self.z_max = bev_z
        self.empty_token_range = empty_token_range
        self.default_z = default_z
        # K groups of frozen blocks, as even as possible: boundaries[k]..boundaries[k+1]
        self.boundaries = [round(k * backbone.depth / interaction_groups) for k in range(interaction_groups + 1)]

        self.embed = RangeEmbedding(stem_channels, stem_blocks, self.patch, dim, token_norm=token_norm,
                                    token_scale=token_scale)
        self.bev = PolarBEVEncoder(bev_point_channels, list(bev_channels))
        self.bev_proj = nn.ModuleList([nn.Conv2d(c, adapter_dim, 1) for c in bev_channels])
        self.level_embed = nn.Parameter(torch.zeros(len(bev_channels), adapter_dim))
        nn.init.normal_(self.level_embed, std=0.02)
        levels = len(bev_channels)
        self.injectors = nn.ModuleList([
            Injector(dim, adapter_dim, levels, deform_heads, deform_points, deform_ratio, injector_init)
            for _ in range(interaction_groups)])
        self.extractors = nn.ModuleList([
            Extractor(dim, adapter_dim, deform_heads, deform_points, deform_ratio, ffn_ratio)
            for _ in range(interaction_groups)])
        self.rv_decoder = RangeDecoder(dim, stem_channels, decoder_channels, self.patch)
        self.bev_decoder = BEVDecoder(adapter_dim, levels, bev_point_channels, decoder_channels)  # (B, C, R/2, A/2)
        self.head = SegHead(2 * decoder_channels + bev_point_channels, head_hidden, num_classes)
        self.aux_rv = nn.Linear(decoder_channels, num_classes)
        self.aux_bev = nn.Linear(decoder_channels, num_classes)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "BALViT":
        b, rv, bev = cfg.model.balvit, cfg.data.range, cfg.data.bev
        backbone = load_vit(cfg.model.backbone)
        return cls(
            num_classes, backbone,
            patch_size=tuple(b.patch_size), stem_channels=b.stem_channels, stem_blocks=b.stem_blocks,
            bev_point_channels=b.bev_point_channels, bev_channels=tuple(b.bev_channels), adapter_dim=b.adapter_dim,
            interaction_groups=b.interaction_groups, deform_heads=b.deform_heads, deform_points=b.deform_points,
            deform_ratio=b.deform_ratio, injector_init=b.injector_init, ffn_ratio=b.ffn_ratio,
            decoder_channels=b.decoder_channels, head_hidden=b.head_hidden,
            empty_token_range=b.empty_token_range, default_z=b.default_z,
            range_height=rv.height, range_width=rv.width, fov=(rv.fov_up, rv.fov_down),
            bev_grid=(bev.radius_bins, bev.azimuth_bins), bev_radius=(bev.min_radius, bev.max_radius),
            bev_z=(bev.z_min, bev.z_max), vit_blocks=b.vit_blocks, token_norm=b.token_norm, token_scale=b.token_scale,
            embed_lr_scale=b.embed_lr_scale, adapter_lr_scale=b.adapter_lr_scale, head_lr_scale=b.head_lr_scale,
        )

    ADAPTER_PREFIXES = ("injectors.", "extractors.", "bev_proj.", "level_embed")

    def lr_scales(self) -> dict[str, float]:
        """Per-parameter learning-rate factors (engine/optim.py): embed / adapter / head groups."""
        if all(v == 1.0 for v in self.group_lr.values()):
            return {}
        out = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            group = ("embed" if name.startswith("embed.") else
                     "adapter" if name.startswith(self.ADAPTER_PREFIXES) else "head")
            out[name] = self.group_lr[group]
        return out

    # ------------------------------------------------------------------------------ geometry

    def _point_features(self, points: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """(N, 4) points, (N, 2) polar cells -> (N, 9) normalised PointNet inputs."""
        x, y, z, inten = points.unbind(1)
        r, theta = polar_coords_torch(points)
        nr, na = self.bev_grid
        dr = (self.r_max - self.r_min) / nr
        da = 2 * math.pi / na
        r_centre, a_centre = polar_cell_centers_torch(cells[:, 0].to(r.dtype), cells[:, 1].to(r.dtype), nr, na,
                                                      self.r_min, self.r_max)
        scale = self.r_max
        feats = [x / scale, y / scale, (z - self.z_min) / (self.z_max - self.z_min), inten, r / scale,
                 torch.sin(theta), torch.cos(theta), (r - r_centre) / dr, (theta - a_centre) / da]
        return torch.stack(feats, dim=1)

    def _token_reference(self, points, batch, rc, col0, batch_size, grid):
        """BEV location (x = azimuth, y = radius, in [0, 1]) of each token's mean 3D point: (B, Ht*Wt, 2).

        Tokens without points look `empty_token_range` metres along the ray through their centre.
        """
        ht, wt = grid
        ph, pw = self.patch
        tok = grid_index(batch, rc[:, 0] // ph, rc[:, 1] // pw, ht, wt)
        mean_xy = scatter_mean(points[:, :2], tok, batch_size * ht * wt)
        count = scatter_count(tok, batch_size * ht * wt, points.dtype)
        r, theta = polar_coords_torch(mean_xy)
        # rays through the token centres (full-image column = crop column + col0)
        dev, dt = points.device, points.dtype
        rows = (torch.arange(ht, device=dev, dtype=dt) + 0.5) * ph
        cols = (torch.arange(wt, device=dev, dtype=dt) + 0.5) * pw
        cols = cols[None, :] + col0.to(dt)[:, None]  # (B, Wt)
        pitch = pitch_of_row(rows, self.range_height, self.fov_up, self.fov_down)  # (Ht,)
        ray_theta = yaw_of_col(cols, self.range_width)  # (B, Wt)
        ray_r = self.empty_token_range * torch.cos(pitch)  # (Ht,)
        ray_r = ray_r[None, :, None].expand(batch_size, ht, wt).reshape(-1)
        ray_theta = ray_theta[:, None, :].expand(batch_size, ht, wt).reshape(-1)
        empty = count == 0
        r = torch.where(empty, ray_r, r)
        theta = torch.where(empty, ray_theta, theta)
        ref_x = ((theta + math.pi) / (2 * math.pi)).clamp(0, 1)
        ref_y = ((r - self.r_min) / (self.r_max - self.r_min)).clamp(0, 1)
        return torch.stack([ref_x, ref_y], dim=1).view(batch_size, ht * wt, 2)

    def _cell_reference(self, points, cell_flat, batch_size, shapes, col0, crop_width):
        """Range-image location (x = column, y = row, in [0, 1] of the current crop) of the 3D centre
        of every BEV cell of every level: (B, S, 2). The centre's height is the mean z of the cell's
        points (pooled to the level), `default_z` where a cell is empty."""
        nr, na = self.bev_grid
        z_sum = torch.zeros(batch_size * nr * na, device=points.device, dtype=points.dtype)
        z_sum = z_sum.index_add(0, cell_flat, points[:, 2]).view(batch_size, 1, nr, na)
        cnt = torch.zeros_like(z_sum).view(-1).index_add(0, cell_flat, torch.ones_like(points[:, 2])).view_as(z_sum)
        refs = []
        for h, w in shapes.tolist():
            if torch.onnx.is_in_onnx_export():  # the same windows' sums (their ratio is the same mean)
                zs, cs = window_sums(z_sum, (h, w)), window_sums(cnt, (h, w))
            else:
                zs, cs = F.adaptive_avg_pool2d(z_sum, (h, w)), F.adaptive_avg_pool2d(cnt, (h, w))
            z = torch.where(cs > 0, zs / cs.clamp_min(1e-12), torch.full_like(zs, self.default_z))[:, 0]  # (B, h, w)
            # centres of the level's (coarser) polar cells
            radius, azimuth = polar_cell_centers_torch(torch.arange(h, device=z.device, dtype=z.dtype),
                                                       torch.arange(w, device=z.device, dtype=z.dtype), h, w,
                                                       self.r_min, self.r_max)
            pitch = torch.atan2(z, radius[None, :, None])  # (B, h, w)
            row, col = angles_to_image_torch(pitch, azimuth, self.range_height, self.range_width, self.fov_up,
                                             self.fov_down)  # full-image pixels; col (w,)
            row = row / self.range_height  # fraction of the image height
            col = (col[None, None, :] - col0.to(z.dtype)[:, None, None]) / crop_width  # fraction of the crop
            col = col.expand(batch_size, h, w)
            refs.append(torch.stack([col, row], dim=-1).reshape(batch_size, h * w, 2))
        return torch.cat(refs, dim=1)

    def _sample_bev(self, feat: torch.Tensor, points: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Bilinear read of a (B, C, h, w) polar map at every point's (radius, azimuth): (N, C)."""
        r, theta = polar_coords_torch(points)
        gx = theta / math.pi  # azimuth -pi..pi -> -1..1 (the width axis)
        gy = ((r - self.r_min) / (self.r_max - self.r_min)).clamp(0, 1) * 2 - 1  # radius (the height axis)
        grid = torch.stack([gx, gy], dim=1).to(feat.dtype)
        if feat.shape[0] == 1:  # one scan: no split by offsets (an exported graph keeps the point count dynamic)
            return F.grid_sample(feat, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                                 align_corners=False)[0, :, 0].T
        out = []
        for b, (s, e) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
            g = grid[s:e].view(1, 1, e - s, 2)
            out.append(F.grid_sample(feat[b:b + 1], g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T)
        return torch.cat(out)

    # ------------------------------------------------------------------------------- forward

    def range_tokens(self, rv: torch.Tensor, col0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 6, H, W) -> stem skip (B, Cs, H, W) and RV tokens (B, Ht*Wt, D) with the frozen ViT's
        position embedding of their place in the full-width image (crops take their slice of it)."""
        bsz, _, height, width = rv.shape
        ph, pw = self.patch
        ht, wt = height // ph, width // pw
        skip, tok = self.embed(rv)
        tokens = tok.flatten(2).transpose(1, 2)  # (B, Ht*Wt, D)
        full_wt = self.range_width // pw
        pos = self.backbone.grid_pos_embed(ht, full_wt)
        if pos is not None:
            pos = pos.view(ht, full_wt, -1)
            cols = (col0[:, None] // pw + torch.arange(wt, device=rv.device)[None, :]).clamp_max(full_wt - 1)  # (B, Wt)
            tokens = tokens + pos[:, cols].permute(1, 0, 2, 3).reshape(bsz, ht * wt, -1)
        return skip, tokens

    def encode(self, batch: dict) -> dict:
        """Everything up to the decoders: RV tokens after the frozen ViT and the adapted BEV maps."""
        rv = batch["rv"]  # (B, 6, H, W)
        bsz, _, height, width = rv.shape
        points, pbatch, rc, cells = batch["points"], batch["batch"], batch["rv_rc"], batch["bev_cell"]
        col0 = batch.get("rv_col0")
        if col0 is None:
            col0 = torch.zeros(bsz, dtype=torch.long, device=rv.device)
        ph, pw = self.patch
        ht, wt = height // ph, width // pw

        skip, tokens = self.range_tokens(rv, col0)

        # polar BEV branch -> spatial prior of width adapter_dim
        nr, na = self.bev_grid
        cell_flat = grid_index(pbatch, cells[:, 0], cells[:, 1], nr, na)
        point_feat, bev_skip, maps = self.bev(self._point_features(points, cells), cell_flat, bsz, (nr, na))
        prior = [proj(m) + self.level_embed[i][None, :, None, None] for i, (proj, m) in enumerate(zip(self.bev_proj, maps))]
        bev, shapes, starts = flatten_levels(prior)

        tok_ref = self._token_reference(points, pbatch, rc, col0, bsz, (ht, wt))
        cell_ref = self._cell_reference(points, cell_flat, bsz, shapes, col0, width)
        tok_shape = torch.tensor([[ht, wt]], dtype=torch.long, device=rv.device)
        tok_start = tok_shape.new_zeros(1)

        prefix = self.backbone.prefix_tokens(bsz)
        npre = prefix.shape[1]
        x = torch.cat([prefix, tokens], dim=1)
        for k, (inj, ext) in enumerate(zip(self.injectors, self.extractors)):
            x = torch.cat([x[:, :npre], inj(x[:, npre:], tok_ref, bev, shapes, starts)], dim=1)
            if self.vit_blocks == "frozen":
                x = self.backbone.run_blocks(x, self.boundaries[k], self.boundaries[k + 1], (ht, wt))
            bev = ext(bev, cell_ref, x[:, npre:], tok_shape, tok_start, shapes)
        x = self.backbone.final_norm(x)
        return {
            "tokens": x[:, npre:], "grid": (ht, wt), "skip": skip, "bev": unflatten_levels(bev, shapes),
            "bev_skip": bev_skip, "point_feat": point_feat,
        }

    def forward(self, batch: dict) -> dict:
        """batch (see data/dataset.py) -> {"logits": (N, C), "aux": {"rv": (N, C), "bev": (N, C)}}."""
        enc = self.encode(batch)
        ht, wt = enc["grid"]
        tokens = enc["tokens"].transpose(1, 2).reshape(enc["tokens"].shape[0], -1, ht, wt)
        f_rv = self.rv_decoder(tokens, enc["skip"])  # (B, C, H, W)
        f_bev = self.bev_decoder(enc["bev"], enc["bev_skip"])  # (B, C, R/2, A/2)
        pbatch, rc = batch["batch"], batch["rv_rc"]
        p_rv = gather_grid(f_rv, pbatch, rc[:, 0], rc[:, 1])
        p_bev = self._sample_bev(f_bev, batch["points"], batch["offsets"])
        logits = self.head(torch.cat([p_rv, p_bev, enc["point_feat"]], dim=1))
        return {"logits": logits, "aux": {"rv": self.aux_rv(p_rv), "bev": self.aux_bev(p_bev)}}
