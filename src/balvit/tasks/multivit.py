"""MultiViT training modes: camera pretraining, and joint camera + LiDAR training.

The training schemes of the MultiViT study on top of RangeViT (Ando et al., CVPR 2023): the camera
branch (CameraViT, models/multivit.py) shares the ViT with the LiDAR branch and learns from camera
pseudo-labels (LiDAR labels projected into the image and densified, optionally SAM masks from
instance box prompts: data/pseudo_labels/boxes.py).

- `multivit_camera` (camera pretraining): only the camera branch and the shared ViT are trained,
  loss = CE-or-focal + Lovasz over the pixels (classes + background) against the pseudo-labels,
  weighted by `camera_task.loss` (the thesis: Lovasz + 3 x focal) or, unset, by the LiDAR `loss`.
  LiDAR fine-tuning follows as a second run of the `rangevit` model (or `multivit` with the plain
  `segmentation` task) started from this run's checkpoint with `train.init_from`.
- `multivit_joint`: each sample is a range-image crop and the part of one camera image it overlaps
  (the crop is aimed at a randomly drawn camera, the image cut to the columns of the crop's visible
  points); loss = lidar_weight x LiDAR loss + camera_weight x camera loss
  (+ contrastive_weight x the class-mean alignment of LiDAR point and camera pixel decoder
  features: "pull" or "pull_push", losses.class_mean_contrastive).

Validation: LiDAR mIoU on the validation split (the normal path), camera mIoU against the
pseudo-labels of the validation frames, and, where the data has per-pixel class masks (the
synthetic generator writes them), against those. The score (best.pt) is the LiDAR mIoU for joint
training and the camera mIoU against the pseudo-labels for camera pretraining.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.camera import load_image, load_mask, project_points
from ..data.dataset import SegmentationDataset
from ..data.labels import IGNORE
from ..data.pseudo_labels import PseudoLabeller, build_predictor
from ..losses import class_mean_contrastive, class_means, class_weights_from_counts, segmentation_loss
from .base import Task

log = logging.getLogger(__name__)


def resize_view(image: np.ndarray, label: np.ndarray | None, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(H, W, 3) uint8 image and (H, W) label image -> (3, h, w) uint8 (bilinear), (h, w) int64 (nearest)."""
    x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False).round().clamp(0, 255).to(torch.uint8)[0]
    if label is None:
        return x, None
    y = torch.from_numpy(np.array(label, dtype=np.float32))[None, None]
    y = F.interpolate(y, size=size, mode="nearest")[0, 0].long()
    return x, y


