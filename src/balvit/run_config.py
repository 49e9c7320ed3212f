"""The config of a run: the root `Config`, `load_config`, `from_dict`, and its checks.

    Config = task + the shared sections (config.py: data, loss, train, eval)
                  + model (models/__init__.py ModelConfig: the chosen model's section beside its model)
                  + the tasks' own sections (distill, camera_task, elite beside their tasks;
                    pseudo_labels beside the labeller, data/pseudo_labels/labeller.py)

`load_config(path, overrides)`: defaults <- YAML (with `_base_`) <- `key=value` overrides, every key and
type checked (config.py), then `validate`: the shared checks, the chosen model's own `check`, the
task's `check_config`.

Checkpoints of format 1 (before the config sections moved) store the old layout; `from_dict(...,
migrate=True)` maps it onto this one (`migrate_v1`). A YAML file or override that uses an old key
is refused with the key's new name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

from .config import (DataConfig, EvalConfig, LossConfig, TrainConfig, apply_overrides, build_section, check_shared,
                     read_yaml)
from .data.pseudo_labels.labeller import PseudoLabelConfig
from .errors import ConfigError
from .models import ModelConfig, check_model_config
from .tasks import TASKS
from .tasks.distill import DistillConfig
from .tasks.elite import ELiTeConfig
from .tasks.multivit import CameraTaskConfig


@dataclass
class Config:
    # segmentation | distill | multivit_camera | multivit_joint | elite_teacher | elite_student (tasks/__init__.py)
    task: str = "segmentation"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    camera_task: CameraTaskConfig = field(default_factory=CameraTaskConfig)
    elite: ELiTeConfig = field(default_factory=ELiTeConfig)


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express: shared sections, the model's, the task's."""
    if cfg.task not in TASKS:
        raise ConfigError(f"config key 'task' must be one of {list(TASKS)}, got {cfg.task!r}")
    check_shared(cfg.data, cfg.loss, cfg.train, cfg.eval, cfg.task)
    check_model_config(cfg)
    TASKS[cfg.task].check_config(cfg)


# Keys of the format-1 layout and where they went (for a clear refusal of old YAML files).
MOVED = {
    "distill.extra_datasets": "data.extra_datasets",
    "elite.pseudo_labels": "pseudo_labels (method: projection / densify / samplg / files; predictor -> mask_predictor)",
    "pseudo_labels.sam": "pseudo_labels.box_predictor (with pseudo_labels.method: boxes; none -> method: densify)",
}


def _refuse_moved(data: dict) -> None:
    for old, new in MOVED.items():
        section, key = old.split(".")
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"config key '{old}' moved: use {new}")


def migrate_v1(data: dict) -> dict:
    """A format-1 config dict (checkpoints written before the config sections moved) -> this layout."""
    d = copy.deepcopy(data)
    distill = d.get("distill") or {}
    if "extra_datasets" in distill:
        d.setdefault("data", {})["extra_datasets"] = distill.pop("extra_datasets")
    boxes = d.pop("pseudo_labels", None) or {}
    samplg = (d.get("elite") or {}).pop("pseudo_labels", None) or {}
    if str(d.get("task", "")).startswith("elite"):
        new = {k: v for k, v in samplg.items() if k not in ("mode", "predictor")}
        mode = samplg.get("mode", "densify")
        new["method"] = "samplg" if mode == "sam" else mode
        if "predictor" in samplg:
            new["mask_predictor"] = samplg["predictor"]
    else:  # MultiViT's labeller: depth-aware densification (ratio 1.3) + box prompts
        new = {k: v for k, v in boxes.items() if k != "sam"}
        sam = boxes.get("sam", "standin")
        new["method"] = "densify" if sam == "none" else "boxes"
        if sam != "none":
            new["box_predictor"] = sam
        new["occlusion_ratio"] = 1.3
    d["pseudo_labels"] = new
    return d


def from_dict(data: dict, migrate: bool = False) -> Config:
    """A checked Config from a nested dict (a resolved config); `migrate`: the dict is in format 1."""
    data = migrate_v1(data) if migrate else data
    _refuse_moved(data)
    cfg = build_section(Config, data)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML (with _base_) <- overrides, checked against the dataclasses."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data)


__all__ = ["Config", "load_config", "from_dict", "validate", "migrate_v1"]
