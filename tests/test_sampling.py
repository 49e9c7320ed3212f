"""Point sampling in the loader (voxels, cap, k-NN, up-sampling) and collation of mixed batches."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from balvit.run_config import load_config
from balvit.data.dataset import SegmentationDataset, collate
from balvit.data.mixed import MixedDataset
from balvit.data.sampling import point_subset, voxel_subsample
from balvit.geometry import knn
from conftest import MemoryScans

CFG = ["data.sampling.voxel_size=0.5", "data.sampling.max_points=400", "data.sampling.neighbors=5",
       "data.range.height=16", "data.range.width=128"]


def voxel_keys(xyz, size):
    """Voxel of every point on the grid that starts at the scan's minimum corner."""
    return [tuple(k) for k in np.floor((xyz - xyz.min(0)) / size).astype(np.int64)]


def test_voxel_subsample_keeps_one_point_per_voxel():
    rng = np.random.default_rng(0)
    xyz = rng.uniform(0, 3, size=(500, 3))
    first = voxel_subsample(xyz, 1.0)
    keys = voxel_keys(xyz, 1.0)
    assert sorted(keys[i] for i in first) == sorted(set(keys))  # every voxel exactly once
    # without a generator: the first point of each voxel in scan order
    seen = {}
    for i, k in enumerate(keys):
        seen.setdefault(k, i)
    assert sorted(seen.values()) == first.tolist()
    a = voxel_subsample(xyz, 1.0, np.random.default_rng(1))
    b = voxel_subsample(xyz, 1.0, np.random.default_rng(2))
    assert len(a) == len(b) == len(first) and not np.array_equal(a, b)  # random representatives
    assert np.array_equal(voxel_subsample(xyz, 0.0), np.arange(500))


def test_voxels_are_those_of_the_official_voxelize():
    rng = np.random.default_rng(4)
    xyz = rng.uniform(-30, 30, size=(20000, 3)).astype(np.float32)
    xyz[:500] = np.round(xyz[:500] * 10) / 10  # points on voxel boundaries
    # valeoai/WaffleIron utils/transforms.py Voxelize (random=False), restated
    shift = xyz - xyz.min(0, keepdims=True)
    _, first = np.unique((shift / 0.1).astype("int"), return_index=True, axis=0)
    np.testing.assert_array_equal(voxel_subsample(xyz, 0.1), np.sort(first))
    np.testing.assert_array_equal(voxel_subsample(xyz.astype(np.float64), 0.1), np.sort(first))


def test_knn_starts_with_the_point_itself_and_pads_small_scans():
    xyz = np.array([[0.0, 0, 0], [1, 0, 0], [3, 0, 0]])
    assert knn(xyz, 2).tolist() == [[0, 1], [1, 0], [2, 1]]
    assert knn(xyz, 5).tolist() == [[0, 1, 2, 2, 2], [1, 0, 2, 2, 2], [2, 1, 0, 0, 0]]


def test_training_samples_are_voxelised_and_capped_with_consistent_labels():
    scans = MemoryScans([3000], seed=2)
    cfg = load_config(None, CFG)
    ds = SegmentationDataset(scans, cfg.data, train=True)
    s = ds[(0, 0)]
    n = len(s["points"])
    assert n == 400 and torch.equal(s["sub_index"], torch.arange(n)) and torch.equal(s["up_index"], torch.arange(n))
    original = scans.load_points(0)
    labels = scans.load_labels(0)
    idx = s["point_index"].numpy()
    np.testing.assert_array_equal(s["points"][:, 3].numpy(), original[idx, 3])  # point_index follows the points
    np.testing.assert_array_equal(s["labels"].numpy(), labels[idx])
    # the point itself, then the 5 nearest among the kept (augmented) points
    assert s["knn"].shape == (n, 6) and torch.equal(s["knn"][:, 0], torch.arange(n))
    d_ref, _ = cKDTree(s["points"][:, :3].numpy()).query(s["points"][:, :3].numpy(), k=6)
    d = np.linalg.norm(s["points"][s["knn"], :3].numpy() - s["points"][:, None, :3].numpy(), axis=2)
    np.testing.assert_allclose(d, d_ref, atol=1e-5)
    # another epoch draws another subset; the same (frame, epoch) the same one
    assert not torch.equal(ds[(0, 1)]["point_index"], s["point_index"])
    assert torch.equal(ds[(0, 0)]["point_index"], s["point_index"])


