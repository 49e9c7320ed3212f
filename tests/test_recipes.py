"""Every shipped baseline config carries its official recipe (docs/<system>.md, fidelity tables).

The values are facts read from the official repositories (valeoai/WaffleIron configs/*.yaml and
launch_train.py, valeoai/ScaLR configs/downstream/*/WI_768_*.yaml and finetune.py, valeoai/rangevit
config_*.yaml and dataset/range_view_loader.py, dachr8/ELiTe config/ELiTe-semantickitti.yaml and
network/arch_elite.py, valeoai/SLidR downstream/dataloader_nuscenes.py); steps are the official
epochs converted with the dataset size and batch of the config (drop_last: floor)."""

from __future__ import annotations

import pytest
import torch

from balvit.run_config import load_config
from balvit.engine.optim import build_optimizer, lr_factor
from conftest import REPO

BASE = REPO / "config/baselines"
KITTI_TRAIN, NUSC_TRAIN = 19130, 28130


def cfg(name, *overrides):
    return load_config(BASE / f"{name}.yaml", list(overrides))


def steps(epochs: int, frames: int, batch: int) -> int:
    return epochs * (frames // batch)


WAFFLEIRON_AUG = dict(rotate=True, flip=True, flip_mode="one_axis", scale=[0.9, 1.1], translate_std=0.0)


def check_aug(aug, **want):
    for key, value in want.items():
        got = getattr(aug, key)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, (key, got, value)


# ------------------------------------------------------------------------------------ WaffleIron


def test_waffleiron_kitti_is_the_iccv_config():
    """configs/WaffleIron-48-256__kitti.yaml (commit 1790897, "Update code to ICCV version")."""
    c = cfg("waffleiron_kitti")
    w = c.model.waffleiron
    assert (w.width, w.depth) == (256, 48)
    assert w.projections == [2, 1, 0] and w.grids == [[250, 250], [250, 12], [250, 12]]
    assert w.fov == [[-50.0, -50.0, -3.0], [50.0, 50.0, 2.0]] and w.drop_path == 0.2
    s = c.data.sampling
    assert (s.voxel_size, s.max_points, s.cap, s.neighbors, w.neighbors) == (0.1, 20000, "nearest", 16, 16)
    check_aug(c.data.augment, **WAFFLEIRON_AUG, flip_prob=2 / 3)
    mix = c.data.augment.mix
    assert mix.polarmix and mix.cutmix  # instance_cutmix: True = CutMix and PolarMix
    assert mix.classes == ["bicycle", "motorcycle", "other-vehicle", "person", "bicyclist"]  # bank {1, 2, 4, 5, 6}
    assert mix.ground_classes == ["road", "parking", "sidewalk"] and mix.max_instances == 40
    assert (mix.polarmix_prob, mix.min_instance_points) == (0.5, 6)
    t = c.train
    assert (t.optimizer, t.lr, t.weight_decay, t.min_lr, t.batch_size) == ("adamw", 0.001, 0.003, 1e-5, 4)
    assert t.grad_clip == 0.0  # utils/trainer.py: no clipping
    assert t.steps == steps(45, KITTI_TRAIN, 4) and t.warmup_steps == steps(4, KITTI_TRAIN, 4)
    assert (c.loss.ce_weight, c.loss.lovasz_weight, c.loss.class_weights) == (1.0, 1.0, "none")


def test_waffleiron_nuscenes_config():
    """configs/WaffleIron-48-384__nuscenes.yaml: no instance CutMix there."""
    c = cfg("waffleiron_nuscenes")
    w = c.model.waffleiron
    assert (w.width, w.depth, w.projections) == (384, 48, [2, 1, 0])
    assert w.grids == [[166, 166], [166, 16], [166, 16]] and w.fov == [[-50.0, -50.0, -5.0], [50.0, 50.0, 5.0]]
    assert w.drop_path == 0.2 and c.data.sampling.cap == "nearest"
    check_aug(c.data.augment, **WAFFLEIRON_AUG, flip_prob=2 / 3)
    assert not c.data.augment.mix.polarmix and not c.data.augment.mix.cutmix
    assert c.train.steps == steps(45, NUSC_TRAIN, 4) and c.train.warmup_steps == steps(4, NUSC_TRAIN, 4)
    assert c.train.grad_clip == 0.0


# ------------------------------------------------------------------------------------------ ScaLR

SCALR = {  # config -> (epochs, warm-up epochs, layer decay, training frames), WI_768_finetune_*p.yaml
    "scalr_kitti_finetune_1": (45, 4, 0.95, 192),
    "scalr_kitti_finetune_10": (45, 4, 0.95, 1913),  # no official 10 % KITTI config: the 1 % recipe
    "scalr_kitti_finetune_100": (10, 1, 0.99, KITTI_TRAIN),
    "scalr_nuscenes_finetune_1": (45, 4, 0.95, 281),
    "scalr_nuscenes_finetune_10": (45, 4, 0.95, 2813),
    "scalr_nuscenes_finetune_100": (25, 2, 0.99, NUSC_TRAIN),
}


@pytest.mark.parametrize("name", sorted(SCALR))
def test_scalr_finetuning_schedules(name):
    epochs, warmup, decay, frames = SCALR[name]
    c = cfg(name)
    assert c.train.steps == steps(epochs, frames, 8) and c.train.warmup_steps == steps(warmup, frames, 8)
    assert (c.train.batch_size, c.train.lr, c.train.weight_decay, c.train.min_lr) == (8, 0.002, 0.0, 0.0)
    assert c.model.waffleiron.layer_decay == decay and c.model.waffleiron.drop_path == 0.2
    check_aug(c.data.augment, **WAFFLEIRON_AUG, flip_prob=2 / 3)
    assert c.data.sampling.cap == "nearest" and c.data.sampling.max_points == 20000
    if "nuscenes" in name and not name.endswith("_100"):
        assert c.data.split_method == "scenes"  # ScaLR's own lists are not obtainable: SLidR's rule


@pytest.mark.parametrize("name, frames", [("scalr_kitti_linprob", KITTI_TRAIN), ("scalr_nuscenes_linprob", NUSC_TRAIN)])
def test_scalr_linear_probing(name, frames):
    """WI_768_linprob.yaml: 20 epochs, 2 warm-up, lr 0.001, weight decay 0.003, min lr 1e-5."""
    c = cfg(name)
    assert c.train.steps == steps(20, frames, 8) and c.train.warmup_steps == steps(2, frames, 8)
    assert (c.train.lr, c.train.weight_decay, c.train.min_lr) == (0.001, 0.003, 1e-5)
    assert c.model.waffleiron.freeze_backbone and c.model.waffleiron.drop_path == 0.0


def test_scalr_pretraining():
    """WI_768_pretrain.yaml + datasets/im_pc_dataset.py augmentations."""
    c = cfg("scalr_pretrain")
    w = c.model.waffleiron
    assert (w.width, w.depth, w.norm, w.projections) == (768, 48, "layer", [2, 1, 0])
    assert w.grids == [[256, 256], [256, 32], [256, 32]] and w.fov == [[-64.0, -64.0, -8.0], [64.0, 64.0, 8.0]]
    assert (c.train.lr, c.train.weight_decay, c.train.warmup_steps, c.train.min_lr) == (0.002, 0.03, 3500, 1e-5)
    check_aug(c.data.augment, **WAFFLEIRON_AUG, flip_prob=2 / 3)
    assert c.data.sampling.cap == "nearest"


# --------------------------------------------------------------------------------------- RangeViT


def test_rangevit_nuscenes_augmentation_and_drop_path():
    """config_nusc.yaml augmentation in the library frame (their x right / y forward = our -y / x)."""
    c = cfg("rangevit_nuscenes")
    check_aug(c.data.augment, rotate=False, flip=True, flip_mode="x", flip_prob=0.5, scale=[1.0, 1.0],
              translate_std=0.0, translate_range=[[-3.0, 3.0], [-5.0, 5.0], [-1.0, 0.0]], translate_prob=0.5,
              tilt_deg=[5.0, 5.0, 5.0], tilt_prob=0.5, crop_width=384)
    assert c.model.rangevit.drop_path == 0.1 and c.data.range.height == 32 and c.data.range.width == 2048
    assert (c.loss.focal_gamma, c.loss.lovasz_weight, c.loss.class_weights) == (2.0, 1.0, "none")
    assert c.loss.ce_weight == pytest.approx(0.6931471805599453)  # alpha = log(1 + 1) for every class
    assert (c.train.lr, c.train.weight_decay, c.train.min_lr, c.train.grad_clip) == (0.0002, 0.01, 0.0, 0.0)


def test_rangevit_kitti_trains_on_unaugmented_crops_as_the_official_loader_does():
    """config_kitti.yaml sets scan_proj: true, and range_view_loader.py augments only without it."""
    c = cfg("rangevit_kitti")
    check_aug(c.data.augment, rotate=False, flip=False, scale=[1.0, 1.0], translate_std=0.0, translate_range=[],
              tilt_deg=[], crop_width=384)
    assert c.model.rangevit.drop_path == 0.1
    assert (c.train.lr, c.train.weight_decay, c.train.min_lr, c.train.grad_clip) == (0.0004, 0.01, 0.0, 0.0)
    assert (c.loss.focal_gamma, c.loss.ce_weight, c.loss.lovasz_weight) == (2.0, 1.0, 1.0)
    assert (c.loss.class_weights, c.loss.weight_norm) == ("log_inverse_freq", "points")  # alpha, FocalSoftmaxLoss


# --------------------------------------------------------------------------------------- MultiViT


@pytest.mark.parametrize("dataset", ["kitti", "nuscenes"])
def test_multivit_thesis_camera_labels_and_loss(dataset):
    for stage in ("camera", "joint"):
        c = cfg(f"multivit_{dataset}_{stage}")
        assert c.pseudo_labels.method == "box_masks"
        cam = c.camera_task.loss
        assert cam is not None and (cam.lovasz_weight, cam.ce_weight) == (1.0, 3.0) and cam.focal_gamma > 0
        assert c.model.rangevit.drop_path == 0.1
    if dataset == "nuscenes":
        assert c.model.multivit.image_size == [256, 704]
    assert cfg(f"multivit_{dataset}_lidar").camera_task.loss is None  # LiDAR fine-tuning: no camera loss


# ------------------------------------------------------------------------------------------ ELiTe


def test_elite_distillation_is_the_official_weighting():
    for name in ("elite_kitti_student", "elite_kitti_joint"):
        el = cfg(name).elite
        assert (el.kd_weight, el.kd_form, el.kd_temperature) == (0.05, "official", 1.0)


def test_elite_joint_is_the_official_regime():
    """config/ELiTe-semantickitti.yaml: SGD lr 0.24 momentum 0.9 Nesterov wd 1e-4, 64 epochs of batch 4
    over training_size 19132, class weights (max f / f)^(1/3), teacher trained with the student."""
    c = cfg("elite_kitti_joint")
    t = c.train
    assert (t.optimizer, t.lr, t.momentum, t.nesterov, t.weight_decay) == ("sgd", 0.24, 0.9, True, 1e-4)
    assert t.steps == 64 * -(-19132 // 4) and (t.warmup_steps, t.min_lr, t.grad_clip) == (0, 0.0, 1.0)
    assert c.loss.class_weights == "inverse_cbrt_freq"
    assert c.elite.teacher_mode == "joint" and not c.elite.teacher_checkpoint and c.task == "elite_student"
    te = c.model.elite_teacher
    assert (te.encoder, te.peft, te.lora_rank, te.adalora_init_rank) == ("sam", "adalora", 8, 12)
    assert te.adalora_tinit == pytest.approx(1 / 6, abs=1e-3) and te.adalora_tfinal == 0.5
    assert te.adalora_delta_t == t.steps // 300 and te.orth_reg_weight == 0.1
    # the schedule: 0.5 (1 + cos(pi k / T)), utils/schedulers.py cosine_schedule_with_warmup on one GPU
    for k in (0, 1000, t.steps // 2, t.steps - 1):
        official = 0.5 * (1 + torch.cos(torch.tensor(torch.pi * k / t.steps, dtype=torch.float64))).item()
        assert lr_factor(k, t.steps, t.warmup_steps, t.min_lr / t.lr) == pytest.approx(official, abs=1e-12)


def test_sgd_optimizer_and_the_adamw_default():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    sgd = build_optimizer(model, cfg("elite_kitti_joint").train)
    assert isinstance(sgd, torch.optim.SGD)
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in sgd.param_groups)
    assert {g["weight_decay"] for g in sgd.param_groups} == {1e-4, 0.0}  # norms and biases: no decay (ours)
    adamw = build_optimizer(model, cfg("waffleiron_kitti").train)
    assert isinstance(adamw, torch.optim.AdamW) and adamw.defaults["betas"] == (0.9, 0.999)


# ----------------------------------------------------------------------------------------- splits


@pytest.mark.parametrize("fraction, method", [("0.1", "uniform"), ("1", "scenes"), ("10", "scenes")])
def test_nuscenes_label_efficient_configs_use_slidrs_scene_rule(fraction, method):
    c = load_config(REPO / f"config/nuscenes/nuscenes_{fraction}.yaml")
    assert c.data.label_fraction == float(fraction) and c.data.split_method == method  # 0.1 %: no scene split


def test_every_baseline_config_loads():
    names = sorted(p.stem for p in BASE.glob("*.yaml"))
    assert len(names) >= 22
    for name in names:
        cfg(name)
