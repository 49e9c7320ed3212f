"""On-disk formats of the synthetic datasets: SemanticKITTI and nuScenes(-lidarseg), written exactly as the
official releases lay them out, plus the synthetic-only per-pixel class masks.

SemanticKITTI (Behley et al., ICCV 2019, on the KITTI odometry layout of Geiger et al., CVPR 2012):
  sequences/XX/velodyne/NNNNNN.bin    float32 (N, 4) x, y, z, remission
  sequences/XX/labels/NNNNNN.label    uint32 (N,) = semantic raw id | instance id << 16 (not for 11-21)
  sequences/XX/image_2/NNNNNN.png     RGB image of the left colour camera
  sequences/XX/calib.txt              "P0: 12 floats" ... "P3:", "Tr:" (velodyne -> rectified camera 0)
  sequences/XX/poses.txt              camera-0 poses (3x4 row-major) in the first camera-0 frame
  sequences/XX/times.txt              seconds since the first frame
  sequences/XX/image_2_semantic/NNNNNN.png   synthetic only: uint16 raw label id per pixel, 0 = sky

nuScenes (Caesar et al., CVPR 2020) with lidarseg (Fong et al., 2021): JSON tables in <version>/,
samples/LIDAR_TOP/*.pcd.bin float32 (N, 5) x, y, z, intensity 0..255, ring; samples/CAM_*/*.jpg;
lidarseg/<version>/<token>_lidarseg.bin uint8 (N,) category index; synthetic only:
samples/CAM_*_SEMANTIC/<image name>.png uint16 category index per pixel (0 also for sky).
All files are written atomically (balvit.io).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from ...io import atomic_path, save_image, write_bytes, write_json, write_text

# ================================================================================================ KITTI
KITTI_SIZE = (1242, 375)  # image width, height
KITTI_K = (721.5377, 721.5377, 609.5593, 172.854)  # fx, fy, cx, cy (KITTI 2011_09_26 calibration)
# camera centres relative to rectified camera 0 as 4th columns of P_i = K [I | t_i] (metres)
KITTI_CAM_T = {
    0: np.zeros(3),
    1: np.array([-0.5371500, 0.0, 0.0]),
    2: np.array([0.0598528, -0.0003589, 0.0027459]),
    3: np.array([-0.4716070, 0.0021058, 0.0049152]),
}
_TR_R = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04],
                  [1.480249e-02, 7.280733e-04, -9.998902e-01],
                  [9.998621e-01, 7.523790e-03, 1.480755e-02]])
_TR_T = np.array([-4.069766e-03, -7.631618e-02, -2.717806e-01])
KITTI_LIDAR_HEIGHT = 1.73
KITTI_DT = 0.10364  # seconds between scans
KITTI_TEST_SEQUENCES = {f"{i:02d}" for i in range(11, 22)}


def kitti_tr() -> np.ndarray:
    """4x4 velodyne -> rectified camera 0 (rotation orthonormalised)."""
    u, _, vt = np.linalg.svd(_TR_R)
    T = np.eye(4)
    T[:3, :3] = u @ vt
    T[:3, 3] = _TR_T
    return T


def kitti_image_size(scale: float) -> tuple[int, int]:
    return max(int(round(KITTI_SIZE[0] * scale)), 8), max(int(round(KITTI_SIZE[1] * scale)), 8)


def kitti_K(scale: float) -> np.ndarray:
    fx, fy, cx, cy = KITTI_K
    return np.array([[fx * scale, 0.0, cx * scale], [0.0, fy * scale, cy * scale], [0.0, 0.0, 1.0]])


def kitti_projections(scale: float) -> dict[str, np.ndarray]:
    K = kitti_K(scale)
    out = {}
    for i in range(4):
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[:, 3] = K @ KITTI_CAM_T[i]
        out[f"P{i}"] = P
    return out


def _row(values: np.ndarray) -> str:
    return " ".join(f"{v:.12e}" for v in np.asarray(values, np.float64).ravel())


def write_kitti_calib(seq_dir: Path, scale: float) -> None:
    P = kitti_projections(scale)
    lines = [f"{k}: {_row(P[k])}" for k in ("P0", "P1", "P2", "P3")] + [f"Tr: {_row(kitti_tr()[:3])}"]
    write_text(seq_dir / "calib.txt", "\n".join(lines) + "\n")


def write_kitti_poses(seq_dir: Path, poses: list[np.ndarray]) -> None:
    write_text(seq_dir / "poses.txt", "".join(_row(T[:3]) + "\n" for T in poses))


def write_kitti_times(seq_dir: Path, times: list[float]) -> None:
    write_text(seq_dir / "times.txt", "".join(f"{t:.6e}\n" for t in times))


def write_kitti_frame(seq_dir: Path, index: int, points: np.ndarray, labels: np.ndarray | None,
                      image: np.ndarray | None, mask: np.ndarray | None) -> None:
    name = f"{index:06d}"
    write_bytes(seq_dir / "velodyne" / f"{name}.bin", np.ascontiguousarray(points, dtype="<f4").tobytes())
    if labels is not None:
        write_bytes(seq_dir / "labels" / f"{name}.label", np.ascontiguousarray(labels, dtype="<u4").tobytes())
    if image is not None:
        save_image(seq_dir / "image_2" / f"{name}.png", Image.fromarray(image, "RGB"))
    if mask is not None:
        save_image(seq_dir / "image_2_semantic" / f"{name}.png", mask_image(mask))


def mask_image(mask: np.ndarray) -> Image.Image:
    """uint16 (H, W) -> 16-bit greyscale PNG image."""
    return Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint16))


# ================================================================================================ nuScenes
NUS_SIZE = (1600, 900)
NUS_LIDAR_T = np.array([0.943713, 0.0, 1.84023])
# channel: (translation in the ego frame (m), yaw (deg), fx, cx, cy, time offset after the lidar (ms))
NUS_CAMERAS = {
    "CAM_FRONT": ((1.70079, 0.01595, 1.51095), 0.0, 1266.417, 816.267, 491.507, 12),
    "CAM_FRONT_RIGHT": ((1.55085, -0.49330, 1.49575), -55.0, 1260.845, 807.969, 495.334, 20),
    "CAM_BACK_RIGHT": ((1.03570, -0.48430, 1.59100), -110.0, 1259.514, 807.252, 501.196, 29),
    "CAM_BACK": ((0.02832, 0.00345, 1.57910), 180.0, 809.221, 829.219, 481.778, 37),
    "CAM_BACK_LEFT": ((1.03570, 0.48430, 1.59100), 110.0, 1256.748, 817.789, 451.954, 45),
    "CAM_FRONT_LEFT": ((1.52194, 0.49463, 1.50932), 55.0, 1272.598, 826.616, 479.752, 4),
}
NUS_CAM_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # ego <- camera (yaw 0)
NUS_LIDAR_FROM_SCAN = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x right, y forward


def token(*key) -> str:
    """Deterministic 32-hex token."""
    return hashlib.md5("/".join(str(k) for k in key).encode()).hexdigest()


NUS_CATEGORY_DESCRIPTIONS = {
    "noise": "Any lidar return that does not correspond to a physical object.",
    "animal": "All animals.",
    "vehicle.ego": "The vehicle on which the sensors are mounted.",
}


def category_table(categories: dict) -> list[dict]:
    """32 category records (token, name, description, index) from labels/nuscenes.yaml `categories`."""
    rows = []
    for name, v in sorted(categories.items(), key=lambda kv: kv[1]["index"]):
        rows.append({"token": token("category", name), "name": name,
                     "description": NUS_CATEGORY_DESCRIPTIONS.get(name, name.replace(".", " ").replace("_", " ")),
                     "index": int(v["index"])})
    return rows


VISIBILITY = [
    {"description": "visibility of whole object is between 0 and 40%", "token": "1", "level": "v0-40"},
    {"description": "visibility of whole object is between 40 and 60%", "token": "2", "level": "v40-60"},
    {"description": "visibility of whole object is between 60 and 80%", "token": "3", "level": "v60-80"},
    {"description": "visibility of whole object is between 80 and 100%", "token": "4", "level": "v80-100"},
]


def write_nuscenes_tables(root: Path, version: str, tables: dict[str, list]) -> None:
    for name, rows in tables.items():
        write_json(root / version / f"{name}.json", rows)


def write_nuscenes_lidar(root: Path, filename: str, points: np.ndarray) -> None:
    write_bytes(root / filename, np.ascontiguousarray(points, dtype="<f4").tobytes())


def write_nuscenes_lidarseg(root: Path, filename: str, labels: np.ndarray) -> None:
    write_bytes(root / filename, np.ascontiguousarray(labels, dtype=np.uint8).tobytes())


def write_nuscenes_image(root: Path, filename: str, image: np.ndarray) -> None:
    with atomic_path(root / filename) as tmp:
        Image.fromarray(image, "RGB").save(tmp, format="JPEG", quality=92)


def nuscenes_mask_name(image_filename: str) -> str:
    """samples/CAM_X/<name>.jpg -> samples/CAM_X_SEMANTIC/<name>.png"""
    p = Path(image_filename)
    return str(Path(p.parts[0]) / f"{p.parts[1]}_SEMANTIC" / (p.stem + ".png"))


def write_nuscenes_mask(root: Path, filename: str, mask: np.ndarray) -> None:
    save_image(root / filename, mask_image(mask))


def write_map(root: Path, filename: str) -> None:
    img = np.zeros((64, 64), np.uint8)
    save_image(root / filename, Image.fromarray(img, "L"))
