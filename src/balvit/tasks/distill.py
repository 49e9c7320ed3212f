"""Image-to-LiDAR distillation: a point backbone learns to reproduce a frozen image model's features.

Implements the pretraining of ScaLR, "Three Pillars improving Vision Foundation Model Distillation
for Lidar" (Puy, Gidaris, Boulch, Simeoni, Sautier, Perez, Bursuc, Marlet; CVPR 2024), from the
paper and the hyper-parameters of its public configs:

- teacher: a frozen vision foundation model (models/vit.py: DINOv2 ViT-S/14 by default,
  ViT-L/14 in the paper), run on the camera image resized to 224 x 448; its last-block patch features
  (before the final norm, as ScaLR takes them) are bilinearly up-sampled to the image and read at the
  pixel of every point;
- one camera per scan, drawn at random (nuScenes: any of the six; SemanticKITTI: image_2), and only
  the points visible in it (depth > 1 m, inside the image);
- student: the point backbone's tokens followed by a linear projection head (a 2-layer MLP when
  several teachers' features are concatenated), owned by this task;
- loss: mean over paired points of || f3d / |f3d| - f2d / |f2d| ||^2;
- several datasets mixed in one loader (`data.extra_datasets`, available to every task).

Up-sampling the patch map bilinearly to the full image and reading pixel (r, c) is computed without
materialising the image-size map: `grid_sample` (bilinear, border padding, align_corners=False) at
the centre of pixel (r, c) gives exactly the value `F.interpolate(..., mode="bilinear")` puts there.

The teachers are frozen modules of the task (never in the optimizer, never in checkpoints); only
the student's head is task state. Validation is the same loss over every paired point of the
validation frames (a fixed camera per frame: data/views.py), and best.pt follows -loss.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.dataset import SegmentationDataset, mixed_training_set
from ..data.views import CameraViews
from ..engine.evaluate import Evaluation, Sums
from ..errors import ConfigError
from ..losses import cosine_distillation_loss
from ..models.vit import BackboneConfig, FoundationViT, normalise_images
from ..models.weights import load_vit
from .base import Task, TaskContext

log = logging.getLogger(__name__)


@dataclass
class DistillConfig:
    """Config section `distill`: image-to-LiDAR distillation (ScaLR)."""

    # frozen image teachers; several: their (L2-normalised) pixel features are concatenated
    teachers: list[BackboneConfig] = field(default_factory=lambda: [BackboneConfig()])
    feature: Literal["last_block", "final_norm"] = "last_block"  # ScaLR: the last block, before the final norm
    image_size: list[int] = field(default_factory=lambda: [224, 448])  # (height, width) images are resized to
    min_depth: float = 1.0  # points closer to the camera than this are not paired
    head_hidden: int = 0  # hidden width of the 2-layer MLP head of several teachers (0: their total width)
    # keep up to this many teacher feature maps in memory (images are not augmented, so a map is
    # reused whenever its camera image comes back); 0: off
    teacher_cache: int = 0


# ----------------------------------------------------------------------------------- teachers


def pixel_features(fmap: torch.Tensor, uv: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """fmap (D, h, w) patch features of an image of `image_size` (H, W), uv (P, 2) continuous pixel
    coordinates -> (P, D): the bilinearly up-sampled (H, W) map read at each point's pixel."""
    h_img, w_img = image_size
    pix = torch.floor(uv.to(torch.float64 if fmap.dtype == torch.float64 else torch.float32) + 0.5)  # its pixel
    gx = (pix[:, 0] + 0.5) / w_img * 2 - 1
    gy = (pix[:, 1] + 0.5) / h_img * 2 - 1
    grid = torch.stack([gx, gy], dim=1).to(fmap.dtype)[None, None]  # (1, 1, P, 2)
    out = F.grid_sample(fmap[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].t()  # (P, D)


class DistillTask(Task):
    frozen_modules = ("teachers",)
    needs_labels = False  # the teacher's features are the targets

    def __init__(self, model: nn.Module, teachers: list[FoundationViT], image_size: tuple[int, int] = (224, 448),
                 feature: str = "last_block", head_hidden: int = 0, teacher_cache: int = 0, min_depth: float = 1.0):
        super().__init__(model)
        if not hasattr(model, "encode"):
            raise ConfigError("task=distill needs a point model with encode(batch) -> (tokens, up_index), "
                              "e.g. model.name=waffleiron")
        self.teachers = nn.ModuleList(teachers)
        for t in teachers:
            if image_size[0] % t.patch_size or image_size[1] % t.patch_size:
                raise ConfigError(f"distill.image_size {list(image_size)} must be a multiple of teacher "
                                  f"{t.name}'s patch size {t.patch_size}")
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.feature = feature
        self.min_depth = min_depth
        dims = [t.width for t in teachers]
        width = model.feature_dim
        if len(teachers) == 1:
            self.head = nn.Linear(width, dims[0])
        else:  # several teachers: concatenated targets, 2-layer MLP head
            hidden = head_hidden or sum(dims)
            self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, sum(dims)))
        # the segmentation head is not used here: frozen, so the optimizer and DDP leave it alone
        if hasattr(model, "head"):
            model.head.requires_grad_(False)
        self.cache_size = teacher_cache
        self._cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()

    @classmethod
    def check_config(cls, cfg) -> None:
        d = cfg.distill
        if not d.teachers:
            raise ConfigError("task=distill needs at least one teacher in distill.teachers")
        if len(d.image_size) != 2 or min(d.image_size) <= 0:
            raise ConfigError(f"distill.image_size must be [height, width], got {d.image_size}")
        if d.teacher_cache < 0 or d.min_depth < 0:
            raise ConfigError("distill.teacher_cache and distill.min_depth must be >= 0")

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "DistillTask":
        d = cfg.distill
        teachers = []
        for k, tcfg in enumerate(d.teachers):
            t = load_vit(tcfg)
            log.info("distillation teacher %d: %s, weights %s, sha256 %s", k, t.name, tcfg.weights,
                     t.weights_info["sha256"][:16])
            teachers.append(t)
        return cls(model, teachers, tuple(d.image_size), d.feature, d.head_hidden, d.teacher_cache, d.min_depth)

    # -- data --------------------------------------------------------------------------------------

    def _dataset(self, ctx: TaskContext, reader, data_cfg, train: bool, seed: int) -> SegmentationDataset:
        views = CameraViews(reader, which="one", image_size=self.image_size, min_depth=self.min_depth, train=train,
                            seed=seed)
        return ctx.samples(reader, data_cfg, train=train, seed=seed, views=views)

    def train_dataset(self, ctx: TaskContext):
        return mixed_training_set(ctx.train_readers, lambda r, dcfg, seed: self._dataset(ctx, r, dcfg, True, seed),
                                  ctx.cfg.train.seed)

    def evaluations(self, ctx: TaskContext) -> list[Evaluation]:
        """The distillation loss over every visible point of the validation frames."""
        data = self._dataset(ctx, ctx.val_reader, ctx.cfg.data, False, ctx.cfg.train.seed)
        sums = Sums(("loss_sum", "pairs"), {"distill_loss": ("loss_sum", "pairs")})
        return [Evaluation("val", data, self, self.validation_outputs, [sums])]

    def score(self, metrics: dict) -> float:
        return -metrics["distill_loss"]

    def validation_outputs(self, batch: dict) -> dict:
        tokens, up = self.model.encode(batch)
        student, target = self.pairs(batch, tokens[up])
        loss = cosine_distillation_loss(self.head(student).float(), target, reduction="sum")
        return {"loss_sum": loss, "pairs": len(student)}

    # -- teacher -----------------------------------------------------------------------------------

    def _teacher_tokens(self, teacher: FoundationViT, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, D, h, w) patch features."""
        if self.feature == "final_norm":
            tokens = teacher.forward_image(pixels)
            grid = (pixels.shape[2] // teacher.patch_size, pixels.shape[3] // teacher.patch_size)
        else:
            x, grid = teacher.embed_image(pixels)
            tokens = teacher.run_blocks(x, 0, teacher.depth, grid)[:, teacher.num_prefix:]
        b = tokens.shape[0]
        return tokens.float().transpose(1, 2).reshape(b, -1, *grid)

    @torch.no_grad()
    def teacher_maps(self, views: list[dict]) -> list[list[torch.Tensor]]:
        """Per view: the patch feature map (D_t, h_t, w_t) of every teacher (cached by image key)."""
        maps: dict[int, list[torch.Tensor]] = {}
        todo = []
        for b, view in enumerate(views):
            hit = self._cache.get(view["key"]) if self.cache_size else None
            if hit is not None:
                self._cache.move_to_end(view["key"])
                maps[b] = hit
            else:
                todo.append(b)
        if todo:
            pixels = normalise_images(torch.stack([views[b]["image"] for b in todo]))
            per_teacher = [self._teacher_tokens(t, pixels) for t in self.teachers]
            for k, b in enumerate(todo):
                maps[b] = [m[k] for m in per_teacher]
                if self.cache_size:
                    self._cache[views[b]["key"]] = maps[b]
                    while len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [maps[b] for b in range(len(views))]

    # -- pairs and loss ----------------------------------------------------------------------------

    def pairs(self, batch: dict, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Point features (N, F) of the batch -> (student (P, F), teacher target (P, D)) for the P
        points visible in their scan's camera."""
        views = [v[0] for v in batch["cameras"]]
        maps = self.teacher_maps(views)
        off = batch["offsets"].tolist()
        students, targets = [], []
        for b, view in enumerate(views):
            vis = torch.nonzero(view["valid"]).squeeze(1)
            if len(vis) == 0:
                continue
            uv = view["uv"][vis]
            per_teacher = [pixel_features(m, uv, self.image_size) for m in maps[b]]
            if len(per_teacher) > 1:  # equal weight per teacher
                per_teacher = [F.normalize(t, dim=1) for t in per_teacher]
            targets.append(torch.cat(per_teacher, dim=1))
            students.append(feats[off[b] + vis])
        if not students:
            d = sum(t.width for t in self.teachers)
            return feats.new_zeros(0, feats.shape[1]), feats.new_zeros(0, d)
        return torch.cat(students), torch.cat(targets)

    def forward(self, batch: dict) -> dict:
        tokens, up = self.model.encode(batch)
        student, target = self.pairs(batch, tokens[up])
        loss = cosine_distillation_loss(self.head(student), target)
        return {"loss": loss, "losses": {"distill": loss.detach(),
                                         "pairs": torch.tensor(float(len(student)))}}
