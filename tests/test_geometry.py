"""balvit.geometry: the spherical / polar / Cartesian maps, their numpy and torch twins, k-NN."""

import numpy as np
import pytest
import torch

from balvit.geometry import (PLANE_AXES, PlaneGrid, angles_to_image, angles_to_image_torch, closest_per_cell, image_to_angles,
                             knn, knn_torch, pixel_of, pixel_of_torch, polar_cell_centers, polar_cell_centers_torch,
                             polar_cells, polar_cells_torch, polar_coords, polar_coords_torch, range_image, spherical_coords,
                             spherical_coords_torch)


def random_scan(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    az = rng.uniform(-np.pi, np.pi, n)
    el = np.deg2rad(rng.uniform(-26, 4, n))  # a little outside the field of view on both ends
    r = rng.uniform(1, 60, n)
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el), rng.random(n)], 1)
    return pts.astype(np.float32)


def test_every_point_gets_a_pixel_and_the_closest_point_wins():
    pts = random_scan()
    img, rc, index, _ = range_image(pts, 32, 256, 3.0, -25.0)
    assert rc.shape == (len(pts), 2)
    assert (rc[:, 0] >= 0).all() and (rc[:, 0] < 32).all() and (rc[:, 1] >= 0).all() and (rc[:, 1] < 256).all()
    depth = np.linalg.norm(pts[:, :3], axis=1)
    # each occupied pixel shows the closest of the points that fall into it
    for (r, c) in {tuple(x) for x in rc[:500]}:
        members = np.where((rc[:, 0] == r) & (rc[:, 1] == c))[0]
        assert index[r, c] == members[np.argmin(depth[members])]
        assert img[0, r, c] == pytest.approx(depth[members].min())
    # pixels without points are empty and marked so
    assert ((index >= 0) == (img[5] == 1)).all()


def test_round_trip_pixels_hold_their_points():
    pts = random_scan(seed=1)
    img, rc, index, _ = range_image(pts, 64, 512, 3.0, -25.0)
    shown = index[index >= 0]
    np.testing.assert_allclose(img[1:5][:, index >= 0].T, pts[shown])
    # reading back every winning point's pixel gives the point itself (index 0 is a real point)
    back = index[rc[shown, 0], rc[shown, 1]]
    assert (back == shown).all()
    # a point hidden behind a closer one reads back the closer one, which shares its pixel
    hidden = np.setdiff1d(np.arange(len(pts)), shown)
    assert len(hidden) > 0
    front = index[rc[hidden, 0], rc[hidden, 1]]
    assert (rc[front] == rc[hidden]).all()
    depth = np.linalg.norm(pts[:, :3], axis=1)
    assert (depth[front] <= depth[hidden]).all()


def test_pixel_index_zero_is_a_real_point():
    pts = np.array([[10, 0, 0, 0.5], [20, 0, 0, 0.1]], np.float32)
    img, rc, index, _ = range_image(pts, 8, 16, 3.0, -25.0)
    assert index[rc[0, 0], rc[0, 1]] == 0  # point 0 is closer and wins its pixel
    assert (index == -1).sum() == 8 * 16 - 1


def test_known_directions():
    # straight ahead at the sensor height -> centre column; left (+y) -> left of centre
    pts = np.array([[10, 0, 0, 0], [0, 10, 0, 0], [-10, 0.001, 0, 0]], np.float32)
    _, rc, _, _ = range_image(pts, 64, 2048, 3.0, -25.0)
    assert rc[0, 1] == 1024
    assert rc[1, 1] == 512
    assert rc[2, 1] in (0, 2047)
    # elevation 0 deg is 3/28 of the way down the image
    assert rc[0, 0] == int(3 / 28 * 64)


def test_closest_per_cell_ties_and_empty():
    cell = np.array([3, 3, 1, 3])
    depth = np.array([2.0, 1.0, 5.0, 1.0], np.float32)
    assert closest_per_cell(cell, depth).tolist() == [2, 1]
    assert closest_per_cell(np.zeros(0, np.int64), np.zeros(0, np.float32)).size == 0


def test_polar_cells():
    pts = np.array([[1, 0, 0], [0, 49.9, 0], [-80, 0, 0], [0, -0.5, 0]], np.float32)
    cells = polar_cells(pts, 50, 8, 0.0, 50.0)
    assert cells[0].tolist() == [1, 4]  # r = 1 m, azimuth 0 -> bin 4 of 8 (bin 0 starts at -pi)
    assert cells[1].tolist() == [49, 6]  # azimuth +pi/2
    assert cells[2, 0] == 49  # beyond the max radius -> outermost ring
    assert cells[3, 1] == 2  # azimuth -pi/2
    radius, azimuth = polar_cell_centers(50, 8, 0.0, 50.0)
    assert radius[1] == pytest.approx(1.5) and azimuth[4] == pytest.approx(np.pi / 8)


