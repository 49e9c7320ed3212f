"""RangeViT: a fine-tuned image ViT on LiDAR range images, with a KPConv 3D refiner.

Implements "RangeViT: Towards Vision Transformers for 3D Semantic Segmentation in Autonomous
Driving" (Ando, Gidaris, Bursuc, Puy, Boulch, Marlet; CVPR 2023) from the paper's description
(facts such as the patch size, widths, crop / window sizes and the KPConv settings are those of the
paper and its public configs):

    range image (5 or 6, H, W)
      -> conv stem: SalsaNext residual context blocks at full resolution -> skip (B, Dh, H, W)
      -> average pooling (kernel patch + 1, stride patch) -> 1x1 conv -> tokens (B, D, H/ph, W/pw)
      -> + the ViT's position embedding resized to the token grid
      -> ViT blocks (TRAINABLE, initialised from model.backbone.weights, or random) -> final norm
      -> decoder: 1x1 conv + pixel shuffle to full resolution, concat the skip, 3x3 and 1x1
         conv + BN + LeakyReLU -> 2D features (B, Cd, H, W)
    every point: its 2D feature read bilinearly at its exact range-image position
      -> KPConv over its k = 7 nearest neighbours (15 kernel points) -> BN -> ReLU -> linear head.

Training runs on random width crops (data.augment.crop_width, e.g. 64 x 384); in eval mode the
2D part runs as a sliding window over the full width (model.rangevit.window / stride) and the
feature maps of overlapping windows are averaged before the per-point refiner.
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
from ..geometry import knn_torch, spherical_coords_torch
from .base import SegModel
from .kpconv import KPConv
from .layers import ConvActBN, ConvBNAct, ResContextBlock, SalsaContextBlock, SalsaResBlock, patch_unshuffle
from .vit import FoundationViT, check_patch_grid
from .weights import load_vit
from .ops import gather_grid


@dataclass
class RangeViTConfig:
    """Config section `model.rangevit`: conv stem + *trainable* ViT (`model.backbone`, initialised from
    its weights) + up-conv decoder + KPConv 3D refiner."""

    sections: ClassVar[tuple[str, ...]] = ("backbone", "rangevit")
    data_fields: ClassVar[tuple[str, ...]] = ("dataset", "intensity_scale", "range")

    patch_size: list[int] = field(default_factory=lambda: [2, 8])  # (rows, cols) per token
    in_channels: int = 5  # 5: range, x, y, z, intensity; 6: + the occupancy mask channel
    stem_channels: int = 32  # width of the SalsaNext-style residual context blocks
    stem_blocks: int = 3  # residual context blocks at full resolution
    hidden_channels: int = 128  # stem output = skip width (RangeViT's D_h)
    decoder_channels: int = 128  # up-conv decoder width
    # sliding-window inference (eval mode): window and stride in columns; 0 = the whole width at once
    window: int = not_architecture(384)
    stride: int = not_architecture(256)
    refiner: Literal["kpconv", "linear"] = "kpconv"  # linear: per-point linear layer instead of KPConv
    refiner_channels: int = 128
    knn: int = 7  # neighbours of the KPConv refiner (the point itself included)
    kernel_points: int = 15
    kernel_radius: float = 0.6  # metres
    kernel_extent: float = 1.2  # influence distance of a kernel point, metres
    knn_backend: Literal["auto", "kdtree", "torch"] = not_architecture("auto")
    point_sampling: Literal["bilinear", "nearest"] = "bilinear"  # per-point read of the 2D feature map
    vit_lr_scale: float = not_architecture(1.0)  # learning-rate factor of the ViT's parameters
    # stochastic depth in the ViT, 0 at the first block rising linearly to this at the last
    # (RangeViT: 0.1, valeoai/rangevit models/rangevit.py); 0: off
    drop_path: float = not_architecture(0.0)
    # the layer layout of valeoai/rangevit (needed by its checkpoints, `balvit convert --from rangevit`):
    # SalsaNext blocks conv -> LeakyReLU(0.01) -> BN with biases, a SalsaNext ResBlock closing the stem,
    # average pooling counting its padding, decoder blocks conv -> LeakyReLU -> BN, and RangeViT's own
    # position embedding on the token grid of one window (bilinearly resized for other grids).
    # false: this toolkit's conv -> BN -> LeakyReLU(0.1) blocks and the backbone's resized embedding
    official_layers: bool = False

    def check(self, cfg) -> None:
        check_patch_grid("rangevit", self.patch_size, cfg, more_widths=[(self.window, "model.rangevit.window")])
        if self.window < 0 or self.stride < 0 or (self.window and not 0 < self.stride <= self.window):
            raise ConfigError(f"model.rangevit.stride ({self.stride}) must be in 1..model.rangevit.window ({self.window})")
        if self.in_channels not in (5, 6):
            raise ConfigError(f"model.rangevit.in_channels must be 5 or 6, got {self.in_channels}")
        if self.knn < 1 or self.kernel_points < 1:
            raise ConfigError("model.rangevit.knn and model.rangevit.kernel_points must be positive")
        if not 0 <= self.drop_path < 1:
            raise ConfigError(f"model.rangevit.drop_path must be in [0, 1), got {self.drop_path}")


class ConvStem(nn.Module):
    """Residual context blocks at full resolution, then overlapping average pooling to the token
    grid and a 1x1 conv to the ViT width: (B, Cin, H, W) -> skip (B, Dh, H, W), tokens (B, D, H/ph, W/pw).

    official: valeoai/rangevit models/stems.py ConvStem: SalsaNext context blocks, a SalsaNext ResBlock
    to the hidden width, and the average pooling counting its zero padding (PyTorch's default)."""

    def __init__(self, in_channels: int, channels: int, blocks: int, hidden: int, patch: tuple[int, int], dim: int,
                 official: bool = False):
        super().__init__()
        block = SalsaContextBlock if official else ResContextBlock
        layers = [block(in_channels, channels)]
        layers += [block(channels, channels) for _ in range(blocks - 1)]
        layers.append(SalsaResBlock(channels, hidden) if official else ResContextBlock(channels, hidden))
        self.blocks = nn.Sequential(*layers)
        ph, pw = patch
        if ph % 2 == 0 and pw % 2 == 0:  # RangeViT: kernel patch + 1, padding patch / 2
            self.pool = nn.AvgPool2d((ph + 1, pw + 1), stride=(ph, pw), padding=(ph // 2, pw // 2),
                                     count_include_pad=official)
        else:
            self.pool = nn.AvgPool2d((ph, pw), stride=(ph, pw))
        self.proj = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.blocks(x)
        return skip, self.proj(self.pool(skip))


class UpConvDecoder(nn.Module):
    """Tokens (B, D, h, w) -> 1x1 conv + pixel shuffle by the patch -> concat skip -> 3x3 and 1x1
    ConvBNAct: (B, C, h*ph, w*pw). official: the blocks are conv -> LeakyReLU -> BN (valeoai/rangevit
    models/decoders.py UpConvBlock)."""

    def __init__(self, dim: int, skip_channels: int, channels: int, patch: tuple[int, int], official: bool = False):
        super().__init__()
        self.patch = patch
        self.up = nn.Conv2d(dim, channels * patch[0] * patch[1], 1)
        block = ConvActBN if official else ConvBNAct
        self.conv = nn.Sequential(block(channels + skip_channels, channels, k=3), block(channels, channels, k=1))

    def forward(self, tokens: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = patch_unshuffle(self.up(tokens), *self.patch)
        return self.conv(torch.cat([x, skip], dim=1))


def sliding_windows(width: int, window: int, stride: int) -> list[int]:
    """Start columns of windows of `window` columns every `stride` columns covering 0..width-1
    (the last window ends at the right border). window <= 0 or >= width: one window at 0."""
    if window <= 0 or window >= width:
        return [0]
    starts = list(range(0, width - window + 1, stride))
    if starts[-1] != width - window:
        starts.append(width - window)
    return starts


class RangeViT(SegModel):
    frozen_modules = ()  # the ViT is fine-tuned: its weights are part of every checkpoint

    def __init__(
        self,
        num_classes: int,
        backbone: FoundationViT,
        *,
        patch_size: tuple[int, int] = (2, 8),
        in_channels: int = 5,
        stem_channels: int = 32,
        stem_blocks: int = 3,
        hidden_channels: int = 128,
        decoder_channels: int = 128,
        window: int = 384,
        stride: int = 256,
        refiner: str = "kpconv",
        refiner_channels: int = 128,
        knn: int = 7,
        kernel_points: int = 15,
        kernel_radius: float = 0.6,
        kernel_extent: float = 1.2,
        knn_backend: str = "auto",
        point_sampling: str = "bilinear",
        vit_lr_scale: float = 1.0,
        drop_path: float = 0.0,
        range_height: int = 64,
        range_width: int = 2048,
        fov: tuple[float, float] = (3.0, -25.0),
        official_layers: bool = False,
    ):
        super().__init__()
        if not backbone.trainable:
            raise ValueError("RangeViT fine-tunes its ViT: build the backbone with trainable=True")
        for p in backbone.unused_for_tokens():  # the conv stem replaces the ViT's patch embedding
            p.requires_grad_(False)
        if drop_path:
            backbone.set_drop_path(drop_path)
        self.backbone = backbone
        dim = backbone.width
        self.num_classes = num_classes
        self.patch = (int(patch_size[0]), int(patch_size[1]))
        self.in_channels = in_channels
        self.window, self.stride = int(window), int(stride)
        self.knn, self.knn_backend = int(knn), knn_backend
        self.point_sampling = point_sampling
        self.vit_lr_scale = float(vit_lr_scale)
        self.range_height, self.range_width = range_height, range_width
        self.fov_up, self.fov_down = float(fov[0]), float(fov[1])  # degrees

        self.official_layers = bool(official_layers)
        self.stem = ConvStem(in_channels, stem_channels, stem_blocks, hidden_channels, self.patch, dim, official_layers)
        self.decoder = UpConvDecoder(dim, hidden_channels, decoder_channels, self.patch, official_layers)
        if official_layers:
            # RangeViT's own position embedding (CLS + the token grid of one window), initialised from
            # the backbone's (resized), resized bilinearly for other grids (valeoai/rangevit
            # models/rangevit.py VisionTransformer.forward, model_utils.resize_pos_embed)
            win = self.window if 0 < self.window < range_width else range_width
            self.pos_grid = (range_height // self.patch[0], win // self.patch[1])
            with torch.no_grad():
                grid = backbone.grid_pos_embed(*self.pos_grid)
                cls = backbone.model.embeddings.position_embeddings[:, :1]
                init = torch.cat([cls, grid], dim=1) if grid is not None else torch.zeros(1, 1 + math.prod(self.pos_grid), dim)
            self.pos_embed = nn.Parameter(init.detach().clone().float())
            backbone.model.embeddings.position_embeddings.requires_grad_(False)  # replaced by pos_embed
        self.refiner_kind = refiner
        if refiner == "kpconv":
            self.refiner = KPConv(decoder_channels, refiner_channels, kernel_points, kernel_radius, kernel_extent)
        elif refiner == "linear":
            self.refiner = nn.Linear(decoder_channels, refiner_channels, bias=False)
        else:
            raise ValueError(f"unknown refiner {refiner!r}")
        self.refiner_bn = nn.BatchNorm1d(refiner_channels)
        self.head = nn.Linear(refiner_channels, num_classes)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "RangeViT":
        return cls(num_classes, load_vit(cfg.model.backbone, trainable=True), **cls.config_kwargs(cfg))

    @staticmethod
    def config_kwargs(cfg) -> dict:
        r, rv = cfg.model.rangevit, cfg.data.range
        return dict(
            patch_size=tuple(r.patch_size), in_channels=r.in_channels, stem_channels=r.stem_channels,
            stem_blocks=r.stem_blocks, hidden_channels=r.hidden_channels, decoder_channels=r.decoder_channels,
            window=r.window, stride=r.stride, refiner=r.refiner, refiner_channels=r.refiner_channels, knn=r.knn,
            kernel_points=r.kernel_points, kernel_radius=r.kernel_radius, kernel_extent=r.kernel_extent,
            knn_backend=r.knn_backend, point_sampling=r.point_sampling, vit_lr_scale=r.vit_lr_scale,
            drop_path=r.drop_path, range_height=rv.height, range_width=rv.width, fov=(rv.fov_up, rv.fov_down),
            official_layers=r.official_layers,
        )

    def lr_scales(self) -> dict[str, float]:
        """Per-parameter learning-rate factors (the optimizer groups them): the ViT's."""
        if self.vit_lr_scale == 1.0:
            return {}
        return {f"backbone.{n}": self.vit_lr_scale for n, p in self.backbone.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------------------ 2D part

    def run_vit(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token map (B, D, h, w) + resized position embedding -> ViT blocks -> final norm
        -> (B, D, h, w) (prefix tokens dropped)."""
        b, d, h, w = tokens.shape
        x = tokens.flatten(2).transpose(1, 2)  # (B, h*w, D)
        if self.official_layers:
            pos = self.official_pos_embed(h, w)  # (1, 1 + h*w, D)
            x = x + pos[:, 1:].to(x.dtype)
            prefix = (self.backbone.model.embeddings.cls_token + pos[:, :1]).expand(b, -1, -1).to(x.dtype)
        else:
            pos = self.backbone.grid_pos_embed(h, w)
            if pos is not None:
                x = x + pos.to(x.dtype)
            prefix = self.backbone.prefix_tokens(b).to(x.dtype)
        x = torch.cat([prefix, x], dim=1)
        x = self.backbone.final_norm(self.backbone.run_blocks(x, 0, self.backbone.depth, (h, w)))
        return x[:, prefix.shape[1]:].transpose(1, 2).reshape(b, d, h, w)

    def official_pos_embed(self, h: int, w: int) -> torch.Tensor:
        """official_layers: `pos_embed` for an h x w token grid, (1, 1 + h*w, D): as stored for the
        window's grid, else its grid part resized bilinearly (align_corners=False)."""
        if (h, w) == self.pos_grid:
            return self.pos_embed
        gh, gw = self.pos_grid
        grid = self.pos_embed[:, 1:].reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([self.pos_embed[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)], dim=1)

    def upgrade_state_dict(self, state: dict) -> dict:
        """Checkpoints written before the KPConv kernel points were stored get the kernel this
        model computes (the same deterministic one they were trained with)."""
        key = "refiner.kernel"
        if self.refiner_kind == "kpconv" and key not in state and "refiner.weight" in state:
            state = {**state, key: self.refiner.kernel.detach().cpu().clone()}
        return state

    def features_2d(self, rv: torch.Tensor) -> torch.Tensor:
        """(B, 5 or 6, H, W) normalised range image (crop) -> decoder features (B, Cd, H, W)."""
        skip, tokens = self.stem(rv[:, :self.in_channels])
        return self.decoder(self.run_vit(tokens), skip)

    def sliding_features(self, rv: torch.Tensor) -> torch.Tensor:
        """Eval mode: `features_2d` on windows of `window` columns every `stride` columns, the
        overlapping feature maps averaged: (B, C, H, W) -> (B, Cd, H, W)."""
        b, _, h, width = rv.shape
        starts = sliding_windows(width, self.window, self.stride)
        if len(starts) == 1:
            return self.features_2d(rv)
        win = self.window
        crops = torch.cat([rv[..., s:s + win] for s in starts])  # (nW * B, C, H, win), window-major
        feats = self.features_2d(crops).view(len(starts), b, -1, h, win)
        total = feats.new_zeros(b, feats.shape[2], h, width)
        count = feats.new_zeros(1, 1, 1, width)
        for k, s in enumerate(starts):
            total[..., s:s + win] += feats[k]
            count[..., s:s + win] += 1
        return total / count

    # ------------------------------------------------------------------------------ 3D part

    def point_features(self, feat: torch.Tensor, batch: dict) -> torch.Tensor:
        """Per-point read of the 2D map (B, C, H, W) of the (cropped) range image -> (N, C).

        bilinear: at the point's continuous image coordinates `rv_coord` (the loader's projection;
        a batch without them: `geometry.spherical_coords_torch` minus the crop's first column);
        nearest: at its integer pixel `rv_rc`."""
        if self.point_sampling == "nearest":
            return gather_grid(feat, batch["batch"], batch["rv_rc"][:, 0], batch["rv_rc"][:, 1])
        points, offsets = batch["points"], batch["offsets"]
        b, c, h, w = feat.shape
        coord = batch.get("rv_coord")
        if coord is None:
            _, row, col = spherical_coords_torch(points[:, :3].float(), self.range_height, self.range_width,
                                                 self.fov_up, self.fov_down)
            col0 = batch.get("rv_col0")
            if col0 is not None:
                col = col - col0.to(col.dtype)[batch["batch"]]
            coord = torch.stack([row, col], dim=1)
        row, col = coord[:, 0], coord[:, 1]
        grid = torch.stack([col / w * 2 - 1, row / h * 2 - 1], dim=1).to(feat.dtype)  # align_corners=False
        if b == 1:  # one scan: no split by offsets (an exported graph keeps the point count dynamic)
            return F.grid_sample(feat, grid.view(1, 1, -1, 2), mode="bilinear", padding_mode="border",
                                 align_corners=False)[0, :, 0].T
        out = []
        for k, (s, e) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
            g = grid[s:e].view(1, 1, e - s, 2)
            out.append(F.grid_sample(feat[k:k + 1], g, mode="bilinear", padding_mode="border",
                                     align_corners=False)[0, :, 0].T)
        return torch.cat(out) if out else feat.new_zeros(0, c)

    def neighbours(self, batch: dict) -> torch.Tensor:
        """(N, k) KPConv neighbours, the point itself first: the loader's `knn` when it covers every
        point with at least k columns (data.sampling.neighbors >= k - 1, no voxel down-sampling),
        else `geometry.knn_torch` here."""
        knn, sub = batch.get("knn"), batch.get("sub_index")
        if knn is not None and sub is not None and len(sub) == len(batch["points"]) and knn.shape[1] >= self.knn:
            return sub[knn[:, :self.knn]]
        return knn_torch(batch["points"], batch["offsets"], self.knn, self.knn_backend)

    def refine(self, pfeat: torch.Tensor, batch: dict) -> torch.Tensor:
        """(N, Cd) point features -> KPConv over the k nearest neighbours (or linear) -> BN -> ReLU (N, Cr)."""
        if self.refiner_kind == "kpconv":
            x = self.refiner(batch["points"][:, :3], pfeat, self.neighbours(batch))
        else:
            x = self.refiner(pfeat)
        return F.relu(self.refiner_bn(x))

    def forward(self, batch: dict) -> dict:
        """batch (data/dataset.py) -> {"logits": (N, C), "point_features": (N, Cd) decoder features}.

        Training: one pass over the (cropped) range image. Eval: sliding window over the width."""
        rv = batch["rv"]
        feat = self.features_2d(rv) if self.training else self.sliding_features(rv)
        pfeat = self.point_features(feat, batch)
        logits = self.head(self.refine(pfeat, batch))
        return {"logits": logits, "point_features": pfeat}
