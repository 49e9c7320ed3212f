"""Synthetic world: on-disk layout of both formats, determinism, LiDAR/camera agreement, sensor limits.

The datasets are tiny (few frames, 16-32 beams, images at 10-25 % size) so that each test takes seconds.
Point -> pixel checks use the files only (calib.txt / the JSON tables), with small helpers written here,
not the library's readers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from balvit.data.labels import load_yaml
from balvit.data.synthetic import generate
from balvit.data.synthetic.lidar import hdl64, shadow_mask
from balvit.errors import ConfigError

KITTI_MOVING = {252, 253, 254, 255, 256, 257, 258, 259}


# ------------------------------------------------------------------------------------------------ helpers
def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def read_calib(path: Path) -> dict[str, np.ndarray]:
    out = {}
    for line in path.read_text().splitlines():
        key, vals = line.split(":", 1)
        out[key] = np.array([float(v) for v in vals.split()]).reshape(3, 4)
    return out


def quat_to_rot(q) -> np.ndarray:
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def pose(rec) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_rot(rec["rotation"])
    T[:3, 3] = rec["translation"]
    return T


def pixel_agreement(uvw: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """uvw (N, 3) homogeneous pixels; fraction of points in front (depth > 1 m) inside the image whose pixel
    (round(u), round(v)) holds the point's label in the mask."""
    H, W = mask.shape
    z = uvw[:, 2]
    front = z > 1.0
    u = np.round(uvw[:, 0] / np.where(front, z, 1)).astype(np.int64)
    v = np.round(uvw[:, 1] / np.where(front, z, 1)).astype(np.int64)
    vis = front & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    if not vis.any():
        return 0.0, 0
    return float(np.mean(mask[v[vis], u[vis]] == labels[vis])), int(vis.sum())


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("kitti")
    summary = generate("semantickitti", root, sequences=["00", "11"], frames=3, seed=3, beams=32,
                       azimuth_steps=512, image_scale=0.25, progress=False)
    return root, summary


