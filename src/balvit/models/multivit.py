"""MultiViT: RangeViT plus a camera branch that shares the same ViT.

The multi-modal extension of RangeViT (Ando et al., CVPR 2023) studied in the MultiViT work: one
ViT serves both a LiDAR range-image branch (RangeViT, models/rangevit.py) and a camera branch
(CameraViT), so that camera supervision (pseudo-labels from projected LiDAR labels and SAM, see
data/pseudo_labels/boxes.py) shapes the same transformer the LiDAR branch uses:

    camera image (B, 3, h, w) uint8 -> ImageNet normalisation
      -> CameraViT stem: 3x3 stride-2 ConvBNAct + residual context block -> skip (B, Cs, h/2, w/2)
         -> average pooling to 8 x 8 pixel patches -> 1x1 conv -> tokens (B, D, h/8, w/8)
      -> + resized position embedding -> the SAME ViT blocks as the LiDAR branch -> final norm
      -> decoder: 1x1 conv + pixel shuffle (x4), concat skip, ConvBNAct 3x3 + 1x1 -> (B, Cd, h/2, w/2)
      -> per-pixel head (classes + 1 background) -> bilinear x2 -> logits (B, C + 1, h, w)

`forward(batch)` is RangeViT's (per-point LiDAR logits), so evaluation, prediction and the plain
segmentation task work unchanged; `forward_camera(images)` runs the camera branch. Training modes
(camera pretraining, joint training, contrastive alignment) are tasks in tasks/multivit.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from .layers import ConvBNAct, ResContextBlock
from .vit import FoundationViT, normalise_images
from .weights import load_vit
from .rangevit import RangeViT, UpConvDecoder



@dataclass
class MultiViTConfig:
    """Config section `model.multivit`: the camera branch (CameraViT: conv stem with 8 x 8 patches into the
    SAME ViT as the LiDAR branch, its own decoder and per-pixel head (classes + background)); the LiDAR
    branch is RangeViT (`model.rangevit`, `model.backbone`)."""

    sections: ClassVar[tuple[str, ...]] = ("backbone", "rangevit", "multivit")
    data_fields: ClassVar[tuple[str, ...]] = ("dataset", "intensity_scale", "range")

    camera_patch: int = 8  # pixels per token side
    camera_stem_channels: int = 32
    camera_decoder_channels: int = 128  # = model.rangevit.decoder_channels for the contrastive loss
    image_size: list[int] = field(default_factory=lambda: [160, 512])  # (h, w) camera inputs are resized to

    def check(self, cfg) -> None:
        cfg.model.rangevit.check(cfg)
        if len(self.image_size) != 2 or min(self.image_size) <= 0 or self.camera_patch <= 0:
            raise ConfigError(f"model.multivit.image_size must be [h, w] > 0, got {self.image_size}")
        if self.camera_patch % 2 or any(v % self.camera_patch for v in self.image_size):
            raise ConfigError(f"model.multivit.image_size {self.image_size} must be divisible by camera_patch "
                              f"({self.camera_patch}, an even number)")


class CameraStem(nn.Module):
    """(B, 3, h, w) -> skip (B, Cs, h/2, w/2), tokens (B, D, h/p, w/p) for p x p pixel patches."""

    def __init__(self, channels: int, patch: int, dim: int):
        super().__init__()
        if patch % 2:
            raise ValueError(f"camera patch must be even, got {patch}")
        self.down = ConvBNAct(3, channels, k=3, stride=2)
        self.block = ResContextBlock(channels, channels)
        self.pool = nn.AvgPool2d(patch // 2, stride=patch // 2)
        self.proj = nn.Conv2d(channels, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.block(self.down(x))
        return skip, self.proj(self.pool(skip))


class MultiViT(RangeViT):
    def __init__(self, num_classes: int, backbone: FoundationViT, *, camera_patch: int = 8,
                 camera_stem_channels: int = 32, camera_decoder_channels: int = 128,
                 image_size: tuple[int, int] = (160, 512), **rangevit_kwargs):
        super().__init__(num_classes, backbone, **rangevit_kwargs)
        dim = backbone.width
        self.camera_patch = int(camera_patch)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        half = self.camera_patch // 2
        self.camera_stem = CameraStem(camera_stem_channels, self.camera_patch, dim)
        self.camera_decoder = UpConvDecoder(dim, camera_stem_channels, camera_decoder_channels, (half, half))
        self.camera_head = nn.Conv2d(camera_decoder_channels, num_classes + 1, 1)  # last = background

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "MultiViT":
        m = cfg.model.multivit
        return cls(num_classes, load_vit(cfg.model.backbone, trainable=True),
                   camera_patch=m.camera_patch, camera_stem_channels=m.camera_stem_channels,
                   camera_decoder_channels=m.camera_decoder_channels, image_size=tuple(m.image_size),
                   **RangeViT.config_kwargs(cfg))

    @property
    def background(self) -> int:
        """Index of the camera head's background class."""
        return self.num_classes

    def lidar_modules(self) -> list[nn.Module]:
        """Modules only the LiDAR branch uses (frozen during camera pretraining)."""
        return [self.stem, self.decoder, self.refiner, self.refiner_bn, self.head]

    def camera_modules(self) -> list[nn.Module]:
        return [self.camera_stem, self.camera_decoder, self.camera_head]

    def forward_camera(self, images: torch.Tensor) -> dict:
        """(B, 3, h, w) images (h, w divisible by the patch) -> {"logits": (B, C + 1, h, w),
        "features": (B, Cd, h/2, w/2) decoder features}."""
        h, w = images.shape[-2:]
        if h % self.camera_patch or w % self.camera_patch:
            raise ValueError(f"camera images must be divisible by {self.camera_patch}, got {h} x {w}")
        skip, tokens = self.camera_stem(normalise_images(images))
        feat = self.camera_decoder(self.run_vit(tokens), skip)
        logits = F.interpolate(self.camera_head(feat), size=(h, w), mode="bilinear", align_corners=False)
        return {"logits": logits, "features": feat}
