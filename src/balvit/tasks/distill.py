"""Image-to-LiDAR distillation: a point backbone learns to reproduce a frozen image model's features.

Implements the pretraining of ScaLR, "Three Pillars improving Vision Foundation Model Distillation
for Lidar" (Puy, Gidaris, Boulch, Simeoni, Sautier, Perez, Bursuc, Marlet; CVPR 2024), from the
paper and the hyper-parameters of its public configs:

- teacher: a frozen vision foundation model (models/foundation.py: DINOv2 ViT-S/14 by default,
  ViT-L/14 in the paper), run on the camera image resized to 224 x 448; its last-block patch features
  (before the final norm, as ScaLR takes them) are bilinearly up-sampled to the image and read at the
  pixel of every point;
- one camera per scan, drawn at random (nuScenes: any of the six; SemanticKITTI: image_2), and only
  the points visible in it (depth > 1 m, inside the image);
- student: the point backbone's tokens followed by a linear projection head (a 2-layer MLP when
  several teachers' features are concatenated), owned by this task;
- loss: mean over paired points of || f3d / |f3d| - f2d / |f2d| ||^2;
- several datasets mixed in one loader (`distill.extra_datasets`).

Up-sampling the patch map bilinearly to the full image and reading pixel (r, c) is computed without
materialising the image-size map: `grid_sample` (bilinear, border padding, align_corners=False) at
the centre of pixel (r, c) gives exactly the value `F.interpolate(..., mode="bilinear")` puts there.

The teachers are frozen modules of the task (never in the optimizer, never in checkpoints); only
the student's head is task state. Validation is the same loss on the validation frames (with a
fixed camera per frame), reported as score = -loss.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import DataConfig, ExtraDataConfig
from ..data.camera import load_image, pixel_index, project_points
from ..data.dataset import SegmentationDataset, build_reader, to_device, training_frames
from ..data.mixed import MixedDataset
from ..engine import dist as D
from ..errors import ConfigError, DataError
from ..geometry import LoaderGeometry
from ..losses import cosine_distillation_loss
from ..models import loader_geometry
from ..models.foundation import FrozenViT, build_foundation
from .base import Task

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------- data


def resize_uv(uv: np.ndarray, valid: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Continuous pixel coordinates (N, 2) (pixel centres at integers) in an image of size (w, h) ->
    the same image resized to (W, H): u' = (u + 0.5) W / w - 0.5; -1 where not valid."""
    (w, h), (nw, nh) = size, new_size
    out = (uv.astype(np.float64) + 0.5) * np.array([nw / w, nh / h]) - 0.5
    out[~valid] = -1.0
    return out.astype(np.float32)


class DistillDataset(SegmentationDataset):
    """Samples of `SegmentationDataset` plus one camera view, drawn at random per (frame, epoch) in
    training and fixed per frame in validation: cameras = [{"name", "key", "image" (3, H, W) uint8
    resized to `image_size`, "uv" (N, 2) pixel coordinates in the resized image, "valid" (N,)}]."""

    def __init__(self, reader, cfg: DataConfig, train: bool, seed: int = 0, image_size: tuple[int, int] = (224, 448),
                 min_depth: float = 1.0, geometry: LoaderGeometry = LoaderGeometry()):
        super().__init__(reader, replace(cfg, cameras=False), train=train, seed=seed, geometry=geometry)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.min_depth = min_depth

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        sample = super().__getitem__((i, epoch))
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch if self.train else 0, i, 0xCA3])
        sample["cameras"] = [self.camera_view(i, sample["point_index"].numpy(), rng)]
        return sample

    def camera_view(self, i: int, point_index: np.ndarray, rng: np.random.Generator) -> dict:
        from PIL import Image

        cams = self.reader.load_cameras(i)
        if not cams:
            raise DataError(f"{self.reader.scan_path(i)}: no camera image to distil from")
        cam = cams[int(rng.integers(len(cams)))]
        original = self.reader.load_points(i)[point_index, :3]  # un-augmented coordinates
        uv, valid = project_points(original, cam, self.min_depth)
        h, w = self.image_size
        image = load_image(cam)
        if image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        return {
            "name": cam.name,
            "key": f"{cam.image_path}@{h}x{w}",
            "image": torch.from_numpy(np.array(image.transpose(2, 0, 1), copy=True)),
            "uv": torch.from_numpy(resize_uv(uv, valid, (cam.width, cam.height), (w, h))),
            "valid": torch.from_numpy(valid),
        }


