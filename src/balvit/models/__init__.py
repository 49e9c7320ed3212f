"""Model registry: config `model.name` -> class with `from_config(cfg, num_classes)`."""

from __future__ import annotations

from ..errors import ConfigError
from ..geometry import LoaderGeometry
from .balvit import BALViT
from .base import SegModel
from .elite import ELiTeStudent, ELiTeTeacher
from .multivit import MultiViT
from .rangevit import RangeViT
from .waffleiron import WaffleIron

MODELS: dict[str, type[SegModel]] = {
    "balvit": BALViT,
    "rangevit": RangeViT,
    "multivit": MultiViT,
    "waffleiron": WaffleIron,
    "elite_student": ELiTeStudent,
    "elite_teacher": ELiTeTeacher,
}


def build_model(cfg, num_classes: int) -> SegModel:
    name = cfg.model.name
    if name not in MODELS:
        raise ConfigError(f"unknown model.name {name!r}; available: {', '.join(sorted(MODELS))}")
    model = MODELS[name].from_config(cfg, num_classes)
    model.registry_name = name
    return model


def loader_geometry(cfg) -> LoaderGeometry:
    """What the data loader computes for the configured model (`SegmentationDataset(geometry=...)`)."""
    name = cfg.model.name
    return MODELS[name].loader_geometry(cfg) if name in MODELS else LoaderGeometry()
