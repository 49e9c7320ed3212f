"""Pinhole camera geometry shared by the SemanticKITTI and nuScenes readers.

A lidar point p (reader frame: x forward, y left, z up) maps to the camera as

    q = T_cam_lidar @ [p, 1]            (camera frame: x right, y down, z forward = depth)
    u = K[0] @ q / q_z,  v = K[1] @ q / q_z

and is *visible* when its depth q_z exceeds `min_depth` (1 m, as in the 2D-3D distillation
literature: SLidR, ScaLR) and the pixel lies inside the image (0 <= u < W, 0 <= v < H).
Pixel coordinates are continuous: pixel (row, col) = (floor(v), floor(u)) covers
[col, col + 1) x [row, row + 1).

Quaternions follow the nuScenes tables: (w, x, y, z), unit norm, active rotation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError
from .base import CameraFrame


# ------------------------------------------------------------------------------- quaternions


def quat_to_rot(q: Sequence[float]) -> np.ndarray:
    """Quaternion (w, x, y, z) -> (3, 3) rotation matrix. The quaternion is normalised first."""
    w, x, y, z = (float(c) for c in q)
    n = np.sqrt(w * w + x * x + y * y + z * z)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError(f"not a rotation quaternion: {list(q)}")
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def rot_to_quat(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> quaternion (4,) (w, x, y, z) with w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    trace = R[0, 0] + R[1, 1] + R[2, 2]
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.array(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def pose_matrix(translation: Sequence[float], rotation: Sequence[float]) -> np.ndarray:
    """nuScenes (translation (3,), rotation quaternion (w, x, y, z)) -> (4, 4) child -> parent."""
    T = np.eye(4, dtype=np.float64)
    T[:3, :3] = quat_to_rot(rotation)
    T[:3, 3] = np.asarray(translation, dtype=np.float64)
    return T


def invert_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4, 4) transform: [R | t]^-1 = [R^T | -R^T t]."""
    R, t = T[:3, :3], T[:3, 3]
    out = np.eye(4, dtype=np.float64)
    out[:3, :3] = R.T
    out[:3, 3] = -R.T @ t
    return out


# -------------------------------------------------------------------------------- projection


def project_points(xyz: np.ndarray, cam: CameraFrame, min_depth: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Lidar points -> pixel coordinates in one camera.

    xyz: (N, 3) (or (N, >=3), extra columns ignored) in the reader's lidar frame.
    Returns uv (N, 2) float32 (u = column, v = row, continuous pixel coordinates) and
    valid (N,) bool (depth > min_depth and inside the image). uv is -1 where not valid.

    Pixel centres sit at integer coordinates (the OpenCV / KITTI convention, which the synthetic
    renderer follows): the pixel of a point is `pixel_index(uv)` = round(uv), so "inside the image"
    means -0.5 <= u < W - 0.5 and -0.5 <= v < H - 0.5. For `grid_sample` with align_corners=False
    the normalised coordinate is (u + 0.5) / W * 2 - 1.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] < 3:
        raise ValueError(f"expected (N, 3) points, got shape {xyz.shape}")
    T = np.asarray(cam.T_cam_lidar, dtype=np.float64)
    K = np.asarray(cam.K, dtype=np.float64)
    p = xyz[:, :3].astype(np.float64) @ T[:3, :3].T + T[:3, 3]  # (N, 3) camera frame
    depth = p[:, 2]
    in_front = depth > max(float(min_depth), 1e-6)
    safe = np.where(in_front, depth, 1.0)
    pix = p @ K.T  # (N, 3) homogeneous pixels
    u = pix[:, 0] / safe
    v = pix[:, 1] / safe
    valid = in_front & (u >= -0.5) & (u < cam.width - 0.5) & (v >= -0.5) & (v < cam.height - 0.5)
    uv = np.stack([u, v], axis=1).astype(np.float32)  # (N, 2)
    uv[~valid] = -1.0
    return uv, valid


def pixel_index(uv: np.ndarray) -> np.ndarray:
    """(N, 2) continuous (u, v) of valid points -> (N, 2) int64 (column, row) of their pixel."""
    return np.floor(np.asarray(uv, dtype=np.float64) + 0.5).astype(np.int64)


# ---------------------------------------------------------------------------------- images


def load_image(cam: CameraFrame) -> np.ndarray:
    """The camera image as (H, W, 3) uint8 RGB; its size must match the CameraFrame."""
    from PIL import Image

    path = Path(cam.image_path)
    if not path.is_file():
        raise DataError(f"{path}: camera image {cam.name} is missing")
    try:
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read camera image ({exc})") from exc
    if image.shape[:2] != (cam.height, cam.width):
        raise DataError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]}, the calibration says {cam.width}x{cam.height}"
        )
    return image


def load_mask(cam: CameraFrame) -> np.ndarray | None:
    """Per-pixel raw class ids (H, W) int64 from a 16-bit PNG (synthetic data only), or None."""
    if cam.mask_path is None:
        return None
    from PIL import Image

    path = Path(cam.mask_path)
    if not path.is_file():
        return None
    try:
        with Image.open(path) as im:
            mask = np.asarray(im).astype(np.int64)
    except OSError as exc:
        raise DataError(f"{path}: cannot read semantic mask ({exc})") from exc
    if mask.ndim != 2:
        raise DataError(f"{path}: expected a single-channel (16-bit) mask, got shape {mask.shape}")
    if mask.shape != (cam.height, cam.width):
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, the image is {cam.width}x{cam.height}")
    return mask


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the image header (no pixel decoding)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.size[0]), int(im.size[1])
    except FileNotFoundError as exc:
        raise DataError(f"{path}: camera image is missing") from exc
    except OSError as exc:
        raise DataError(f"{path}: cannot read camera image ({exc})") from exc