def extra_data_config(base: DataConfig, extra: ExtraDataConfig, where: str) -> DataConfig:
    """The data section of a mixed-in dataset: its own identity and sensor, the rest from `base`."""
    if not extra.root:
        raise ConfigError(f"{where}.root is empty: give the dataset's root directory")
    fields = {name: getattr(extra, name) for name in ExtraDataConfig.__dataclass_fields__}
    return replace(base, **fields, cameras=True)


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

    def __init__(self, model: nn.Module, teachers: list[FrozenViT], image_size: tuple[int, int] = (224, 448),
                 feature: str = "last_block", head_hidden: int = 0, teacher_cache: int = 0):
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
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.cache_size = teacher_cache
        self._cache: OrderedDict[str, list[torch.Tensor]] = OrderedDict()
        self.cfg = None
        self._val_set = None

    @classmethod
    def from_config(cls, cfg, model: nn.Module, trainer) -> "DistillTask":
        d = cfg.distill
        teachers = []
        for k, tcfg in enumerate(d.teachers):
            t = build_foundation(tcfg)
            log.info("distillation teacher %d: %s, weights %s, sha256 %s", k, t.name, tcfg.weights,
                     t.weights_info["sha256"][:16])
            teachers.append(t)
        task = cls(model, teachers, tuple(d.image_size), d.feature, d.head_hidden, d.teacher_cache)
        task.cfg = cfg
        return task

    # -- data --------------------------------------------------------------------------------------

    def _dataset(self, reader, data_cfg: DataConfig, train: bool, seed: int) -> DistillDataset:
        return DistillDataset(reader, data_cfg, train=train, seed=seed, image_size=self.image_size,
                              min_depth=self.cfg.distill.min_depth, geometry=loader_geometry(self.cfg))

    def train_dataset(self, trainer):
        cfg = self.cfg
        sets = [self._dataset(trainer.train_reader, cfg.data, True, cfg.train.seed)]
        for j, extra in enumerate(cfg.distill.extra_datasets, start=1):
            dcfg = extra_data_config(cfg.data, extra, f"distill.extra_datasets[{j - 1}]")
            frames, desc = training_frames(dcfg)
            reader = build_reader(dcfg, dcfg.train_split, frames=frames)
            log.info("mixing in %s (%s): %s", dcfg.dataset, dcfg.root, desc)
            sets.append(self._dataset(reader, dcfg, True, cfg.train.seed + 7919 * j))
        return sets[0] if len(sets) == 1 else MixedDataset(sets)

    # -- teacher -----------------------------------------------------------------------------------

    def _teacher_tokens(self, teacher: FrozenViT, pixels: torch.Tensor) -> torch.Tensor:
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
            images = torch.stack([views[b]["image"] for b in todo]).float() / 255.0
            pixels = (images - self.pixel_mean) / self.pixel_std
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

    # -- validation --------------------------------------------------------------------------------

    @torch.no_grad()
    def validate(self, trainer) -> dict:
        """The distillation loss over every visible point of the validation frames; score = -loss."""
        from ..engine.trainer import autocast, eval_loader

        cfg = self.cfg
        if self._val_set is None:
            self._val_set = self._dataset(trainer.val_reader, cfg.data, False, cfg.train.seed)
        loader = eval_loader(self._val_set, trainer.info, cfg.eval.batch_size, cfg.data.num_workers,
                             cfg.data.max_val_frames)
        was_training = self.training
        self.eval()
        total, pairs, frames = 0.0, 0, 0
        try:
            for batch in loader:
                batch = to_device(batch, trainer.info.device)
                with autocast(trainer.info.device, trainer.dtype):
                    tokens, up = self.model.encode(batch)
                    student, target = self.pairs(batch, tokens[up])
                    total += float(cosine_distillation_loss(self.head(student).float(), target, reduction="sum"))
                pairs += len(student)
                frames += len(batch["frame"])
        finally:
            self.train(was_training)
        sums = D.all_gather_object((total, pairs, frames))
        total, pairs, frames = (sum(s[k] for s in sums) for k in range(3))
        loss = total / max(pairs, 1)
        return {"score": -loss, "distill_loss": loss, "pairs": pairs, "frames": frames}
