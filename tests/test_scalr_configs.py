"""ScaLR's shipped stages (Puy et al., CVPR 2024): the pretrain / linprob / finetune_1/10/100 configs
carry the paper's values, and a fine-tuning run starts as the paper's does: the distilled backbone,
a NEW BatchNorm + linear head, drop path on every residual branch, layer-wise learning-rate decay
(0.95 for 1 % / 10 %, 0.99 for 100 %) in the optimizer it actually builds."""

from __future__ import annotations

import pytest
import torch

from balvit.run_config import load_config
from balvit.engine.checkpoint import init_model_from, save_checkpoint
from balvit.engine.optim import build_optimizer
from balvit.models import build_model
from balvit.models.waffleiron import WaffleIron
from balvit.tasks import SegmentationTask
from conftest import REPO

SYN = REPO / "config/synthetic"
BASE = REPO / "config/baselines"
FRESH_HEAD = {"head.0.weight": 1.0, "head.0.bias": 0.0, "head.0.running_mean": 0.0, "head.0.running_var": 1.0,
              "head.1.weight": 0.0, "head.1.bias": 0.0}
DECAY = {"1": 0.95, "10": 0.95, "100": 0.99}
STAGES = ([SYN / "scalr_linprob.yaml", BASE / "scalr_kitti_linprob.yaml", BASE / "scalr_nuscenes_linprob.yaml"]
          + [d / f"scalr{ds}_finetune_{p}.yaml" for d, ds in ((SYN, ""), (BASE, "_kitti"), (BASE, "_nuscenes"))
             for p in DECAY])


@pytest.mark.parametrize("path", [SYN / "scalr_pretrain.yaml", BASE / "scalr_pretrain.yaml"], ids=lambda p: p.parent.name)
def test_pretrain_configs_distill_dinov2_on_mixed_datasets(path):
    cfg = load_config(path)
    assert cfg.task == "distill" and cfg.model.name == "waffleiron"
    assert cfg.distill.teachers[0].name.startswith("dinov2") and tuple(cfg.distill.image_size) == (224, 448)
    assert cfg.distill.feature == "last_block" and cfg.data.extra_datasets  # several datasets at once
    assert {cfg.data.dataset, *(e.dataset for e in cfg.data.extra_datasets)} == {"semantickitti", "nuscenes"}
    assert cfg.data.cameras and cfg.data.sampling.voxel_size == 0.1 and cfg.data.sampling.neighbors == 16
    assert (cfg.train.lr, cfg.train.weight_decay) == (0.002, 0.03)
    assert list(cfg.model.waffleiron.projections) == [2, 1, 0]


@pytest.mark.parametrize("path", STAGES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_downstream_configs_start_from_the_pretraining_with_a_new_head(path):
    cfg = load_config(path)
    w = cfg.model.waffleiron
    assert cfg.task == "segmentation" and cfg.model.name == "waffleiron"
    assert cfg.train.init_from.endswith("scalr_pretrain/last.pt") and list(cfg.train.init_exclude) == ["head."]
    if "linprob" in path.stem:
        assert w.freeze_backbone and w.layer_decay == 0 and w.drop_path == 0
    else:
        fraction = path.stem.rsplit("_", 1)[1]
        assert not w.freeze_backbone and w.layer_decay == DECAY[fraction] and w.drop_path == 0.2
        assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.min_lr) == (0.002, 0.0, 0.0)
        split = cfg.data.split_file or ""
        assert split.endswith(f"/{fraction}.txt") if split else cfg.data.label_fraction == int(fraction)


@pytest.mark.parametrize("fraction", ["1", "100"])
def test_finetuning_gets_the_backbone_a_new_bn_linear_head_drop_path_and_decayed_rates(tmp_path, fraction):
    small = ["model.waffleiron.width=8", "model.waffleiron.depth=3"]
    pre_cfg = load_config(SYN / "scalr_pretrain.yaml", small)
    pretrained = build_model(pre_cfg, 19)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in pretrained.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))  # statistics too: nothing equals a fresh init
    save_checkpoint(tmp_path / "last.pt", model=pretrained, step=1, config={"model": {"name": "waffleiron"}})

    cfg = load_config(SYN / f"scalr_finetune_{fraction}.yaml", [*small, f"train.init_from={tmp_path / 'last.pt'}"])
    model = build_model(cfg, 19)
    assert isinstance(model, WaffleIron)
    report = init_model_from(model, cfg.train.init_from, exclude=list(cfg.train.init_exclude))
    assert set(report["excluded"]) == {k for k in model.state_dict() if k.startswith("head.")} and not report["mismatched"]
    ref = pretrained.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("head."):  # new head: BN at its initial state, linear at zero
            if k in FRESH_HEAD:
                assert torch.all(v == FRESH_HEAD[k]), k
        else:
            assert torch.equal(v, ref[k]), k  # backbone from the pretraining, statistics included
    # drop path 0.2 on both branches of every layer, trainable backbone
    drops = [m.drop.p for layer in model.layers for m in (layer.spatial, layer.channel)]
    assert drops == [0.2] * 6 and all(p.requires_grad for p in model.parameters())
    # the optimizer's per-parameter learning rates: lr * decay^(depth + 1 - layer id)
    decay = DECAY[fraction]
    opt = build_optimizer(SegmentationTask(model, cfg.loss), cfg.train)
    names = {id(p): n for n, p in model.named_parameters()}
    lr_of = {names[id(p)]: group["lr"] for group in opt.param_groups for p in group["params"]}
    assert len(lr_of) == sum(1 for _ in model.parameters())
    assert lr_of["embed.point.weight"] == pytest.approx(0.002 * decay ** 4)
    assert lr_of["layers.0.spatial.conv1.weight"] == pytest.approx(0.002 * decay ** 3)
    assert lr_of["layers.2.channel.fc2.weight"] == pytest.approx(0.002 * decay)
    assert lr_of["head.0.weight"] == lr_of["head.1.bias"] == pytest.approx(0.002)
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)
