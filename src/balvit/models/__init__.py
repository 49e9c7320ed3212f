"""Model registry: `model.name` -> (model class, config section class), and the `model` config section.

Each model file holds its model and its config dataclass (nanoGPT's `GPTConfig` beside `GPT`). A
config class declares `sections` (the ModelConfig sections that define the architecture, e.g. MultiViT:
backbone + rangevit + multivit), `data_fields` (the `data.*` settings that change what the model sees:
class map, intensity scale, projections) and `check(cfg)` (its own cross-field checks).

Adding a model: one file with `class MyModel(SegModel)` (`from_config(cfg, num_classes)`) and
`class MyModelConfig` (its section: `sections = ("mymodel",)` or with "backbone" first), and one line
in `MODELS`; the `model.mymodel` config section follows from it (`ModelConfig` is made from `MODELS`).
"""

from __future__ import annotations

from dataclasses import field, make_dataclass

from ..config import DataConfig, completed, differences, not_architecture_fields, to_dict
from ..geometry import LoaderGeometry
from ..errors import ConfigError
from .balvit import BALViT, BALViTConfig
from .base import SegModel
from .elite import ELiTeStudent, ELiTeStudentConfig, ELiTeTeacher, ELiTeTeacherConfig
from .multivit import MultiViT, MultiViTConfig
from .rangevit import RangeViT, RangeViTConfig
from .vit import BackboneConfig
from .waffleiron import WaffleIron, WaffleIronConfig


MODELS: dict[str, tuple[type[SegModel], type]] = {
    "balvit": (BALViT, BALViTConfig),
    "rangevit": (RangeViT, RangeViTConfig),
    "multivit": (MultiViT, MultiViTConfig),
    "waffleiron": (WaffleIron, WaffleIronConfig),
    "elite_student": (ELiTeStudent, ELiTeStudentConfig),
    "elite_teacher": (ELiTeTeacher, ELiTeTeacherConfig),
}

# the section of each model's own config class (its last section: MultiViT's is "multivit")
MODELS_BY_SECTION: dict[str, type] = {cls.sections[-1]: cls for _, cls in MODELS.values()}

# Config section `model`: which model (`name`), the image backbone, and every model's own section
# (only the chosen model's sections matter: they alone are checked and compared with checkpoints)
ModelConfig = make_dataclass(
    "ModelConfig",
    [("name", str, field(default="balvit")), ("backbone", BackboneConfig, field(default_factory=BackboneConfig))]
    + [(section, cls, field(default_factory=cls)) for section, cls in MODELS_BY_SECTION.items()],
)
ModelConfig.__module__ = __name__


def model_entry(name: str) -> tuple[type[SegModel], type]:
    if name not in MODELS:
        raise ConfigError(f"unknown model.name {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def check_model_config(cfg) -> None:
    """The chosen model's own checks (against the whole run config `cfg`)."""
    model_entry(cfg.model.name)
    getattr(cfg.model, _own_section(cfg.model.name)).check(cfg)


def _own_section(name: str) -> str:
    """The ModelConfig section named after the model (its config class's last section)."""
    return model_entry(name)[1].sections[-1]


def build_model(cfg, num_classes: int) -> SegModel:
    name = cfg.model.name
    model = model_entry(name)[0].from_config(cfg, num_classes)
    model.registry_name = name
    return model


def model_signature(config: dict) -> dict:
    """What defines a trained model, from a resolved config dict: its name, its own model sections
    (without their `not_architecture` fields) and the data settings it sees, fields a config lacks
    taken at their defaults (new fields default to the behaviour before them). Two configs whose
    signatures are equal build interchangeable models; any other setting never matters."""
    name = config.get("model", {}).get("name")
    cls = model_entry(name)[1]
    model = config.get("model", {})
    sig: dict = {"model": {"name": name}}
    for section in cls.sections:
        sec_cls = BackboneConfig if section == "backbone" else MODELS_BY_SECTION[section]
        ignore = set(not_architecture_fields(sec_cls, ""))
        sig["model"][section] = {k: v for k, v in completed(sec_cls, model.get(section, {})).items() if k not in ignore}
    data = completed(DataConfig, config.get("data", {}))
    sig["data"] = {}
    for key in cls.data_fields:
        node = data
        for part in key.split("."):
            node = node[part]
        sig["data"][key] = node
    return sig



def signature_differences(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """`differences` of the model signatures of two resolved config dicts (same model name assumed)."""
    return differences(model_signature(saved), model_signature(current))


def loader_geometry(cfg) -> LoaderGeometry:
    """What the data loader computes for the configured model (`SegmentationDataset(geometry=...)`)."""
    return model_entry(cfg.model.name)[0].loader_geometry(cfg)


__all__ = ["MODELS", "ModelConfig", "SegModel", "build_model", "check_model_config", "model_signature",
           "signature_differences", "model_entry", "loader_geometry"]
