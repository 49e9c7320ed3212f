"""Generator -> readers -> projections -> model: the pieces agree on real on-disk files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balvit.run_config import load_config
from balvit.data.camera import load_image, load_mask, pixel_index, project_points
from balvit.data.dataset import SegmentationDataset
from balvit.data.nuscenes import NuScenes
from balvit.geometry import range_image
from balvit.data.semantickitti import SemanticKITTI
from balvit.engine.trainer import Trainer, run_eval
from conftest import CPU, REPO, generated_dataset



@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "synkitti")


@pytest.fixture(scope="module")
def nusc(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "synnus", "nuscenes")


def agreement(reader, i) -> tuple[int, int]:
    """(points whose camera pixel shows their own class, visible points) over all cameras."""
    pts, labels = reader.load_points(i), reader.load_labels(i)
    hits = total = 0
    for cam in reader.load_cameras(i):
        uv, valid = project_points(pts, cam)
        mask = reader.labels.to_train(load_mask(cam), cam.mask_path)
        img = load_image(cam)
        assert img.shape[:2] == mask.shape == (cam.height, cam.width)
        px = pixel_index(uv[valid])
        seen = mask[px[:, 1], px[:, 0]]
        keep = labels[valid] != 255
        hits += int((seen[keep] == labels[valid][keep]).sum())
        total += int(keep.sum())
    return hits, total


def test_kitti_reader_reads_the_generated_dataset(kitti):
    train, val = SemanticKITTI(kitti, "train", sequences=["00"]), SemanticKITTI(kitti / "sequences", "valid")
    assert train.frames == ["00/000000", "00/000001", "00/000002"] and len(val) == 3
    pts, lab = train.load_points(1), train.load_labels(1)
    assert pts.dtype == np.float32 and len(pts) == len(lab) > 1000
    assert set(np.unique(lab)) - {255} and (lab[lab != 255] < 19).all()
    hits, total = agreement(train, 0)
    assert total > 100 and hits / total > 0.9


def test_nuscenes_reader_reads_the_generated_dataset(nusc):
    train, val = NuScenes(nusc, "train", version="v1.0-mini"), NuScenes(nusc, "valid", version="v1.0-mini")
    assert len(train) >= 2 and len(val) >= 2
    pts = train.load_points(0)
    lab = train.load_labels(0)
    assert pts.shape[1] == 4 and len(lab) == len(pts)
    assert 0 <= pts[:, 3].min() and pts[:, 3].max() <= 255
    # the library frame is x forward: the road ahead and behind is much longer than it is wide
    ground = lab == train.labels.class_names.index("driveable_surface")
    assert np.ptp(pts[ground, 0]) > np.ptp(pts[ground, 1])
    hits, total = agreement(train, 0)
    assert total > 100 and hits / total > 0.85


def test_generate_read_project_back_to_points(kitti):
    reader = SemanticKITTI(kitti, "valid")
    pts = reader.load_points(0)
    image, rc, index, _ = range_image(pts, 16, 256, 3.0, -25.0)
    shown = index[index >= 0]
    np.testing.assert_array_equal(image[1:5][:, index >= 0].T, pts[shown])
    assert (index[rc[shown, 0], rc[shown, 1]] == shown).all()
    # a 16-beam sensor on a 16-row image: the beams are spread over the rows
    assert len(np.unique(rc[:, 0])) >= 12


def test_camera_views_in_samples(kitti):
    cfg = load_config(REPO / "config/synthetic/tiny.yaml", [f"data.root={kitti}", "data.cameras=true"])
    from balvit.data.dataset import build_reader

    ds = SegmentationDataset(build_reader(cfg.data, "valid"), cfg.data, train=False)
    s = ds[0]
    (view,) = s["cameras"]
    assert view["image"].dtype == torch.uint8 and view["image"].shape[0] == 3
    assert view["uv"].shape == (len(s["points"]), 2) and view["valid"].any()


def test_tiny_balvit_trains_and_evaluates_on_generated_data(kitti, tmp_path):
    cfg = load_config(REPO / "config/synthetic/tiny.yaml", [f"data.root={kitti}", "train.steps=3"])
    trainer = Trainer(cfg, tmp_path / "run", CPU, progress=False)
    metrics = trainer.fit()
    assert metrics["frames"] == 3 and 0.0 <= metrics["miou"] <= 100.0
    again = run_eval(cfg, tmp_path / "run/best.pt", CPU, progress=False)
    assert again["miou"] == pytest.approx(metrics["miou"], abs=1e-9)  # same weights, same points, same number
