import numpy as np
import pytest
import torch

from balvit.config import load_config
from balvit.data.dataset import SegmentationDataset, StreamSampler, collate
from balvit.errors import DataError
from conftest import REPO, MemoryScans


@pytest.fixture
def cfg():
    return load_config(REPO / "config/synthetic/tiny.yaml").data


def test_eval_sample_keeps_every_point_and_indices_are_consistent(cfg, memory_scans):
    ds = SegmentationDataset(memory_scans, cfg, train=False)
    s = ds[1]
    n = len(memory_scans.load_points(1))
    assert s["points"].shape == (n, 4) and s["labels"].shape == (n,) and s["rv_rc"].shape == (n, 2)
    assert s["rv"].shape == (6, cfg.range.height, cfg.range.width)
    assert torch.equal(s["point_index"], torch.arange(n))
    # the pixel's index points back at a point that projects to that pixel
    idx = s["rv_index"]
    rows, cols = torch.nonzero(idx >= 0, as_tuple=True)
    assert torch.equal(s["rv_rc"][idx[rows, cols]], torch.stack([rows, cols], 1))
    assert torch.equal(s["rv"][5] > 0, idx >= 0)
    # labels mapped to train ids (road 40 -> 8, sidewalk 48 -> 10, car 10 -> 0, pole 80 -> 17)
    assert set(s["labels"].unique().tolist()) <= {0, 8, 10, 17}


def test_training_crop_drops_points_outside_and_reindexes(cfg, memory_scans):
    ds = SegmentationDataset(memory_scans, cfg, train=True, seed=5)
    s = ds[(0, 3)]
    w = cfg.augment.crop_width
    assert s["rv"].shape[-1] == w and (s["rv_rc"][:, 1] < w).all() and (s["rv_rc"][:, 1] >= 0).all()
    assert len(s["points"]) < len(memory_scans.load_points(0))
    idx = s["rv_index"]
    rows, cols = torch.nonzero(idx >= 0, as_tuple=True)
    assert torch.equal(s["rv_rc"][idx[rows, cols]], torch.stack([rows, cols], 1))
    # the kept points are the original points (up to augmentation) selected by point_index
    orig = torch.from_numpy(memory_scans.load_points(0))
    assert torch.allclose(s["points"][:, 3], orig[s["point_index"], 3])
    # continuous coordinates in the crop: they floor to the pixel (inside the field of view)
    coord = s["rv_coord"]
    inside = (coord[:, 0] >= 0) & (coord[:, 0] < cfg.range.height)
    assert inside.float().mean() > 0.9
    assert torch.equal(coord[inside].floor().long(), s["rv_rc"][inside])
    assert (coord[:, 1] >= 0).all() and (coord[:, 1] < w).all()


def test_augmentation_is_a_function_of_seed_epoch_and_index(cfg, memory_scans):
    a = SegmentationDataset(memory_scans, cfg, train=True, seed=1)
    b = SegmentationDataset(memory_scans, cfg, train=True, seed=1)
    assert torch.equal(a[(0, 2)]["points"], b[(0, 2)]["points"])
    assert not torch.equal(a[(0, 2)]["points"], a[(0, 3)]["points"])
    assert not torch.equal(a[(0, 2)]["points"], SegmentationDataset(memory_scans, cfg, train=True, seed=2)[(0, 2)]["points"])
    # rotation/flip/scale keep distances to the sensor up to the scale factor
    orig = memory_scans.load_points(0)
    s = a[(0, 2)]
    r_aug = torch.linalg.norm(s["points"][:, :2], dim=1).numpy()
    r_orig = np.linalg.norm(orig[s["point_index"].numpy(), :2], axis=1)
    ratio = np.median(r_aug / r_orig)
    assert cfg.augment.scale[0] - 0.05 < ratio < cfg.augment.scale[1] + 0.05


def test_collate_concatenates_and_offsets(cfg, memory_scans):
    ds = SegmentationDataset(memory_scans, cfg, train=False)
    b = collate([ds[0], ds[2]])
    n0, n2 = len(memory_scans.load_points(0)), len(memory_scans.load_points(2))
    assert b["offsets"].tolist() == [0, n0, n0 + n2]
    assert b["batch"].tolist() == [0] * n0 + [1] * n2
    assert b["rv"].shape[0] == 2 and b["frame"] == ["00/000000", "00/000002"]


def test_nan_points(cfg):
    scans = MemoryScans([300])
    scans.scans[0][0][[3, 7], 1] = np.nan
    ds = SegmentationDataset(scans, cfg, train=False)
    with pytest.raises(DataError, match="2 of 300 points have NaN"):
        ds[0]
    scans.nan_policy = "zero"
    s = SegmentationDataset(scans, cfg, train=False)[0]
    assert s["num_invalid"] == 2 and s["labels"][3] == 255 and s["labels"][7] == 255
    assert torch.isfinite(s["rv"]).all() and len(s["points"]) == 300


def test_empty_scan_is_an_error(cfg):
    scans = MemoryScans([10])
    scans.scans[0] = (np.zeros((0, 4), np.float32), np.zeros(0, np.uint32))
    with pytest.raises(DataError, match="empty"):
        SegmentationDataset(scans, cfg, train=False)[0]


def test_stream_sampler_is_resumable_and_disjoint_across_ranks():
    full = StreamSampler(5, batch_size=2, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(7)]
    resumed = StreamSampler(5, batch_size=2, seed=3, start_step=4)
    it2 = iter(resumed)
    assert [next(it2) for _ in range(3)] == first[4:]
    # each epoch is a permutation of all frames
    keys = [k for batch in first for k in batch][:10]
    assert sorted(i for i, e in keys if e == 0) == list(range(5))
    # two ranks see disjoint parts of the same stream, together the single-process stream
    r0, r1 = StreamSampler(5, 1, seed=3, rank=0, world_size=2), StreamSampler(5, 1, seed=3, rank=1, world_size=2)
    merged = []
    for step in range(5):
        merged += r0.keys(step) + r1.keys(step)
    single = [k for s in range(5) for k in StreamSampler(5, 2, seed=3).keys(s)]
    assert merged == single
