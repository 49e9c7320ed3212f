"""MultiViT training modes: camera pretraining, and joint camera + LiDAR training.

The training schemes of the MultiViT study on top of RangeViT (Ando et al., CVPR 2023): the camera
branch (CameraViT, models/multivit.py) shares the ViT with the LiDAR branch and learns from camera
pseudo-labels (data/pseudo_labels: LiDAR labels projected into the image and densified, optionally
masks from instance box prompts), with a background class C for pixels without LiDAR evidence.

- `multivit_camera` (camera pretraining): only the camera branch and the shared ViT are trained,
  loss = CE-or-focal + Lovasz over the pixels (classes + background) against the pseudo-labels,
  weighted by `camera_task.loss` (the thesis: Lovasz + 3 x focal) or, unset, by the LiDAR `loss`.
  LiDAR fine-tuning follows as a second run of the `rangevit` model (or `multivit` with the plain
  `segmentation` task) started from this run's checkpoint with `train.init_from`.
- `multivit_joint`: each sample is a range-image crop and the part of one camera image it overlaps
  (the crop is aimed at a randomly drawn camera, the image cut to the columns of the crop's visible
  points: data/views.py); loss = lidar_weight x LiDAR loss + camera_weight x camera loss
  (+ contrastive_weight x the class-mean alignment of LiDAR point and camera pixel decoder
  features: "pull" or "pull_push", losses.class_mean_contrastive).

Validation: the LiDAR point mIoU on the validation split (joint training), and the camera-pixel
scores (balvit/metrics.py) of the camera branch on every camera of the validation frames (or the
first `camera_task.val_cameras`) against their pseudo-labels (camera_pseudo_*) and, where the data
has per-pixel classes (the synthetic generator writes them), against those (camera_true_*). best.pt
follows the LiDAR mIoU in joint training and camera_pseudo_miou in camera pretraining.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.dataset import mixed_training_set
from ..data.pseudo_labels import PseudoLabels
from ..data.views import CameraViews, resize_image, stack_views
from ..engine.evaluate import CameraPixels, Evaluation, point_evaluation
from ..config import LossConfig
from ..errors import ConfigError
from ..losses import class_mean_contrastive, class_means, segmentation_loss
from .base import Task, TaskContext

log = logging.getLogger(__name__)


@dataclass
class CameraTaskConfig:
    """Config section `camera_task`: MultiViT's training modes."""

    camera_weight: float = 1.0  # weight of the camera loss (joint training)
    lidar_weight: float = 1.0  # weight of the LiDAR loss (joint training)
    contrastive: Literal["none", "pull", "pull_push"] = "none"  # class-mean feature alignment
    contrastive_weight: float = 0.1
    temperature: float = 0.1  # of the pull_push (InfoNCE) form
    align_crops: bool = True  # joint: the range-image crop overlaps the chosen camera image
    val_cameras: int = 0  # cameras per validation frame for the camera scores (0: all)
    # the camera loss's own terms and class weights (the MultiViT thesis: Lovasz + 3 x focal);
    # unset (null): the LiDAR loss section `loss`, class weights + background weight 1
    loss: LossConfig | None = None


