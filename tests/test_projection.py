import numpy as np
import pytest

from balvit.data.projection import cartesian_cells, closest_per_cell, polar_cell_centers, polar_cells, range_image


def random_scan(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    az = rng.uniform(-np.pi, np.pi, n)
    el = np.deg2rad(rng.uniform(-26, 4, n))  # a little outside the field of view on both ends
    r = rng.uniform(1, 60, n)
    pts = np.stack([r * np.cos(el) * np.cos(az), r * np.cos(el) * np.sin(az), r * np.sin(el), rng.random(n)], 1)
    return pts.astype(np.float32)


def test_every_point_gets_a_pixel_and_the_closest_point_wins():
    pts = random_scan()
    img, rc, index = range_image(pts, 32, 256, 3.0, -25.0)
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
    img, rc, index = range_image(pts, 64, 512, 3.0, -25.0)
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
    img, rc, index = range_image(pts, 8, 16, 3.0, -25.0)
    assert index[rc[0, 0], rc[0, 1]] == 0  # point 0 is closer and wins its pixel
    assert (index == -1).sum() == 8 * 16 - 1


def test_known_directions():
    # straight ahead at the sensor height -> centre column; left (+y) -> left of centre
    pts = np.array([[10, 0, 0, 0], [0, 10, 0, 0], [-10, 0.001, 0, 0]], np.float32)
    _, rc, _ = range_image(pts, 64, 2048, 3.0, -25.0)
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


def test_cartesian_cells_clamp():
    pts = np.array([[0, 0, 0], [-100, 100, 0], [9.99, -9.99, 0]], np.float32)
    cells = cartesian_cells(pts, (20, 20), (-10, 10, -10, 10))
    assert cells.tolist() == [[10, 10], [0, 19], [19, 0]]
