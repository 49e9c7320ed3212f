"""Camera geometry: quaternions, point -> pixel projection, image and mask loading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from balvit.data.base import CameraFrame
from balvit.data.camera import (
    invert_pose,
    load_image,
    load_mask,
    pose_matrix,
    project_points,
    quat_to_rot,
    rot_to_quat,
)
from balvit.errors import DataError

K = np.array([[100.0, 0.0, 80.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])
# lidar (x fwd, y left, z up) -> camera (x right, y down, z fwd), camera 0.5 m above the lidar
T = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.5], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])


def _cam(tmp_path=None, width=160, height=80, mask=None) -> CameraFrame:
    image = (tmp_path / "im.png") if tmp_path is not None else None
    return CameraFrame("cam", image, K, T, width, height, mask)


def test_quat_to_rot_known_rotations():
    s = np.sqrt(0.5)
    Rz90 = quat_to_rot([s, 0.0, 0.0, s])  # +90 deg about z: x -> y, y -> -x
    np.testing.assert_allclose(Rz90 @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(Rz90 @ [0, 1, 0], [-1, 0, 0], atol=1e-12)
    Rx180 = quat_to_rot([0.0, 2.0, 0.0, 0.0])  # not normalised on purpose
    np.testing.assert_allclose(Rx180, np.diag([1.0, -1.0, -1.0]), atol=1e-12)
    with pytest.raises(ValueError):
        quat_to_rot([0, 0, 0, 0])


@pytest.mark.parametrize("seed", range(6))
def test_rot_quat_round_trip(seed):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    q = q if q[0] >= 0 else -q
    R = quat_to_rot(q)
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(rot_to_quat(R), q, atol=1e-9)


@pytest.mark.parametrize("R", [np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])])
def test_rot_to_quat_half_turns(R):
    np.testing.assert_allclose(quat_to_rot(rot_to_quat(R)), R, atol=1e-12)


def test_pose_inverse():
    Tp = pose_matrix([1.0, -2.0, 3.0], [0.9, 0.1, -0.3, 0.2])
    np.testing.assert_allclose(Tp @ invert_pose(Tp), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(pose_matrix([1, 2, 3], [1, 0, 0, 0])[:3, 3], [1, 2, 3])


def test_project_points_by_hand():
    pts = np.array(
        [
            [10.0, 0.0, 0.5],  # camera (0, 0, 10): principal point
            [10.0, -2.0, 0.0],  # camera (2, 0.5, 10): u = 80 + 20, v = 40 + 5
            [0.9, 0.0, 0.5],  # 0.9 m ahead: closer than min_depth
            [-10.0, 0.0, 0.5],  # behind
            [10.0, 20.0, 0.5],  # u = 80 - 200: left of the image
            [4.0, -3.2, 0.5],  # u = 80 + 80 = 160 = width: just outside
            [5.0, 4.0, 2.5],  # camera (-4, -2, 5): u = 0, v = 0: the first pixel, inside
        ]
    )
    uv, valid = project_points(pts, _cam())
    assert uv.dtype == np.float32 and uv.shape == (7, 2)
    np.testing.assert_allclose(uv[0], [80.0, 40.0], atol=1e-4)
    np.testing.assert_allclose(uv[1], [100.0, 45.0], atol=1e-4)
    np.testing.assert_allclose(uv[6], [0.0, 0.0], atol=1e-4)
    assert valid.tolist() == [True, True, False, False, False, False, True]
    assert (uv[~valid] == -1).all()


def test_project_min_depth():
    pts = np.array([[1.5, 0.0, 0.5], [3.0, 0.0, 0.5]])
    assert project_points(pts, _cam(), min_depth=1.0)[1].tolist() == [True, True]
    assert project_points(pts, _cam(), min_depth=2.0)[1].tolist() == [False, True]


def test_load_image_and_size_check(tmp_path):
    Image.new("RGB", (160, 80), (1, 2, 3)).save(tmp_path / "im.png")
    image = load_image(_cam(tmp_path))
    assert image.shape == (80, 160, 3) and image.dtype == np.uint8 and tuple(image[5, 7]) == (1, 2, 3)
    with pytest.raises(DataError, match="im.png.*160x80.*calibration says 100x80"):
        load_image(_cam(tmp_path, width=100))
    (tmp_path / "im.png").unlink()
    with pytest.raises(DataError, match="im.png"):
        load_image(_cam(tmp_path))


def test_load_mask_16bit(tmp_path):
    ids = np.zeros((80, 160), dtype=np.uint16)
    ids[10:20, 30:40] = 259  # > 255: needs 16 bits
    ids[0, 0] = 48
    Image.fromarray(ids).save(tmp_path / "mask.png")
    mask = load_mask(_cam(tmp_path, mask=tmp_path / "mask.png"))
    assert mask.dtype == np.int64 and mask[15, 35] == 259 and mask[0, 0] == 48 and mask[50, 50] == 0
    assert load_mask(_cam(tmp_path)) is None
    assert load_mask(_cam(tmp_path, mask=tmp_path / "absent.png")) is None
    with pytest.raises(DataError, match="mask.png"):
        load_mask(_cam(tmp_path, width=10, mask=tmp_path / "mask.png"))
