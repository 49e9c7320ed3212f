"""Scan mixing (data/mixing.py): WaffleIron's PolarMix and instance CutMix on generated scans.

Checks that labels travel with their points, that the counts of kept / swapped / pasted points are
right, that `point_index` is the original index for kept points and -1 for pasted ones, that mixing
is a function of (seed, epoch, frame), off by default, never used in evaluation, and refused with
camera views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from balvit.run_config import load_config
from balvit.data.dataset import SegmentationDataset
from balvit.data.labels import IGNORE, semantickitti_labels
from balvit.data.mixing import PASTED, InstanceBank, cutmix, ground_places, load_labelled, polarmix
from balvit.errors import ConfigError
from conftest import REPO, MemoryScans

ROAD, SIDEWALK, PERSON, BICYCLE, CAR = 40, 48, 30, 11, 10  # raw SemanticKITTI ids
T_ROAD, T_SIDEWALK, T_PERSON, T_BICYCLE, T_CAR = 8, 10, 5, 1, 0  # their train ids


def street_scan(seed: int, people: int = 4, bikes: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A road disk, a sidewalk ring, a car, and people / bicycles of 30 points each (instance ids 1..)."""
    rng = np.random.default_rng(seed)
    parts, raw, inst = [], [], []

    def add(xyz, label, iid=0):
        parts.append(np.concatenate([xyz, rng.uniform(0, 1, (len(xyz), 1))], 1))
        raw.append(np.full(len(xyz), label))
        inst.append(np.full(len(xyz), iid))

    def disk(n, r0, r1, z):
        r, a = np.sqrt(rng.uniform(r0 ** 2, r1 ** 2, n)), rng.uniform(-np.pi, np.pi, n)
        return np.stack([r * np.cos(a), r * np.sin(a), z + rng.normal(0, 0.01, n)], 1)

    add(disk(1500, 2, 18, -1.7), ROAD)
    add(disk(500, 18, 24, -1.6), SIDEWALK)
    add(np.array([8.0, -6.0, -1.0]) + rng.uniform(-1, 1, (120, 3)) * [2, 1, 0.7], CAR)
    iid = 1
    for label, count in ((PERSON, people), (BICYCLE, bikes)):
        for _ in range(count):
            r, a = rng.uniform(4, 15), rng.uniform(-np.pi, np.pi)
            centre = np.array([r * np.cos(a), r * np.sin(a), -0.9])
            add(centre + rng.uniform(-0.2, 0.2, (30, 3)) * [1, 1, 4], label, iid)
            iid += 1
    return (np.concatenate(parts).astype(np.float32), np.concatenate(raw).astype(np.uint32),
            np.concatenate(inst).astype(np.uint32))


class StreetScans(MemoryScans):
    """In-memory SemanticKITTI-space scans with instance ids (`with_ids`) or without."""

    def __init__(self, n: int = 4, seed: int = 0, with_ids: bool = True):
        self.labels = semantickitti_labels()
        self.split = "memory"
        self.scans = [street_scan(seed + k) for k in range(n)]
        self.frames = [f"00/{k:06d}" for k in range(n)]
        self._labelled = True
        if with_ids:
            self.load_instances = lambda i: self.scans[i][2].copy()


NO_AUG = ["data.augment.rotate=false", "data.augment.flip=false", "data.augment.scale=[1.0,1.0]",
          "data.augment.translate_std=0.0", "data.augment.crop_width=0"]
MIX = ["data.augment.mix.classes=[person,bicycle]", "data.augment.mix.ground_classes=[road,sidewalk]"]


def data_cfg(*overrides):
    return load_config(REPO / "config/synthetic/tiny.yaml", [*NO_AUG, *MIX, *overrides]).data


def rows(points: np.ndarray, labels: np.ndarray) -> set:
    return {tuple(p) + (int(c),) for p, c in zip(np.round(points.astype(np.float64), 5), labels)}


# ------------------------------------------------------------------------------------ PolarMix