@pytest.fixture(scope="module")
def nus(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("nus")
    summary = generate("nuscenes", root, sequences=["scene-0001", "scene-0003"], frames=3, seed=5, beams=32,
                       azimuth_steps=540, image_scale=0.1, progress=False)
    return root, summary


# ------------------------------------------------------------------------------------------------ KITTI
def test_kitti_layout_and_dtypes(kitti):
    root, summary = kitti
    assert summary["frames"] == 6 and summary["format"] == "semantickitti"
    for sid in ("00", "11"):
        seq = root / "sequences" / sid
        calib = seq / "calib.txt"
        lines = calib.read_text().splitlines()
        assert [ln.split(":")[0] for ln in lines] == ["P0", "P1", "P2", "P3", "Tr"]
        assert all(len(ln.split(":")[1].split()) == 12 for ln in lines)
        poses = np.loadtxt(seq / "poses.txt")
        assert poses.shape == (3, 12)
        np.testing.assert_allclose(poses[0].reshape(3, 4), np.eye(4)[:3], atol=1e-9)
        assert 0.3 < np.linalg.norm(poses[1].reshape(3, 4)[:, 3]) < 2.0  # about 1 m per frame at 10 Hz
        times = np.loadtxt(seq / "times.txt")
        assert times.shape == (3,) and times[0] == 0 and np.all(np.diff(times) > 0.09)
        for i in range(3):
            name = f"{i:06d}"
            raw = (seq / "velodyne" / f"{name}.bin").read_bytes()
            assert len(raw) % 16 == 0
            pts = np.frombuffer(raw, np.float32).reshape(-1, 4)
            assert len(pts) > 5000 and np.isfinite(pts).all()
            assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 1
            img = Image.open(seq / "image_2" / f"{name}.png")
            assert img.mode == "RGB" and img.size == (310, 94)
            if sid == "00":
                labels = np.fromfile(seq / "labels" / f"{name}.label", np.uint32)
                assert labels.shape == (len(pts),)
                known = set(int(k) for k in load_yaml("semantickitti")["raw_labels"])
                assert set(np.unique(labels & 0xFFFF).tolist()) <= known
                mask = Image.open(seq / "image_2_semantic" / f"{name}.png")
                assert mask.size == (310, 94) and np.array(mask).dtype in (np.uint16, np.int32)
                assert set(np.unique(np.array(mask)).tolist()) <= known | {0}
    # test sequences have no ground truth, as in the real data
    assert not (root / "sequences" / "11" / "labels").exists()
    assert not (root / "sequences" / "11" / "image_2_semantic").exists()


def test_kitti_ego_shadow_and_zero_remission(kitti):
    """The KITTI car shadows the lowest beams behind (and, lowest of all, in front of) the sensor, never the
    upper ones; a class-dependent share of returns has remission 0 (real scans: cars ~45 %, sidewalk ~2 %)."""
    spec = hdl64()
    mask = shadow_mask(spec, phase=0.0)  # (64, 2160)
    az = np.degrees(np.angle(np.exp(1j * (np.pi - 2 * np.pi * (np.arange(spec.width) + 0.5) / spec.width))))
    assert not mask[spec.elev_deg > -16.0].any()  # upper beams: nothing shadowed
    assert mask[-1][np.abs(az) > 170].all() and mask[-1][np.abs(az) < 10].all()  # lowest: rear and bonnet
    assert not mask[-1][(np.abs(az) > 30) & (np.abs(az) < 50)].any()  # the sides stay open
    assert 0.05 < mask[-1].mean() < 0.35
    root, _ = kitti
    rem, sem = [], []
    for f in sorted((root / "sequences" / "00" / "velodyne").glob("*.bin")):
        rem.append(np.fromfile(f, np.float32).reshape(-1, 4)[:, 3])
        sem.append(np.fromfile(root / "sequences" / "00" / "labels" / (f.stem + ".label"), np.uint32) & 0xFFFF)
    rem, sem = np.concatenate(rem), np.concatenate(sem)
    zero = rem == 0
    car, side = np.isin(sem, [10, 252]), sem == 48
    assert car.sum() > 100 and side.sum() > 100
    assert zero[car].mean() > 0.3 and zero[side].mean() < 0.06
    assert 0.2 < np.median(rem[side & ~zero]) < 0.45  # calibrated to the real sidewalk median (0.31)

def test_kitti_points_within_vertical_fov(kitti):
    root, _ = kitti
    pts = np.fromfile(root / "sequences" / "00" / "velodyne" / "000001.bin", np.float32).reshape(-1, 4)
    r = np.linalg.norm(pts[:, :3], axis=1)
    elev = np.degrees(np.arcsin(pts[:, 2] / r))
    beams = hdl64(32).elev_deg  # the fixture's 32 beams: evenly spaced rows of the real HDL-64E table
    assert beams.max() == pytest.approx(2.59) and beams.min() == pytest.approx(-23.75)
    # a point's apparent elevation spreads around its beam's (lidar.KITTI_ELEV_JITTER: 2 cm + 0.03 deg)
    assert elev.max() <= beams.max() + 1.0 and elev.min() >= beams.min() - 1.0
    far = r > 10
    off = np.abs(elev[far, None] - beams[None, :]).min(1)
    assert far.sum() > 1000 and np.quantile(off, 0.99) < 0.3
    assert r.max() <= 120.5 and r.min() >= 1.9


def test_kitti_camera_agrees_with_lidar(kitti):
    """A point's pixel (P2 @ Tr @ x) shows the point's class in the written mask."""
    root, _ = kitti
    seq = root / "sequences" / "00"
    calib = read_calib(seq / "calib.txt")
    Tr = np.vstack([calib["Tr"], [0, 0, 0, 1]])
    fractions, total = [], 0
    for i in range(3):
        pts = np.fromfile(seq / "velodyne" / f"{i:06d}.bin", np.float32).reshape(-1, 4)
        labels = np.fromfile(seq / "labels" / f"{i:06d}.label", np.uint32) & 0xFFFF
        mask = np.array(Image.open(seq / "image_2_semantic" / f"{i:06d}.png")).astype(np.int64)
        xyz1 = np.concatenate([pts[:, :3].astype(np.float64), np.ones((len(pts), 1))], 1)
        uvw = xyz1 @ (calib["P2"] @ Tr).T
        frac, n = pixel_agreement(uvw, labels.astype(np.int64), mask)
        fractions.append(frac)
        total += n
    assert total > 1000
    assert min(fractions) > 0.85, fractions
    # the image is not uniform: several classes are visible and sky (0) exists
    assert len(np.unique(mask)) >= 8 and (mask == 0).any()


def test_kitti_moving_objects_get_moving_ids(kitti):
    root, summary = kitti
    labels = np.concatenate([np.fromfile(p, np.uint32) for p in sorted((root / "sequences" / "00" / "labels").glob("*.label"))])
    sem, inst = labels & 0xFFFF, labels >> 16
    moving = np.isin(sem, list(KITTI_MOVING))
    assert moving.any(), "no moving object seen"
    assert (~moving & (sem == 10)).any() or (~moving & (sem == 30)).any()  # parked cars / standing persons too
    # things carry instance ids, stuff does not
    assert np.all(inst[np.isin(sem, [40, 48, 50, 70, 72])] == 0)
    assert np.all(inst[moving] > 0)
    # every point of one instance has one semantic class
    for i in np.unique(inst[inst > 0])[:20]:
        assert len(np.unique(sem[inst == i])) == 1


def test_kitti_determinism_and_workers(tmp_path):
    kw = dict(sequences=["04"], frames=2, seed=11, beams=16, azimuth_steps=256, image_scale=0.1, progress=False)
    generate("semantickitti", tmp_path / "a", **kw)
    generate("semantickitti", tmp_path / "b", workers=2, **kw)
    generate("semantickitti", tmp_path / "c", **{**kw, "seed": 12})
    da, db, dc = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert da == db
    assert da.keys() == dc.keys()
    assert da["sequences/04/velodyne/000000.bin"] != dc["sequences/04/velodyne/000000.bin"]
    assert da["sequences/04/image_2/000000.png"] != dc["sequences/04/image_2/000000.png"]


def test_kitti_class_variety(kitti):
    """Across a sequence every major class shows up in the LiDAR labels."""
    _, summary = kitti
    seen = set(summary["class_points"])
    for name in ("road", "sidewalk", "building", "vegetation", "trunk", "terrain", "pole", "car", "person"):
        assert name in seen, (name, sorted(seen))


def test_without_cameras(tmp_path):
    generate("semantickitti", tmp_path, sequences=["08"], frames=1, beams=16, azimuth_steps=128, cameras=False,
             progress=False)
    seq = tmp_path / "sequences" / "08"
    assert (seq / "velodyne" / "000000.bin").exists() and (seq / "labels" / "000000.label").exists()
    assert not (seq / "image_2").exists() and (seq / "calib.txt").exists()


# ------------------------------------------------------------------------------------------------ nuScenes
def load_tables(root: Path, version: str = "v1.0-trainval") -> dict[str, list]:
    return {p.stem: json.loads(p.read_text()) for p in (root / version).glob("*.json")}


def test_nuscenes_tables(nus):
    root, summary = nus
    T = load_tables(root)
    for name in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose", "log", "category",
                 "lidarseg", "attribute", "visibility", "instance", "sample_annotation", "map"):
        assert name in T, name
    cats = load_yaml("nuscenes")["categories"]
    assert len(T["category"]) == 32
    assert {c["name"]: c["index"] for c in T["category"]} == {k: v["index"] for k, v in cats.items()}
    tokens = [r["token"] for tab in ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "log")
              for r in T[tab]]
    assert all(len(t) == 32 and int(t, 16) >= 0 for t in tokens) and len(set(tokens)) == len(tokens)
    splits = load_yaml("nuscenes_splits")
    assert [s["name"] for s in T["scene"]] == ["scene-0001", "scene-0003"]
    assert "scene-0001" in splits["train"] and "scene-0003" in splits["val"]
    samples = {s["token"]: s for s in T["sample"]}
    assert len(samples) == 6
    for sc in T["scene"]:
        tok, n = sc["first_sample_token"], 0
        prev_ts = None
        while tok:
            s = samples[tok]
            if prev_ts is not None:
                assert 0.45e6 < s["timestamp"] - prev_ts < 0.55e6  # 2 Hz keyframes
            prev_ts, tok, n = s["timestamp"], s["next"], n + 1
        assert n == sc["nbr_samples"] == 3
    sensors = {s["token"]: s for s in T["sensor"]}
    cs = {c["token"]: c for c in T["calibrated_sensor"]}
    per_sample: dict[str, list] = {}
    for sd in T["sample_data"]:
        per_sample.setdefault(sd["sample_token"], []).append(sensors[cs[sd["calibrated_sensor_token"]]["sensor_token"]]["channel"])
    assert all(sorted(v) == sorted(["LIDAR_TOP", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK",
                                    "CAM_BACK_LEFT", "CAM_FRONT_LEFT"]) for v in per_sample.values())
    lidar_cs = [c for c in T["calibrated_sensor"] if sensors[c["sensor_token"]]["channel"] == "LIDAR_TOP"][0]
    np.testing.assert_allclose(lidar_cs["rotation"], [0.7071, 0, 0, -0.7071], atol=0.01)
    assert abs(lidar_cs["translation"][2] - 1.84) < 0.05
    assert len(T["lidarseg"]) == 6
    assert T["map"][0]["log_tokens"] == [r["token"] for r in T["log"]]