class CameraFrames(SegmentationDataset):
    """Training samples with one camera view each: sample["cameras"] = [{"name", "image" (3, h, w)
    uint8, "label" (h, w) int64 pseudo-labels (C = background, 255 = ignore)}].

    The camera is drawn per (seed, epoch, frame); with `align` the range-image crop is aimed at it
    and the image cut to the columns of the crop's visible points. Only that camera's image is read.
    """

    def __init__(self, reader, cfg, labeller: PseudoLabeller, train: bool, seed: int = 0, align: bool = False):
        super().__init__(reader, dataclasses.replace(cfg.data, cameras=False), train=train, seed=seed)
        self.labeller = labeller
        self.cache_dir = cfg.pseudo_labels.cache_dir
        self.align = align
        self.image_size = tuple(cfg.model.multivit.image_size)
        self.flip = train and cfg.data.augment.enabled

    def _camera_rng(self, i: int, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, i, 0xCA3])

    def pick_camera(self, i: int, epoch: int, cameras: list):
        """The camera of frame i at this epoch (and whether to flip it): a pure function of them."""
        if not cameras:
            from ..errors import DataError

            raise DataError(f"frame {self.reader.frames[i]} has no camera images")
        rng = self._camera_rng(i, epoch)
        return cameras[int(rng.integers(len(cameras)))], bool(rng.integers(2))

    def choose_crop(self, i: int, epoch: int, points: np.ndarray, rng: np.random.Generator) -> int:
        """A crop centred (with jitter) on the column of a random point visible in the drawn camera."""
        if not self.align:
            return super().choose_crop(i, epoch, points, rng)
        cam, _ = self.pick_camera(i, epoch, self.reader.load_cameras(i))
        _, valid = project_points(self.reader.load_points(i)[:, :3], cam)
        width, cw = self.cfg.range.width, self.cfg.augment.crop_width
        if not valid.any():
            return super().choose_crop(i, epoch, points, rng)
        j = int(rng.choice(np.flatnonzero(valid)))
        yaw = np.arctan2(points[j, 1], points[j, 0])
        col = int((0.5 - yaw / (2 * np.pi)) * width)
        jitter = int(rng.integers(-(cw // 4), cw // 4 + 1))
        return int(np.clip(col - cw // 2 + jitter, 0, width - cw))

    def pseudo_label(self, i: int, cam, image: np.ndarray) -> np.ndarray:
        reader = self.reader

        def compute():
            points = reader.load_points(i)
            instances = reader.load_instances(i) if hasattr(reader, "load_instances") else None
            return self.labeller(points[:, :3], reader.load_labels(i), cam, image, instances)

        return self.labeller.cached(self.cache_dir, reader.frames[i], cam.name, compute)

    def __getitem__(self, key):
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        sample = super().__getitem__((i, epoch))
        cam, flip = self.pick_camera(i, epoch, self.reader.load_cameras(i))
        image = load_image(cam)
        label = self.pseudo_label(i, cam, image)
        if self.align and self.train and self.cfg.augment.enabled and self.cfg.augment.crop_width:
            kept = self.reader.load_points(i)[sample["point_index"].numpy(), :3]
            uv, valid = project_points(kept, cam)
            if valid.any():
                u0 = int(np.clip(np.floor(uv[valid, 0].min()), 0, cam.width - 1))
                u1 = int(np.clip(np.ceil(uv[valid, 0].max()) + 1, u0 + 1, cam.width))
                image, label = image[:, u0:u1], label[:, u0:u1]
        if self.flip and flip:
            image, label = image[:, ::-1], label[:, ::-1]
        img_t, lab_t = resize_view(image, label, self.image_size)
        sample["cameras"] = [{"name": cam.name, "image": img_t, "label": lab_t}]
        return sample


def stack_views(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's camera views -> images (V, 3, h, w) uint8, labels (V, h, w) int64."""
    views = [v for sample in batch["cameras"] for v in sample]
    return torch.stack([v["image"] for v in views]), torch.stack([v["label"] for v in views])


class MultiViTCameraTask(Task):
    """Camera pretraining (`task: multivit_camera`): the camera branch + shared ViT on pseudo-labels."""

    align = False
    trains_lidar = False

    def __init__(self, model: nn.Module, cfg, labeller: PseudoLabeller, class_weights: torch.Tensor | None = None,
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
    def from_config(cls, cfg, model: nn.Module, trainer) -> "MultiViTCameraTask":
        if not hasattr(model, "forward_camera"):
            raise ValueError(f"task {cfg.task} needs the multivit model")
        predictor = build_predictor(cfg.pseudo_labels)
        labeller = PseudoLabeller(trainer.labels, cfg.pseudo_labels, predictor)
        log.info("camera pseudo-labels: %s (densify radius %d px), box prompts: %s", cfg.pseudo_labels.labels,
                 cfg.pseudo_labels.densify_radius, getattr(predictor, "name", "none"))
        kinds = {"lidar": cfg.loss.class_weights, "camera": (cfg.camera_task.loss or cfg.loss).class_weights}
        counts = trainer.class_counts() if set(kinds.values()) != {"none"} else None
        weights = {k: None if kind == "none" else class_weights_from_counts(counts, kind) for k, kind in kinds.items()}
        return cls(model, cfg, labeller, weights["lidar"], weights["camera"])

    def train_dataset(self, trainer):
        return CameraFrames(trainer.train_reader, self.cfg, self.labeller, train=True, seed=self.cfg.train.seed,
                            align=self.align and self.task_cfg.align_crops)

    def camera_loss(self, batch: dict) -> tuple[torch.Tensor, dict, dict]:
        images, labels = stack_views(batch)
        out = self.model.forward_camera(images)
        logits = out["logits"].permute(0, 2, 3, 1).reshape(-1, out["logits"].shape[1])
        terms = segmentation_loss(logits, labels.reshape(-1), self.camera_loss_cfg, self.camera_weights)
        return terms["total"], {f"camera_{k}": v for k, v in terms.items() if k != "total"}, {**out, "labels": labels}

    def forward(self, batch: dict) -> dict:
        loss, losses, _ = self.camera_loss(batch)
        return {"loss": loss, "losses": losses}

    def validate(self, trainer) -> dict:
        metrics = camera_metrics(self, trainer)
        metrics["score"] = metrics["camera_miou_pseudo"]
        return metrics


class MultiViTJointTask(MultiViTCameraTask):
    """Joint training (`task: multivit_joint`): LiDAR + camera losses on aligned crops, optionally
    the class-mean contrastive alignment of the two branches' decoder features."""

    align = True
    trains_lidar = True

    @classmethod
    def from_config(cls, cfg, model, trainer):
        t = cfg.camera_task
        if t.contrastive != "none" and cfg.model.multivit.camera_decoder_channels != cfg.model.rangevit.decoder_channels:
            from ..errors import ConfigError

            raise ConfigError("camera_task.contrastive compares decoder features: model.multivit.camera_decoder_channels "
                              f"({cfg.model.multivit.camera_decoder_channels}) must equal model.rangevit.decoder_channels "
                              f"({cfg.model.rangevit.decoder_channels})")
        return super().from_config(cfg, model, trainer)

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

    def validate(self, trainer) -> dict:
        from ..engine.trainer import eval_loader, evaluate

        cfg = self.cfg
        val_set = SegmentationDataset(trainer.val_reader, dataclasses.replace(cfg.data, cameras=False), train=False)
        loader = eval_loader(val_set, trainer.info, cfg.eval.batch_size, cfg.data.num_workers, cfg.data.max_val_frames)
        metrics = evaluate(self.model, loader, trainer.labels, trainer.info, trainer.dtype, progress=trainer.progress)
        metrics.update(camera_metrics(self, trainer))
        metrics["score"] = metrics["miou"]
        return metrics


@torch.no_grad()
def camera_metrics(task: MultiViTCameraTask, trainer) -> dict:
    """Camera-branch mIoU (percent, nanmean over the LiDAR classes; background IoU apart) on the
    validation frames: against the pseudo-labels, and against per-pixel class masks where present."""
    from ..engine import dist as D
    from ..engine.metrics import ConfusionMatrix, iou_from_confusion
    from ..engine.trainer import autocast

    model, cfg, reader = task.model, task.cfg, trainer.val_reader
    labels = reader.labels
    c = labels.num_classes
    n = len(reader) if not cfg.data.max_val_frames else min(cfg.data.max_val_frames, len(reader))
    device = trainer.info.device
    conf_pseudo = ConfusionMatrix(c + 1, device="cpu")
    conf_true = ConfusionMatrix(c + 1, device="cpu")
    views = with_masks = 0
    frames = CameraFrames(reader, cfg, task.labeller, train=False)
    was_training = model.training
    model.eval()
    try:
        for i in D.shard(n, trainer.info.rank, trainer.info.world_size):
            cams = reader.load_cameras(i)
            if cfg.camera_task.val_cameras:
                cams = cams[:cfg.camera_task.val_cameras]
            for cam in cams:
                image = load_image(cam)
                pseudo = frames.pseudo_label(i, cam, image)
                x, _ = resize_view(image, None, tuple(cfg.model.multivit.image_size))
                with autocast(device, trainer.dtype):
                    logits = model.forward_camera(x[None].to(device))["logits"].float()
                logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
                pred = logits.argmax(1)[0].cpu()
                conf_pseudo.update(pred, torch.from_numpy(pseudo.astype(np.int64)))
                mask = load_mask(cam)
                if mask is not None:
                    conf_true.update(pred, torch.from_numpy(labels.to_train(mask, cam.mask_path)))
                    with_masks += 1
                views += 1
    finally:
        model.train(was_training)
    for conf in (conf_pseudo, conf_true):
        conf.all_reduce()
    views = sum(D.all_gather_object(views))
    with_masks = sum(D.all_gather_object(with_masks))
    out: dict = {"camera_views": views}
    for name, conf in (("pseudo", conf_pseudo), ("true", conf_true)):
        if name == "true" and not with_masks:
            continue
        _, iou = iou_from_confusion(conf.numpy(), "nanmean")
        cls_iou = iou[:c]
        out[f"camera_miou_{name}"] = float(np.nanmean(cls_iou) * 100) if np.isfinite(cls_iou).any() else 0.0
        out[f"camera_iou_{name}"] = {n_: (None if np.isnan(v) else float(v) * 100) for n_, v in zip(labels.class_names, cls_iou)}
        if name == "pseudo":
            out["camera_background_iou"] = None if np.isnan(iou[c]) else float(iou[c]) * 100
    return out