def test_polarmix_swaps_a_half_sector_and_pastes_the_other_scans_instances_three_times():
    reader = StreetScans()
    a, la = load_labelled(reader, 0, 1.0)
    b, lb = load_labelled(reader, 1, 1.0)
    classes = [T_PERSON, T_BICYCLE]
    for seed in range(6):
        rng = np.random.default_rng(seed)
        pts, lab, idx = polarmix(a, la, np.arange(len(a)), b, lb, classes, 0.5, rng)
        # the draws, repeated: was the sector swapped, and where does it start
        probe = np.random.default_rng(seed)
        swapped = probe.random() < 0.5
        start = probe.uniform(-np.pi, np.pi) if swapped else None

        def in_sector(p):
            theta = np.mod(np.arctan2(p[:, 1], p[:, 0]) - start, 2 * np.pi)
            return (theta > 0) & (theta < np.pi)

        in_a = in_sector(a) if swapped else np.zeros(len(a), bool)
        in_b = in_sector(b) if swapped else np.zeros(len(b), bool)
        things = np.isin(lb, classes)
        assert len(pts) == len(lab) == len(idx) == len(a) - in_a.sum() + in_b.sum() + 3 * things.sum()
        kept = idx >= 0
        assert np.array_equal(idx[kept], np.flatnonzero(~in_a))  # A's surviving points, in order
        assert np.array_equal(pts[kept], a[idx[kept]]) and np.array_equal(lab[kept], la[idx[kept]])
        assert np.all(idx[~kept] == PASTED)
        pasted, pasted_lab = pts[~kept], lab[~kept]
        nb = int(in_b.sum())
        assert rows(pasted[:nb], pasted_lab[:nb]) == rows(b[in_b], lb[in_b])  # B's sector, labels with it
        k = int(things.sum())
        for c in range(3):  # the instance copies: as they are, then rotated about z
            block, block_lab = pasted[nb + c * k: nb + (c + 1) * k], pasted_lab[nb + c * k: nb + (c + 1) * k]
            assert np.array_equal(block_lab, lb[things])
            assert np.allclose(block[:, 2:], b[things, 2:])  # z and intensity unchanged
            assert np.allclose(np.linalg.norm(block[:, :2], axis=1), np.linalg.norm(b[things, :2], axis=1), atol=1e-4)
        assert np.array_equal(pasted[nb: nb + k], b[things])
        assert not np.allclose(pasted[nb + k: nb + 2 * k, :2], b[things, :2])


# ------------------------------------------------------------------------------------ CutMix


def test_instance_bank_uses_instance_ids_where_the_reader_has_them_else_clusters():
    cfg = data_cfg("data.augment.mix.cutmix=true").augment.mix
    with_ids = InstanceBank.from_reader(StreetScans(2, with_ids=True), [T_PERSON, T_BICYCLE], cfg, 1.0, progress=False)
    assert [len(with_ids.by_class[c]) for c in (T_PERSON, T_BICYCLE)] == [8, 6]  # 4 + 4 people, 3 + 3 bicycles
    for inst in with_ids.by_class[T_PERSON]:
        assert inst.shape == (30, 4)
        assert np.allclose(inst[:, :2].mean(0), 0, atol=1e-5) and inst[:, 2].min() == 0  # centred, on z = 0
    reader = StreetScans(2, with_ids=False)
    pts, lab = load_labelled(reader, 0, 1.0)
    # two people made to touch: one cluster without ids
    person = np.flatnonzero(lab == T_PERSON)
    first, second = person[:30], person[30:60]
    reader.scans[0][0][second, :2] = reader.scans[0][0][first, :2] + 0.05
    clusters = InstanceBank.from_reader(reader, [T_PERSON], cfg, 1.0, progress=False)
    assert len(clusters.by_class[T_PERSON]) == 7 and sorted(len(v) for v in clusters.by_class[T_PERSON])[-1] == 60


