"""Typed configuration: the loader (dataclass defaults <- YAML file(s) <- `key=value` overrides) and
the sections every task shares (data, loss, train, eval).

A YAML file may start from another one with `_base_: relative/path.yaml` (merged key by key, the
child wins). Every key is checked against the dataclasses: an unknown key, a key given twice in one
mapping, or a value of the wrong type is a `ConfigError` naming the key (with the closest known key as
a hint). The resolved config is a plain nested dict again (`to_dict`), written to every run directory
and checkpoint.

The root `Config` (task, these sections, the model's and the tasks' own sections) is assembled in
run_config.py; each model's section is a dataclass beside the model (models/*.py), each task's beside
the task (tasks/*.py).

Compatibility (models/__init__.py `model_signature`, engine/checkpoint.py): a checkpoint fits a config
when its model's name, its own config sections and the data settings it sees are equal, except the
fields declared with `not_architecture(...)`; a resumed run must match its last.pt except the
`RESUME_SAFE` fields.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

NOT_ARCHITECTURE = "not_architecture"


def not_architecture(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING):
    """A model-config field that defines neither the trained parameters nor the function they compute (an
    initial value, a regulariser, memory saving, an inference window, a weight source checked by
    identity): a checkpoint stays compatible whatever its value."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={NOT_ARCHITECTURE: True})
    return field(default=default, metadata={NOT_ARCHITECTURE: True})


# ------------------------------------------------------------------------------- data section


# --------------------------------------------------------------------------------------- data


@dataclass
class RangeViewConfig:
    """Spherical projection of a scan to an image (closest point per pixel wins)."""

    height: int = 64  # beams (rows)
    width: int = 2048  # azimuth steps (columns)
    fov_up: float = 3.0  # degrees, top of the vertical field of view
    fov_down: float = -25.0  # degrees, bottom
    # image row of a point: "fov" from its elevation in fov_up..fov_down; "ring" its laser ring (nuScenes
    # .pcd.bin 5th float; ring 0 = the bottom row, so height must be the sensor's ring count): exact,
    # one ring per row
    rows: Literal["fov", "ring"] = "fov"
    # points nearer than this (metres; the ego vehicle's own returns) keep a pixel and a prediction but
    # never show in the image, so they hide nothing behind them (0: off)
    min_range: float = 0.0
    # per-channel normalisation of (range, x, y, z, intensity); the mask channel stays 0/1
    mean: list[float] = field(default_factory=lambda: [12.12, 10.88, 0.23, -1.04, 0.21])
    std: list[float] = field(default_factory=lambda: [12.32, 11.47, 6.91, 0.86, 0.16])


@dataclass
class BEVConfig:
    """Polar bird's-eye-view grid (radius x azimuth) covering min_radius..max_radius metres."""

    radius_bins: int = 480
    azimuth_bins: int = 360
    min_radius: float = 0.0
    max_radius: float = 50.0  # points beyond fall into the outermost ring
    z_min: float = -4.0  # used to normalise heights
    z_max: float = 2.0


@dataclass
class MixConfig:
    """Scan-mixing augmentation (data/mixing.py), training only, off by default: WaffleIron's
    instance CutMix and PolarMix (valeoai/WaffleIron datasets/semantic_kitti.py, `instance_cutmix`).
    Classes are named as in the dataset's label file; the defaults are WaffleIron's SemanticKITTI ones."""

    polarmix: bool = False  # swap a 180 deg azimuth sector with another training scan, paste its instances x 3
    cutmix: bool = False  # paste instances of `classes` from the training set's instance bank on the ground
    classes: list[str] = field(default_factory=lambda: ["bicycle", "motorcycle", "other-vehicle", "person", "bicyclist"])
    ground_classes: list[str] = field(default_factory=lambda: ["road", "parking", "sidewalk"])
    polarmix_prob: float = 0.5  # probability of the sector swap (the instance paste always happens)
    max_instances: int = 40  # cutmix: per class, uniform 0 .. max_instances - 1 pasted instances
    min_instance_points: int = 6  # instances with fewer points are not banked (WaffleIron: more than 5)
    # instances: the reader's instance ids where it has them (SemanticKITTI), else connected
    # components of class points closer than this (metres)
    cluster_radius: float = 0.5


