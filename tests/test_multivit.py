"""MultiViT: the camera branch on the shared ViT, camera pseudo-labels (scored against the
renderer's per-pixel classes), SAM / stand-in box prompts, and the training modes end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from balvit.data.pseudo_labels import PseudoLabelConfig
from balvit.run_config import load_config
from balvit.data.base import CameraFrame
from balvit.data.camera import load_image, load_mask, project_points
from balvit.data.labels import IGNORE, semantickitti_labels
from balvit.data.pseudo_labels import (HullPredictor, InstancePainter, PseudoLabels, SamBoxPredictor,
                                       build_box_predictor, camera_depth)
from balvit.data.semantickitti import SemanticKITTI
from balvit.data.synthetic import generate
from balvit.engine.checkpoint import load_checkpoint
from balvit.engine.trainer import Trainer
from balvit.errors import ConfigError
from balvit.losses import class_mean_contrastive, class_means
from balvit.models import build_model
from balvit.models.vit import FoundationViT
from balvit.metrics import camera_pixel_scores, pixel_confusion
from balvit.tasks.multivit import MultiViTJointTask
from conftest import CPU, REPO, config_of, generated_dataset, task_context



@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """A tiny generated SemanticKITTI-format dataset with camera images and per-pixel masks."""
    return generated_dataset(tmp_path_factory, "multivit_kitti", frames=2)


def tiny(root, *more):
    return config_of("multivit_tiny.yaml", root, *more)


# ------------------------------------------------------------------------------- the model


def test_camera_branch_runs_on_the_same_vit_and_trains_it():
    cfg = load_config(REPO / "config/synthetic/multivit_tiny.yaml")
    torch.manual_seed(0)
    model = build_model(cfg, 19).train()
    assert sum(isinstance(m, FoundationViT) for m in model.modules()) == 1  # one ViT for both branches
    images = torch.randint(0, 256, (2, 3, 32, 96), dtype=torch.uint8)
    out = model.forward_camera(images)
    assert out["logits"].shape == (2, 20, 32, 96)  # 19 classes + background
    assert out["features"].shape == (2, 8, 16, 48)
    out["logits"].logsumexp(1).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    for prefix in ("backbone.model.encoder.layer.0.", "camera_stem.", "camera_decoder.", "camera_head."):
        assert any(n.startswith(prefix) and g is not None and g.abs().sum() > 0 for n, g in grads.items()), prefix
    for prefix in ("stem.", "decoder.", "refiner.", "head."):  # LiDAR-only parts see nothing of the camera loss
        assert all(g is None for n, g in grads.items() if n.startswith(prefix)), prefix
    with pytest.raises(ValueError, match="divisible by 8"):
        model.forward_camera(torch.zeros(1, 3, 30, 96, dtype=torch.uint8))


def test_class_mean_contrastive_pull_and_push():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    means, present = class_means(feats, torch.tensor([0, 0, 2, 255]), 3)
    assert torch.allclose(means[0], torch.tensor([2.0, 0.0])) and present.tolist() == [True, False, True]
    same = class_mean_contrastive(means, present, 3 * means, present, "pull")
    assert abs(float(same)) < 1e-6  # only directions count
    rotated = torch.stack([means[2], means[1], means[0]])  # classes 0 and 2 swapped
    assert float(class_mean_contrastive(means, present, rotated, present, "pull")) == pytest.approx(1.0)
    aligned = class_mean_contrastive(means, present, means, present, "pull_push", 0.1)
    swapped = class_mean_contrastive(means, present, rotated, present, "pull_push", 0.1)
    assert float(aligned) < 1e-3 < 5.0 < float(swapped)
    none = torch.tensor([False, False, False])
    assert float(class_mean_contrastive(means, present, means, none, "pull_push")) == 0.0


# ------------------------------------------------------------------------------ pseudo-labels


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """One full-resolution-like frame (64 beams, half-size camera) with the renderer's class masks."""
    root = tmp_path_factory.mktemp("pl_kitti")
    generate("semantickitti", root, sequences=["00"], frames=1, seed=5, beams=64, azimuth_steps=1024,
             image_scale=0.5, progress=False)
    reader = SemanticKITTI(root, "train", sequences=["00"])
    cam = reader.load_cameras(0)[0]
    return reader, cam, load_image(cam), reader.labels.to_train(load_mask(cam))


