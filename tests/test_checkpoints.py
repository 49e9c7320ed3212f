"""Checkpoints across versions and configs: old files load, only the model's own architecture and the
data it sees decide compatibility, and nothing but tensors and plain values is unpickled."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from balvit.config import to_dict
from balvit.engine.checkpoint import check_compatible, load_checkpoint, save_checkpoint
from balvit.engine.pretrained import load_trained_model
from balvit.errors import CheckpointError
from balvit.models import build_model
from conftest import tiny_model_config

DATA = Path(__file__).resolve().parent / "data"
V1 = sorted(DATA.glob("checkpoint_v1_*.json"))


def _v1_checkpoint(record: dict, path: Path) -> dict[str, torch.Tensor]:
    """A format-1 checkpoint as main wrote it on 2026-12-01 (config, identities, tensor names and
    shapes from the record; seeded random values)."""
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name, (shape, dtype) in record["tensors"].items():
        dt = getattr(torch, dtype)
        tensors[name] = (torch.randn(shape, generator=g).to(dt) if dt.is_floating_point
                         else torch.randint(0, 3, shape, generator=g).to(dt))
    import numpy as np
    import random

    torch.save({"format_version": 1, "model": tensors, "frozen": record["frozen"], "model_name": record["model_name"],
                "step": 7, "best_miou": 1.5, "config": record["config"], "optimizer": None, "scheduler": None,
                "scaler": None, "rng": [{"python": random.getstate(), "numpy": np.random.get_state(),
                                         "torch": torch.get_rng_state()}], "extra": {}}, path)
    return tensors


def test_the_records_of_old_checkpoints_cover_every_model():
    from balvit.models import MODELS

    assert {json.loads(p.read_text())["model_name"] for p in V1} == set(MODELS)


@pytest.mark.parametrize("record_path", V1, ids=lambda p: p.stem)
def test_format_1_checkpoints_written_by_the_old_main_still_load(record_path, tmp_path):
    record = json.loads(record_path.read_text())
    tensors = _v1_checkpoint(record, tmp_path / "old.pt")
    state = load_checkpoint(tmp_path / "old.pt")
    assert state["format_version"] == 1 and "pseudo_labels" in state["config"]  # mapped onto today's layout
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, cfg = load_trained_model(tmp_path / "old.pt")
    assert cfg.model.name == record["model_name"] and cfg.task == record["config"]["task"]
    own = model.trainable_state_dict()
    assert all(torch.equal(own[k], tensors[k]) for k in tensors)  # every stored tensor is loaded as it was
    # tensors stored since (filled by the model's upgrade_state_dict): RangeViT's KPConv kernel points
    assert set(own) - set(tensors) == ({"refiner.kernel"} if record["model_name"] in ("rangevit", "multivit") else set())


def _saved(name: str, tmp_path: Path, *more) -> tuple[Path, object]:
    cfg = tiny_model_config(name, "/data/x", *more)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(cfg, 19)
    save_checkpoint(tmp_path / "ck.pt", model=model, step=1, config=to_dict(cfg))
    return tmp_path / "ck.pt", cfg


def test_other_models_sections_and_training_settings_never_make_a_checkpoint_incompatible(tmp_path):
    path, _ = _saved("balvit", tmp_path)
    state = load_checkpoint(path)
    for change in ("model.waffleiron.layer_scale=0.2", "model.rangevit.window=128", "model.balvit.injector_init=0.5",
                   "model.backbone.grad_checkpoint=true", "train.lr=0.1", "loss.lovasz_weight=0.0",
                   "data.augment.crop_width=64", "data.sampling.voxel_size=0.3", "data.root=/elsewhere"):
        check_compatible(state, to_dict(tiny_model_config("balvit", "/data/x", change)), path)


@pytest.mark.parametrize("change, named", [
    ("model.balvit.stem_channels=16", "model.balvit.stem_channels"),
    ("data.range.mean=[1.0,1.0,1.0,1.0,1.0]", "data.range.mean"),
    ("data.range.fov_up=5.0", "data.range.fov_up"),
    ("data.bev.radius_bins=64", "data.bev.radius_bins"),
    ("data.intensity_scale=0.5", "data.intensity_scale"),
    ("model.backbone.name=tiny_reg", "model.backbone.name"),
])
def test_what_the_model_is_or_sees_is_compared_and_named(change, named, tmp_path):
    path, _ = _saved("balvit", tmp_path)
    with pytest.raises(CheckpointError, match=rf"ck.pt: .*{named}: checkpoint"):
        check_compatible(load_checkpoint(path), to_dict(tiny_model_config("balvit", "/data/x", change)), path)


def test_other_model_or_dataset_is_said_in_words(tmp_path):
    path, _ = _saved("balvit", tmp_path)
    state = load_checkpoint(path)
    with pytest.raises(CheckpointError, match="holds a 'balvit' model, the config builds 'rangevit'"):
        check_compatible(state, to_dict(tiny_model_config("rangevit", "/data/x")), path)
    nus = tiny_model_config("balvit", "/data/x", "data.dataset=nuscenes")
    with pytest.raises(CheckpointError, match=r"trained on semantickitti \(19 classes\), the config is for nuscenes \(16"):
        check_compatible(state, to_dict(nus), path)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    torch.save({"format_version": 2, "model": {}, "config": {}, "evil": _Payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="evil.pt: holds objects other than tensors"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_a_run_started_before_a_config_field_existed_resumes(tmp_path):
    """A field added after last.pt was written takes its default (the behaviour before it): the run
    resumes; a field the checkpoint has with another value than now is still refused (engine/run_folder.py)."""
    from balvit.engine.run_folder import RunFolder

    path, cfg = _saved("balvit", tmp_path)
    state = torch.load(path, weights_only=False)
    del state["config"]["data"]["range"]["min_range"], state["config"]["loss"]["weight_norm"]  # "older" version
    torch.save(state, tmp_path / "last.pt")
    assert RunFolder(tmp_path).check_resume(to_dict(cfg)) is not None
    with pytest.raises(Exception, match="train.lr"):
        RunFolder(tmp_path).check_resume(to_dict(tiny_model_config("balvit", "/data/x", "train.lr=0.5")))
