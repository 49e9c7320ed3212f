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

import torch
import torch.nn as nn
import torch.nn.functional as F

from .foundation import FrozenViT, build_foundation
from .layers import ConvBNAct, ResContextBlock
from .rangevit import RangeViT, UpConvDecoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    def __init__(self, num_classes: int, backbone: FrozenViT, *, camera_patch: int = 8,
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
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_config(cls, cfg, num_classes: int) -> "MultiViT":
        m = cfg.model.multivit
        return cls(num_classes, build_foundation(cfg.model.backbone, trainable=True),
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

    def normalise_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) uint8 RGB (or float 0..1) -> ImageNet-normalised float."""
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
        return (x - self.pixel_mean) / self.pixel_std

    def forward_camera(self, images: torch.Tensor) -> dict:
        """(B, 3, h, w) images (h, w divisible by the patch) -> {"logits": (B, C + 1, h, w),
        "features": (B, Cd, h/2, w/2) decoder features}."""
        h, w = images.shape[-2:]
        if h % self.camera_patch or w % self.camera_patch:
            raise ValueError(f"camera images must be divisible by {self.camera_patch}, got {h} x {w}")
        skip, tokens = self.camera_stem(self.normalise_images(images))
        feat = self.camera_decoder(self.run_vit(tokens), skip)
        logits = F.interpolate(self.camera_head(feat), size=(h, w), mode="bilinear", align_corners=False)
        return {"logits": logits, "features": feat}