def test_evaluation_samples_keep_every_point_and_collate_offsets_indices():
    scans = MemoryScans([900, 1300], seed=3)
    cfg = load_config(None, CFG)
    ds = SegmentationDataset(scans, cfg.data, train=False)
    samples = [ds[0], ds[1]]
    for k, s in enumerate(samples):
        assert len(s["points"]) == len(scans.load_points(k))  # nothing dropped, no cap
        ref = point_subset(s["points"].numpy(), 0.5, 5, subsample=True)
        for key in ("sub_index", "up_index", "knn"):
            np.testing.assert_array_equal(s[key].numpy(), ref[key])
    batch = collate(samples)
    sub_batch = batch["batch"][batch["sub_index"]]
    assert torch.equal(sub_batch[batch["knn"]], sub_batch[:, None].expand_as(batch["knn"]))  # same scan
    assert torch.equal(sub_batch[batch["up_index"]], batch["batch"])
    for k, s in enumerate(samples):  # the batch gathers exactly what each sample gathers
        lo = batch["offsets"][k].item()
        sel = sub_batch == k
        got = batch["points"][batch["sub_index"][sel]]
        np.testing.assert_array_equal(got.numpy(), s["points"][s["sub_index"]].numpy())
        nb = batch["points"][batch["sub_index"][batch["knn"][sel]]]
        np.testing.assert_array_equal(nb.numpy(), s["points"][s["sub_index"][s["knn"]]].numpy())
        up = batch["points"][batch["sub_index"][batch["up_index"][lo:lo + len(s["points"])]]]
        np.testing.assert_array_equal(up.numpy(), s["points"][s["sub_index"][s["up_index"]]].numpy())


def test_mixed_datasets_in_one_batch_pad_their_range_images():
    a = SegmentationDataset(MemoryScans([500, 600], seed=1), load_config(None, CFG).data, train=True, seed=0)
    cfg_b = load_config(None, CFG + ["data.range.height=8", "data.range.width=64"]).data
    b = SegmentationDataset(MemoryScans([700], seed=9), cfg_b, train=True, seed=1)
    mixed = MixedDataset([a, b])
    assert len(mixed) == 3 and mixed.locate(2) == (1, 0)
    sa, sb = mixed[(1, 0)], mixed[(2, 0)]
    assert (sa["dataset"], sb["dataset"]) == (0, 1)
    batch = collate([sa, sb])
    assert batch["rv"].shape == (2, 6, 16, 128) and batch["rv_index"].shape == (2, 16, 128)
    assert torch.equal(batch["rv"][1, :, :8, :64], sb["rv"]) and (batch["rv"][1, :, 8:] == 0).all()
    assert (batch["rv"][1, :, :, 64:] == 0).all() and (batch["rv_index"][1, 8:] == -1).all()
    # every point still reads its own pixel
    rc = batch["rv_rc"]
    lo = batch["offsets"][1].item()
    shown = batch["rv_index"][1][rc[lo:, 0], rc[lo:, 1]]
    assert (shown[shown >= 0] < len(sb["points"])).all()


def test_with_a_crop_the_cap_counts_the_points_of_the_crop():
    scans = MemoryScans([4000], seed=4)
    cfg = load_config(None, CFG + ["data.augment.crop_width=32", "data.sampling.voxel_size=0.0"])
    s = SegmentationDataset(scans, cfg.data, train=True)[(0, 0)]
    assert len(s["points"]) == 400  # a quarter of 4000 points is ~1000 > the cap
    assert (s["rv_rc"][:, 1] < 32).all() and (s["rv_index"] >= 0).sum() > 0
    shown = s["rv_index"][s["rv_rc"][:, 0], s["rv_rc"][:, 1]]
    assert (shown >= 0).all()  # each pixel holding a point shows a point of the sample


def test_nearest_cap_keeps_a_ball_around_a_random_point():
    """data.sampling.cap=nearest (WaffleIron / ScaLR LimitNumPoints(random=True)): the kept points are
    the max_points nearest to one of them; the random cap keeps points from all over the scan."""
    from balvit.data.sampling import cap_points

    rng = np.random.default_rng(0)
    xyz = rng.uniform(-50, 50, (5000, 3))
    keep = cap_points(len(xyz), 300, np.random.default_rng(1), xyz)
    assert len(keep) == 300 and np.all(np.diff(keep) > 0)
    centre = xyz[np.random.default_rng(1).integers(len(xyz))]  # the same draw
    dist = np.linalg.norm(xyz - centre, axis=1)
    assert dist[keep].max() <= np.sort(dist)[299] + 1e-12  # exactly the 300 nearest
    spread = cap_points(len(xyz), 300, np.random.default_rng(1))
    assert np.linalg.norm(xyz[spread] - centre, axis=1).max() > 2 * dist[keep].max()
    assert np.array_equal(cap_points(200, 300, rng, xyz[:200]), np.arange(200))  # under the cap: all
