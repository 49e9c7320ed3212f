"""ELiTe training: the PEFT-tuned image teacher, then patch-to-point multi-stage distillation.

Implements the objectives of "ELiTe: Efficient Image-to-LiDAR Knowledge Transfer for Semantic
Segmentation" (Zhang et al., ICME 2024), whose code builds on 2DPASS (Yan et al., ECCV 2022):

- `elite_teacher` (task and model): the foundation teacher (models/elite.py) learns per-pixel
  classes from camera pseudo-labels (data/pseudo_labels: projected LiDAR labels, densified, or
  SAM-PLG), loss = sum over its heads of CE + Lovasz on the labelled pixels (+ AdaLoRA's
  orthogonality regulariser); only adapters and heads train. Its validation reads the finest head
  at the pixels of the validation points (point mIoU over camera-visible points) and, where the
  dataset has per-pixel classes (synthetic data), scores whole images (camera-pixel scores).
- `elite_student` (task), PPMSKD: for every stage s of the student (models/elite.py),

      L_s = stage_weight * (weighted CE + Lovasz)(stage logits_s, labels)
            + kd_weight / S * mean_{points, classes} KL terms of
              (softmax(teacher head_s at the point's pixel / T) || softmax(stage logits_s / T))

  (the official weighting, `elite.kd_form=official`: ELiTe network/arch_elite.py PPMSKD takes
  F.kl_div(log_softmax(s), softmax(t)), PyTorch's default 'mean' over points x classes, times
  lambda_xm / num_scales; kd_weight = lambda_xm = 0.05; `kd_form=per_point` instead adds
  kd_weight x the per-point KL averaged over points at every stage. KL only on points a camera
  sees; the teacher's target is detached), plus CE + Lovasz on the final logits. Student stage s (stride 2^s)
  is paired with the teacher head of the same relative depth (finest with finest, coarsest with
  coarsest). The teacher comes from `elite.teacher_checkpoint` and stays frozen (a frozen module of
  the task, never saved with the student), or with `elite.teacher_mode=joint` keeps training with its
  own 2D losses (as in 2DPASS / ELiTe; its adapters and heads are then saved as task state, still
  not in the student model). Inference (`balvit eval / predict`) uses the student alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.dataset import mixed_training_set
from ..data.labels import IGNORE
from ..data.pseudo_labels import PseudoLabels
from ..data.views import CameraViews
from ..engine.evaluate import CameraPixels, Evaluation, PointSegmentation
from ..errors import ConfigError
from ..losses import kl_distillation, segmentation_loss
from ..models.elite import ELiTeStudent, ELiTeTeacher
from .base import Task, TaskContext

log = logging.getLogger(__name__)


@dataclass
class ELiTeConfig:
    """Config section `elite`: teacher checkpoint, distillation weights (the camera labels are `pseudo_labels`)."""

    teacher_checkpoint: str = ""  # a trained elite_teacher checkpoint (best.pt / last.pt)
    # frozen: the loaded teacher is fixed; joint: it keeps training with its 2D losses (as 2DPASS / ELiTe)
    teacher_mode: Literal["frozen", "joint"] = "frozen"
    kd_weight: float = 0.05  # lambda_xm (2DPASS, ELiTe: train_params.lambda_xm)
    # official: each of the S stages adds kd_weight / S x the mean over points x classes of the KL
    # terms (ELiTe network/arch_elite.py: F.kl_div(...) default 'mean' x lambda_xm / num_scales);
    # per_point: each stage adds kd_weight x the mean over points of the per-point KL (summed over
    # the C classes): S x C times the official weight (this toolkit's form before the fidelity review)
    kd_form: Literal["official", "per_point"] = "official"
    kd_temperature: float = 1.0
    stage_weight: float = 1.0  # CE + Lovasz weight of each stage head of the student
    teacher_loss_weight: float = 1.0  # weight of the teacher's 2D losses (teacher task / joint mode)
    # frozen teacher: keep its per-pixel maps of each training frame in memory (float16, up to this
    # many MB) so it runs once per frame instead of once per step (0: no cache)
    teacher_cache_mb: int = 0
    flip: bool = True  # random horizontal flips of camera images when training the teacher


def check_elite(cfg) -> None:
    el = cfg.elite
    if el.kd_temperature <= 0:
        raise ConfigError("elite.kd_temperature must be positive")
    if el.teacher_cache_mb < 0:
        raise ConfigError("elite.teacher_cache_mb must be >= 0")
    cfg.pseudo_labels.check()


def teacher_image_loss(teacher, batch: dict, loss_cfg, weights: torch.Tensor | None,
                       maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """Sum over the teacher's heads of CE + Lovasz against the camera views' `label` images, at the
    resolution of the finest head (logits up-sampled bilinearly, labels resized nearest); returns
    (loss, per-head terms)."""
    views = [v for vs in batch["cameras"] for v in vs]
    if not views:
        zero = next(teacher.heads.parameters()).sum() * 0.0
        return zero, {}
    if maps is None:
        maps = teacher.forward_images([v["image"] for v in views])
    size = tuple(maps[-1].shape[-2:])
    target = torch.stack([
        F.interpolate(v["label"][None, None].float(), size=size, mode="nearest-exact")[0, 0].long() for v in views
    ]).reshape(-1)  # (V * H * W,)
    total, terms = 0.0, {}
    for k, m in enumerate(maps):
        logits = F.interpolate(m.float(), size=size, mode="bilinear", align_corners=False)
        logits = logits.permute(0, 2, 3, 1).reshape(-1, m.shape[1])
        loss = segmentation_loss(logits, target, loss_cfg, weights)["total"]
        terms[f"teacher_head{k + 1}"] = loss
        total = total + loss
    return total, terms


def stage_pairs(num_stages: int, num_heads: int) -> list[int]:
    """Teacher head (coarse to fine) for each student stage (fine to coarse), same relative depth."""
    if num_stages == 1:
        return [num_heads - 1]
    return [round((1 - s / (num_stages - 1)) * (num_heads - 1)) for s in range(num_stages)]


def labelled_views(ctx: TaskContext, flip: bool):
    """make(reader, data_cfg, seed) of training samples whose every camera view carries pseudo-labels."""
    labeller = PseudoLabels(ctx.cfg.pseudo_labels, ctx.labels, background=IGNORE)

    def make(reader, dcfg, seed, train: bool = True):
        views = CameraViews(reader, which="all", flip=flip, labeller=labeller, train=True, seed=seed)
        return ctx.samples(reader, replace(dcfg, cameras=False), train=train, seed=seed, views=views)

    return make


# ================================================================================== teacher


class ELiTeTeacherTask(Task):
    def __init__(self, model: nn.Module, cfg, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        if not isinstance(model, ELiTeTeacher):
            raise ConfigError(f"task elite_teacher trains model.name=elite_teacher, not {type(model).__name__}")
        self.cfg = cfg
        self.loss_cfg = cfg.loss
        self.register_buffer("class_weights", class_weights.float() if class_weights is not None else None,
                             persistent=False)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.name != "elite_teacher":
            raise ConfigError(f"task elite_teacher trains model.name=elite_teacher, not {cfg.model.name!r}")
        check_elite(cfg)

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "ELiTeTeacherTask":
        return cls(model, cfg, ctx.class_weights())

    def train_dataset(self, ctx: TaskContext):
        make = labelled_views(ctx, self.cfg.elite.flip)
        # the teacher learns from camera images: the points are not augmented (their pixels are the labels')
        return mixed_training_set(ctx.train_readers, lambda r, d, seed: make(r, d, seed, train=False),
                                  self.cfg.train.seed)

    def forward(self, batch: dict) -> dict:
        loss, terms = teacher_image_loss(self.model, batch, self.loss_cfg, self.class_weights)
        loss = self.cfg.elite.teacher_loss_weight * loss
        if self.model.orth_reg_weight and self.model.peft_kind == "adalora":
            reg = self.model.orth_regularization()
            terms["orth_reg"] = reg
            loss = loss + self.model.orth_reg_weight * reg
        return {"loss": loss, "losses": terms}

    def after_step(self, step: int) -> None:
        self.model.after_step(step)

    def evaluations(self, ctx: TaskContext) -> list[Evaluation]:
        """Point mIoU of the finest head over the camera-visible validation points ("miou") and, where
        per-pixel classes exist, camera-pixel scores over whole images ("pixel_miou", ...)."""
        if not ctx.val_reader.has_labels:
            raise ConfigError(f"split {ctx.val_reader.split!r} has no labels to evaluate the teacher against")
        views = CameraViews(ctx.val_reader, which="all", truth=True, train=False)
        data = ctx.samples(ctx.val_reader, replace(ctx.cfg.data, cameras=False), train=False, views=views)
        return [Evaluation("val teacher", data, self.model, self.teacher_predictions, [
            PointSegmentation(ctx.labels, mask_key="visible"),
            CameraPixels(ctx.labels, "pixel_pred", "truth", "pixel_")])]

    def teacher_predictions(self, batch: dict) -> dict:
        views = [v for vs in batch["cameras"] for v in vs]
        maps = self.model.forward_images([v["image"] for v in views])
        heads, visible = self.model.point_logits(batch, maps)
        preds = []
        for k, v in enumerate(views):
            size = v["truth"].shape if "truth" in v else v["image"].shape[-2:]
            full = F.interpolate(maps[-1][k:k + 1].float(), size=size, mode="bilinear", align_corners=False)
            preds.append(full[0].argmax(0))
        return {"logits": heads[-1], "visible": visible, "pixel_pred": preds}


# ================================================================================== student


class ELiTeStudentTask(Task):
    def __init__(self, model: nn.Module, teacher: nn.Module, cfg, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        if not isinstance(model, ELiTeStudent):
            raise ConfigError(f"task elite_student trains model.name=elite_student, not {type(model).__name__}")
        if not isinstance(teacher, ELiTeTeacher):
            raise ConfigError(f"the ELiTe teacher must be an elite_teacher model, got {type(teacher).__name__}")
        if teacher.num_classes != model.num_classes:
            raise ConfigError(f"the teacher predicts {teacher.num_classes} classes, the student {model.num_classes}")
        self.cfg = cfg
        self.el = cfg.elite
        self.joint = cfg.elite.teacher_mode == "joint"
        self.frozen_modules = () if self.joint else ("teacher",)
        self.teacher = teacher
        if not self.joint:
            for p in teacher.parameters():
                p.requires_grad_(False)
            teacher.eval()
        self.pairs = stage_pairs(model.num_stages, len(teacher.heads))
        self.register_buffer("class_weights", class_weights.float() if class_weights is not None else None,
                             persistent=False)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.name != "elite_student":
            raise ConfigError(f"task elite_student trains model.name=elite_student, not {cfg.model.name!r}")
        check_elite(cfg)
        if cfg.elite.teacher_mode == "frozen" and not cfg.elite.teacher_checkpoint:
            raise ConfigError("task elite_student with elite.teacher_mode=frozen needs elite.teacher_checkpoint "
                              "(train a teacher first with a task elite_teacher config), or use teacher_mode=joint")

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "ELiTeStudentTask":
        num_classes = ctx.labels.num_classes
        el = cfg.elite
        if el.teacher_checkpoint:
            teacher, tcfg = ctx.load_model(el.teacher_checkpoint, expect="elite_teacher", num_classes=num_classes,
                                           role="ELiTe teacher (elite.teacher_checkpoint)",
                                           freeze=el.teacher_mode == "frozen")
            if el.teacher_mode == "joint":
                teacher.set_trainable(True)  # adapters and heads train on
            log.info("ELiTe teacher from %s (%s encoder %s, %s)", el.teacher_checkpoint, tcfg.model.elite_teacher.encoder,
                     teacher.frozen_identities()["encoder"]["name"], el.teacher_mode)
        else:  # joint training from scratch (check_config refuses frozen without a checkpoint)
            teacher = ELiTeTeacher.from_config(cfg, num_classes)
            log.info("ELiTe teacher built from this config (joint training, no teacher checkpoint)")
        return cls(model, teacher, cfg, ctx.class_weights())

    def train_dataset(self, ctx: TaskContext):
        cfg = self.cfg
        if self.joint:
            return mixed_training_set(ctx.train_readers, labelled_views(ctx, flip=False), cfg.train.seed)

        def make(reader, dcfg, seed):
            views = CameraViews(reader, which="all", train=True, seed=seed)
            return ctx.samples(reader, replace(dcfg, cameras=False), train=True, seed=seed, views=views)

        return mixed_training_set(ctx.train_readers, make, cfg.train.seed)

    # the teacher's state: nothing when frozen, its adapters + heads when trained jointly
    def extra_state_dict(self) -> dict:
        if not self.joint:
            return {}
        return {f"teacher.{k}": v for k, v in self.teacher.trainable_state_dict().items()}

    def load_extra_state_dict(self, state: dict) -> None:
        if not self.joint:
            return super().load_extra_state_dict(state)
        self.teacher.load_trainable_state_dict({k[len("teacher."):]: v for k, v in state.items()},
                                               source="task state (joint teacher)")

    def after_step(self, step: int) -> None:
        if self.joint:
            self.teacher.after_step(step)

    def forward(self, batch: dict) -> dict:
        el, loss_cfg, w = self.el, self.cfg.loss, self.class_weights
        out = self.model(batch)
        labels = batch["labels"]
        terms = {}
        main = segmentation_loss(out["logits"], labels, loss_cfg, w)
        loss = main["total"]
        terms.update({f"main_{k}": v for k, v in main.items() if k != "total"})

        views = [v for vs in batch["cameras"] for v in vs] if "cameras" in batch else []
        if not views:
            raise ConfigError("ELiTe distillation needs camera views in the training samples")
        images = [v["image"] for v in views]
        if self.joint:
            maps = self.teacher.forward_images(images)
        else:
            maps = self.frozen_teacher_maps(batch, images)
        heads, visible = self.teacher.point_logits(batch, [m.detach() for m in maps])
        stages = out["aux"]
        official = el.kd_form == "official"
        kd_weight = el.kd_weight / self.model.num_stages if official else el.kd_weight
        for s in range(self.model.num_stages):
            logits = stages[f"stage{s + 1}"]
            seg = segmentation_loss(logits, labels, loss_cfg, w)["total"]
            kd = kl_distillation(logits[visible], heads[self.pairs[s]][visible], el.kd_temperature,
                                 "elements" if official else "points")
            terms[f"stage{s + 1}_seg"] = seg
            terms[f"stage{s + 1}_kd"] = kd
            loss = loss + el.stage_weight * seg + kd_weight * kd
        if self.joint:
            t_loss, t_terms = teacher_image_loss(self.teacher, batch, loss_cfg, w, maps)
            terms.update(t_terms)
            loss = loss + el.teacher_loss_weight * t_loss
            if self.teacher.peft_kind == "adalora" and self.teacher.orth_reg_weight:
                loss = loss + self.teacher.orth_reg_weight * self.teacher.orth_regularization()
        terms["visible_share"] = visible.float().mean().detach()
        return {"loss": loss, "logits": out["logits"], "losses": terms}

    @torch.no_grad()
    def frozen_teacher_maps(self, batch: dict, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The frozen teacher's per-pixel maps of the batch's camera views, from the in-memory cache
        (keyed by frame index and camera; `elite.teacher_cache_mb`) where they were computed before.
        The student's augmentations move points, never the pixels they project to (projections are
        taken before augmentation), so a frame's maps are the same at every epoch."""
        budget = self.el.teacher_cache_mb * 2**20
        if budget <= 0:
            return self.teacher.forward_images(images)
        if not hasattr(self, "_map_cache"):
            self._map_cache, self._map_cache_bytes = {}, 0
        keys = [(int(batch["index"][b]), k) for b, vs in enumerate(batch["cameras"]) for k in range(len(vs))]
        missing = [j for j, key in enumerate(keys) if key not in self._map_cache]
        fresh = {}
        if missing:
            computed = self.teacher.forward_images([images[j] for j in missing])
            for n, j in enumerate(missing):
                fresh[keys[j]] = [m[n].half() for m in computed]  # the same precision as cached maps
                size = sum(m[n].numel() * 2 for m in computed)
                if self._map_cache_bytes + size <= budget:
                    self._map_cache[keys[j]] = fresh[keys[j]]
                    self._map_cache_bytes += size
        per_view = [fresh.get(key) or self._map_cache[key] for key in keys]
        return [torch.stack([v[h].float() for v in per_view]) for h in range(len(self.teacher.heads))]


__all__ = ["ELiTeConfig", "ELiTeTeacherTask", "ELiTeStudentTask", "teacher_image_loss", "stage_pairs"]