def test_plane_cells_clamp_at_the_border():
    pts = np.array([[0, 0, 0], [-100, 100, 0], [9.99, -9.99, 0]], np.float32)
    plane = PlaneGrid(2, (20, 20), (-10.0, -10.0, -1.0), (10.0, 10.0, 1.0))
    assert plane.cells(pts).tolist() == [10 * 20 + 10, 0 * 20 + 19, 19 * 20 + 0]
    # the (y, z) plane: rows follow y, columns z
    side = PlaneGrid(0, (20, 4), (-10.0, -10.0, -1.0), (10.0, 10.0, 1.0))
    assert side.cells(np.array([[5.0, 9.99, 0.9]], np.float32)).tolist() == [19 * 4 + 3]


def official_cells(pc: np.ndarray, dim: int, grid, fov_xyz) -> np.ndarray:
    """The arithmetic of valeoai/WaffleIron datasets/pc_dataset.py PCDataset.get_occupied_2d_cells,
    restated for one plane (points inside the field of view)."""
    dims = {0: (1, 2), 1: (0, 2), 2: (0, 1)}[dim]
    fov = np.array(fov_xyz, dtype=np.float64)
    res = (fov[1, dims] - fov[0, dims]) / np.array(grid)[None]
    q = ((pc[:, dims] - fov[0, dims]) / res).astype("int")
    return q[:, 0] * grid[1] + q[:, 1]


@pytest.mark.parametrize("dim, grid", [(2, (250, 250)), (1, (250, 12)), (0, (250, 12))])
def test_plane_cells_equal_the_official_arithmetic_and_the_torch_twin(dim, grid):
    rng = np.random.default_rng(dim)
    fov = ((-50.0, -50.0, -3.0), (50.0, 50.0, 2.0))
    n = 200_000
    pts = np.stack([rng.uniform(-49.9, 49.9, n), rng.uniform(-49.9, 49.9, n), rng.uniform(-2.99, 1.99, n)], 1)
    # add points on (float32-rounded) cell boundaries, where float32 arithmetic rounds differently
    edges = np.stack([-50 + 0.4 * rng.integers(1, 249, n), -50 + 0.4 * rng.integers(1, 249, n),
                      -3 + 5 / 12 * rng.integers(1, 11, n)], 1)
    pts = np.concatenate([pts, edges]).astype(np.float32)
    plane = PlaneGrid(dim, grid, *fov)
    ours = plane.cells(pts)
    np.testing.assert_array_equal(ours, official_cells(pts, dim, grid, fov))
    np.testing.assert_array_equal(plane.cells_torch(torch.from_numpy(pts)).numpy(), ours)
    # the float32 formula used before (floor((p - lo) / (hi - lo) * size)) disagrees on some boundaries
    dims = PLANE_AXES[dim]
    lo = np.array([fov[0][d] for d in dims], np.float32)
    hi = np.array([fov[1][d] for d in dims], np.float32)
    q = np.floor((pts[:, dims] - lo) / (hi - lo) * np.array(grid, np.float32)).astype(np.int64)
    assert ((q[:, 0] * grid[1] + q[:, 1]) != ours).sum() > 0


def test_spherical_numpy_and_torch_twins_agree():
    pts = random_scan(20000, seed=3)
    depth, row, col = spherical_coords(pts, 64, 2048, 3.0, -25.0)
    t_depth, t_row, t_col = spherical_coords_torch(torch.from_numpy(pts), 64, 2048, 3.0, -25.0)
    np.testing.assert_allclose(t_depth.numpy(), depth, rtol=3e-7)  # torch may fuse x * x + y * y (FMA)
    # atan2 of numpy and torch may differ in the last bit: <= 1e-3 pixel
    assert np.abs(t_row.numpy() - row).max() < 1e-3 and np.abs(t_col.numpy() - col).max() < 1e-3
    rc = pixel_of(row, col, 64, 2048)
    t_rc = pixel_of_torch(t_row, t_col, 64, 2048).numpy()
    assert (t_rc != rc).any(axis=1).sum() <= 2  # only points within 1e-3 pixel of a pixel border
    # the continuous coordinates floor to the pixel inside the image
    proj = range_image(pts, 64, 2048, 3.0, -25.0)
    inside = (proj.coords[:, 0] >= 0) & (proj.coords[:, 0] < 64)
    np.testing.assert_array_equal(np.floor(proj.coords[inside]).astype(np.int64), proj.rc[inside])
    np.testing.assert_array_equal(proj.rc, rc)