@pytest.mark.parametrize("method, floor", [("densify", 50.0), ("boxes", 45.0)])
def test_pseudo_labels_against_the_renderers_per_pixel_classes(rendered, method, floor, capsys):
    reader, cam, image, truth = rendered
    cfg = PseudoLabelConfig(method=method, densify_radius=2, occlusion_ratio=1.3, box_predictor="standin")
    labeller = PseudoLabels(cfg, reader.labels, background=19)
    out = labeller(reader.frames[0], cam, image, reader.load_points(0)[:, :3], reader.load_labels(0),
                   reader.load_instances(0))
    assert out.shape == truth.shape
    assert set(np.unique(out).tolist()) <= set(range(20)) | {IGNORE}
    score = camera_pixel_scores(pixel_confusion(out, truth, 19))
    with capsys.disabled():
        print(f"\n[pseudo-labels {method}] camera-pixel mIoU {score['miou']:.1f} % on a {image.shape[1]}x{image.shape[0]} "
              f"rendered frame, coverage {score['coverage']:.1f} %, precision {score['precision']:.1f} %")
    assert score["miou"] > floor
    # where LiDAR evidence exists (the image rows the scan covers), the labels mostly agree
    rows = np.flatnonzero((out != 19).any(1))
    band = (truth[rows] != IGNORE) & (out[rows] != IGNORE) & (out[rows] != 19)
    assert (out[rows][band] == truth[rows][band]).mean() > 0.8


def _box_points(centre, size, step=0.1):
    """Points on the faces of an axis-aligned box (lidar frame)."""
    cx, cy, cz = centre
    sx, sy, sz = size
    ys = np.arange(cy - sy / 2, cy + sy / 2 + 1e-9, step)
    zs = np.arange(cz - sz / 2, cz + sz / 2 + 1e-9, step)
    yy, zz = np.meshgrid(ys, zs)
    front = np.stack([np.full(yy.size, cx - sx / 2), yy.ravel(), zz.ravel()], 1)
    back = front + np.array([sx, 0.0, 0.0])
    return np.concatenate([front, back])


class Recorder(HullPredictor):
    def predict(self, image, boxes, points=None):
        self.boxes = np.asarray(boxes)
        return super().predict(image, boxes, points)