@dataclass
class AugmentConfig:
    """Training-time augmentation; every draw is seeded by (seed, epoch, frame index).

    Order: mixing (`mix`), rotation about z, flip, scale, Gaussian translation, uniform translation,
    tilt (roll / pitch / yaw), range-image crop. The options after `crop_width` are off by default."""

    enabled: bool = True
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # random flips (flip_mode)
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])  # uniform isotropic scaling
    translate_std: float = 0.1  # metres, Gaussian translation in x, y, z
    crop_width: int = 0  # random width crop of the range image (0: full width)
    # xy: x and y each flipped with probability 0.5; one_axis: with probability flip_prob, one of x / y
    # (equally likely; WaffleIron utils/transforms.py FlipXY in RandomApply(p=2/3)); x / y: that axis
    # with probability flip_prob (RangeViT config_*.yaml p_flipy)
    flip_mode: Literal["xy", "one_axis", "x", "y"] = "xy"
    flip_prob: float = 0.5  # flip_mode one_axis / x / y
    # uniform translation [[x_lo, x_hi], [y_lo, y_hi], [z_lo, z_hi]] metres, each axis moved with
    # probability translate_prob (RangeViT dataset/preprocess/augmentor.py); empty: off
    translate_range: list[list[float]] = field(default_factory=list)
    translate_prob: float = 1.0
    # [roll, pitch, yaw] degrees: each angle uniform in +-tilt_deg[k] with probability tilt_prob,
    # R = scipy Rotation.from_euler("zyx", [yaw, pitch, roll]) (RangeViT augmentor.py); empty: off
    tilt_deg: list[float] = field(default_factory=list)
    tilt_prob: float = 1.0
    mix: MixConfig = field(default_factory=MixConfig)


@dataclass
class PointSamplingConfig:
    """Point subsets and neighbourhoods for point-based models (WaffleIron; see data/sampling.py).

    Training: one random point per voxel and at most `max_points` random points are kept (the
    others are dropped from the sample, like a crop). Evaluation keeps every point: the model runs
    on one point per voxel (`sub_index`) and every original point reads the output of its nearest
    kept point (`up_index`). `neighbors` = k > 0 adds `knn` (M, 1 + k): each kept point itself, then
    its k nearest kept points (balvit.geometry.knn; WaffleIron's embedding, RangeViT's KPConv with
    k = 6). All zero: nothing is added to the sample.
    """

    voxel_size: float = 0.0  # metres (0: no voxel down-sampling)
    max_points: int = 0  # training only: cap on points per scan after voxelisation (0: no cap)
    # how the cap picks: random (a random subset) | nearest (the max_points points nearest to a random
    # point of the scan: WaffleIron / ScaLR's LimitNumPoints(random=True))
    cap: Literal["random", "nearest"] = "random"
    neighbors: int = 0  # k nearest neighbours per kept point, computed in the loader (0: none)


@dataclass
class ExtraDataConfig:
    """Another dataset mixed into the training set of any task (`data.extra_datasets`; e.g. ScaLR pretrains
    on nuScenes + SemanticKITTI at once). Augmentation, point sampling, BEV grid, NaN policy and workers come
    from the `data` section."""

    dataset: Literal["semantickitti", "nuscenes"] = "nuscenes"
    root: str = ""
    version: str = "v1.0-trainval"
    train_split: str = "train"
    train_sequences: list[str] = field(default_factory=list)
    split_file: str = ""
    label_fraction: float = 100.0
    split_method: Literal["uniform", "random", "scenes"] = "uniform"
    split_seed: int = 0
    intensity_scale: float = 1.0
    range: RangeViewConfig = field(default_factory=RangeViewConfig)




