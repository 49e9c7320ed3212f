"""Rebuild a trained model from its checkpoint alone (a teacher for a distillation task, `balvit.load`).

A checkpoint stores the resolved config it was trained with; the model is rebuilt from *that* config
(so a task using it need not repeat its architecture), its trainable state is restored and the
identity of its frozen parts is checked. Every problem is a `CheckpointError` naming the file. The
trainer hands `load_trained_model` to tasks through their context (tasks never import the engine's
trainer).
"""

from __future__ import annotations

from pathlib import Path

from ..data.labels import labels_for
from ..errors import BalvitError, CheckpointError
from ..models import build_model
from ..run_config import from_dict
from .checkpoint import load_checkpoint, restore_model


def config_of(state: dict, path: str | Path):
    """The checked Config a checkpoint was trained with."""
    try:
        return from_dict(state["config"])
    except BalvitError as err:
        raise CheckpointError(f"{path}: its stored config does not parse with this version ({err})") from None


def load_trained_model(path: str | Path, expect: str | None = None, num_classes: int | None = None,
                       role: str = "model", freeze: bool = True):
    """(model, config) of the checkpoint at `path`.

    expect: the registry name the checkpoint must hold (e.g. "elite_teacher");
    num_classes: the class count the caller needs; freeze: requires_grad off, eval mode.
    """
    path = Path(path)
    if not str(path) or not path.is_file():
        raise CheckpointError(f"{role} checkpoint not found: {path}")
    state = load_checkpoint(path)
    name = state.get("model_name")
    if expect is not None and name != expect:
        raise CheckpointError(f"{path}: holds a {name!r} model, but the {role} must be a {expect!r} checkpoint")
    cfg = config_of(state, path)
    classes = labels_for(cfg.data.dataset).num_classes
    if num_classes is not None and classes != num_classes:
        raise CheckpointError(f"{path}: the {role} predicts {classes} classes ({cfg.data.dataset}), "
                              f"this run needs {num_classes}")
    try:
        model = build_model(cfg, classes)
    except BalvitError as err:
        raise CheckpointError(f"{path}: cannot rebuild the {role} ({err})") from None
    restore_model(model, state, path)
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
    return model, cfg