def _car_scene():
    """A camera looking along lidar +x (u = 32 - 50 y / x, v = 16 - 50 z / x, 64 x 32 image) and
    three cars (instances 1-3: centred, hidden behind the first, mostly right of the image) on a road."""
    T = np.eye(4)
    T[:3, :3] = [[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]
    cam = CameraFrame("cam", None, np.array([[50.0, 0, 32], [0, 50.0, 16], [0, 0, 1]]), T, 64, 32)
    near = _box_points((10.0, 0.0, 0.0), (1.0, 2.0, 1.0))  # centred, in the image
    behind = _box_points((20.0, 0.0, 0.0), (1.0, 1.6, 0.8))  # hidden behind `near`
    side = _box_points((10.0, -6.5, 0.0), (1.0, 2.0, 1.0))  # u 58..72: mostly right of the image
    road = np.stack(np.meshgrid(np.arange(4, 30, 0.2), np.arange(-8, 8, 0.2)), -1).reshape(-1, 2)
    road = np.concatenate([road, np.full((len(road), 1), -1.5)], 1)
    xyz = np.concatenate([near, behind, side, road])
    labels = np.concatenate([np.zeros(len(near) + len(behind) + len(side)), np.full(len(road), 8)]).astype(np.int64)
    inst = np.concatenate([np.full(len(near), 1), np.full(len(behind), 2), np.full(len(side), 3),
                           np.zeros(len(road))]).astype(np.int64)
    return cam, T, xyz, labels, inst


def test_box_prompts_ignore_boxes_mostly_outside_and_drop_occluded_ones():
    cam, T, xyz, labels, inst = _car_scene()
    cfg = PseudoLabelConfig(method="boxes", densify_radius=2, occlusion_ratio=1.3, min_cluster_points=5)
    recorder = Recorder()
    painter = InstancePainter(semantickitti_labels(), cfg, recorder)
    uv, valid = project_points(xyz, cam)
    boxes = painter.instance_boxes(xyz, labels, uv, valid, camera_depth(xyz, T), cam, inst)
    assert [b["fate"] for b in sorted(boxes, key=lambda b: (b["box"][0], b["depth"]))] == ["prompt", "occluded", "ignore"]
    side_box = next(b for b in boxes if b["fate"] == "ignore")
    assert side_box["inside"] < 0.5 and next(b for b in boxes if b["fate"] == "occluded")["occlusion"] > 0.6
    image = np.zeros((32, 64, 3), dtype=np.uint8)
    out = PseudoLabels(cfg, semantickitti_labels(), background=19, box_predictor=recorder).compute(
        cam, image, xyz, labels, inst)
    assert len(recorder.boxes) == 1  # only the visible, unoccluded box is prompted
    assert (out[14:19, 59:64] == IGNORE).all()  # the visible part of the side box
    assert (out[14:19, 28:36] == 0).all()  # the near car
    assert (out[0:10] == 19).all()  # no LiDAR evidence above the objects: background
    assert (out[28:32, 10:20] == 8).all()  # the road below


def test_box_mask_labels_hold_only_thing_masks_on_background():
    """pseudo_labels.method=box_masks (the MultiViT thesis' camera labels): the prompted thing's mask,
    the ignore part of a box mostly outside the image, and background everywhere else (the road too)."""
    cam, T, xyz, labels, inst = _car_scene()
    cfg = PseudoLabelConfig(method="box_masks", min_cluster_points=5)
    labeller = PseudoLabels(cfg, semantickitti_labels(), background=19, box_predictor=Recorder())
    out = labeller.compute(cam, np.zeros((32, 64, 3), dtype=np.uint8), xyz, labels, inst)
    assert (out[14:19, 28:36] == 0).all() and (out[14:19, 59:64] == IGNORE).all()
    assert (out[28:32, 10:20] == 19).all() and (out[0:10] == 19).all()  # road and sky: background
    assert set(np.unique(out).tolist()) == {0, 19, IGNORE}
    boxes = PseudoLabels(PseudoLabelConfig(method="boxes", min_cluster_points=5), semantickitti_labels(), background=19)
    assert labeller.key != boxes.key  # their cached images never mix
    with pytest.raises(ConfigError, match="box_predictor"):
        PseudoLabels(PseudoLabelConfig(method="box_masks", box_predictor="none"), semantickitti_labels())


def test_camera_loss_has_its_own_terms_and_weights(syn):
    """camera_task.loss (the thesis: Lovasz + 3 x focal) weighs the camera loss; unset, the LiDAR loss."""
    from balvit.losses import segmentation_loss
    from balvit.tasks.multivit import MultiViTCameraTask

    cam_loss = ["camera_task.loss={ce_weight: 3.0, focal_gamma: 2.0, lovasz_weight: 1.0, class_weights: none}"]
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 96), dtype=torch.uint8, generator=g)
    label = torch.randint(0, 20, (32, 96), generator=g)
    batch = {"cameras": [[{"image": image, "label": label}]]}
    for overrides, expect in ((cam_loss, None), ([], "lidar")):
        cfg = tiny(syn, *overrides)
        torch.manual_seed(0)
        model = build_model(cfg, 19).eval()
        task = MultiViTCameraTask(model, cfg, PseudoLabels(cfg.pseudo_labels, semantickitti_labels(), background=19))
        loss, terms, out = task.camera_loss(batch)
        logits = out["logits"].permute(0, 2, 3, 1).reshape(-1, 20)
        want = segmentation_loss(logits, label.reshape(-1), cfg.loss if expect else cfg.camera_task.loss)
        assert loss.item() == pytest.approx(want["total"].item(), rel=1e-6)
        if not expect:
            from balvit.losses import cross_entropy
            assert terms["camera_ce"].item() == pytest.approx(3 * cross_entropy(logits, label.reshape(-1), gamma=2.0).item(),
                                                              rel=1e-6)


def tiny_sam():
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    v = SamVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=64,
                        patch_size=16, output_channels=32, window_size=2, global_attn_indexes=[1], num_pos_feats=16)
    p = SamPromptEncoderConfig(hidden_size=32, image_embedding_size=4, image_size=64, patch_size=16, mask_input_channels=4)
    m = SamMaskDecoderConfig(hidden_size=32, mlp_dim=64, num_attention_heads=2, iou_head_hidden_dim=32)
    torch.manual_seed(0)
    return SamModel(SamConfig(vision_config=v.to_dict(), prompt_encoder_config=p.to_dict(),
                              mask_decoder_config=m.to_dict()))


