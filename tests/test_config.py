from pathlib import Path

import pytest
import yaml

from balvit.config import to_dict
from balvit.run_config import Config, load_config
from balvit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "config").rglob("*.yaml"))


def test_configs_are_shipped():
    names = {p.relative_to(REPO / "config").as_posix() for p in SHIPPED}
    for required in ["kitti.yaml", "kitti/kitti_1.yaml", "nuscenes.yaml", "nuscenes/nuscenes_1.yaml", "synthetic/tiny.yaml"]:
        assert required in names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(REPO / "config").as_posix())
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config)
    # the resolved config survives a YAML round trip unchanged
    again = load_config_from_dict(to_dict(cfg), path.parent)
    assert to_dict(again) == to_dict(cfg)


def load_config_from_dict(data, tmpdir):
    from balvit.run_config import from_dict

    return from_dict(yaml.safe_load(yaml.safe_dump(data)))


def test_label_fraction_configs_point_to_existing_split_files():
    for path in SHIPPED:
        cfg = load_config(path)
        if cfg.data.split_file:
            assert (REPO / cfg.data.split_file).is_file(), f"{path}: {cfg.data.split_file} missing"


def test_base_inheritance_and_child_wins(tmp_path):
    (tmp_path / "base.yaml").write_text("train: {lr: 0.5, steps: 7}\nmodel: {balvit: {stem_channels: 16}}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\ntrain: {lr: 0.25}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.train.lr == 0.25 and cfg.train.steps == 7 and cfg.model.balvit.stem_channels == 16


def test_unknown_key_is_refused_with_its_name_and_a_hint(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train: {stpes: 10}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stpes'.*did you mean 'train.steps'"):
        load_config(f)


def test_unknown_top_level_section(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("trian: {lr: 0.1}\n")
    with pytest.raises(ConfigError, match="'trian'"):
        load_config(f)


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps' must be an integer"),
    ("train.steps=1.5", "train.steps' must be an integer"),
    ("train.lr=fast", "train.lr' must be a number"),
    ("data.augment.rotate=3", "data.augment.rotate' must be true or false"),
    ("data.dataset=waymo", "data.dataset' must be one of"),
    ("model.balvit.patch_size=[4]", "patch_size"),
    ("data.range.height=30", "divisible"),
    ("data.label_fraction=0", "label_fraction"),
])
def test_wrong_types_and_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(REPO / "config/kitti.yaml", [override])


def test_overrides_parse_yaml_values():
    cfg = load_config(REPO / "config/kitti.yaml", ["train.lr=1e-3", "data.augment.scale=[0.9,1.1]", "model.backbone.weights=random"])
    assert cfg.train.lr == 1e-3 and cfg.data.augment.scale == [0.9, 1.1] and cfg.model.backbone.weights == "random"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
