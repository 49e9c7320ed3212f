"""ELiTe training: the PEFT-tuned image teacher, then patch-to-point multi-stage distillation.

Implements the objectives of "ELiTe: Efficient Image-to-LiDAR Knowledge Transfer for Semantic
Segmentation" (Zhang et al., ICME 2024), whose code builds on 2DPASS (Yan et al., ECCV 2022):

- `elite_teacher` (task and model): the foundation teacher (models/elite.py) learns per-pixel
  classes from camera pseudo-labels (data/pseudo_labels/samplg.py: projected LiDAR labels, densified, or
  SAM-PLG), loss = sum over its heads of CE + Lovasz on the labelled pixels (+ AdaLoRA's
  orthogonality regulariser); only adapters and heads train. Its validation reads the finest head
  at the pixels of the validation points (mIoU over camera-visible points) and, where the dataset has
  per-pixel classes (synthetic data), scores whole images.
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
from dataclasses import replace

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..losses import class_weights_from_counts, kl_distillation, segmentation_loss
from .base import Task

log = logging.getLogger(__name__)


def teacher_image_loss(teacher, batch: dict, loss_cfg, weights: torch.Tensor | None,
                       maps: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, dict]:
    """Sum over the teacher's heads of CE + Lovasz against the camera views' `pseudo` label images,
    at the resolution of the finest head (logits up-sampled bilinearly, labels resized nearest);
    returns (loss, per-head terms)."""
    views = [v for vs in batch["cameras"] for v in vs]
    if not views:
        zero = next(teacher.heads.parameters()).sum() * 0.0
        return zero, {}
    if maps is None:
        maps = teacher.forward_images([v["image"] for v in views])
    size = tuple(maps[-1].shape[-2:])
    target = torch.stack([
        F.interpolate(v["pseudo"][None, None].float(), size=size, mode="nearest-exact")[0, 0].long() for v in views
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


def _class_weights(cfg, trainer) -> torch.Tensor | None:
    if cfg.loss.class_weights == "none":
        return None
    return class_weights_from_counts(trainer.class_counts(), cfg.loss.class_weights)


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


# ================================================================================== teacher


class ELiTeTeacherTask(Task):
    def __init__(self, model: nn.Module, cfg, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        from ..models.elite import ELiTeTeacher

        if not isinstance(model, ELiTeTeacher):
            raise ConfigError(f"task elite_teacher trains model.name=elite_teacher, not {type(model).__name__}")
        self.cfg = cfg
        self.loss_cfg = cfg.loss
        self.register_buffer("class_weights", class_weights.float() if class_weights is not None else None,
                             persistent=False)

    @classmethod
    def from_config(cls, cfg, model: nn.Module, trainer) -> "ELiTeTeacherTask":
        return cls(model, cfg, _class_weights(cfg, trainer))

    def train_dataset(self, trainer):
        from ..data.dataset import SegmentationDataset
        from ..data.pseudo_labels import CameraLabelDataset

        cfg = self.cfg
        base = SegmentationDataset(trainer.train_reader, replace(cfg.data, cameras=True), train=False)
        return CameraLabelDataset(base, cfg.elite.pseudo_labels, trainer.labels.num_classes, pseudo=True,
                                  flip=cfg.elite.flip, seed=cfg.train.seed)

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

    @torch.no_grad()
    def validate(self, trainer) -> dict:
        """mIoU of the finest head over the camera-visible validation points ("score", "miou") and,
        where per-pixel classes exist, over whole images ("pixel_miou")."""
        return evaluate_teacher(self.model, trainer.val_reader, self.cfg, trainer.info, trainer.cfg.data.max_val_frames)


@torch.no_grad()
def evaluate_teacher(teacher, reader, cfg, info, max_frames: int = 0) -> dict:
    from ..data.dataset import SegmentationDataset, collate, to_device
    from ..data.pseudo_labels import CameraLabelDataset, pixel_confusion, pixel_scores
    from ..engine import dist as D
    from ..engine.metrics import ConfusionMatrix, summarize

    if not reader.has_labels:
        raise ConfigError(f"split {reader.split!r} has no labels to evaluate the teacher against")
    base = SegmentationDataset(reader, replace(cfg.data, cameras=True), train=False)
    data = CameraLabelDataset(base, cfg.elite.pseudo_labels, reader.labels.num_classes, pseudo=False, truth=True)
    c = reader.labels.num_classes
    n = len(data) if not max_frames else min(max_frames, len(data))
    points = ConfusionMatrix(c)
    pixels = torch.zeros(c, c + 1, dtype=torch.int64)
    was_training = teacher.training
    teacher.eval()
    try:
        for i in D.shard(n, info.rank, info.world_size):
            batch = to_device(collate([data[i]]), info.device)
            views = batch["cameras"][0]
            if not views:
                continue
            maps = teacher.forward_images([v["image"] for v in views])
            heads, visible = teacher.point_logits(batch, maps)
            points.update(heads[-1][visible].argmax(1).cpu(), batch["labels"][visible].cpu())
            for k, v in enumerate(views):
                if "truth" not in v:
                    continue
                full = F.interpolate(maps[-1][k:k + 1].float(), size=v["truth"].shape, mode="bilinear",
                                     align_corners=False)
                pred = full[0].argmax(0).cpu().numpy()
                pixels += torch.from_numpy(pixel_confusion(pred, v["truth"].cpu().numpy(), c))
    finally:
        teacher.train(was_training)
    points.all_reduce()
    pixels = _all_reduce(pixels.to(info.device)).cpu()
    metrics = summarize(points.numpy(), reader.labels.class_names, reader.labels.miou)
    metrics["score"] = metrics["miou"]
    metrics["frames"] = n
    if pixels.sum() > 0:
        pix = pixel_scores(pixels.numpy(), reader.labels.class_names)
        metrics["pixel_miou"] = pix["miou"]
        metrics["pixel_iou"] = pix["iou"]
    return metrics


# ================================================================================== student


class ELiTeStudentTask(Task):
    def __init__(self, model: nn.Module, teacher: nn.Module, cfg, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        from ..models.elite import ELiTeStudent, ELiTeTeacher

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
    def from_config(cls, cfg, model: nn.Module, trainer) -> "ELiTeStudentTask":
        from ..engine.pretrained import load_trained_model
        from ..models.elite import ELiTeTeacher

        num_classes = trainer.labels.num_classes
        el = cfg.elite
        if el.teacher_checkpoint:
            teacher, tcfg = load_trained_model(el.teacher_checkpoint, expect="elite_teacher", num_classes=num_classes,
                                               role="ELiTe teacher (elite.teacher_checkpoint)",
                                               freeze=el.teacher_mode == "frozen")
            if el.teacher_mode == "joint":
                teacher.set_trainable(True)  # adapters and heads train on
            log.info("ELiTe teacher from %s (%s encoder %s, %s)", el.teacher_checkpoint, tcfg.model.elite_teacher.encoder,
                     teacher.frozen_identities()["encoder"]["name"], el.teacher_mode)
        elif el.teacher_mode == "joint":
            teacher = ELiTeTeacher.from_config(cfg, num_classes)
            log.info("ELiTe teacher built from this config (joint training, no teacher checkpoint)")
        else:
            raise ConfigError("task elite_student with elite.teacher_mode=frozen needs elite.teacher_checkpoint "
                              "(train a teacher first with a task elite_teacher config), or use teacher_mode=joint")
        return cls(model, teacher, cfg, _class_weights(cfg, trainer))

    def train_dataset(self, trainer):
        from ..data.dataset import SegmentationDataset
        from ..data.pseudo_labels import CameraLabelDataset

        cfg = self.cfg
        base = SegmentationDataset(trainer.train_reader, replace(cfg.data, cameras=True), train=True, seed=cfg.train.seed)
        if not self.joint:
            return base
        return CameraLabelDataset(base, cfg.elite.pseudo_labels, trainer.labels.num_classes, pseudo=True,
                                  seed=cfg.train.seed)

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

    def predict(self, batch: dict) -> torch.Tensor:
        return self.model(batch)["logits"]


__all__ = ["ELiTeTeacherTask", "ELiTeStudentTask", "teacher_image_loss", "stage_pairs", "evaluate_teacher"]
