"""nuScenes range view on the real LIDAR_TOP scans (../shared/data/real/nuscenes, HDL-32E): the row of
a point is its laser ring (one ring per row), the fallback field of view separates the rings, and the
ego vehicle's own returns (within data.range.min_range) never hide the scene behind them."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from balvit.run_config import load_config
from balvit.data.dataset import SegmentationDataset, build_reader, collate
from balvit.errors import DataError
from conftest import REPO
from fakedata import NUS_VERSION, write_nuscenes

REAL = REPO.parent / "shared" / "data" / "real" / "nuscenes"
SCANS = sorted(REAL.glob("*.pcd.bin")) if REAL.is_dir() else []
pytestmark = pytest.mark.skipif(len(SCANS) < 2, reason="real nuScenes scans not found (../shared/data/real)")


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    """Minimal v1.0-mini tables (tests/fakedata.py) around the two real scans, without labels:
    frame 0 of split train and of split valid."""
    root = tmp_path_factory.mktemp("nus_real")
    info = write_nuscenes(root, samples_per_scene=1)
    (root / NUS_VERSION / "lidarseg.json").unlink()  # the real scans have no lidarseg labels
    tables = {r["token"]: r["filename"] for r in json.loads((root / NUS_VERSION / "sample_data.json").read_text())}
    for token, scan in zip(info["frames"], SCANS):
        shutil.copyfile(scan, root / tables[token])
    return root


def cfg_of(root, *more):
    return load_config(REPO / "config/nuscenes.yaml", [f"data.root={root}", "data.version=v1.0-mini", *more])


def samples(root, *more):
    cfg = cfg_of(root, *more)
    out = []
    for split in ("train", "valid"):
        reader = build_reader(cfg.data, split)
        raw = np.fromfile(reader.scan_path(0), dtype=np.float32).reshape(-1, 5)
        out.append((SegmentationDataset(reader, cfg.data, train=False)[0], raw))
    return out


def ring_row_stats(sample, raw, min_depth=1.0):
    """(distinct main rows of the 32 rings, worst share of a ring's points in its main row) over the
    points at least `min_depth` from the sensor."""
    ring = raw[:, 4].astype(np.int64)
    far = np.linalg.norm(raw[:, :3], axis=1) >= min_depth
    rows = sample["rv_rc"][:, 0].numpy()
    counts = [np.bincount(rows[far & (ring == k)], minlength=32) for k in range(32)]
    return len({int(c.argmax()) for c in counts}), min(c.max() / c.sum() for c in counts)


def test_every_ring_owns_one_row(real_root):
    for s, raw in samples(real_root):
        ring = raw[:, 4].astype(np.int64)
        assert set(ring.tolist()) == set(range(32))
        assert torch.equal(s["rv_rc"][:, 0], torch.from_numpy(31 - ring))  # ring 0 (lowest beam) is the bottom row
        np.testing.assert_array_equal(s["rv_coord"][:, 0].numpy(), (31 - ring + 0.5).astype(np.float32))
        assert ring_row_stats(s, raw) == (32, 1.0)


def test_the_field_of_view_separates_the_rings_and_the_old_one_did_not(real_root):
    old = [ring_row_stats(s, raw) for s, raw in
           samples(real_root, "data.range.rows=fov", "data.range.fov_up=10.0", "data.range.fov_down=-30.0")]
    new = [ring_row_stats(s, raw) for s, raw in samples(real_root, "data.range.rows=fov")]
    # measured: +10 / -30 deg gives 30 and 29 distinct rows, worst ring 41 % / 39 % in its main row;
    # the configured +11.3 / -31.4 deg gives every ring its own main row, worst ring 54 % / 53 %
    assert all(distinct < 32 and worst < 0.45 for distinct, worst in old)
    assert all(distinct == 32 and worst > 0.5 for distinct, worst in new)


def test_ego_returns_keep_a_pixel_but_never_hide_farther_ones(real_root):
    for (s, raw), (s0, _) in zip(samples(real_root), samples(real_root, "data.range.min_range=0")):
        depth = np.linalg.norm(raw[:, :3], axis=1)
        ego = depth < 1.0
        assert 5000 < ego.sum() < 20000  # measured: 13986 and 8029 points within 1 m
        shown = s["rv_index"][s["rv_index"] >= 0].numpy()
        assert not ego[shown].any()  # no pixel shows an ego return
        shown0 = s0["rv_index"][s0["rv_index"] >= 0].numpy()
        assert ego[shown0].sum() > 2000  # without the policy they fill ~3 k pixels ...
        revealed = (s0["rv_index"] >= 0) & torch.from_numpy(ego)[s0["rv_index"].clamp_min(0)] & (s["rv_index"] >= 0)
        assert revealed.sum() > 300  # ... of which ~600 hid a farther return
        # every point, ego or not, keeps its pixel, so every point gets a prediction
        assert len(s["rv_rc"]) == len(raw) and torch.equal(s["rv_rc"], s0["rv_rc"])


def test_a_model_predicts_every_point_of_a_real_scan(real_root):
    from balvit.models import build_model

    cfg = cfg_of(real_root, "model.name=elite_student", "model.elite_student.channels=[8,8,8,8]",
                 "model.elite_student.blocks=[1,1,1,1]", "model.elite_student.decoder_channels=8",
                 "model.elite_student.point_channels=8", "model.elite_student.head_hidden=8")
    (s, raw), _ = samples(real_root)
    model = build_model(cfg, 16).eval()
    with torch.no_grad():
        logits = model(collate([s]))["logits"]
    assert logits.shape == (len(raw), 16) and torch.isfinite(logits).all()


def test_rings_that_are_not_whole_numbers_are_refused(real_root, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(real_root, root)
    cfg = cfg_of(root)
    reader = build_reader(cfg.data, "train")
    raw = np.fromfile(reader.scan_path(0), dtype=np.float32).reshape(-1, 5)
    raw[5, 4] = 2.5
    raw.tofile(reader.scan_path(0))
    with pytest.raises(DataError, match="ring index"):
        SegmentationDataset(reader, cfg.data, train=False)[0]
    # rows from the field of view do not read the rings
    s = SegmentationDataset(reader, cfg_of(root, "data.range.rows=fov").data, train=False)[0]
    assert len(s["rv_rc"]) == len(raw)