def test_nuscenes_files(nus):
    root, _ = nus
    T = load_tables(root)
    sd_by_token = {sd["token"]: sd for sd in T["sample_data"]}
    for rec in T["lidarseg"]:
        sd = sd_by_token[rec["sample_data_token"]]
        pts = np.fromfile(root / sd["filename"], np.float32).reshape(-1, 5)
        lab = np.fromfile(root / rec["filename"], np.uint8)
        assert len(lab) == len(pts) > 3000
        assert rec["filename"] == f"lidarseg/v1.0-trainval/{sd['token']}_lidarseg.bin"
        assert pts[:, 3].min() >= 0 and pts[:, 3].max() <= 255 and np.all(pts[:, 3] == np.round(pts[:, 3]))
        assert set(np.unique(pts[:, 4]).tolist()) <= set(range(32))
        assert lab.max() <= 31
        r = np.linalg.norm(pts[:, :3], axis=1)
        elev = np.degrees(np.arcsin(pts[:, 2] / r))
        assert elev.max() <= 10.3 and elev.min() >= -30.3 and r.max() <= 70.5
    cams = [sd for sd in T["sample_data"] if sd["fileformat"] == "jpg"]
    assert len(cams) == 36
    for sd in cams[:6]:
        img = Image.open(root / sd["filename"])
        assert img.format == "JPEG" and img.size == (sd["width"], sd["height"]) == (160, 90)
        name = Path(sd["filename"])
        mask = Image.open(root / "samples" / f"{name.parent.name}_SEMANTIC" / (name.stem + ".png"))
        assert mask.size == (160, 90) and np.array(mask).max() <= 31


