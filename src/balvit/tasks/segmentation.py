"""Supervised per-point semantic segmentation: the model's logits against the train-id labels.

loss = CE-or-focal + Lovasz on the main logits, plus `aux_weight` x the same on every auxiliary
head the model returns (BALViT: range-only and BEV-only heads). Validation: the point mIoU of the
model on the validation split (the Task default).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..losses import segmentation_loss
from .base import Task, TaskContext


class SegmentationTask(Task):
    def __init__(self, model: nn.Module, loss, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        self.loss_cfg = loss
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=False)
        else:
            self.class_weights = None

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "SegmentationTask":
        return cls(model, cfg.loss, ctx.class_weights())

    def forward(self, batch: dict) -> dict:
        out = self.model(batch)
        labels = batch["labels"]
        terms = segmentation_loss(out["logits"], labels, self.loss_cfg, self.class_weights)
        losses = {f"main_{k}": v for k, v in terms.items() if k != "total"}
        loss = terms["total"]
        for name, logits in out.get("aux", {}).items():
            aux = segmentation_loss(logits, labels, self.loss_cfg, self.class_weights)["total"]
            losses[f"aux_{name}"] = aux
            loss = loss + self.loss_cfg.aux_weight * aux
        return {"loss": loss, "logits": out["logits"], "losses": losses}