@dataclass
class DataConfig:
    dataset: Literal["semantickitti", "nuscenes"] = "semantickitti"
    root: str = ""  # set by --data_root
    version: str = "v1.0-trainval"  # nuScenes tables folder (v1.0-trainval / v1.0-mini)
    train_split: str = "train"  # official split names: train / valid / test
    val_split: str = "valid"
    # SemanticKITTI only: sequences of the train / validation split when not the official ones
    # (e.g. the synthetic data holds only 00 and 08); empty = the official split
    train_sequences: list[str] = field(default_factory=list)
    val_sequences: list[str] = field(default_factory=list)
    # Frames used for training. A frame-list file (absolute, or relative to the working directory or
    # the repository) wins; otherwise `label_fraction` percent of the training frames is taken with
    # `split_method` (uniform: sorted(frames)[::k]; random: seeded sample).
    split_file: str = ""
    label_fraction: float = 100.0
    split_method: Literal["uniform", "random", "scenes"] = "uniform"  # scenes: nuScenes whole scenes
    split_seed: int = 0
    intensity_scale: float = 1.0  # multiplies the stored intensity (nuScenes: 1/255)
    # NaN/inf coordinates: "error" refuses the scan; "zero" moves such points to the sensor origin,
    # labels them ignore (255) and counts them in the log (their predictions are still written)
    nan_policy: Literal["error", "zero"] = "error"
    # before step 1, check every file of the splits by size (data/preflight.py); false skips it
    preflight: bool = True
    cameras: bool = False  # load camera images and point->pixel mappings
    # nuScenes points: "library" (x forward, y left: rotated from LIDAR_TOP) or "lidar_top" (as stored: x right,
    # y forward), the frame the official WaffleIron / ScaLR / RangeViT code and so their checkpoints use
    nuscenes_frame: Literal["library", "lidar_top"] = "library"
    max_val_frames: int = 0  # evaluate on the first N validation frames only (0: all)
    num_workers: int = 2  # data-loader worker processes (0: load in the main process)
    range: RangeViewConfig = field(default_factory=RangeViewConfig)
    bev: BEVConfig = field(default_factory=BEVConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampling: PointSamplingConfig = field(default_factory=PointSamplingConfig)
    # more datasets mixed into the training set (one loader, padded collation); empty: none
    extra_datasets: list[ExtraDataConfig] = field(default_factory=list)




# ------------------------------------------------------------------------ loss, train, eval


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    focal_gamma: float = 0.0  # 0: plain cross-entropy; >0: focal loss
    # none | inverse_sqrt_freq: 1 / sqrt(f + 1e-3), mean 1 | inverse_cbrt_freq: (max f / f)^(1/3)
    # (2DPASS / ELiTe, dachr8/ELiTe network/arch_elite.py seg_labelweights) | log_inverse_freq:
    # log(1 + 1 / (f + 1e-3)) (RangeViT's focal alpha on SemanticKITTI, valeoai/rangevit train.py);
    # f = the training frames' label frequencies (losses.class_weights_from_counts)
    class_weights: Literal["none", "inverse_sqrt_freq", "inverse_cbrt_freq", "log_inverse_freq"] = "none"
    # how the class-weighted CE / focal term is averaged: "weights" (sum w_i l_i / sum w_i, PyTorch's
    # F.cross_entropy) or "points" (sum w_i l_i / N: RangeViT's FocalSoftmaxLoss, utils/optim/focal_softmax.py)
    weight_norm: Literal["weights", "points"] = "weights"
    label_smoothing: float = 0.0
    aux_weight: float = 0.4  # weight of each auxiliary (range-only / BEV-only) head


@dataclass
class TrainConfig:
    steps: int = 20000  # optimizer steps (the loader cycles through epochs)
    batch_size: int = 2  # scans per process
    lr: float = 2e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "sgd"] = "adamw"  # see engine/optim.py
    momentum: float = 0.9  # sgd only
    nesterov: bool = False  # sgd only
    warmup_steps: int = 500
    grad_clip: float = 1.0  # max gradient norm (0: off)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: bf16 on CUDA, off on CPU
    seed: int = 0
    log_every: int = 10
    eval_every: int = 2000  # steps between validations (0: only at the end)
    save_every: int = 500  # steps between last.pt checkpoints
    # initialise the model from another run's checkpoint (e.g. a distillation pretraining): every
    # trainable tensor whose name and shape match is loaded, the rest is reported; a resumed run's
    # last.pt still wins
    init_from: str = ""
    init_exclude: list[str] = field(default_factory=list)  # name prefixes not loaded (e.g. "head.")


@dataclass
class EvalConfig:
    batch_size: int = 1
    pictures: int = 4  # frames drawn as range-view / BEV pictures by eval and predict




# ------------------------------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert one YAML value against a field type; raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return _build(tp, value, key + ".")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key '{key}' has a bad value {value!r}")
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list of {_type_name(item_tp)}, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an unsupported type {tp}")  # pragma: no cover


def build_section(cls: type, data: dict, prefix: str = "") -> Any:
    """A dataclass from a (nested) dict, every key and type checked; `prefix` names the keys in errors."""
    return _build(cls, data, prefix)


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{prefix}{key}'{hint}; known keys here: {', '.join(names)}")
        kwargs[key] = _convert(value, hints[key], prefix + key)
    obj = cls(**kwargs)
    return obj


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


# the shipped configs: package data of balvit (`config/` in a checkout links here)
PACKAGE_CONFIGS = Path(__file__).resolve().parent / "configs"


