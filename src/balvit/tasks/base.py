"""What a training task is: an objective over a model, its datasets and its evaluations.

The one trainer loop (engine/trainer.py) runs every task; a task never sees the trainer. It receives
a narrow `TaskContext` (readers, labels, class counts, device, autocast dtype, a way to load another
run's model) and declares:

    from_config(cfg, model, ctx)   build the task (its own modules: a head, a frozen teacher, ...)
    check_config(cfg)              its cross-field config checks (called by run_config.validate)
    train_dataset(ctx)             the training samples (default: segmentation samples of every
                                   training reader, data.extra_datasets mixed in)
    evaluations(ctx)               the validation passes (engine/evaluate.py Evaluation: a dataset,
                                   a run function, evaluators); default: point mIoU of the model
    score(metrics)                 the number best.pt follows (higher is better; default: mIoU)
    needs_labels                   whether its splits must be labelled (default True; distillation: False)
    forward(batch)                 {"loss", "logits" (optional), "losses": {name: tensor}}
    extra_state_dict / load_...    trainable state the task owns besides the model
    lr_scales()                    per-parameter learning-rate factors (names as in the task)
    after_step(step)               called after each optimizer step (e.g. AdaLoRA rank allocation)

Frozen modules the task owns (a teacher) are listed in `frozen_modules` and never saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from ..data.dataset import SegmentationDataset, mixed_training_set
from ..geometry import LoaderGeometry
from ..engine.evaluate import Evaluation, point_evaluation
from ..errors import CheckpointError
from ..losses import class_weights_from_counts


@dataclass
class TaskContext:
    """What a task may use of the run: the config, readers, labels, device, precision, the model's
    loader geometry (`samples(...)` builds datasets with it), and `load_model(path, expect=..., role=...,
    freeze=...)` for models of other runs (a teacher)."""

    cfg: object
    labels: object  # LabelSpec of the dataset
    train_readers: list  # (reader, data config, description) of the dataset and of data.extra_datasets
    val_reader: object
    device: torch.device
    dtype: torch.dtype | None
    load_model: Callable | None = None
    geometry: LoaderGeometry = field(default_factory=LoaderGeometry)  # the model's loader-side maps
    _counts: np.ndarray | None = field(default=None, repr=False)

    @property
    def train_reader(self):
        """The reader of the labelled training frames of the (first) dataset."""
        return self.train_readers[0][0]

    def samples(self, reader, data_cfg, train: bool, seed: int = 0, views=None) -> SegmentationDataset:
        """The segmentation samples of `reader` for this run's model (its loader geometry included)."""
        return SegmentationDataset(reader, data_cfg, train=train, seed=seed, views=views, geometry=self.geometry)

    def class_counts(self) -> np.ndarray:
        """Labelled points per class over the training frames of the dataset (computed once)."""
        if self._counts is None:
            reader = self.train_reader
            counts = np.zeros(self.labels.num_classes, dtype=np.int64)
            for i in range(len(reader)):
                lab = reader.load_labels(i)
                counts += np.bincount(lab[lab != 255], minlength=self.labels.num_classes)
            self._counts = counts
        return self._counts

    def class_weights(self, kind: str | None = None) -> torch.Tensor | None:
        """Class weights of `kind` (default `loss.class_weights`) from the training frames, or None."""
        kind = kind or self.cfg.loss.class_weights
        if kind == "none":
            return None
        return class_weights_from_counts(self.class_counts(), kind)


class Task(nn.Module):
    frozen_modules: tuple[str, ...] = ()
    # the training and validation splits must carry labels for every frame (refused before step 1
    # otherwise: an unlabelled frame would silently add nothing to the loss or the score)
    needs_labels: bool = True

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @classmethod
    def from_config(cls, cfg, model: nn.Module, ctx: TaskContext) -> "Task":
        raise NotImplementedError

    @classmethod
    def check_config(cls, cfg) -> None:
        """Cross-field checks of the task's config (after the model's own)."""

    def train_dataset(self, ctx: TaskContext):
        cfg = ctx.cfg
        return mixed_training_set(
            ctx.train_readers, lambda reader, dcfg, seed: ctx.samples(reader, dcfg, train=True, seed=seed),
            cfg.train.seed)

    def evaluations(self, ctx: TaskContext) -> list[Evaluation]:
        return [point_evaluation(self.model, ctx.samples(ctx.val_reader, ctx.cfg.data, train=False), ctx.labels,
                                 name="val")]

    def score(self, metrics: dict) -> float:
        return metrics["miou"]

    def _is_own_key(self, key: str) -> bool:
        if key.startswith("model."):
            return False
        return not any(key == m or key.startswith(m + ".") for m in self.frozen_modules)

    def extra_state_dict(self) -> dict:
        """State of the task's own modules (not the model, not frozen modules)."""
        return {k: v for k, v in self.state_dict().items() if self._is_own_key(k)}

    def load_extra_state_dict(self, state: dict) -> None:
        own = self.extra_state_dict()
        if set(state) != set(own):
            raise CheckpointError(f"task state does not fit: expected {sorted(own)[:5]}, got {sorted(state)[:5]}")
        self.load_state_dict(state, strict=False)

    def after_step(self, step: int) -> None:
        """After the optimizer step `step` (1-based), before the next zero_grad; default: nothing."""

    def lr_scales(self) -> dict[str, float]:
        scales = self.model.lr_scales() if hasattr(self.model, "lr_scales") else {}
        return {f"model.{k}": v for k, v in scales.items()}

    def train(self, mode: bool = True):
        super().train(mode)
        for name in self.frozen_modules:  # frozen teachers stay in eval mode
            getattr(self, name).eval()
        return self
