"""Supervised per-point semantic segmentation: the model's logits against the train-id labels.

loss = CE-or-focal + Lovasz on the main logits, plus `aux_weight` x the same on every auxiliary
head the model returns (BALViT: range-only and BEV-only heads).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import LossConfig
from ..losses import class_weights_from_counts, segmentation_loss
from .base import Task


class SegmentationTask(Task):
    def __init__(self, model: nn.Module, loss: LossConfig, class_weights: torch.Tensor | None = None):
        super().__init__(model)
        self.loss_cfg = loss
        if class_weights is not None:
            self.register_buffer("class_weights", class_weights.float(), persistent=False)
        else:
            self.class_weights = None

    @classmethod
    def from_config(cls, cfg, model: nn.Module, trainer) -> "SegmentationTask":
        weights = None
        if cfg.loss.class_weights != "none":
            weights = class_weights_from_counts(trainer.class_counts(), cfg.loss.class_weights)
        return cls(model, cfg.loss, weights)

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

    def predict(self, batch: dict) -> torch.Tensor:
        """(N, C) logits of the main head (no loss)."""
        return self.model(batch)["logits"]
