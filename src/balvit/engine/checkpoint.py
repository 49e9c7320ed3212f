"""Checkpoints: written atomically (temp file + rename), trainable weights only.

A checkpoint holds the model's trainable state, the identity of every frozen module (name, weight
source, sha256 of its weights), optimizer / scheduler / grad-scaler state, the step, the best
validation mIoU, the RNG states of every rank and the resolved config. Loading checks that the
same frozen backbone is in use and names the file and the mismatch when it is not.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import torch_save

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, *, model, step: int, config: dict, optimizer=None, scheduler=None,
                    scaler=None, best_miou: float | None = None, rng: list | None = None, extra: dict | None = None) -> Path:
    state = {
        "format_version": FORMAT_VERSION,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
        "frozen": model.frozen_identities(),
        "model_name": config.get("model", {}).get("name"),
        "step": step,
        "best_miou": best_miou,
        "config": config,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
        "extra": extra or {},
    }
    return torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated / not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION or "model" not in state:
        raise CheckpointError(f"{path}: not a balvit checkpoint (format {state.get('format_version') if isinstance(state, dict) else '?'})")
    return state


def check_frozen(model, state: dict, path: str | Path) -> None:
    """Refuse a checkpoint trained on top of another frozen backbone."""
    have = model.frozen_identities()
    want = state.get("frozen", {})
    for name in sorted(set(have) | set(want)):
        a, b = have.get(name), want.get(name)
        if a is None or b is None or a.get("sha256") != b.get("sha256"):
            raise CheckpointError(
                f"{path}: trained with frozen {name} {b} but the model now uses {a}; "
                "load the same backbone weights (model.backbone.name / model.backbone.weights)")


def restore_model(model, state: dict, path: str | Path) -> None:
    name = getattr(model, "registry_name", None)
    if name and state.get("model_name") and state["model_name"] != name:
        raise CheckpointError(f"{path}: holds a {state['model_name']!r} model, the config builds {name!r}")
    check_frozen(model, state, path)
    model.load_trainable_state_dict(state["model"], source=str(path))


def init_model_from(model, path: str | Path, exclude: list[str] | tuple[str, ...] = ()) -> dict:
    """Initialise `model` from another run's checkpoint (e.g. a pretraining): every trainable tensor
    whose name and shape match is loaded; names starting with an `exclude` prefix are not.

    Returns {"loaded", "excluded", "mismatched", "unexpected", "missing"} (lists of names) and logs a
    summary; raises CheckpointError when nothing fits or the frozen backbones differ."""
    import logging

    log = logging.getLogger(__name__)
    state = load_checkpoint(path)
    have = model.frozen_identities()  # frozen modules present in both must be the same weights
    for name, ident in (state.get("frozen") or {}).items():
        if name in have and have[name].get("sha256") != ident.get("sha256"):
            raise CheckpointError(f"{path}: trained with frozen {name} {ident} but the model now uses {have[name]}")
    own = model.trainable_state_dict()
    report: dict[str, list[str]] = {"loaded": [], "excluded": [], "mismatched": [], "unexpected": [], "missing": []}
    chosen = {}
    for key, value in state["model"].items():
        if any(key.startswith(prefix) for prefix in exclude):
            report["excluded"].append(key)
        elif key not in own:
            report["unexpected"].append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            report["mismatched"].append(f"{key} {tuple(value.shape)} -> {tuple(own[key].shape)}")
        else:
            chosen[key] = value
            report["loaded"].append(key)
    report["missing"] = sorted(set(own) - set(chosen))
    if not chosen:
        raise CheckpointError(
            f"{path}: none of its {len(state['model'])} tensors fit this model "
            f"(holds a {state.get('model_name')!r} model; mismatched {report['mismatched'][:3]}, "
            f"unexpected {report['unexpected'][:3]})")
    model.load_state_dict(chosen, strict=False)
    log.info("initialised %d of %d tensors from %s (%s model, step %s); not loaded: %d excluded, %d shape "
             "mismatches, %d unknown to this model; %d tensors of this model keep their initialisation",
             len(chosen), len(own), path, state.get("model_name"), state.get("step"), len(report["excluded"]),
             len(report["mismatched"]), len(report["unexpected"]), len(report["missing"]))
    for kind in ("mismatched", "unexpected", "missing"):
        if report[kind]:
            log.info("  %s: %s%s", kind, ", ".join(report[kind][:8]), " ..." if len(report[kind]) > 8 else "")
    return report
