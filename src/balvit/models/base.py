"""What every segmentation model of the toolkit shares: trainable-only state, parameter report.

A model keeps frozen modules (a foundation backbone) under attributes listed in `frozen_modules`.
Checkpoints hold only the trainable state (parameters that require grad and the buffers of
trainable modules, e.g. batch-norm statistics) plus the frozen modules' identities, never their
20-300 M weights.
"""

from __future__ import annotations

import torch.nn as nn

from ..errors import CheckpointError
from ..geometry import LoaderGeometry


class SegModel(nn.Module):
    frozen_modules: tuple[str, ...] = ()

    @staticmethod
    def loader_geometry(cfg) -> LoaderGeometry:
        """Extra per-point maps this model wants the data loader to compute (none by default)."""
        return LoaderGeometry()

    def _is_frozen_key(self, key: str) -> bool:
        return any(key == m or key.startswith(m + ".") for m in self.frozen_modules)

    def trainable_state_dict(self) -> dict:
        """State dict without the frozen modules' tensors."""
        return {k: v for k, v in self.state_dict().items() if not self._is_frozen_key(k)}

    def upgrade_state_dict(self, state: dict) -> dict:
        """A checkpoint's trainable state written by an older version of this model -> the current
        layout (a model overrides this when it adds stored tensors); identity by default."""
        return state

    def load_trainable_state_dict(self, state: dict, source: str = "checkpoint") -> None:
        state = self.upgrade_state_dict(state)
        expected = set(self.trainable_state_dict())
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise CheckpointError(
                f"{source} does not fit this model: {len(missing)} missing keys {missing[:5]}, "
                f"{len(unexpected)} unexpected keys {unexpected[:5]} (was it written by another model or config?)"
            )
        own = self.state_dict()
        for k, v in state.items():
            if own[k].shape != v.shape:
                raise CheckpointError(f"{source}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
        self.load_state_dict(state, strict=False)

    def frozen_identities(self) -> dict:
        """name -> identity dict of each frozen module (stored in checkpoints and checked on load)."""
        return {m: getattr(self, m).identity() for m in self.frozen_modules}

    def param_report(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"trainable": trainable, "frozen": total - trainable, "total": total}

    def param_report_text(self) -> str:
        r = self.param_report()
        return f"trainable: {r['trainable']}\nfrozen: {r['frozen']}\ntotal: {r['total']}"
