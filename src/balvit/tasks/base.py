"""What a training task is: one objective over a model, run by the one trainer loop.

A task wraps the model being trained and returns {"loss", "logits" (optional), "losses"} for a
batch. The defaults give supervised segmentation on `cfg.data`; a task overrides a hook where it
needs something else (its own training data, its own validation score, modules of its own such as
a projection head or a frozen teacher):

    from_config(cfg, model, trainer)   build the task (trainer gives readers, labels, device)
    train_dataset(trainer)             a torch Dataset of training samples (None: the default)
    validate(trainer)                  a metrics dict with "score" (higher is better; None: mIoU)
    extra_state_dict() / load_...      trainable state the task owns besides the model
    lr_scales()                        per-parameter learning-rate factors (names as in the task)
    after_step(step)                   called after each optimizer step (e.g. AdaLoRA rank allocation)

Frozen modules the task owns (a teacher) are listed in `frozen_modules` and never saved.
"""

from __future__ import annotations

import torch.nn as nn


class Task(nn.Module):
    frozen_modules: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @classmethod
    def from_config(cls, cfg, model: nn.Module, trainer) -> "Task":
        raise NotImplementedError

    def train_dataset(self, trainer):
        return None

    def validate(self, trainer) -> dict | None:
        return None

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
            from ..errors import CheckpointError

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