def test_cutmix_pastes_whole_instances_on_ground_places_with_their_class():
    reader = StreetScans()
    cfg = data_cfg("data.augment.mix.cutmix=true").augment.mix
    bank = InstanceBank.from_reader(reader, [T_PERSON, T_BICYCLE], cfg, 1.0, progress=False)
    a, la = load_labelled(reader, 2, 1.0)
    ground = [T_ROAD, T_SIDEWALK]
    pts, lab, idx = cutmix(a, la, np.arange(len(a)), bank, ground, 40, np.random.default_rng(7))
    assert np.array_equal(idx[: len(a)], np.arange(len(a))) and np.array_equal(pts[: len(a)], a)
    assert np.all(idx[len(a):] == PASTED)
    added, added_lab = pts[len(a):], lab[len(a):]
    assert len(added) % 30 == 0 and len(added) > 0  # whole 30-point instances only
    places = ground_places(a, la, ground, np.random.default_rng(7))
    counts = {T_PERSON: 0, T_BICYCLE: 0}
    for k in range(len(added) // 30):
        inst, inst_lab = added[30 * k: 30 * (k + 1)], added_lab[30 * k: 30 * (k + 1)]
        assert len(set(inst_lab.tolist())) == 1 and inst_lab[0] in counts
        counts[int(inst_lab[0])] += 1
        # its lowest point sits on the k-th place, x / y centred there, the place is ground
        place = a[places[k]]
        assert inst[:, 2].min() == pytest.approx(place[2], abs=1e-5)
        assert np.allclose(inst[:, :2].mean(0), place[:2], atol=1e-4)
        assert la[places[k]] in ground
        # flipped / rotated / scaled by 0.9..1.1: its horizontal extent is a banked instance's
        radius = np.linalg.norm(inst[:, :2] - place[:2], axis=1).max()
        assert 0.1 < radius < 0.4 * 1.1
    assert all(0 <= n < 40 for n in counts.values())
    # the same generator state gives the same paste
    again = cutmix(a, la, np.arange(len(a)), bank, ground, 40, np.random.default_rng(7))
    assert np.array_equal(again[0], pts) and np.array_equal(again[1], lab)


def test_cutmix_never_uses_more_places_than_there_are():
    reader = StreetScans(1)
    cfg = data_cfg("data.augment.mix.cutmix=true").augment.mix
    bank = InstanceBank.from_reader(reader, [T_PERSON, T_BICYCLE], cfg, 1.0, progress=False)
    a, la = load_labelled(reader, 0, 1.0)
    small = np.flatnonzero(la == T_CAR)[:50]  # a scan with only car points: no ground place at all
    pts, lab, idx = cutmix(a[small], la[small], np.arange(50), bank, [T_ROAD], 40, np.random.default_rng(0))
    assert len(pts) == 50 and np.all(idx >= 0)


# ------------------------------------------------------------------------------ in the dataset


def test_mixing_is_off_by_default_and_never_in_evaluation():
    cfg = load_config(REPO / "config/synthetic/tiny.yaml").data
    assert not cfg.augment.mix.polarmix and not cfg.augment.mix.cutmix
    assert SegmentationDataset(StreetScans(), cfg, train=True).mixer is None
    on = data_cfg("data.augment.mix.polarmix=true", "data.augment.mix.cutmix=true")
    assert SegmentationDataset(StreetScans(), on, train=False).mixer is None
    s = SegmentationDataset(StreetScans(), on, train=False)[1]
    assert torch.equal(s["point_index"], torch.arange(len(StreetScans().load_points(1))))


def test_mixed_training_samples_keep_labels_on_points_and_are_deterministic():
    reader = StreetScans()
    cfg = data_cfg("data.augment.mix.polarmix=true", "data.augment.mix.cutmix=true")
    ds = SegmentationDataset(reader, cfg, train=True, seed=3)
    s = ds[(1, 0)]
    n = len(s["points"])
    assert s["labels"].shape == (n,) and s["point_index"].shape == (n,) and s["rv_rc"].shape == (n, 2)
    idx = s["point_index"].numpy()
    kept = idx >= 0
    assert (~kept).sum() > 0 and kept.sum() > 0
    orig, orig_lab = load_labelled(reader, 1, 1.0)
    assert np.allclose(s["points"].numpy()[kept], orig[idx[kept]])  # no other augmentation here
    assert np.array_equal(s["labels"].numpy()[kept], orig_lab[idx[kept]])
    pasted_lab = s["labels"].numpy()[~kept]  # labels of the other scans' points and of banked instances
    assert set(pasted_lab.tolist()) <= {T_ROAD, T_SIDEWALK, T_CAR, T_PERSON, T_BICYCLE}
    # deterministic under (seed, epoch, frame); another epoch mixes differently
    again = SegmentationDataset(reader, cfg, train=True, seed=3)[(1, 0)]
    assert torch.equal(again["points"], s["points"]) and torch.equal(again["labels"], s["labels"])
    assert not torch.equal(ds[(1, 1)]["points"], s["points"]) or len(ds[(1, 1)]["points"]) != n
    # turning mixing on leaves the other augmentation draws as they were: with only PolarMix's
    # instance paste (no sector swap), A's own points are augmented exactly as without mixing
    plain = load_config(REPO / "config/synthetic/tiny.yaml", ["data.augment.crop_width=0"]).data
    only_paste = load_config(REPO / "config/synthetic/tiny.yaml", ["data.augment.crop_width=0", *MIX,
                                                                    "data.augment.mix.polarmix=true",
                                                                    "data.augment.mix.polarmix_prob=0.0"]).data
    x = SegmentationDataset(reader, plain, train=True, seed=4)[(2, 1)]
    y = SegmentationDataset(reader, only_paste, train=True, seed=4)[(2, 1)]
    own = y["point_index"] >= 0
    assert torch.equal(y["point_index"][own], x["point_index"]) and torch.equal(y["points"][own], x["points"])


def test_mixing_config_errors_are_clear():
    with pytest.raises(ConfigError, match="camera views"):
        load_config(REPO / "config/synthetic/tiny.yaml", ["data.augment.mix.cutmix=true", "data.cameras=true"])
    with pytest.raises(ConfigError, match="camera views"):
        load_config(REPO / "config/synthetic/scalr_pretrain.yaml", ["data.augment.mix.polarmix=true"])
    cfg = data_cfg("data.augment.mix.cutmix=true", "data.augment.mix.classes=[pedestrian]")
    with pytest.raises(ConfigError, match="pedestrian"):
        SegmentationDataset(StreetScans(), cfg, train=True)
    labels_ignored = StreetScans()
    labels_ignored.scans[0][1][:] = 0  # unlabelled raw id: everything ignore
    pts, lab = load_labelled(labels_ignored, 0, 1.0)
    assert np.all(lab == IGNORE)


def test_mixed_samples_with_a_range_view_crop_stay_consistent():
    """A range-view model's training crop after mixing: every kept point projects into the crop, each
    pixel's index points back at a point of that pixel, and the kept original points keep their labels."""
    reader = StreetScans()
    cfg = data_cfg("data.augment.mix.polarmix=true", "data.augment.mix.cutmix=true", "data.augment.crop_width=128")
    s = SegmentationDataset(reader, cfg, train=True, seed=1)[(0, 2)]
    assert s["rv"].shape[-1] == 128 and (s["rv_rc"][:, 1] < 128).all()
    idx = s["rv_index"]
    rows, cols = torch.nonzero(idx >= 0, as_tuple=True)
    assert torch.equal(s["rv_rc"][idx[rows, cols]], torch.stack([rows, cols], 1))
    kept = s["point_index"] >= 0
    orig, orig_lab = load_labelled(reader, 0, 1.0)
    assert np.array_equal(s["labels"][kept].numpy(), orig_lab[s["point_index"][kept].numpy()])
