"""Tiny hand-made datasets in the official SemanticKITTI and nuScenes-lidarseg layouts, for tests.

Geometry is chosen so that answers can be worked out by hand (see the docstrings); every writer
returns what it wrote so tests can compare.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from balvit.data.camera import rot_to_quat
from balvit.data.labels import load_yaml

# ------------------------------------------------------------------------------ SemanticKITTI

KITTI_K = np.array([[50.0, 0.0, 32.0], [0.0, 50.0, 16.0], [0.0, 0.0, 1.0]])
KITTI_SIZE = (64, 32)  # width, height of image_2
KITTI_CAM2_OFFSET = np.array([0.06, 0.0, 0.0])  # cam2 position in rectified cam0, metres
# velodyne (x fwd, y left, z up) -> cam0 (x right, y down, z fwd), then a small offset
KITTI_TR = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
# every official sequence: train 00-07, 09, 10; valid 08; test 11-21 (one unlabelled scan each)
KITTI_DEFAULT_COUNTS = {f"{s:02d}": (3 if s == 0 else 2 if s <= 10 else 1) for s in range(22)}
KITTI_RAW_IDS = np.array([0, 1, 10, 11, 40, 44, 48, 50, 52, 70, 72, 80, 81, 252, 254])


def _kitti_calib_text() -> str:
    P0 = np.hstack([KITTI_K, np.zeros((3, 1))])
    P2 = np.hstack([KITTI_K, (KITTI_K @ KITTI_CAM2_OFFSET)[:, None]])
    rows = {"P0": P0, "P1": P0, "P2": P2, "P3": P2, "Tr": KITTI_TR}
    return "".join(f"{k}: " + " ".join(f"{v:.12e}" for v in m.reshape(-1)) + "\n" for k, m in rows.items())


def write_kitti(
    root: Path,
    counts: dict[str, int] | None = None,
    n_points: int = 300,
    seed: int = 0,
    calib: bool = True,
) -> dict:
    """<root>/sequences/SS/{velodyne,labels,image_2,calib.txt,poses.txt}; test sequences (>= 11) get
    no labels. Returns {"points": {frame: (N, 4)}, "semantic": {frame: (N,) raw}, "instance": {...}}."""
    counts = counts or KITTI_DEFAULT_COUNTS
    rng = np.random.default_rng(seed)
    out: dict = {"points": {}, "semantic": {}, "instance": {}}
    for seq, n_frames in counts.items():
        base = root / "sequences" / seq
        for sub in ("velodyne", "image_2"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        labelled = int(seq) < 11
        if labelled:
            (base / "labels").mkdir(exist_ok=True)
        if calib:
            (base / "calib.txt").write_text(_kitti_calib_text())
        poses = []
        for k in range(n_frames):
            frame = f"{seq}/{k:06d}"
            pts = np.empty((n_points, 4), dtype=np.float32)
            pts[:, :3] = rng.uniform(-20, 20, size=(n_points, 3))
            pts[:, 3] = rng.uniform(0, 1, size=n_points)
            pts.tofile(base / "velodyne" / f"{k:06d}.bin")
            out["points"][frame] = pts
            if labelled:
                sem = rng.choice(KITTI_RAW_IDS, size=n_points).astype(np.uint32)
                inst = rng.integers(0, 5, size=n_points).astype(np.uint32)
                (sem | (inst << np.uint32(16))).astype(np.uint32).tofile(base / "labels" / f"{k:06d}.label")
                out["semantic"][frame], out["instance"][frame] = sem, inst
            Image.new("RGB", KITTI_SIZE, (10 * k, 20, 30)).save(base / "image_2" / f"{k:06d}.png")
            poses.append([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, float(k)])  # cam0 moves 1 m per frame along z
        (base / "poses.txt").write_text("".join(" ".join(f"{v:.6e}" for v in p) + "\n" for p in poses))
    return out


# ----------------------------------------------------------------------------------- nuScenes

NUS_VERSION = "v1.0-mini"
NUS_SCENES = {"scene-0061": "mini_train", "scene-0103": "mini_val"}  # official mini split membership
NUS_K = np.array([[100.0, 0.0, 100.0], [0.0, 100.0, 50.0], [0.0, 0.0, 1.0]])
NUS_SIZE = (200, 100)
CAMERA_YAW = {
    "CAM_FRONT": 0.0, "CAM_FRONT_RIGHT": -55.0, "CAM_BACK_RIGHT": -110.0,
    "CAM_BACK": 180.0, "CAM_BACK_LEFT": 110.0, "CAM_FRONT_LEFT": 55.0,
}  # fmt: skip
# LIDAR_TOP in the ego frame: x right, y forward -> R maps lidar y to ego x, lidar x to ego -y
LIDAR_R = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
LIDAR_T = np.array([0.9, 0.0, 1.8])
CAM_T = np.array([1.5, 0.0, 1.5])
# camera axes (x right, y down, z forward) for a camera looking along ego +x
CAM_BASE_R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
EGO_START = np.array([100.0, 50.0, 0.0])  # global position of the ego at the first lidar sweep


def _rz(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])


def _tok(kind: str, *parts) -> str:
    """Deterministic 32-character hex tokens, like the official ones."""
    return hashlib.md5("-".join([kind, *map(str, parts)]).encode()).hexdigest()


def write_nuscenes(
    root: Path,
    n_points: int = 200,
    samples_per_scene: int = 2,
    category_perm: list[int] | None = None,
    ego_motion: tuple[float, float, float] = (2.0, 0.0, 0.0),
    seed: int = 0,
) -> dict:
    """<root>/v1.0-mini/*.json, samples/LIDAR_TOP, samples/CAM_*, lidarseg/v1.0-mini.

    Every keyframe k of a scene: the ego is at EGO_START + (10 k, 0, 0) (identity rotation) at the
    lidar timestamp and `ego_motion` further at the camera timestamps. The scan's point 0 is at
    lidar (0, 10, 0), i.e. 10 m ahead. `category_perm[i]` is the index category i (official order)
    gets in category.json. Returns tokens and the arrays written, in reader order.
    """
    rng = np.random.default_rng(seed)
    tables = root / NUS_VERSION
    tables.mkdir(parents=True, exist_ok=True)
    cats = list(load_yaml("nuscenes")["categories"])  # official order
    perm = category_perm or list(range(len(cats)))
    index_of = {name: int(perm[i]) for i, name in enumerate(cats)}
    category = [{"token": _tok("cat", n), "name": n, "description": "", "index": index_of[n]} for n in cats]

    sensors = [{"token": _tok("sensor", c), "channel": c, "modality": "camera"} for c in CAMERA_YAW]
    sensors.append({"token": _tok("sensor", "LIDAR_TOP"), "channel": "LIDAR_TOP", "modality": "lidar"})
    calib = [
        {
            "token": _tok("cs", "LIDAR_TOP"), "sensor_token": _tok("sensor", "LIDAR_TOP"),
            "translation": LIDAR_T.tolist(), "rotation": rot_to_quat(LIDAR_R).tolist(), "camera_intrinsic": [],
        }
    ]
    for cam, yaw in CAMERA_YAW.items():
        calib.append(
            {
                "token": _tok("cs", cam), "sensor_token": _tok("sensor", cam), "translation": CAM_T.tolist(),
                "rotation": rot_to_quat(_rz(yaw) @ CAM_BASE_R).tolist(), "camera_intrinsic": NUS_K.tolist(),
            }
        )
    calib.append({"token": _tok("cs", "RADAR_FRONT"), "sensor_token": "radar", "translation": [0, 0, 0],
                  "rotation": [1, 0, 0, 0], "camera_intrinsic": []})  # fmt: skip

    scene_tab, sample_tab, sd_tab, ego_tab, seg_tab = [], [], [], [], []
    out: dict = {"frames": [], "points": {}, "raw_labels": {}, "index_of": index_of, "samples": {}}
    t0 = 1_532_402_927_000_000
    for s_idx, scene in enumerate(NUS_SCENES):
        sample_tokens = [_tok("sample", scene, k) for k in range(samples_per_scene)]
        scene_tab.append(
            {"token": _tok("scene", scene), "name": scene, "log_token": "log", "nbr_samples": samples_per_scene,
             "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1], "description": ""}
        )  # fmt: skip
        # write the keyframes in reverse time order: the reader must sort them itself
        for k in reversed(range(samples_per_scene)):
            ts = t0 + s_idx * 100_000_000 + k * 500_000
            stoken = sample_tokens[k]
            sample_tab.append(
                {"token": stoken, "timestamp": ts, "scene_token": _tok("scene", scene),
                 "prev": sample_tokens[k - 1] if k else "", "next": sample_tokens[k + 1] if k + 1 < samples_per_scene else ""}
            )  # fmt: skip
            ego_l = EGO_START + np.array([10.0 * k, 0.0, 0.0])
            lidar_tok = _tok("sd", scene, k, "LIDAR_TOP")
            ego_tab.append({"token": _tok("ego", lidar_tok), "timestamp": ts, "translation": ego_l.tolist(),
                            "rotation": [1.0, 0.0, 0.0, 0.0]})  # fmt: skip
            name = f"n008-2018__LIDAR_TOP__{ts}.pcd.bin"
            sd_tab.append(
                {"token": lidar_tok, "sample_token": stoken, "ego_pose_token": _tok("ego", lidar_tok),
                 "calibrated_sensor_token": _tok("cs", "LIDAR_TOP"), "timestamp": ts, "fileformat": "pcd",
                 "is_key_frame": True, "height": 0, "width": 0, "filename": f"samples/LIDAR_TOP/{name}",
                 "prev": "", "next": ""}
            )  # fmt: skip
            raw = np.zeros((n_points, 5), dtype=np.float32)
            raw[:, :3] = rng.uniform(-30, 30, size=(n_points, 3))
            raw[0, :3] = (0.0, 10.0, 0.0)  # 10 m ahead of the car
            raw[:, 3] = rng.integers(0, 256, size=n_points)
            raw[:, 4] = rng.integers(0, 32, size=n_points)
            (root / "samples" / "LIDAR_TOP").mkdir(parents=True, exist_ok=True)
            raw.tofile(root / "samples" / "LIDAR_TOP" / name)
            names = rng.choice(cats, size=n_points)
            labels = np.array([index_of[n] for n in names], dtype=np.uint8)
            seg_name = f"lidarseg/{NUS_VERSION}/{lidar_tok}_lidarseg.bin"
            (root / seg_name).parent.mkdir(parents=True, exist_ok=True)
            labels.tofile(root / seg_name)
            seg_tab.append({"token": _tok("seg", lidar_tok), "sample_data_token": lidar_tok, "filename": seg_name})
            # a non-key sweep and a radar keyframe that the reader must skip
            sweep_tok = _tok("sd", scene, k, "sweep")
            sd_tab.append(
                {"token": sweep_tok, "sample_token": stoken, "ego_pose_token": _tok("ego", lidar_tok),
                 "calibrated_sensor_token": _tok("cs", "LIDAR_TOP"), "timestamp": ts + 50_000, "fileformat": "pcd",
                 "is_key_frame": False, "height": 0, "width": 0,
                 "filename": f"sweeps/LIDAR_TOP/n008__LIDAR_TOP__{ts + 50_000}.pcd.bin", "prev": "", "next": ""}
            )  # fmt: skip
            sd_tab.append(
                {"token": _tok("sd", scene, k, "radar"), "sample_token": stoken, "ego_pose_token": _tok("ego", lidar_tok),
                 "calibrated_sensor_token": _tok("cs", "RADAR_FRONT"), "timestamp": ts, "fileformat": "pcd",
                 "is_key_frame": True, "height": 0, "width": 0,
                 "filename": f"samples/RADAR_FRONT/n008__RADAR_FRONT__{ts}.pcd", "prev": "", "next": ""}
            )  # fmt: skip
            for cam in CAMERA_YAW:
                cam_tok = _tok("sd", scene, k, cam)
                cts = ts + 20_000
                ego_tab.append({"token": _tok("ego", cam_tok), "timestamp": cts,
                                "translation": (ego_l + np.array(ego_motion)).tolist(),
                                "rotation": [1.0, 0.0, 0.0, 0.0]})  # fmt: skip
                img_name = f"samples/{cam}/n008-2018__{cam}__{cts}.jpg"
                (root / img_name).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", NUS_SIZE, (40, 80, 120)).save(root / img_name)
                sd_tab.append(
                    {"token": cam_tok, "sample_token": stoken, "ego_pose_token": _tok("ego", cam_tok),
                     "calibrated_sensor_token": _tok("cs", cam), "timestamp": cts, "fileformat": "jpg",
                     "is_key_frame": True, "height": NUS_SIZE[1], "width": NUS_SIZE[0], "filename": img_name,
                     "prev": "", "next": ""}
                )  # fmt: skip
            out["samples"][lidar_tok] = stoken
            out["points"][lidar_tok] = raw
            out["raw_labels"][lidar_tok] = labels
            out.setdefault("names", {})[lidar_tok] = names
    for name, table in {
        "scene": scene_tab, "sample": sample_tab, "sample_data": sd_tab, "ego_pose": ego_tab,
        "calibrated_sensor": calib, "sensor": sensors, "category": category, "lidarseg": seg_tab,
    }.items():  # fmt: skip
        (tables / f"{name}.json").write_text(json.dumps(table, indent=0))
    # reader order: scene name, then time
    out["frames"] = [_tok("sd", s, k, "LIDAR_TOP") for s in sorted(NUS_SCENES) for k in range(samples_per_scene)]
    return out