def test_image_to_angles_inverts_angles_to_image():
    rng = np.random.default_rng(0)
    pitch = np.deg2rad(rng.uniform(-25, 3, 1000)).astype(np.float32)
    yaw = rng.uniform(-np.pi, np.pi, 1000).astype(np.float32)
    row, col = angles_to_image(pitch, yaw, 64, 2048, 3.0, -25.0)
    p2, y2 = image_to_angles(row, col, 64, 2048, 3.0, -25.0)
    np.testing.assert_allclose(p2, pitch, atol=1e-5)
    np.testing.assert_allclose(y2, yaw, atol=1e-5)
    t_row, t_col = angles_to_image_torch(torch.from_numpy(pitch), torch.from_numpy(yaw), 64, 2048, 3.0, -25.0)
    np.testing.assert_array_equal(t_row.numpy(), row)
    np.testing.assert_array_equal(t_col.numpy(), col)
    tp, ty = image_to_angles(torch.from_numpy(row), torch.from_numpy(col), 64, 2048, 3.0, -25.0)
    np.testing.assert_array_equal(tp.numpy(), p2)
    np.testing.assert_array_equal(ty.numpy(), y2)
    # the ray through the centre of the middle column looks along +x (yaw 0 at col = W / 2)
    _, yaw_c = image_to_angles(np.float32(0), np.float32(1024), 64, 2048, 3.0, -25.0)
    assert abs(yaw_c) < 1e-7


def test_ring_rows_one_ring_per_row():
    pts = random_scan(3000, seed=4)
    ring = np.random.default_rng(4).integers(0, 32, len(pts))
    proj = range_image(pts, 32, 512, 10.0, -30.0, ring=ring)
    np.testing.assert_array_equal(proj.rc[:, 0], 31 - ring)  # ring 0 (lowest beam) is the bottom row
    np.testing.assert_array_equal(proj.coords[:, 0], 31 - ring + np.float32(0.5))
    with pytest.raises(ValueError, match="ring index 0..32"):
        range_image(pts[:2], 32, 512, 10.0, -30.0, ring=np.array([0, 32]))


def test_points_nearer_than_min_range_keep_a_pixel_but_never_show():
    far = np.array([[10.0, 0, 0, 0.5]], np.float32)
    ego = np.array([[0.5, 0, 0, 0.9]], np.float32)  # same direction, 0.5 m away
    pts = np.concatenate([ego, far])
    hidden = range_image(pts, 8, 16, 3.0, -25.0)
    assert hidden.index[tuple(hidden.rc[1])] == 0  # without the policy the ego point hides the far one
    proj = range_image(pts, 8, 16, 3.0, -25.0, min_range=1.0)
    assert (proj.rc[0] == proj.rc[1]).all()
    assert proj.index[tuple(proj.rc[1])] == 1 and proj.image[0][tuple(proj.rc[1])] == pytest.approx(10.0)
    assert (proj.index == 0).sum() == 0


def test_polar_twins_agree():
    pts = random_scan(20000, seed=5)
    cells = polar_cells(pts, 480, 360, 0.0, 50.0)
    t_cells = polar_cells_torch(torch.from_numpy(pts), 480, 360, 0.0, 50.0).numpy()
    assert (t_cells != cells).any(axis=1).sum() <= 2
    radius, azimuth = polar_cell_centers(480, 360, 0.0, 50.0)
    t_r, t_a = polar_cell_centers_torch(torch.arange(480), torch.arange(360), 480, 360, 0.0, 50.0)
    np.testing.assert_array_equal(t_r.numpy(), radius)
    np.testing.assert_array_equal(t_a.numpy(), azimuth)
    r, theta = polar_coords(pts)
    t_r, t_theta = polar_coords_torch(torch.from_numpy(pts))
    np.testing.assert_allclose(t_r.numpy(), r, rtol=3e-7)
    assert np.abs(t_theta.numpy() - theta).max() < 1e-6


def test_knn_contract_self_first_and_backends_agree():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(300, 3)).astype(np.float32)
    xyz[10] = xyz[11]  # a duplicate: still its own first neighbour
    idx = knn(xyz.astype(np.float64), 5)
    assert idx.shape == (300, 5) and (idx[:, 0] == np.arange(300)).all()
    assert idx[10, 1] == 11 and idx[11, 1] == 10
    d = np.linalg.norm(xyz[idx] - xyz[:, None], axis=2)
    assert (np.diff(d, axis=1) >= 0).all()
    brute = np.argsort(np.linalg.norm(xyz[:, None] - xyz[None], axis=2), axis=1, kind="stable")[:, :5]
    assert (np.sort(d, 1) == np.sort(np.linalg.norm(xyz[brute] - xyz[:, None], axis=2), 1)).all()
    pts = torch.from_numpy(np.concatenate([xyz, xyz[:3] + 100]))  # a second scan of 3 points
    offsets = torch.tensor([0, 300, 303])
    a = knn_torch(pts, offsets, 5, "kdtree")
    b = knn_torch(pts, offsets, 5, "torch", chunk=64)
    assert torch.equal(a[:300], torch.from_numpy(idx))
    dist = lambda nb: torch.linalg.vector_norm(pts[nb] - pts[:, None], dim=2)  # noqa: E731
    assert torch.equal(b[:, 0], torch.arange(303))
    torch.testing.assert_close(dist(a), dist(b))  # the same neighbours, up to ties (points 10 and 11)
    assert (a[300:, 0] == torch.arange(300, 303)).all() and (a[300:] >= 300).all()  # within its scan
    assert torch.equal(a[300:, 3], a[300:, 2]) and torch.equal(a[300:, 4], a[300:, 2])  # repeated
