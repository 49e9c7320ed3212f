"""Checkpoints: written atomically (temp file + rename), trainable weights only, read without pickle code.

A checkpoint holds the model's trainable state, the identity of every frozen module (name, weight
source, sha256 of its weights), optimizer / scheduler / grad-scaler state, the step, the best
validation score, the RNG states of every rank and the resolved config. It is read with
`torch.load(weights_only=True)`: tensors, numbers, strings and containers only, so opening an untrusted
checkpoint cannot run code.

Compatibility is judged on the checkpoint's own model (`check_compatible`): its name, its own config
sections without the `not_architecture` fields, and the data settings it sees (class map, intensity
scale, projections: models/__init__.py `model_signature`); the frozen modules must be the same weights
(sha256). Other models' sections never matter, so new fields and defaults elsewhere keep old
checkpoints loadable. Format 1 (config sections before they moved beside their models and tasks) is
read and its config mapped onto the current layout (run_config.migrate_v1); fields added since a
checkpoint was written take their defaults (config.completed).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from ..config import completed, describe_differences
from ..data.labels import labels_for
from ..errors import CheckpointError
from ..io import torch_save
from ..models import model_entry, signature_differences
from ..run_config import Config, migrate_v1

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
# format-1 checkpoints stored numpy's RNG state as an array: the types needed to rebuild plain arrays
_NUMPY_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType]
try:  # numpy >= 2 moved the array reconstructor
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
_NUMPY_GLOBALS.append(_np_reconstruct)


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
    """The checkpoint's dict (config in the current layout), or a CheckpointError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory: give a checkpoint file (e.g. {path / 'best.pt'})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: holds objects other than tensors, numbers and strings, which could run code "
                              f"when loaded; refused ({str(e).splitlines()[0][:200]})") from None
    except Exception as e:  # truncated / not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if (not isinstance(state, dict) or state.get("format_version") not in READABLE_FORMATS or "model" not in state
            or not isinstance(state.get("config"), dict)):
        version = state.get("format_version") if isinstance(state, dict) else "?"
        raise CheckpointError(f"{path}: not a balvit checkpoint (format {version}; this version reads "
                              f"{', '.join(map(str, READABLE_FORMATS))})")
    if state["format_version"] == 1:
        state["config"] = migrate_v1(state["config"])
    # fields added since the checkpoint was written take their defaults (the behaviour before them)
    state["config"] = completed(Config, state["config"])
    return state


def check_compatible(state: dict, config: dict, path: str | Path) -> None:
    """Refuse a checkpoint whose model is not the one `config` (a resolved config dict) builds, or was
    trained on data the config presents differently (module docstring)."""
    saved = state["config"]
    have, want = saved.get("model", {}).get("name"), config.get("model", {}).get("name")
    if have != want:
        raise CheckpointError(f"{path}: holds a {have!r} model, the config builds {want!r}")
    d_have, d_want = saved.get("data", {}).get("dataset"), config.get("data", {}).get("dataset")
    if d_have != d_want:
        raise CheckpointError(f"{path}: was trained on {d_have} ({labels_for(d_have).num_classes} classes), the "
                              f"config is for {d_want} ({labels_for(d_want).num_classes} classes)")
    model_entry(want)
    diffs = signature_differences(saved, config)
    if diffs:
        raise CheckpointError(f"{path}: was trained with other settings of what defines the model or what it sees: "
                              f"{describe_differences(diffs, 'checkpoint', 'config')} (use the settings of its "
                              "config.yaml)")


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