def resolve_config_file(path: str | Path) -> Path:
    """A config path as given; a relative `config/<...>` that the working directory does not have is
    taken from the shipped configs (package data), so an installed balvit runs the README's commands."""
    p = Path(path).expanduser()
    if p.is_file() or p.is_absolute() or not p.parts or p.parts[0] != "config":
        return p
    shipped = PACKAGE_CONFIGS.joinpath(*p.parts[1:])
    return shipped if shipped.is_file() else p


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a config YAML, resolving `_base_` chains (relative to the file)."""
    path = resolve_config_file(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    base = data.pop("_base_", None)
    if base is not None:
        bases = base if isinstance(base, list) else [base]
        merged: dict = {}
        for b in bases:
            merged = _deep_merge(merged, read_yaml(path.parent / b, _seen + (path.resolve(),)))
        data = _deep_merge(merged, data)
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """`train.lr=1e-3` -> (['train', 'lr'], 0.001); values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-")
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for item in overrides:
        keys, value = parse_override(item)
        node = data
        for k in keys[:-1]:
            nxt = node.get(k)
            nxt = dict(nxt) if isinstance(nxt, dict) else {}
            node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return data




class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error (PyYAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key '{key}' is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                              "the second would silently replace the first")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ---------------------------------------------------------------------------------- comparing