def test_nuscenes_camera_agrees_with_lidar(nus):
    """lidar -> ego(lidar time) -> global -> ego(camera time) -> camera -> pixel shows the point's class."""
    root, _ = nus
    T = load_tables(root)
    sensors = {s["token"]: s["channel"] for s in T["sensor"]}
    cs = {c["token"]: c for c in T["calibrated_sensor"]}
    ego = {e["token"]: e for e in T["ego_pose"]}
    seg = {r["sample_data_token"]: r["filename"] for r in T["lidarseg"]}
    by_sample: dict[str, dict] = {}
    for sd in T["sample_data"]:
        by_sample.setdefault(sd["sample_token"], {})[sensors[cs[sd["calibrated_sensor_token"]]["sensor_token"]]] = sd
    fractions, total, moved = [], 0, []
    for data in by_sample.values():
        lid = data["LIDAR_TOP"]
        pts = np.fromfile(root / lid["filename"], np.float32).reshape(-1, 5)
        lab = np.fromfile(root / seg[lid["token"]], np.uint8).astype(np.int64)
        keep = lab != 31  # points on the ego car cannot be seen by its cameras
        pts, lab = pts[keep], lab[keep]
        glob_from_lidar = pose(ego[lid["ego_pose_token"]]) @ pose(cs[lid["calibrated_sensor_token"]])
        xyz1 = np.concatenate([pts[:, :3].astype(np.float64), np.ones((len(pts), 1))], 1)
        g = xyz1 @ glob_from_lidar.T
        for ch, sd in data.items():
            if ch == "LIDAR_TOP":
                continue
            c = cs[sd["calibrated_sensor_token"]]
            cam_from_glob = np.linalg.inv(pose(ego[sd["ego_pose_token"]]) @ pose(c))
            pc = (g @ cam_from_glob.T)[:, :3]
            uvw = pc @ np.array(c["camera_intrinsic"]).T
            name = Path(sd["filename"])
            mask = np.array(Image.open(root / "samples" / f"{name.parent.name}_SEMANTIC" / (name.stem + ".png")))
            frac, n = pixel_agreement(uvw, lab, mask.astype(np.int64))
            if n > 50:
                fractions.append((frac, n))
                total += n
            moved.append(np.linalg.norm(np.array(ego[sd["ego_pose_token"]]["translation"])
                                        - ego[lid["ego_pose_token"]]["translation"]))
    assert total > 2000
    f, n = np.array(fractions).T
    # cameras sit lower and to the side of the roof LiDAR: a car right beside a side camera hides what the LiDAR
    # sees over its roof, so single cameras can score much lower; the point-weighted mean is about 0.91-0.94
    assert (f * n).sum() / n.sum() > 0.88 and np.median(f) > 0.85, fractions
    assert max(moved) > 0.05  # the ego moves between the lidar and camera timestamps


