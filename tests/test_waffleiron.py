"""WaffleIron: projections against naive loops, forward/backward, up-sampling to all points, linear
probing, layer-wise learning-rate decay, initialisation from a pretraining checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balvit.run_config import load_config
from balvit.data.dataset import SegmentationDataset, collate
from balvit.engine.checkpoint import init_model_from, save_checkpoint
from balvit.engine.optim import build_optimizer
from balvit.engine.trainer import Trainer, run_eval
from balvit.errors import CheckpointError, ConfigError
from balvit.models import build_model, loader_geometry
from balvit.models.base import SegModel
from balvit.geometry import PlaneGrid
from balvit.models.waffleiron import DropPath
from balvit.tasks import SegmentationTask
from conftest import CPU, MemoryScans
from fakedata import write_kitti

TINY = [
    "model.name=waffleiron", "model.waffleiron.width=16", "model.waffleiron.depth=3",
    "model.waffleiron.projections=[2,1,0]", "model.waffleiron.grids=[[16,16],[16,4],[16,4]]",
    "model.waffleiron.fov=[[-32,-32,-4],[32,32,4]]", "model.waffleiron.neighbors=6",
    "data.sampling.voxel_size=0.5", "data.sampling.max_points=600", "data.sampling.neighbors=6",
    "data.range.height=16", "data.range.width=128", "data.augment.crop_width=0",
]


def tiny_cfg(*more):
    return load_config(None, [*TINY, *more])


def test_plane_cells_by_hand():
    fov = ((-10.0, -10.0, -2.0), (10.0, 10.0, 2.0))
    xyz = np.array([[-10.0, -10.0, -2.0], [9.99, 0.0, 1.0], [0.0, 5.0, 0.5], [30.0, -30.0, 9.0]], np.float32)
    # (x, y) plane 4 x 8: cells of 5 m x 2.5 m; the last point is outside and lands on the border
    assert PlaneGrid(2, (4, 8), *fov).cells(xyz).tolist() == [r * 8 + c for r, c in [(0, 0), (3, 4), (2, 6), (3, 0)]]
    # (y, z) plane (axis 0 dropped) 2 x 2
    assert PlaneGrid(0, (2, 2), *fov).cells(xyz).tolist() == [0, 1 * 2 + 1, 1 * 2 + 1, 0 * 2 + 1]


def test_the_loader_computes_the_plane_cells_the_model_would():
    cfg = tiny_cfg()
    geometry = loader_geometry(cfg)
    assert [p.axis for p in geometry.planes] == [2, 1, 0]
    scans = MemoryScans([900, 1300], seed=3)
    ds = SegmentationDataset(scans, cfg.data, train=False, geometry=geometry)
    batch = collate([ds[0], ds[1]])
    m = len(batch["sub_index"])
    assert batch["plane_cells"].shape == (m, 3)
    xyz = batch["points"][batch["sub_index"], :3]
    for k, plane in enumerate(geometry.planes):
        assert torch.equal(batch["plane_cells"][:, k], plane.cells_torch(xyz))
    model = build_model(cfg, 19).eval()
    with torch.no_grad():
        with_cells = model(batch)["logits"]
        without = model({k: v for k, v in batch.items() if k != "plane_cells"})["logits"]
    assert torch.equal(with_cells, without)
    with pytest.raises(ValueError, match="plane_cells"):
        model({**batch, "plane_cells": batch["plane_cells"][:, :2]})


def test_forward_backward_and_every_point_gets_its_nearest_kept_points_logits():
    cfg = tiny_cfg("model.waffleiron.drop_path=0.2")
    scans = MemoryScans([900, 1300], seed=3)
    model = build_model(cfg, 19)
    task = SegmentationTask(model, cfg.loss)
    train = SegmentationDataset(scans, cfg.data, train=True)
    batch = collate([train[(0, 0)], train[(1, 0)]])
    assert len(batch["points"]) <= 2 * 600
    out = task.train()(batch)
    assert out["logits"].shape == (len(batch["points"]), 19)
    out["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.head[1].weight.grad.abs().sum() > 0  # the zero-initialised head learns

    model.eval()
    evalset = SegmentationDataset(scans, cfg.data, train=False)
    batch = collate([evalset[0], evalset[1]])
    n = len(batch["points"])
    assert n == 900 + 1300 and len(batch["sub_index"]) < n  # all points, the model runs on fewer
    with torch.no_grad():
        logits = model(batch)["logits"]
        tokens, up = model.encode(batch)
    assert logits.shape == (n, 19)
    torch.testing.assert_close(logits, model.head(tokens)[up])
    sub_xyz = batch["points"][batch["sub_index"], :3]
    for s in range(2):  # up_index is the nearest kept point of the same scan
        lo, hi = batch["offsets"][s].item(), batch["offsets"][s + 1].item()
        mine = (batch["batch"][batch["sub_index"]] == s).nonzero().squeeze(1)
        d = torch.cdist(batch["points"][lo:hi, :3], sub_xyz[mine], compute_mode="donot_use_mm_for_euclid_dist")
        torch.testing.assert_close(d.min(1).values, (batch["points"][lo:hi, :3] - sub_xyz[up[lo:hi]]).norm(dim=1))
    # without loader-side neighbours the model finds them itself (chunked cdist), same result
    no_knn = {k: v for k, v in batch.items() if k != "knn"}
    with torch.no_grad():
        torch.testing.assert_close(model(no_knn)["logits"], logits, atol=1e-4, rtol=1e-4)


def test_drop_path_drops_whole_scans():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    batch = torch.repeat_interleave(torch.arange(40), 5)
    x = torch.ones(200, 3)
    y = dp(x, batch, 40).view(40, 5, 3)
    per_scan = y.flatten(1)
    assert set(per_scan.unique().tolist()) == {0.0, 2.0}
    assert (per_scan.min(1).values == per_scan.max(1).values).all()  # one decision per scan
    assert torch.equal(dp.eval()(x, batch, 40), x)


def test_layer_wise_decay_gives_the_expected_learning_rates():
    cfg = tiny_cfg("model.waffleiron.layer_decay=0.9", "train.lr=0.01")
    model = build_model(cfg, 19)
    task = SegmentationTask(model, cfg.loss)
    opt = build_optimizer(task, cfg.train)
    lr_of = {}
    names = {id(p): n for n, p in task.named_parameters()}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[names[id(p)]] = g["lr"]
    depth = cfg.model.waffleiron.depth  # 3: embedding id 0, layers 1..3, head 4
    assert lr_of["model.embed.point.weight"] == pytest.approx(0.01 * 0.9 ** 4)
    assert lr_of["model.layers.0.spatial.conv1.weight"] == pytest.approx(0.01 * 0.9 ** 3)
    assert lr_of["model.layers.1.channel.fc2.bias"] == pytest.approx(0.01 * 0.9 ** 2)
    assert lr_of["model.layers.2.spatial.scale"] == pytest.approx(0.01 * 0.9 ** 1)
    assert lr_of["model.head.1.weight"] == pytest.approx(0.01)
    for name, lr in lr_of.items():
        assert lr == pytest.approx(0.01 * 0.9 ** (depth + 1 - model.layer_id(name[len("model."):]))), name
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)
    assert tiny_cfg().model.waffleiron.layer_decay == 0 and build_model(tiny_cfg(), 19).lr_scales() == {}


def test_linear_probing_trains_only_the_head_and_keeps_backbone_statistics():
    cfg = tiny_cfg("model.waffleiron.freeze_backbone=true")
    model = build_model(cfg, 19)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.0.weight", "head.0.bias", "head.1.weight", "head.1.bias"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scans = MemoryScans([900, 700], seed=5)
    ds = SegmentationDataset(scans, cfg.data, train=True)
    task = SegmentationTask(model, cfg.loss).train()
    out = task(collate([ds[(0, 0)], ds[(1, 0)]]))
    out["loss"].backward()
    after = model.state_dict()
    for k in before:
        if k.startswith("head.0.running"):
            assert not torch.equal(before[k], after[k]), k  # the head's BN learns its statistics
        elif not k.startswith("head."):
            assert torch.equal(before[k], after[k]), k  # backbone BN statistics stay as loaded
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head."))
    # the checkpoint still holds the backbone (the run is evaluated from its own checkpoint)
    assert "embed.point.weight" in model.trainable_state_dict()


def test_init_from_loads_matching_weights_and_reports_the_rest(tmp_path):
    src = build_model(tiny_cfg(), 19)
    for p in src.parameters():
        torch.nn.init.normal_(p)
    save_checkpoint(tmp_path / "pre.pt", model=src, step=7, config={"model": {"name": "waffleiron"}})
    dst = build_model(tiny_cfg(), 16)  # other head size (another dataset's classes)
    head_before = dst.head[1].weight.clone()
    report = init_model_from(dst, tmp_path / "pre.pt", exclude=["head.1."])
    assert torch.equal(dst.embed.point.weight, src.embed.point.weight)
    assert torch.equal(dst.layers[2].channel.fc1.weight, src.layers[2].channel.fc1.weight)
    assert torch.equal(dst.head[0].weight, src.head[0].weight)  # the head's BN is not excluded
    assert torch.equal(dst.head[1].weight, head_before)
    assert report["excluded"] == ["head.1.weight", "head.1.bias"]
    assert set(report["missing"]) == {"head.1.weight", "head.1.bias"}
    # without the exclusion the differently-shaped head is reported as a shape mismatch, not loaded
    report = init_model_from(build_model(tiny_cfg(), 16), tmp_path / "pre.pt")
    assert len(report["mismatched"]) == 2 and "head.1.weight (19, 16) -> (16, 16)" in report["mismatched"]
    class Foreign(SegModel):  # another architecture: nothing fits, refused with the file's name
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Linear(3, 3)

    with pytest.raises(CheckpointError, match="pre.pt"):
        init_model_from(Foreign(), tmp_path / "pre.pt")


def test_waffleiron_trains_and_evaluates_on_all_original_points(tmp_path):
    root = tmp_path / "kitti"
    write_kitti(root, counts={"00": 3, "08": 2}, n_points=1500, seed=4)
    cfg = tiny_cfg(f"data.root={root}", "data.train_sequences=['00']", "data.val_sequences=['08']",
                   "data.num_workers=0", "train.steps=2", "train.batch_size=2", "train.eval_every=0",
                   "train.warmup_steps=1", "eval.pictures=0")
    trainer = Trainer(cfg, tmp_path / "run", CPU, progress=False)
    metrics = trainer.fit()
    from balvit.data.semantickitti import SemanticKITTI

    val = SemanticKITTI(root, "valid")
    labelled = sum(int((val.load_labels(i) != 255).sum()) for i in range(len(val)))
    assert np.asarray(metrics["confusion"]).sum() == labelled  # every original point, once
    again = run_eval(cfg, tmp_path / "run/best.pt", CPU, progress=False)
    assert again["miou"] == pytest.approx(metrics["miou"], abs=1e-9)


def test_waffleiron_config_errors():
    with pytest.raises(ConfigError, match="one grid per projection"):
        tiny_cfg("model.waffleiron.grids=[[16,16]]")
    with pytest.raises(ConfigError, match="fov"):
        tiny_cfg("model.waffleiron.fov=[[1,1,1],[0,2,2]]")
    with pytest.raises(ConfigError, match="data.sampling.neighbors"):
        tiny_cfg("data.sampling.neighbors=5")


def test_outside_fov_crop_keeps_those_points_out_of_the_model_but_predicts_them():
    cfg = tiny_cfg("model.waffleiron.outside_fov=crop", "model.waffleiron.fov=[[-10,-10,-4],[10,10,4]]")
    geometry = loader_geometry(cfg)
    scans = MemoryScans([900, 1300], seed=3)
    lo, hi = np.array([-10.0, -10.0, -4.0]) + 1e-4, np.array([10.0, 10.0, 4.0]) - 1e-4
    inside = lambda p: ((p[:, :3] > lo) & (p[:, :3] < hi)).all(1)  # noqa: E731
    train = SegmentationDataset(scans, cfg.data, train=True, geometry=geometry)[(0, 0)]
    assert inside(train["points"].numpy()).all() and len(train["points"]) > 0  # training drops the others
    ev = SegmentationDataset(scans, cfg.data, train=False, geometry=geometry)
    s = ev[1]
    pts = s["points"].numpy()
    assert len(pts) == 1300 and not inside(pts).all()  # every point stays in the sample (metrics, predictions)
    assert inside(pts[s["sub_index"].numpy()]).all()  # the model runs on points inside only
    kept = pts[s["sub_index"].numpy()][s["up_index"].numpy()]
    nearest = np.linalg.norm(pts[:, None, :3] - pts[s["sub_index"].numpy()][None, :, :3], axis=2).min(1)
    np.testing.assert_allclose(np.linalg.norm(kept[:, :3] - pts[:, :3], axis=1), nearest, atol=1e-5)
    model = build_model(cfg, 19).eval()
    with torch.no_grad():
        assert model(collate([s]))["logits"].shape == (1300, 19)
    border = SegmentationDataset(scans, tiny_cfg("model.waffleiron.fov=[[-10,-10,-4],[10,10,4]]").data, train=False,
                                 geometry=loader_geometry(tiny_cfg("model.waffleiron.fov=[[-10,-10,-4],[10,10,4]]")))[1]
    assert len(border["sub_index"]) > len(s["sub_index"])  # "border": outside points are kept