class MultiViTCameraTask(Task):
    """Camera pretraining (`task: multivit_camera`): the camera branch + shared ViT on pseudo-labels."""

    align = False
    trains_lidar = False

    def __init__(self, model: nn.Module, cfg, labeller: PseudoLabels, class_weights: torch.Tensor | None = None,
                 camera_class_weights: torch.Tensor | None = None):
        """class_weights: of the LiDAR loss; camera_class_weights: of the camera loss's classes (without
        background), by default the LiDAR ones; the background class weighs 1."""
        super().__init__(model)
        self.cfg = cfg
        self.loss_cfg = cfg.loss
        self.camera_loss_cfg = cfg.camera_task.loss or cfg.loss
        self.task_cfg = cfg.camera_task
        self.labeller = labeller
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=False)
        else:
            self.class_weights = None
        cam = camera_class_weights if camera_class_weights is not None else class_weights
        if cam is not None and self.camera_loss_cfg.class_weights != "none":
            cam_w = torch.cat([cam.float(), cam.new_ones(1).float()])  # background weight 1
            self.register_buffer("camera_weights", cam_w, persistent=False)
        else:
            self.camera_weights = None
        if not self.trains_lidar:  # LiDAR-only parts get no gradient here: keep them out of the optimizer
            for module in model.lidar_modules():
                module.requires_grad_(False)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.name != "multivit":
            raise ConfigError(f"task {cfg.task} needs model.name=multivit, got {cfg.model.name!r}")
        cfg.pseudo_labels.check()
        t = cfg.camera_task
        if t.val_cameras < 0 or t.temperature <= 0:
            raise ConfigError("camera_task.val_cameras must be >= 0 and camera_task.temperature > 0")
        if (cfg.task == "multivit_joint" and t.contrastive != "none"
                and cfg.model.multivit.camera_decoder_channels != cfg.model.rangevit.decoder_channels):
            raise ConfigError("camera_task.contrastive compares decoder features: model.multivit.camera_decoder_channels "
                              f"({cfg.model.multivit.camera_decoder_channels}) must equal model.rangevit.decoder_channels "
                              f"({cfg.model.rangevit.decoder_channels})")

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "MultiViTCameraTask":
        labeller = PseudoLabels(cfg.pseudo_labels, ctx.labels, background=ctx.labels.num_classes)
        log.info("camera pseudo-labels: %s, densify radius %d px", cfg.pseudo_labels.method,
                 cfg.pseudo_labels.densify_radius)
        camera_kind = (cfg.camera_task.loss or cfg.loss).class_weights
        return cls(model, cfg, labeller, ctx.class_weights(), ctx.class_weights(camera_kind))

    # -- data --------------------------------------------------------------------------------------

    def train_dataset(self, ctx: TaskContext):
        cfg = self.cfg
        aug = cfg.data.augment
        align = self.align and self.task_cfg.align_crops

        def make(reader, dcfg, seed):
            views = CameraViews(reader, which="one", image_size=tuple(cfg.model.multivit.image_size),
                                flip=aug.enabled, crop_to_points=align and aug.enabled and bool(aug.crop_width),
                                aim_crop=align, labeller=self.labeller, train=True, seed=seed)
            return ctx.samples(reader, replace(dcfg, cameras=False), train=True, seed=seed, views=views)

        return mixed_training_set(ctx.train_readers, make, cfg.train.seed)

    def camera_evaluation(self, ctx: TaskContext) -> Evaluation:
        """Every camera (or the first camera_task.val_cameras) of the validation frames at full size."""
        views = CameraViews(ctx.val_reader, which="all", max_views=self.task_cfg.val_cameras, labeller=self.labeller,
                            truth=True, train=False, seed=self.cfg.train.seed)
        data = ctx.samples(ctx.val_reader, replace(self.cfg.data, cameras=False), train=False, views=views)
        labels = ctx.labels
        return Evaluation("val camera", data, self.model, self.camera_predictions, [
            CameraPixels(labels, "camera_pred", "label", "camera_pseudo_"),
            CameraPixels(labels, "camera_pred", "truth", "camera_true_")])

    def camera_predictions(self, batch: dict) -> dict:
        """Per view: the camera branch on the image resized to model.multivit.image_size, its logits
        up-sampled bilinearly to the view's size -> (h, w) class map (C = background)."""
        size = tuple(self.cfg.model.multivit.image_size)
        preds = []
        for vs in batch["cameras"]:
            for view in vs:
                image = view["image"]
                x = resize_image(image.permute(1, 2, 0).cpu().numpy(), size)[None].to(image.device)
                logits = self.model.forward_camera(x)["logits"].float()
                logits = F.interpolate(logits, size=image.shape[-2:], mode="bilinear", align_corners=False)
                preds.append(logits.argmax(1)[0])
        return {"camera_pred": preds}

    def evaluations(self, ctx: TaskContext) -> list[Evaluation]:
        return [self.camera_evaluation(ctx)]

    def score(self, metrics: dict) -> float:
        return metrics["camera_pseudo_miou"]

    # -- loss --------------------------------------------------------------------------------------

    def camera_loss(self, batch: dict) -> tuple[torch.Tensor, dict, dict]:
        images, labels = stack_views(batch)
        out = self.model.forward_camera(images)
        logits = out["logits"].permute(0, 2, 3, 1).reshape(-1, out["logits"].shape[1])
        terms = segmentation_loss(logits, labels.reshape(-1), self.camera_loss_cfg, self.camera_weights)
        return terms["total"], {f"camera_{k}": v for k, v in terms.items() if k != "total"}, {**out, "labels": labels}

    def forward(self, batch: dict) -> dict:
        loss, losses, _ = self.camera_loss(batch)
        return {"loss": loss, "losses": losses}


class MultiViTJointTask(MultiViTCameraTask):
    """Joint training (`task: multivit_joint`): LiDAR + camera losses on aligned crops, optionally
    the class-mean contrastive alignment of the two branches' decoder features."""

    align = True
    trains_lidar = True

    def evaluations(self, ctx: TaskContext) -> list[Evaluation]:
        lidar = ctx.samples(ctx.val_reader, replace(self.cfg.data, cameras=False), train=False)
        return [point_evaluation(self.model, lidar, ctx.labels, name="val"), self.camera_evaluation(ctx)]

    def score(self, metrics: dict) -> float:
        return metrics["miou"]

    def forward(self, batch: dict) -> dict:
        t = self.task_cfg
        out = self.model(batch)
        lidar = segmentation_loss(out["logits"], batch["labels"], self.loss_cfg, self.class_weights)
        cam_loss, losses, cam = self.camera_loss(batch)
        losses.update({f"lidar_{k}": v for k, v in lidar.items() if k != "total"})
        loss = t.lidar_weight * lidar["total"] + t.camera_weight * cam_loss
        if t.contrastive != "none":
            c = self.model.num_classes
            feat = cam["features"]  # (V, Cd, h/2, w/2)
            lab = F.interpolate(cam["labels"][:, None].float(), size=feat.shape[-2:], mode="nearest")[:, 0].long()
            cam_means, cam_present = class_means(feat.permute(0, 2, 3, 1).reshape(-1, feat.shape[1]), lab.reshape(-1), c)
            pt_means, pt_present = class_means(out["point_features"], batch["labels"], c)
            con = class_mean_contrastive(pt_means, pt_present, cam_means, cam_present, t.contrastive, t.temperature)
            losses["contrastive"] = con
            loss = loss + t.contrastive_weight * con
        return {"loss": loss, "logits": out["logits"], "losses": losses}
