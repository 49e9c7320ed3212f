import numpy as np
import pytest
import torch

from balvit.run_config import load_config
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


def _aug(**fields):
    from balvit.config import AugmentConfig

    return AugmentConfig(**{"rotate": False, "flip": False, "scale": [1.0, 1.0], "translate_std": 0.0, **fields})


def test_default_augmentation_draws_are_unchanged_by_the_optional_fields():
    """With the optional fields at their defaults, augment_points is the rotation / flip / scale /
    Gaussian shift of the fixed draw order (angle, 2 flips, scale, 3 normals), and the generator
    ends where it did (the crop and sampling draws after it are unchanged)."""
    from balvit.config import AugmentConfig
    from balvit.data.transforms import augment_points

    pts = np.random.default_rng(0).normal(0, 10, (50, 4)).astype(np.float32)
    cfg = AugmentConfig()
    rng, ref = np.random.default_rng(5), np.random.default_rng(5)
    out = augment_points(pts, rng, cfg)
    angle, flips = ref.uniform(-np.pi, np.pi), ref.integers(0, 2, size=2)
    scale, shift = ref.uniform(*cfg.scale), ref.normal(0.0, 1.0, size=3) * cfg.translate_std
    c, s = np.cos(angle), np.sin(angle)
    xyz = pts[:, :3].astype(np.float64)
    xyz[:, :2] = xyz[:, :2] @ np.array([[c, s], [-s, c]])
    xyz[:, :2] *= np.where(flips == 1, -1.0, 1.0)
    assert np.array_equal(out[:, :3], (xyz * scale + shift).astype(np.float32))
    assert rng.random() == ref.random()


def test_one_axis_and_single_axis_flips():
    from balvit.data.transforms import augment_points

    pts = np.array([[1.0, 2.0, 3.0, 0.5]], dtype=np.float32)
    seen = {"one_axis": set(), "x": set(), "y": set()}
    for mode in seen:
        for seed in range(300):
            out = augment_points(pts, np.random.default_rng(seed), _aug(flip=True, flip_mode=mode, flip_prob=2 / 3))
            seen[mode].add(tuple(out[0, :3].tolist()))
    assert seen["one_axis"] == {(1, 2, 3), (-1, 2, 3), (1, -2, 3)}  # x or y, never both (WaffleIron FlipXY)
    assert seen["x"] == {(1, 2, 3), (-1, 2, 3)} and seen["y"] == {(1, 2, 3), (1, -2, 3)}
    flipped = sum(augment_points(pts, np.random.default_rng(k), _aug(flip=True, flip_mode="one_axis",
                                                                     flip_prob=2 / 3))[0, 0] < 0 for k in range(3000))
    assert abs(flipped / 3000 - 1 / 3) < 0.03  # x flipped in a third of the draws (2/3 x 1/2)


def test_uniform_translation_and_tilt_follow_rangevit_with_their_probabilities():
    """translate_range / translate_prob and tilt_deg / tilt_prob (valeoai/rangevit augmentor.py): each
    axis moved by U(lo, hi) with its probability; roll / pitch / yaw by U(-a, a), composed as scipy's
    from_euler('zyx', [yaw, pitch, roll]); distances to the origin are kept by the tilt alone."""
    from balvit.data.transforms import augment_points

    pts = np.random.default_rng(1).normal(0, 5, (40, 4)).astype(np.float32)
    box = [[-5.0, 5.0], [-3.0, 3.0], [-1.0, 0.0]]
    shifts = np.array([augment_points(pts, np.random.default_rng(k), _aug(translate_range=box, translate_prob=0.5))[0, :3]
                       - pts[0, :3] for k in range(2000)])
    for axis, (lo, hi) in enumerate(box):
        moved = np.abs(shifts[:, axis]) > 1e-6
        assert abs(moved.mean() - 0.5) < 0.05
        assert shifts[moved, axis].min() >= lo - 1e-5 and shifts[moved, axis].max() <= hi + 1e-5
    tilted = augment_points(pts, np.random.default_rng(3), _aug(tilt_deg=[5.0, 5.0, 5.0], tilt_prob=1.0))
    assert np.allclose(np.linalg.norm(tilted[:, :3], axis=1), np.linalg.norm(pts[:, :3], axis=1), atol=1e-4)
    cos = (tilted[:, :3] * pts[:, :3]).sum(1) / np.linalg.norm(pts[:, :3], axis=1) ** 2
    assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 5 * np.sqrt(3) + 1e-3  # three rotations of <= 5 deg
    assert not np.allclose(tilted, pts)
    assert np.array_equal(augment_points(pts, np.random.default_rng(3), _aug(tilt_deg=[5.0, 5.0, 5.0], tilt_prob=0.0)), pts)
