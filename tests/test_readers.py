"""SemanticKITTI and nuScenes-lidarseg readers on tiny hand-written datasets (tests/fakedata.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from balvit.data.camera import project_points
from balvit.data.labels import load_yaml
from balvit.data.nuscenes import CAMERAS, NuScenes
from balvit.data.semantickitti import SemanticKITTI
from balvit.errors import DataError
from fakedata import KITTI_DEFAULT_COUNTS, NUS_VERSION, write_kitti, write_nuscenes

# SemanticKITTI raw id -> train id, from the semantic-kitti-api learning map (by hand)
KITTI_EXPECTED = {0: 255, 1: 255, 10: 0, 11: 1, 40: 8, 44: 9, 48: 10, 50: 12, 52: 255, 70: 14, 72: 16,
                  80: 17, 81: 18, 252: 0, 254: 5}  # fmt: skip


@pytest.fixture()
def kitti(tmp_path):
    data = write_kitti(tmp_path / "kitti")
    return tmp_path / "kitti", data


@pytest.fixture()
def nus(tmp_path):
    data = write_nuscenes(tmp_path / "data" / "nuscenes")
    return tmp_path / "data" / "nuscenes", data


# ------------------------------------------------------------------------------ SemanticKITTI


def test_kitti_root_conventions(kitti, tmp_path):
    root, _ = kitti
    a = SemanticKITTI(root, "valid")
    b = SemanticKITTI(root / "sequences", "valid")
    write_kitti(tmp_path / "parent" / "dataset", counts={"08": 2})
    c = SemanticKITTI(tmp_path / "parent", "valid")
    assert a.frames == b.frames == c.frames == ["08/000000", "08/000001"]


def test_kitti_wrong_root_says_what_was_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*sequences/XX/velodyne/NNNNNN\.bin"):
        SemanticKITTI(tmp_path / "empty")


def test_kitti_splits(kitti):
    root, _ = kitti
    train = SemanticKITTI(root, "train")
    expected = [f"{s}/{k:06d}" for s in ("00", "01", "02", "03", "04", "05", "06", "07", "09", "10")
                for k in range(KITTI_DEFAULT_COUNTS[s])]  # fmt: skip
    assert train.frames == expected and train.has_labels
    assert SemanticKITTI(root, "val").frames == SemanticKITTI(root, "valid").frames == ["08/000000", "08/000001"]
    test = SemanticKITTI(root, "test")
    assert len(test) == 11 and not test.has_labels
    with pytest.raises(DataError, match="no labels"):
        test.load_labels(0)
    assert len(SemanticKITTI(root, "all")) == sum(KITTI_DEFAULT_COUNTS.values())
    with pytest.raises(DataError, match="unknown SemanticKITTI split"):
        SemanticKITTI(root, "training")


def test_kitti_missing_sequence_is_an_error(kitti):
    root, _ = kitti
    for p in sorted((root / "sequences" / "03" / "velodyne").iterdir()):
        p.unlink()
    (root / "sequences" / "03" / "velodyne").rmdir()
    with pytest.raises(DataError, match="03/velodyne.*sequence 03"):
        SemanticKITTI(root, "train")
    assert len(SemanticKITTI(root, "train", sequences=["00", "1"])) == 5


def test_kitti_frames_restriction(kitti):
    root, _ = kitti
    ds = SemanticKITTI(root, "train", frames=["01/000001", "00/000002"])
    assert ds.frames == ["00/000002", "01/000001"]  # dataset (time) order
    with pytest.raises(DataError, match=r"2 listed frame.*'00/000009', '08/000000'"):
        SemanticKITTI(root, "train", frames=["00/000000", "08/000000", "00/000009"])
    with pytest.raises(DataError, match="twice"):
        SemanticKITTI(root, "train", frames=["00/000000", "00/000000"])


def test_kitti_points_labels_instances(kitti):
    root, data = kitti
    ds = SemanticKITTI(root, "train")
    i = ds.frame_index("01/000001")
    pts = ds.load_points(i)
    assert pts.dtype == np.float32 and pts.shape == (300, 4)
    np.testing.assert_array_equal(pts, data["points"]["01/000001"])
    raw = ds.load_raw_labels(i)
    np.testing.assert_array_equal(raw, data["semantic"]["01/000001"])  # instance bits removed
    np.testing.assert_array_equal(ds.load_instances(i), data["instance"]["01/000001"])
    labels = ds.load_labels(i)
    assert labels.dtype == np.int64
    assert labels.tolist() == [KITTI_EXPECTED[int(r)] for r in raw]


def test_kitti_camera_projection_by_hand(kitti):
    root, _ = kitti
    ds = SemanticKITTI(root, "train")
    (cam,) = ds.load_cameras(0)
    assert cam.name == "image_2" and (cam.width, cam.height) == (64, 32) and cam.mask_path is None
    # velodyne (10.27, 0.06, -0.08) -> cam0 (-0.06, 0, 10) -> cam2 (0, 0, 10): principal point (32, 16)
    # velodyne (5.27, -1.94, 0.92) -> cam0 (1.94, -1, 5) -> cam2 (2, -1, 5): (32 + 50*2/5, 16 - 50/5)
    # velodyne (0.5, 0, 0) is behind cam0 (z = 0.23)
    pts = np.array([[10.27, 0.06, -0.08], [5.27, -1.94, 0.92], [0.5, 0.0, 0.0]])
    uv, valid = project_points(pts, cam)
    np.testing.assert_allclose(uv[:2], [[32.0, 16.0], [52.0, 6.0]], atol=1e-4)
    assert valid.tolist() == [True, True, False]


def test_kitti_mask_path_and_poses(kitti):
    root, _ = kitti
    (root / "sequences" / "00" / "image_2_semantic").mkdir()
    Image.fromarray(np.zeros((32, 64), np.uint16)).save(root / "sequences" / "00" / "image_2_semantic" / "000001.png")
    ds = SemanticKITTI(root, "train")
    assert ds.load_cameras(0)[0].mask_path is None
    assert ds.load_cameras(1)[0].mask_path.name == "000001.png"
    # poses.txt: cam0 moves +1 m along its z (forward) per frame -> the lidar moves +1 m along x
    np.testing.assert_allclose(ds.load_pose(2, "camera")[:3, 3], [0, 0, 2])
    np.testing.assert_allclose(ds.load_pose(2)[:3, 3], [2, 0, 0], atol=1e-9)


def test_kitti_missing_calib(kitti):
    root, _ = kitti
    (root / "sequences" / "00" / "calib.txt").unlink()
    ds = SemanticKITTI(root, "train")
    assert ds.load_points(0).shape == (300, 4)  # the lidar does not need it
    with pytest.raises(DataError, match="00/calib.txt"):
        ds.load_cameras(0)


def _kitti_one(root: Path) -> tuple[SemanticKITTI, Path, Path]:
    ds = SemanticKITTI(root, "valid")
    return ds, ds.scan_path(0), ds.label_path(0)


def test_kitti_truncated_scan(kitti):
    ds, scan, _ = _kitti_one(kitti[0])
    scan.write_bytes(scan.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"08/velodyne/000000\.bin.*not a multiple of 16"):
        ds.load_points(0)


def test_kitti_label_count_mismatch(kitti):
    ds, _, label = _kitti_one(kitti[0])
    label.write_bytes(label.read_bytes()[:-4])
    with pytest.raises(DataError, match=r"08/labels/000000\.label: 299 labels.*300 points"):
        ds.load_labels(0)
    label.write_bytes(label.read_bytes()[:-2])
    with pytest.raises(DataError, match=r"000000\.label.*multiple of 4"):
        ds.load_labels(0)


def test_kitti_nan_and_empty(kitti):
    ds, scan, label = _kitti_one(kitti[0])
    pts = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)
    pts[[3, 7], 1] = [np.nan, np.inf]
    pts.tofile(scan)
    with pytest.raises(DataError, match=r"000000\.bin: 2 of 300 points have NaN/inf"):
        ds.load_points(0)
    zero = SemanticKITTI(kitti[0], "valid", nan_policy="zero")
    assert (zero.load_points(0)[[3, 7]] == 0).all()
    assert np.flatnonzero(zero.load_points_checked(0)[1]).tolist() == [3, 7]
    labels = zero.load_labels(0)
    assert labels[3] == labels[7] == 255
    scan.write_bytes(b"")
    with pytest.raises(DataError, match=r"000000\.bin: the scan is empty"):
        ds.load_points(0)


def test_kitti_unknown_raw_label(kitti):
    ds, _, label = _kitti_one(kitti[0])
    raw = np.fromfile(label, dtype=np.uint32)
    raw[5] = 7 | (3 << 16)  # 7 is not a SemanticKITTI class
    raw.tofile(label)
    with pytest.raises(DataError, match=r"000000\.label: unknown raw label id.*7 \(1 points\)"):
        ds.load_labels(0)


def test_kitti_prediction_round_trip(kitti, tmp_path):
    ds, _, _ = _kitti_one(kitti[0])
    train = np.arange(300) % 19
    path = ds.write_prediction(tmp_path / "out", 1, train)
    assert path == tmp_path / "out" / "sequences" / "08" / "predictions" / "000001.label"
    assert path.stat().st_size == 300 * 4
    raw = np.fromfile(path, dtype=np.uint32)
    learning_map_inv = [10, 11, 15, 18, 20, 30, 31, 32, 40, 44, 48, 49, 50, 51, 70, 71, 72, 80, 81]
    assert raw.tolist() == [learning_map_inv[t] for t in train]
    with pytest.raises(DataError, match="299 values.*300 points"):
        ds.write_prediction(tmp_path / "out", 1, train[:-1])


# ----------------------------------------------------------------------------------- nuScenes


def test_nuscenes_root_conventions(nus):
    root, data = nus
    a = NuScenes(root, "train", version=NUS_VERSION)
    b = NuScenes(root.parent, "train", version=NUS_VERSION)  # a folder holding nuscenes/
    assert a.frames == b.frames == data["frames"][:2]


def test_nuscenes_wrong_root_and_version(nus, tmp_path):
    root, _ = nus
    with pytest.raises(DataError, match=r"nowhere.*nowhere/v1\.0-mini/sample\.json.*nowhere/nuscenes/v1\.0-mini"):
        NuScenes(tmp_path / "nowhere", version=NUS_VERSION)
    with pytest.raises(DataError, match=r"v1\.0-trainval/sample\.json.*found.*v1\.0-mini"):
        NuScenes(root)


def test_nuscenes_splits_and_order(nus):
    root, data = nus
    train = NuScenes(root, "train", version=NUS_VERSION)
    assert train.split == "mini_train" and train.scenes == ["scene-0061"] * 2
    # keyframes were written newest first; the reader orders them by time, skipping sweeps and radar
    assert train.frames == data["frames"][:2]
    assert train.frame_keys == ["scene-0061/000", "scene-0061/001"]
    for name in ("val", "valid", "mini_val"):
        val = NuScenes(root, name, version=NUS_VERSION)
        assert val.split == "mini_val" and val.frames == data["frames"][2:]
    with pytest.raises(DataError, match=r"none of the 150 scenes of split 'test'"):
        NuScenes(root, "test", version=NUS_VERSION)
    with pytest.raises(DataError, match="unknown nuScenes split"):
        NuScenes(root, "training", version=NUS_VERSION)


def test_nuscenes_frames_restriction(nus):
    root, data = nus
    ds = NuScenes(root, "train", version=NUS_VERSION, frames=[data["frames"][1]])
    assert ds.frames == [data["frames"][1]] and ds.frame_keys == ["scene-0061/001"]
    with pytest.raises(DataError, match=rf"1 listed frame.*{data['frames'][2]}"):
        NuScenes(root, "train", version=NUS_VERSION, frames=[data["frames"][0], data["frames"][2]])


def test_nuscenes_scene_restriction(nus):
    root, data = nus
    assert NuScenes(root, "val", version=NUS_VERSION, scenes=["scene-0103"]).frames == data["frames"][2:]
    with pytest.raises(DataError, match=r"1 listed scene.*'scene-0103'"):
        NuScenes(root, "train", version=NUS_VERSION, scenes=["scene-0061", "scene-0103"])


def test_nuscenes_points_rotated_into_library_frame(nus):
    root, data = nus
    ds = NuScenes(root, "train", version=NUS_VERSION)
    pts = ds.load_points(0)
    raw = data["points"][ds.frames[0]]
    assert pts.dtype == np.float32 and pts.shape == (200, 4)
    np.testing.assert_allclose(pts[0, :3], [10.0, 0.0, 0.0], atol=1e-6)  # 10 m ahead of the car: +x
    np.testing.assert_array_equal(pts[:, 0], raw[:, 1])  # forward = lidar y
    np.testing.assert_array_equal(pts[:, 1], -raw[:, 0])  # left = -(lidar x, which points right)
    np.testing.assert_array_equal(pts[:, 2:4], raw[:, 2:4])  # z, intensity 0..255


def test_nuscenes_points_in_the_lidar_top_frame_keep_cameras_consistent(nus):
    root, data = nus
    lib = NuScenes(root, "train", version=NUS_VERSION, cameras=True)
    raw_frame = NuScenes(root, "train", version=NUS_VERSION, cameras=True, frame="lidar_top")
    raw = data["points"][lib.frames[0]]
    np.testing.assert_array_equal(raw_frame.load_points(0), raw[:, :4])  # as stored: x right, y forward
    uv_lib, ok_lib = project_points(lib.load_points(0)[:, :3], lib.load_cameras(0)[0])
    uv_raw, ok_raw = project_points(raw_frame.load_points(0)[:, :3], raw_frame.load_cameras(0)[0])
    np.testing.assert_allclose(uv_raw[ok_raw], uv_lib[ok_lib], atol=1e-6)  # the same pixels either way
    assert (ok_raw == ok_lib).all() and ok_lib.any()
    with pytest.raises(DataError, match="point frame"):
        NuScenes(root, "train", version=NUS_VERSION, frame="ego")


def _expected_train_ids(names) -> list[int]:
    cats = load_yaml("nuscenes")["categories"]
    classes = [c["name"] for c in load_yaml("nuscenes")["classes"]]
    return [255 if cats[n]["train"] is None else classes.index(cats[n]["train"]) for n in names]


def test_nuscenes_labels_by_name(nus):
    root, data = nus
    ds = NuScenes(root, "val", version=NUS_VERSION)
    token = ds.frames[1]
    np.testing.assert_array_equal(ds.load_raw_labels(1), data["raw_labels"][token])
    assert ds.load_labels(1).tolist() == _expected_train_ids(data["names"][token])


def test_nuscenes_shuffled_category_indices(tmp_path):
    perm = list(np.random.default_rng(3).permutation(32))
    data = write_nuscenes(tmp_path / "nuscenes", category_perm=perm)
    ds = NuScenes(tmp_path, "train", version=NUS_VERSION)
    token = ds.frames[0]
    official = [load_yaml("nuscenes")["categories"][n]["index"] for n in data["names"][token]]
    assert ds.load_raw_labels(0).tolist() != official  # the file really uses other indices
    assert ds.load_labels(0).tolist() == _expected_train_ids(data["names"][token])


def test_nuscenes_cameras_follow_the_ego_motion(nus):
    root, _ = nus
    ds = NuScenes(root, "train", version=NUS_VERSION, cameras=True)
    for i in range(len(ds)):  # the ego is 10 m further along at keyframe 1; relative geometry is the same
        cams = ds.load_cameras(i)
        assert [c.name for c in cams] == list(CAMERAS)
        front, back = cams[0], cams[3]
        assert (front.width, front.height) == (200, 100) and front.image_path.suffix == ".jpg"
        # library point (20, -3, 0.5): ego (20.9, -3, 2.3) at lidar time; the ego moves +2 m in x before
        # the camera fires: ego (18.9, -3, 2.3); camera at ego (1.5, 0, 1.5): camera (3, -0.8, 17.4)
        # -> u = 100 + 100 * 3 / 17.4, v = 50 - 100 * 0.8 / 17.4
        pts = np.array([[20.0, -3.0, 0.5], [-20.0, 0.0, 0.5]])
        uv, valid = project_points(pts, front)
        np.testing.assert_allclose(uv[0], [100 + 300 / 17.4, 50 - 80 / 17.4], atol=1e-3)
        assert valid.tolist() == [True, False]
        # (-20, 0, 0.5): ego (-21.1, 0, 2.3) at camera time, 22.6 m behind the rear camera
        uv, valid = project_points(pts, back)
        np.testing.assert_allclose(uv[1], [100.0, 50 - 80 / 22.6], atol=1e-3)
        assert valid.tolist() == [False, True]


def test_nuscenes_camera_without_ego_motion(tmp_path):
    write_nuscenes(tmp_path / "nuscenes", ego_motion=(0.0, 0.0, 0.0))
    ds = NuScenes(tmp_path, "train", version=NUS_VERSION)
    uv, valid = project_points(np.array([[20.0, -3.0, 0.5]]), ds.load_cameras(0)[0])
    np.testing.assert_allclose(uv[0], [100 + 300 / 19.4, 50 - 80 / 19.4], atol=1e-3)


def test_nuscenes_mask_path(nus):
    root, _ = nus
    ds = NuScenes(root, "train", version=NUS_VERSION)
    image = ds.load_cameras(0)[1].image_path
    mask = root / "samples" / "CAM_FRONT_RIGHT_SEMANTIC" / f"{image.stem}.png"
    mask.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((100, 200), np.uint16)).save(mask)
    cams = ds.load_cameras(0)
    assert cams[1].mask_path == mask and cams[0].mask_path is None


@pytest.mark.parametrize("table", ["sample", "sample_data", "scene", "category"])
def test_nuscenes_missing_core_table(nus, table):
    root, _ = nus
    (root / NUS_VERSION / f"{table}.json").unlink()
    with pytest.raises(DataError, match=rf"v1\.0-mini/{table}\.json: nuScenes table is missing"):
        NuScenes(root, "train", version=NUS_VERSION)


@pytest.mark.parametrize("table", ["ego_pose", "calibrated_sensor"])
def test_nuscenes_missing_camera_table(nus, table):
    root, _ = nus
    (root / NUS_VERSION / f"{table}.json").unlink()
    ds = NuScenes(root, "train", version=NUS_VERSION)
    assert ds.load_points(0).shape == (200, 4)
    with pytest.raises(DataError, match=rf"{table}\.json: nuScenes table is missing"):
        ds.load_cameras(0)


def test_nuscenes_missing_lidarseg_table(nus):
    root, _ = nus
    (root / NUS_VERSION / "lidarseg.json").unlink()
    ds = NuScenes(root, "train", version=NUS_VERSION)
    assert not ds.has_labels
    with pytest.raises(DataError, match=r"lidarseg\.json: nuScenes-lidarseg table is missing"):
        ds.load_labels(0)


def test_nuscenes_truncated_json_table(nus):
    root, _ = nus
    path = root / NUS_VERSION / "sample_data.json"
    path.write_text(path.read_text()[:-200])
    with pytest.raises(DataError, match=r"sample_data\.json: (invalid|truncated) JSON"):
        NuScenes(root, "train", version=NUS_VERSION)


def test_nuscenes_inconsistent_sample_data(nus):
    root, _ = nus
    path = root / NUS_VERSION / "sample_data.json"
    records = json.loads(path.read_text())
    lidar = [r for r in records if r["filename"].startswith("samples/LIDAR_TOP")]
    path.write_text(json.dumps(records + [dict(lidar[0], token="f" * 32)]))
    with pytest.raises(DataError, match=r"sample_data\.json: sample .* has two LIDAR_TOP keyframes"):
        NuScenes(root, "train", version=NUS_VERSION)
    path.write_text(json.dumps([r for r in records if r["token"] != lidar[0]["token"]]))
    with pytest.raises(DataError, match=r"sample_data\.json: 1 samples have no LIDAR_TOP keyframe"):
        NuScenes(root, "train", version=NUS_VERSION)


def _nus_one(root: Path) -> tuple[NuScenes, Path, Path]:
    ds = NuScenes(root, "train", version=NUS_VERSION)
    return ds, ds.scan_path(0), ds.label_path(0)


def test_nuscenes_truncated_scan(nus):
    ds, scan, _ = _nus_one(nus[0])
    scan.write_bytes(scan.read_bytes() + b"\0\0\0\0")
    with pytest.raises(DataError, match=rf"{scan.name}: size 4004 bytes is not a multiple of 20"):
        ds.load_points(0)


def test_nuscenes_label_count_mismatch(nus):
    ds, _, label = _nus_one(nus[0])
    label.write_bytes(label.read_bytes() + b"\x11")
    with pytest.raises(DataError, match=rf"{label.name}: 201 labels.*200 points"):
        ds.load_labels(0)


def test_nuscenes_nan_and_empty(nus):
    ds, scan, _ = _nus_one(nus[0])
    raw = np.fromfile(scan, dtype=np.float32).reshape(-1, 5)
    raw[4, 0] = np.nan
    raw.tofile(scan)
    with pytest.raises(DataError, match=rf"{scan.name}: 1 of 200 points have NaN/inf"):
        ds.load_points(0)
    zero = NuScenes(nus[0], "train", version=NUS_VERSION, nan_policy="zero")
    points, invalid = zero.load_points_checked(0)
    assert np.flatnonzero(invalid).tolist() == [4] and (points[4] == 0).all()
    assert zero.load_labels(0)[4] == 255
    scan.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{scan.name}: the scan is empty"):
        ds.load_points(0)


def test_nuscenes_unknown_raw_label(nus):
    ds, _, label = _nus_one(nus[0])
    raw = np.fromfile(label, dtype=np.uint8)
    raw[9] = 40  # category.json has indices 0..31
    raw.tofile(label)
    with pytest.raises(DataError, match=rf"{label.name}: unknown raw label id.*40 \(1 points\)"):
        ds.load_labels(0)


def test_nuscenes_unknown_category_name(nus):
    root, _ = nus
    path = root / NUS_VERSION / "category.json"
    cats = json.loads(path.read_text())
    cats[3]["name"] = "vehicle.hovercraft"
    path.write_text(json.dumps(cats))
    with pytest.raises(DataError, match=r"category\.json.*vehicle\.hovercraft"):
        NuScenes(root, "train", version=NUS_VERSION)


def test_nuscenes_prediction_round_trip(nus, tmp_path):
    root, _ = nus
    ds = NuScenes(root, "valid", version=NUS_VERSION)
    train = np.arange(200) % 16
    path = ds.write_prediction(tmp_path / "results", 1, train)
    assert path == tmp_path / "results" / "lidarseg" / "mini_val" / f"{ds.frames[1]}_lidarseg.bin"
    assert path.stat().st_size == 200
    values = np.fromfile(path, dtype=np.uint8)
    assert values.tolist() == (train + 1).tolist() and values.min() >= 1 and values.max() <= 16


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_streamed_json_matches_json_load(tmp_path, chunk):
    from balvit.data.nuscenes import iter_json_array

    records = [{"token": f"t{k}", "name": "caf\u00e9 \u2192 {]}", "values": [k, 1.5, None, True]} for k in range(25)]
    path = tmp_path / "table.json"
    path.write_text(json.dumps(records, indent=1, ensure_ascii=False), encoding="utf-8")
    assert list(iter_json_array(path, chunk_chars=chunk)) == records
    path.write_text("[]")
    assert list(iter_json_array(path, chunk_chars=chunk)) == []
    path.write_text('{"token": 1}')
    with pytest.raises(DataError, match="table.json: not a JSON array"):
        list(iter_json_array(path, chunk_chars=chunk))
