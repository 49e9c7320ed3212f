"""ScaLR distillation: point-pixel pairing on generated frames (checked against the generator's
per-pixel class masks), teacher features, the loss, the frozen teacher, checkpoints, mixed datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from balvit.run_config import load_config
from balvit.data.camera import load_mask, pixel_index, project_points
from balvit.data.dataset import SegmentationDataset, build_reader, collate
from balvit.data.mixed import MixedDataset
from balvit.data.views import CameraViews
from balvit.engine.checkpoint import load_checkpoint
from balvit.engine.trainer import Trainer
from balvit.losses import cosine_distillation_loss
from balvit.models import build_model
from balvit.models.vit import normalise_images
from balvit.tasks.distill import DistillTask, pixel_features
from conftest import CPU, REPO, config_of, generated_dataset

NUS_EXTRA = ("data.extra_datasets=[{{dataset: nuscenes, root: {root}, version: v1.0-mini, intensity_scale: 0.0039, "
             "range: {{height: 16, width: 128, fov_up: 10.0, fov_down: -30.0}}}}]")


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "dkitti")


@pytest.fixture(scope="module")
def nusc(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "dnus", "nuscenes")


def distill_set(reader, data_cfg, train: bool, image_size):
    """The samples of the distillation task: one camera view per scan, resized (data/views.py)."""
    views = CameraViews(reader, which="one", image_size=image_size, min_depth=1.0, train=train)
    return SegmentationDataset(reader, data_cfg, train=train, views=views)


def tiny(root, *more):
    return config_of("scalr_tiny.yaml", root, *more)


def nus_cfg(root):
    return load_config(None, [f"data.root={root}", "data.dataset=nuscenes", "data.version=v1.0-mini",
                              "data.range.height=16", "data.range.width=128"])


def pairing_stats(reader, size=None, epochs=2):
    """(paired points showing their own class in the mask, paired labelled points, mismatches at an
    object boundary or behind a closer lidar point) over every frame and a few random cameras."""
    hits = total = explained = 0
    for i in range(len(reader)):
        cams = {c.name: c for c in reader.load_cameras(i)}
        for epoch in range(epochs):
            cam0 = next(iter(cams.values()))
            h, w = size or (cam0.height, cam0.width)
            ds = distill_set(reader, reader_cfg(reader), True, (h, w))
            s = ds[(i, epoch)]
            view = s["cameras"][0]
            cam = cams[view["name"]]
            valid = view["valid"].numpy()
            pts = reader.load_points(i)[s["point_index"].numpy()]
            uv, ok = project_points(pts, cam)
            np.testing.assert_array_equal(valid, ok)
            px = pixel_index(view["uv"].numpy()[valid])  # pixel in the resized image
            # the original pixel nearest to the centre of the paired (resized) pixel
            col = np.clip(np.floor((px[:, 0] + 0.5) * cam.width / w - 0.5 + 0.5), 0, cam.width - 1).astype(int)
            row = np.clip(np.floor((px[:, 1] + 0.5) * cam.height / h - 0.5 + 0.5), 0, cam.height - 1).astype(int)
            if size is None:  # native size: exactly the pixel of the camera model
                np.testing.assert_array_equal(np.stack([col, row], 1), pixel_index(uv[valid]))
            mask = reader.labels.to_train(load_mask(cam), cam.mask_path)
            labels = s["labels"].numpy()[valid]
            keep = labels != 255
            seen = mask[row, col]
            hits += int((seen[keep] == labels[keep]).sum())
            total += int(keep.sum())
            # mismatches: is the point's class within 1 pixel (boundary), or is a closer lidar point
            # within 4 pixels (occlusion by the camera-lidar parallax)?
            T = cam.T_cam_lidar
            depth = (pts[valid, :3] @ T[:3, :3].T + T[:3, 3])[:, 2]
            pad = np.pad(mask, 1, constant_values=-1)
            tree = cKDTree(uv[valid])
            for j in np.nonzero(keep & (seen != labels))[0]:
                near = pad[row[j]:row[j] + 3, col[j]:col[j] + 3]
                closer = any(depth[q] < depth[j] - 0.3 for q in tree.query_ball_point(uv[valid][j], r=4.0))
                explained += int((near == labels[j]).any() or closer)
    return hits, total, explained


def reader_cfg(reader):
    return load_config(None, ["data.range.height=16", "data.range.width=128"]).data


def test_every_paired_pixel_shows_the_points_object_up_to_occlusion(kitti, nusc):
    kr = build_reader(tiny(kitti).data, "train")
    nr = build_reader(nus_cfg(nusc).data, "train")
    for reader, floor in ((kr, 0.9), (nr, 0.85)):
        hits, total, explained = pairing_stats(reader)  # native image size: the camera model's pixels
        assert total > 200 and hits / total >= floor, (reader.name, hits, total)
        assert explained / max(total - hits, 1) >= 0.7, (reader.name, explained, total - hits)
        r_hits, r_total, _ = pairing_stats(reader, size=(224, 448), epochs=1)  # ScaLR's resized images
        assert r_hits / r_total >= floor - 0.02, (reader.name, r_hits, r_total)


def test_one_random_camera_per_sample_and_a_fixed_one_for_validation(nusc):
    reader = build_reader(nus_cfg(nusc).data, "train")
    train = distill_set(reader, nus_cfg(nusc).data, True, (28, 56))
    names = {train[(0, e)]["cameras"][0]["name"] for e in range(12)}
    assert len(names) >= 4  # all six nuScenes cameras are candidates
    assert train[(0, 3)]["cameras"][0]["name"] == train[(0, 3)]["cameras"][0]["name"]  # seeded
    val = distill_set(reader, nus_cfg(nusc).data, False, (28, 56))
    picks = {val[(0, e)]["cameras"][0]["name"] for e in range(4)}
    assert len(picks) == 1
    view = train[(1, 0)]["cameras"][0]
    assert view["image"].shape == (3, 28, 56) and view["image"].dtype == torch.uint8
    uv = view["uv"][view["valid"]]
    assert (uv >= -0.5).all() and (uv[:, 0] < 55.5).all() and (uv[:, 1] < 27.5).all()


def test_pixel_features_equal_bilinear_upsampling_then_indexing():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(5, 4, 8, generator=g, dtype=torch.float64)
    uv = torch.rand(200, 2, generator=g, dtype=torch.float64) * torch.tensor([112.0, 56.0]) - 0.5
    up = F.interpolate(fmap[None], size=(56, 112), mode="bilinear", align_corners=False)[0]
    pix = pixel_index(uv.numpy())
    expected = up[:, pix[:, 1], pix[:, 0]].t()
    torch.testing.assert_close(pixel_features(fmap, uv, (56, 112)), expected)


def test_cosine_distillation_loss_by_hand():
    s = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[6.0, 8.0], [-5.0, 0.0], [1.0, 0.0]])
    # same direction: 0; opposite: 4; orthogonal: 2 -> mean 2
    assert cosine_distillation_loss(s, t).item() == pytest.approx(2.0)
    assert cosine_distillation_loss(s, t, reduction="sum").item() == pytest.approx(6.0)
    assert cosine_distillation_loss(s[:0], t[:0]).item() == 0.0


def test_task_loss_by_hand_and_the_teacher_gets_no_gradient(kitti):
    cfg = tiny(kitti)
    model = build_model(cfg, 19)
    task = DistillTask.from_config(cfg, model, None)
    reader = build_reader(cfg.data, "train")
    ds = distill_set(reader, cfg.data, True, (28, 56))
    batch = collate([ds[(0, 0)], ds[(1, 0)]])
    task.eval()
    with torch.no_grad():
        out = task(batch)
        tokens, up = model.encode(batch)
        feats = tokens[up]
        teacher = task.teachers[0]
        losses, count = 0.0, 0
        for b, views in enumerate(batch["cameras"]):
            view = views[0]
            pixels = normalise_images(view["image"][None])
            x, grid = teacher.embed_image(pixels)
            fmap = teacher.run_blocks(x, 0, teacher.depth, grid)[0, teacher.num_prefix:]
            fmap = fmap.t().reshape(-1, *grid)
            img = F.interpolate(fmap[None], size=(28, 56), mode="bilinear", align_corners=False)[0]
            vis = view["valid"].nonzero().squeeze(1)
            pix = pixel_index(view["uv"][vis].numpy())
            f2d = img[:, pix[:, 1], pix[:, 0]].t()
            f3d = task.head(feats[batch["offsets"][b] + vis])
            d = F.normalize(f3d, dim=1) - F.normalize(f2d, dim=1)
            losses += float((d ** 2).sum())
            count += len(vis)
    assert count > 50
    assert out["loss"].item() == pytest.approx(losses / count, rel=1e-5)

    task.train()
    out = task(batch)
    out["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in task.teachers.parameters())
    assert task.head.weight.grad is not None and model.embed.point.weight.grad is not None
    assert all(p.grad is None for p in model.head.parameters())  # the segmentation head is unused
    assert not task.teachers[0].training


def test_several_teachers_use_an_mlp_head(kitti):
    cfg = tiny(kitti, "distill.teachers=[{name: tiny, weights: random}, {name: tiny_reg, weights: random}]",
               "distill.head_hidden=24")
    model = build_model(cfg, 19)
    task = DistillTask.from_config(cfg, model, None)
    assert isinstance(task.head, torch.nn.Sequential) and task.head[-1].out_features == 48 + 48
    assert task.head[0].out_features == 24
    ds = distill_set(build_reader(cfg.data, "train"), cfg.data, True, (28, 56))
    out = task(collate([ds[(0, 0)]]))
    assert torch.isfinite(out["loss"]) and out["loss"] > 0


def test_distillation_run_on_mixed_datasets_checkpoints_without_the_teacher(kitti, nusc, tmp_path):
    cfg = tiny(kitti, NUS_EXTRA.format(root=nusc), "train.steps=2", "train.save_every=1")
    trainer = Trainer(cfg, tmp_path / "pre", CPU, progress=False)
    assert isinstance(trainer.train_set, MixedDataset) and len(trainer.train_set.datasets) == 2
    assert len(trainer.train_set) == 3 + 4  # KITTI 00 + the nuScenes mini_train scenes
    metrics = trainer.fit()
    assert metrics["score"] == pytest.approx(-metrics["distill_loss"]) and metrics["pairs"] > 0
    saved = json.loads((tmp_path / "pre/val_metrics.json").read_text())
    assert saved["distill_loss"] == pytest.approx(metrics["distill_loss"])
    state = load_checkpoint(tmp_path / "pre/last.pt")
    assert set(state["extra"]["task_state"]) == {"head.weight", "head.bias"}
    assert not any("teacher" in k for k in state["model"]) and state["frozen"] == {}
    assert (tmp_path / "pre/best.pt").is_file()
    # the run resumes (task head included) and goes on
    more = Trainer(tiny(kitti, NUS_EXTRA.format(root=nusc), "train.steps=3"), tmp_path / "pre", CPU, progress=False)
    more.fit()
    assert more.step == 3
    # a batch may mix both datasets (different range-image sizes)
    mixed = collate([trainer.train_set[(0, 0)], trainer.train_set[(5, 0)]])
    assert mixed["rv"].shape[-2:] == (16, 256) and len(mixed["cameras"]) == 2

    # downstream: linear probing initialised from the pretraining (backbone loaded, head fresh)
    probe = load_config(REPO / "config/synthetic/scalr_tiny.yaml", [
        f"data.root={kitti}", "task=segmentation", "model.waffleiron.freeze_backbone=true",
        f"train.init_from={tmp_path / 'pre/last.pt'}", "train.init_exclude=['head.']", "train.steps=1"])
    lp = Trainer(probe, tmp_path / "probe", CPU, progress=False)
    pre_state = load_checkpoint(tmp_path / "pre/last.pt")["model"]
    assert torch.equal(lp.model.embed.point.weight, pre_state["embed.point.weight"])
    assert lp.init_report["excluded"] and not lp.init_report["mismatched"]
    m = lp.fit()
    assert 0 <= m["miou"] <= 100
    assert torch.equal(lp.model.layers[1].spatial.conv1.weight, pre_state["layers.1.spatial.conv1.weight"])