def completed(cls: type, stored: dict) -> dict:
    """A stored (resolved) config dict of dataclass `cls` with the defaults of the fields it lacks
    (written before they existed: a new field defaults to the behaviour before it) and without the
    fields `cls` no longer has; nested sections alike."""
    out = to_dict(cls())
    for key, value in (stored or {}).items():
        if key in out:
            out[key] = completed(type(getattr(cls(), key)), value) if isinstance(out[key], dict) else value
    return out


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (lists are values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key whose values differ, keys matching an
    fnmatch pattern of `ignore` left out; sorted by key."""
    fa, fb = flatten(a), flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        if any(fnmatch.fnmatchcase(key, pat) for pat in ignore):
            continue
        if fa.get(key, _MISSING) != fb.get(key, _MISSING):
            out.append((key, fa.get(key, _MISSING), fb.get(key, _MISSING)))
    return out


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


_MISSING = _Missing()


def describe_differences(diffs: list[tuple[str, Any, Any]], left: str, right: str, limit: int = 6) -> str:
    """'key: <left> a, <right> b; ...' for an error message (at most `limit`, then a count)."""
    shown = [f"{k}: {left} {a!r}, {right} {b!r}" for k, a, b in diffs[:limit]]
    more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(shown) + more


def not_architecture_fields(cls: type, prefix: str) -> list[str]:
    """Dotted names of the `not_architecture` fields of a config dataclass (recursively)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if f.metadata.get(NOT_ARCHITECTURE):
            out.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            out.extend(not_architecture_fields(hints[f.name], f"{prefix}{f.name}."))
    return out


# A resumed run (same --save_path) must have the config of its last.pt except these fields
# (fnmatch patterns over dotted keys): how long and how often, where the data lies, how many
# workers, how much memory. Changing train.steps re-plans the cosine schedule for the new total.
RESUME_SAFE = (
    "train.steps", "train.log_every", "train.eval_every", "train.save_every",
    "data.root", "data.num_workers", "data.max_val_frames", "data.preflight",
    "eval.*", "*.grad_checkpoint",
)


# ----------------------------------------------------------------------------- shared checks


def _positive(value: float, key: str, zero_ok: bool = False) -> None:
    if value < 0 or (value == 0 and not zero_ok):
        raise ConfigError(f"{key} must be {'>= 0' if zero_ok else '> 0'}, got {value}")


def check_shared(data: DataConfig, loss: LossConfig, train: TrainConfig, evaluation: EvalConfig,
                 task: str = "segmentation") -> None:
    """Cross-field and range checks of the shared sections (the model's and task's come from them)."""
    rv = data.range
    if rv.height <= 0 or rv.width <= 0:
        raise ConfigError(f"data.range.height/width must be positive, got {rv.height} x {rv.width}")
    if rv.fov_up <= rv.fov_down:
        raise ConfigError(f"data.range.fov_up ({rv.fov_up}) must be above data.range.fov_down ({rv.fov_down})")
    for name in ("mean", "std"):
        if len(getattr(rv, name)) != 5:
            raise ConfigError(f"data.range.{name} needs 5 values (range, x, y, z, intensity)")
    if min(rv.std) <= 0:
        raise ConfigError("data.range.std values must be positive")
    bev = data.bev
    if bev.max_radius <= bev.min_radius or bev.radius_bins <= 0 or bev.azimuth_bins <= 0:
        raise ConfigError("data.bev needs max_radius > min_radius and positive bin counts")
    if not 0 < data.label_fraction <= 100:
        raise ConfigError(f"data.label_fraction is a percentage in (0, 100], got {data.label_fraction}")
    for j, extra in enumerate(data.extra_datasets):
        if not 0 < extra.label_fraction <= 100:
            raise ConfigError(f"data.extra_datasets[{j}].label_fraction is a percentage in (0, 100], "
                              f"got {extra.label_fraction}")
    _positive(data.intensity_scale, "data.intensity_scale")
    _positive(data.num_workers, "data.num_workers", zero_ok=True)
    _positive(data.max_val_frames, "data.max_val_frames", zero_ok=True)
    aug = data.augment
    if len(aug.scale) != 2 or aug.scale[0] > aug.scale[1] or aug.scale[0] <= 0:
        raise ConfigError(f"data.augment.scale must be [low, high] with 0 < low <= high, got {aug.scale}")
    if aug.crop_width < 0 or aug.crop_width > rv.width:
        raise ConfigError(f"data.augment.crop_width must be in 0..data.range.width ({rv.width}), got {aug.crop_width}")
    _positive(aug.translate_std, "data.augment.translate_std", zero_ok=True)
    check_augment(data, task)
    sp = data.sampling
    if sp.voxel_size < 0 or sp.max_points < 0 or sp.neighbors < 0:
        raise ConfigError("data.sampling.voxel_size, max_points and neighbors must be >= 0")
    for key in ("ce_weight", "lovasz_weight", "focal_gamma", "aux_weight"):
        _positive(getattr(loss, key), f"loss.{key}", zero_ok=True)
    if not 0 <= loss.label_smoothing < 1:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {loss.label_smoothing}")
    t = train
    if t.steps <= 0 or t.batch_size <= 0 or t.lr <= 0:
        raise ConfigError("train.steps, train.batch_size and train.lr must be positive")
    _positive(t.log_every, "train.log_every")
    _positive(t.save_every, "train.save_every")
    _positive(t.eval_every, "train.eval_every", zero_ok=True)
    _positive(t.warmup_steps, "train.warmup_steps", zero_ok=True)
    _positive(t.grad_clip, "train.grad_clip", zero_ok=True)
    _positive(t.weight_decay, "train.weight_decay", zero_ok=True)
    if t.optimizer == "sgd" and (not 0 <= t.momentum < 1 or (t.nesterov and t.momentum == 0)):
        raise ConfigError(f"train.momentum must be in [0, 1) (and > 0 with train.nesterov), got {t.momentum}")
    if not 0 <= t.min_lr <= t.lr:
        raise ConfigError(f"train.min_lr must be in [0, train.lr ({t.lr})], got {t.min_lr}")
    _positive(evaluation.batch_size, "eval.batch_size")
    _positive(evaluation.pictures, "eval.pictures", zero_ok=True)


def check_augment(data: DataConfig, task: str) -> None:
    """The optional augmentation fields (flip probabilities, uniform translation, tilt, mixing)."""
    aug = data.augment
    for name in ("flip_prob", "translate_prob", "tilt_prob"):
        if not 0 <= getattr(aug, name) <= 1:
            raise ConfigError(f"data.augment.{name} is a probability in [0, 1], got {getattr(aug, name)}")
    if aug.translate_range and (len(aug.translate_range) != 3 or any(len(r) != 2 or r[0] > r[1] for r in aug.translate_range)):
        raise ConfigError("data.augment.translate_range must be [[x_lo, x_hi], [y_lo, y_hi], [z_lo, z_hi]] with lo <= hi, "
                          f"got {aug.translate_range}")
    if aug.tilt_deg and (len(aug.tilt_deg) != 3 or min(aug.tilt_deg) < 0):
        raise ConfigError(f"data.augment.tilt_deg must be [roll, pitch, yaw] >= 0 degrees, got {aug.tilt_deg}")
    mix = aug.mix
    if mix.polarmix or mix.cutmix:
        if not 0 <= mix.polarmix_prob <= 1 or mix.max_instances < 1 or mix.min_instance_points < 1 or mix.cluster_radius <= 0:
            raise ConfigError("data.augment.mix needs polarmix_prob in [0, 1], max_instances >= 1, "
                              "min_instance_points >= 1 and cluster_radius > 0")
        if not mix.classes or (mix.cutmix and not mix.ground_classes):
            raise ConfigError("data.augment.mix needs classes (and ground_classes for cutmix)")
        if data.range.rows == "ring":
            raise ConfigError("data.augment.mix (polarmix / cutmix) needs data.range.rows=fov: pasted points carry no "
                              "laser ring")
        camera_tasks = ("distill", "multivit_camera", "multivit_joint", "elite_teacher", "elite_student")
        if data.cameras or task in camera_tasks:
            raise ConfigError(f"data.augment.mix (polarmix / cutmix) cannot be used with camera views (task {task}, "
                              "data.cameras): points pasted from other scans have no pixel in this frame's images")