def test_sam_box_predictor_with_a_tiny_random_sam(tmp_path):
    predictor = SamBoxPredictor(tiny_sam())
    image = np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    masks = predictor.predict(image, np.array([[5.0, 4.0, 20.0, 25.0], [30.0, 2.0, 49.0, 29.0]]))
    assert masks.shape == (2, 30, 50) and masks.dtype == bool
    assert predictor.predict(image, np.zeros((0, 4))).shape == (0, 30, 50)
    # a locally saved SAM loads through the config value sam:<dir>; a missing one is a clear error
    predictor.model.save_pretrained(tmp_path / "sam")
    loaded = build_box_predictor(f"sam:{tmp_path / 'sam'}")
    assert np.array_equal(loaded.predict(image, np.array([[5.0, 4.0, 20.0, 25.0]])), masks[:1])
    with pytest.raises(ConfigError, match="no such SAM model directory"):
        build_box_predictor(f"sam:{tmp_path / 'missing'}")


# ------------------------------------------------------------------------------- training


def test_joint_samples_pair_a_crop_with_the_camera_it_overlaps(syn):
    cfg = tiny(syn, "task=multivit_joint")
    reader = SemanticKITTI(syn, "train", sequences=["00"])
    ctx = task_context(cfg, reader)
    aligned = MultiViTJointTask.from_config(cfg, build_model(cfg, 19), ctx).train_dataset(ctx)
    for epoch in range(4):
        s = aligned[(epoch % 2, epoch)]
        (view,) = s["cameras"]
        assert view["image"].shape == (3, 32, 96) and view["image"].dtype == torch.uint8
        assert view["label"].shape == (32, 96) and int(view["label"].max()) <= 255
        kept = reader.load_points(epoch % 2)[s["point_index"].numpy(), :3]
        _, valid = project_points(kept, reader.load_cameras(epoch % 2)[0])
        assert s["rv"].shape[-1] == 64 and valid.mean() > 0.25, (epoch, valid.mean())
    again = aligned[(1, 3)]
    assert torch.equal(again["cameras"][0]["image"], s["cameras"][0]["image"])  # deterministic per (frame, epoch)


def test_camera_pretraining_then_lidar_finetuning_from_its_checkpoint(syn, tmp_path):
    cam_cfg = tiny(syn, "train.steps=2")
    stage1 = Trainer(cam_cfg, tmp_path / "camera", CPU, progress=False)
    lidar_init = {k: v.clone() for k, v in stage1.model.stem.state_dict().items()}
    metrics = stage1.fit()
    assert 0.0 <= metrics["camera_pseudo_miou"] <= 100.0 and "camera_true_miou" in metrics
    assert metrics["score"] == metrics["camera_pseudo_miou"]
    state = load_checkpoint(tmp_path / "camera/last.pt")
    assert any(k.startswith("backbone.model.encoder.layer.") for k in state["model"])  # the trained ViT is saved
    assert all(torch.equal(v, lidar_init[k]) for k, v in stage1.model.stem.state_dict().items())  # LiDAR stem untouched
    vit = {k: v for k, v in state["model"].items() if k.startswith("backbone.")}
    stage2_cfg = load_config(REPO / "config/synthetic/rangevit_tiny.yaml",
                             [f"data.root={syn}", "train.steps=1", f"train.init_from={tmp_path / 'camera/last.pt'}"])
    stage2 = Trainer(stage2_cfg, tmp_path / "lidar", CPU, progress=False)
    stage2.fit(max_steps=0)
    own = stage2.model.trainable_state_dict()
    assert all(torch.equal(own[k], v) for k, v in vit.items())  # starts from the camera-pretrained ViT
    stage2.fit()
    assert stage2.step == 1 and "miou" in json.loads((tmp_path / "lidar/val_metrics.json").read_text())


def test_joint_training_with_contrastive_alignment_reports_both_branches(syn, tmp_path):
    cfg = tiny(syn, "task=multivit_joint", "camera_task.contrastive=pull_push", "train.steps=2")
    trainer = Trainer(cfg, tmp_path, CPU, progress=False)
    metrics = trainer.fit()
    for key in ("miou", "camera_pseudo_miou", "camera_true_miou", "camera_pseudo_background_iou"):
        assert key in metrics, key
    assert metrics["score"] == metrics["miou"]
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in logged if "train/loss" in r]
    assert train and all("train/contrastive" in r and "train/camera_ce" in r and "train/lidar_lovasz" in r for r in train)
