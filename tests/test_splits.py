"""Label-efficient splits: the uniform/random/scene rules, split files, the checked-in lists, and
class-presence statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from balvit.data.labels import load_yaml
from balvit.data.nuscenes import NuScenes
from balvit.data.semantickitti import SemanticKITTI
from balvit.data.splits import (
    KITTI_TRAIN_COUNTS,
    class_presence,
    format_presence_table,
    kitti_official_frames,
    make_split,
    read_split_file,
    PACKAGE_SPLITS,
    resolve_split_file,
    run_splits,
    scene_split,
    select_frames,
    stride_for,
    write_split_file,
)
from balvit.errors import ConfigError, DataError
from fakedata import NUS_VERSION, write_kitti, write_nuscenes

REPO = Path(__file__).resolve().parents[1]
FRAMES = [f"{s:02d}/{k:06d}" for s in (0, 1, 2) for k in range(137)]  # 411 ids in time order


# ------------------------------------------------------------------------------------ rules


def test_stride_rule():
    assert [stride_for(p) for p in (0.1, 1, 10, 100, 50, 25)] == [1000, 100, 10, 1, 2, 4]
    for bad in (0, -1, 100.5):
        with pytest.raises(ConfigError):
            stride_for(bad)


@pytest.mark.parametrize("percent", [0.1, 1, 10, 25, 100])
def test_uniform_is_every_kth_sorted_frame(percent):
    shuffled = list(np.random.default_rng(0).permutation(FRAMES))
    chosen = make_split(shuffled, percent, "uniform")
    k = stride_for(percent)
    assert len(chosen) == math.ceil(len(FRAMES) / k)
    assert chosen[0] == FRAMES[0]
    assert [FRAMES.index(f) for f in chosen] == list(range(0, len(FRAMES), k))


def test_random_split_properties():
    a = make_split(FRAMES, 10, "random", seed=0)
    assert len(a) == round(len(FRAMES) * 0.1) == 41
    assert a == sorted(a) and len(set(a)) == len(a) and set(a) <= set(FRAMES)
    assert a == make_split(FRAMES[::-1], 10, "random", seed=0)  # independent of the input order
    assert a != make_split(FRAMES, 10, "random", seed=1)
    assert a != make_split(FRAMES, 10, "uniform")
    assert len(make_split(FRAMES, 0.01, "random")) == 1  # at least one frame
    assert make_split(FRAMES, 100, "random") == FRAMES


def test_make_split_refuses_bad_input():
    with pytest.raises(ValueError, match="unique"):
        make_split(["a", "b", "a"], 50)
    with pytest.raises(ConfigError, match="unknown split method"):
        make_split(FRAMES, 10, "stratified")


def test_scene_rule_is_slidr_every_kth():
    scenes = sorted(load_yaml("nuscenes_splits")["train"])
    one = scene_split(scenes, 1)
    assert len(one) == 7 and one[0] == scenes[99] and one[-1] == scenes[699]  # 100th, 200th, ... 700th
    assert scene_split(scenes, 10) == scenes[9::10]
    with pytest.raises(ConfigError, match="less than one scene"):
        scene_split(scenes, 0.1)


def test_official_kitti_counts():
    frames = kitti_official_frames()
    assert len(frames) == sum(KITTI_TRAIN_COUNTS.values()) == 19130
    assert frames[0] == "00/000000" and frames[-1] == "10/001200" and "08/000000" not in frames
    assert [len(make_split(frames, p)) for p in (0.1, 1, 10, 100)] == [20, 192, 1913, 19130]


# ------------------------------------------------------------------------------ split files


def test_split_file_round_trip_and_comments(tmp_path):
    path = write_split_file(tmp_path / "s" / "x.txt", ["00/000001", "00/000005"], "line one\nline two")
    assert path.read_text().startswith("# line one\n# line two\n00/000001\n")
    assert read_split_file(path) == ["00/000001", "00/000005"]
    path.write_text("# header\n\n00/000001  # trailing note\n   \n08/000002\n")
    assert read_split_file(path) == ["00/000001", "08/000002"]
    assert not list(tmp_path.glob("s/.*.tmp"))  # atomic write leaves no temp files


def test_split_file_errors(tmp_path):
    with pytest.raises(DataError, match="absent.txt: split file is missing"):
        read_split_file(tmp_path / "absent.txt")
    (tmp_path / "dup.txt").write_text("00/000001\n00/000001\n")
    with pytest.raises(DataError, match="dup.txt: frames listed twice"):
        read_split_file(tmp_path / "dup.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="empty.txt: split file lists no frames"):
        read_split_file(tmp_path / "empty.txt")


def test_resolve_split_file(tmp_path, monkeypatch):
    assert PACKAGE_SPLITS == REPO / "src" / "balvit" / "splits" and (REPO / "splits").resolve() == PACKAGE_SPLITS
    (tmp_path / "mine.txt").write_text("00/000000\n")
    monkeypatch.chdir(tmp_path)
    assert resolve_split_file("mine.txt") == tmp_path / "mine.txt"  # relative to the working directory
    assert resolve_split_file(tmp_path / "mine.txt") == tmp_path / "mine.txt"
    assert resolve_split_file("splits/semantickitti/1.txt") == PACKAGE_SPLITS / "semantickitti" / "1.txt"  # shipped
    with pytest.raises(DataError, match="nope.txt not found"):
        resolve_split_file("splits/nope.txt")


def test_split_file_with_a_missing_frame_is_refused(tmp_path):
    write_kitti(tmp_path / "kitti")
    path = write_split_file(tmp_path / "s.txt", ["00/000001", "05/000099"], "test")
    with pytest.raises(DataError, match=r"1 listed frame.*05/000099"):
        SemanticKITTI(tmp_path / "kitti", "train", frames=read_split_file(path))


# ------------------------------------------------------------------------ checked-in lists


def _checked_in(dataset: str) -> list[Path]:
    return sorted((REPO / "splits" / dataset).glob("*.txt"))


def _rule(path: Path) -> str:
    return next(line for line in path.read_text().splitlines() if line.startswith("# rule:"))


def test_checked_in_kitti_lists_reproduce(tmp_path):
    files = _checked_in("semantickitti")
    names = {p.name for p in files}
    assert {"0.1.txt", "1.txt", "10.txt", "100.txt"} <= names
    run_splits("semantickitti", tmp_path, method="uniform")
    run_splits("semantickitti", tmp_path, percents=(0.1, 1, 10), method="random", seed=0)
    for path in files:
        fresh = tmp_path / path.name
        assert fresh.is_file(), f"{path.name} is not produced by run_splits"
        assert read_split_file(fresh) == read_split_file(path), path.name
        assert _rule(fresh) == _rule(path)
    assert len(read_split_file(REPO / "splits" / "semantickitti" / "0.1.txt")) == 20


def test_checked_in_nuscenes_scene_lists_reproduce(tmp_path):
    files = _checked_in("nuscenes")
    assert {p.name for p in files} >= {"scenes_1.txt", "scenes_10.txt"}
    run_splits("nuscenes", tmp_path, percents=(1, 10), method="scenes")
    for path in files:
        assert read_split_file(tmp_path / path.name) == read_split_file(path), path.name
    train = set(load_yaml("nuscenes_splits")["train"])
    assert set(read_split_file(REPO / "splits" / "nuscenes" / "scenes_10.txt")) <= train


def test_nuscenes_frame_lists_need_the_data(tmp_path):
    with pytest.raises(DataError, match="--data_root"):
        run_splits("nuscenes", tmp_path, method="uniform")
    with pytest.raises(ConfigError, match="nuScenes"):
        run_splits("semantickitti", tmp_path, method="scenes")


# ------------------------------------------------------------------------- statistics/data


def test_class_presence_by_hand(tmp_path):
    data = write_kitti(tmp_path / "kitti")
    ds = SemanticKITTI(tmp_path / "kitti", "train")
    idx = [0, 3, 4]
    stats = class_presence(ds, idx)
    sems = [data["semantic"][ds.frames[i]] for i in idx]
    car = [int(np.isin(s, [10, 252]).sum()) for s in sems]  # car and moving-car
    ignored = [int(np.isin(s, [0, 1, 52]).sum()) for s in sems]  # unlabeled, outlier, other-structure
    assert stats["num_frames"] == 3 and stats["num_points"] == 900
    assert stats["classes"]["car"] == {"frames": sum(c > 0 for c in car), "points": sum(car)}
    assert stats["ignored_points"] == sum(ignored)
    assert stats["classes"]["truck"] == {"frames": 0, "points": 0}  # raw 18 is never written
    table = format_presence_table(stats, "demo")
    assert "### demo" in table and "| truck | **absent** |" in table and f"| car | {stats['classes']['car']['frames']} |" in table


def test_run_splits_with_kitti_data(tmp_path):
    write_kitti(tmp_path / "kitti")
    paths = run_splits("semantickitti", tmp_path / "out", percents=(10, 100), data_root=tmp_path / "kitti")
    assert [p.name for p in paths] == ["10.txt", "10.stats.md", "100.txt", "100.stats.md"]
    # 21 frames (00: 3, the other nine: 2), [::10] -> positions 0, 10, 20
    assert read_split_file(tmp_path / "out" / "10.txt") == ["00/000000", "04/000001", "10/000001"]
    assert len(read_split_file(tmp_path / "out" / "100.txt")) == 21
    assert "21 frames, 6300 points" in (tmp_path / "out" / "100.stats.md").read_text()
    ds = SemanticKITTI(tmp_path / "kitti", "train", frames=read_split_file(tmp_path / "out" / "10.txt"))
    assert len(ds) == 3


def test_nuscenes_uniform_follows_time_not_tokens(tmp_path):
    write_nuscenes(tmp_path / "nuscenes", samples_per_scene=4)
    ds = NuScenes(tmp_path, "train", version=NUS_VERSION)
    assert sorted(ds.frames) != ds.frames  # tokens do not sort in time order
    assert select_frames(ds, 50, "uniform") == [ds.frames[0], ds.frames[2]]
    assert select_frames(ds, 100, "scenes") == ds.frames


def test_run_splits_with_nuscenes_data(tmp_path):
    write_nuscenes(tmp_path / "nuscenes", samples_per_scene=4)
    out = tmp_path / "out"
    paths = run_splits("nuscenes", out, percents=(50,), data_root=tmp_path, version=NUS_VERSION)
    assert [p.name for p in paths] == ["50.txt", "50.stats.md"]
    text = (out / "50.txt").read_text()
    assert "scene-0061/000" in text and "scene-0061/002" in text
    frames = read_split_file(out / "50.txt")
    ds = NuScenes(tmp_path, "train", version=NUS_VERSION, frames=frames)
    assert ds.frame_keys == ["scene-0061/000", "scene-0061/002"]
    assert "2 frames, 400 points" in (out / "50.stats.md").read_text()
    paths = run_splits("nuscenes", out, percents=(100,), method="scenes", data_root=tmp_path, version=NUS_VERSION)
    assert [p.name for p in paths] == ["scenes_100.txt", "scenes_100_frames.txt", "scenes_100_frames.stats.md"]
    assert read_split_file(out / "scenes_100.txt") == sorted(load_yaml("nuscenes_splits")["mini_train"])
    assert len(read_split_file(out / "scenes_100_frames.txt")) == 4