def test_nuscenes_determinism(nus, tmp_path):
    root, _ = nus
    generate("nuscenes", tmp_path, sequences=["scene-0001", "scene-0003"], frames=3, seed=5, beams=32,
             azimuth_steps=540, image_scale=0.1, progress=False, workers=2)
    assert digest(tmp_path) == digest(root)


def test_nuscenes_default_scenes_and_mini(tmp_path):
    s = generate("nuscenes", tmp_path, frames=1, beams=8, azimuth_steps=64, cameras=False, version="v1.0-mini",
                 progress=False)
    splits = load_yaml("nuscenes_splits")
    assert s["sequences"][:2] == splits["mini_train"][:2] and s["sequences"][2] in splits["mini_val"]
    assert (tmp_path / "v1.0-mini" / "scene.json").exists() and (tmp_path / "lidarseg" / "v1.0-mini").is_dir()


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="format"):
        generate("waymo", tmp_path)
    with pytest.raises(ConfigError, match="00..21"):
        generate("semantickitti", tmp_path, sequences=["8"])
    with pytest.raises(ConfigError, match="scene"):
        generate("nuscenes", tmp_path, sequences=["scene-9999"])
    with pytest.raises(ConfigError, match="frames"):
        generate("semantickitti", tmp_path, frames=0)
