"""Single point-file reading (data/pointfiles.py): every format written with its own library and read
back exactly, intensity choice and scaling, refusals, input expansion and the prediction writers;
plus the real SemanticKITTI / nuScenes scans in ../shared/data/real (skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from balvit.data.labels import nuscenes_labels, semantickitti_labels
from balvit.data.nuscenes import LIDAR_TO_LIB, NuScenes, lidar_top_to_library
from balvit.data.pointfiles import (
    expand_inputs, output_stems, read_point_file, write_colored_ply, write_label_file, write_outputs,
)  # fmt: skip
from balvit.data.semantickitti import SemanticKITTI
from balvit.errors import ConfigError, DataError
from conftest import REPO
from fakedata import NUS_VERSION, write_nuscenes

REAL = REPO.parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present")


def _xyzi(n: int, seed: int = 0, quantum: float | None = None) -> np.ndarray:
    """(n, 4) float32 scan; `quantum` rounds every value to a multiple (exact through ascii writers)."""
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.uniform(-40, 40, (n, 3)), rng.uniform(0, 1, (n, 1))], axis=1)
    if quantum:
        pts = np.round(pts / quantum) * quantum
    return pts.astype(np.float32)


# ------------------------------------------------------------------------------ KITTI / nuScenes


def test_kitti_bin_is_read_as_stored(tmp_path):
    pts = _xyzi(500)
    pts.tofile(tmp_path / "000007.bin")
    pf = read_point_file(tmp_path / "000007.bin")
    assert pf.points.dtype == np.float32 and np.array_equal(pf.points, pts)
    assert pf.intensity_field == "remission" and pf.scale == 1.0
    # for a nuScenes model the remission is put on its 0..255 scale
    assert np.array_equal(read_point_file(tmp_path / "000007.bin", dataset="nuscenes").points[:, 3],
                          (pts[:, 3].astype(np.float64) * 255).astype(np.float32))


def test_kitti_bin_refusals(tmp_path):
    pts = _xyzi(10)
    pts[3, 3] = 87.0  # a 0..255 intensity in a KITTI-layout file
    pts.tofile(tmp_path / "a.bin")
    with pytest.raises(DataError, match=r"a\.bin.*reaches 87.*above its full scale 1.*intensity_max=255"):
        read_point_file(tmp_path / "a.bin")
    pf = read_point_file(tmp_path / "a.bin", intensity_max=255)
    assert pf.points[3, 3] == np.float32(87.0 / 255) and "intensity_max" in pf.describe()
    (tmp_path / "b.bin").write_bytes(pts.tobytes()[:-3])
    with pytest.raises(DataError, match=r"b\.bin: size 157 bytes is not a multiple of 16"):
        read_point_file(tmp_path / "b.bin")
    pts[3, 3] = -0.5
    pts.tofile(tmp_path / "c.bin")
    with pytest.raises(DataError, match=r"c\.bin.*negative values"):
        read_point_file(tmp_path / "c.bin")
    pts[3, 3] = 0.5
    pts[4, 0] = np.nan
    pts.tofile(tmp_path / "d.bin")
    with pytest.raises(DataError, match=r"d\.bin: 1 of 10 points have NaN"):
        read_point_file(tmp_path / "d.bin")
    pf = read_point_file(tmp_path / "d.bin", nan_policy="zero")
    assert pf.invalid.tolist() == [k == 4 for k in range(10)] and (pf.points[4] == 0).all()


def test_nuscenes_bin_matches_the_dataset_reader(tmp_path):
    """The same rotation as the nuScenes reader, bit for bit, on every scan of a fake dataset."""
    root = tmp_path / "nuscenes"
    write_nuscenes(root, n_points=300)
    ds = NuScenes(root, "mini_train", version=NUS_VERSION)
    for i in range(len(ds)):
        pf = read_point_file(ds.scan_path(i), dataset="nuscenes")
        assert pf.format == "nuscenes-bin" and np.array_equal(pf.points, ds.load_points(i))
        assert pf.fields == ("x", "y", "z", "intensity", "ring") and pf.intensity_field == "intensity"
    # and that rotation is LIDAR_TO_LIB
    raw = np.fromfile(ds.scan_path(0), dtype=np.float32).reshape(-1, 5)
    rotated = (LIDAR_TO_LIB[:3, :3] @ raw[:, :3].T.astype(np.float64)).T
    assert np.array_equal(lidar_top_to_library(raw)[:, :3], rotated.astype(np.float32))


# ------------------------------------------------------------------------------------ PCD


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_pcd_round_trip(tmp_path, encoding):
    from pypcd4 import Encoding, PointCloud

    pts = _xyzi(400, seed=1, quantum=1 / 1024)  # ascii stores 10 decimals: exact for multiples of 2^-10
    PointCloud.from_xyzi_points(pts).save(tmp_path / "scan.pcd", encoding=Encoding(encoding))
    pf = read_point_file(tmp_path / "scan.pcd")
    assert pf.format == "pcd" and np.array_equal(pf.points, pts)
    assert pf.intensity_field == "intensity" and pf.full_scale == 1.0 and "values (max <= 1)" in pf.describe()


def test_pcd_without_intensity_needs_an_explicit_choice(tmp_path):
    from pypcd4 import PointCloud

    xyz = _xyzi(50)[:, :3]
    PointCloud.from_xyz_points(xyz).save(tmp_path / "xyz.pcd")
    with pytest.raises(DataError, match=r"xyz\.pcd: no intensity field \(fields: x, y, z\).*intensity='zero'"):
        read_point_file(tmp_path / "xyz.pcd")
    pf = read_point_file(tmp_path / "xyz.pcd", intensity="zero")
    assert np.array_equal(pf.points[:, :3], xyz) and (pf.points[:, 3] == 0).all()
    assert pf.intensity_field is None and "intensity='zero'" in pf.describe()
    with pytest.raises(DataError, match=r"no field 'ring'"):
        read_point_file(tmp_path / "xyz.pcd", intensity="ring")


def test_pcd_integer_intensity_takes_the_type_range(tmp_path):
    from pypcd4 import PointCloud

    xyz = _xyzi(64)[:, :3]
    inten = np.arange(64, dtype=np.uint8) * 4
    PointCloud.from_points([xyz[:, 0], xyz[:, 1], xyz[:, 2], inten], ("x", "y", "z", "intensity"),
                           (np.float32, np.float32, np.float32, np.uint8)).save(tmp_path / "u8.pcd")
    pf = read_point_file(tmp_path / "u8.pcd")
    assert pf.full_scale == 255 and "uint8 range" in pf.describe()
    assert np.array_equal(pf.points[:, 3], (inten / 255.0).astype(np.float32))
    assert np.array_equal(read_point_file(tmp_path / "u8.pcd", dataset="nuscenes").points[:, 3], inten.astype(np.float32))


def test_pcd_float_intensity_beyond_255_is_refused(tmp_path):
    from pypcd4 import PointCloud

    pts = _xyzi(20)
    pts[:, 3] *= 3000
    PointCloud.from_xyzi_points(pts).save(tmp_path / "big.pcd")
    with pytest.raises(DataError, match=r"big\.pcd: intensity field 'intensity' reaches .*intensity_max"):
        read_point_file(tmp_path / "big.pcd")
    pf = read_point_file(tmp_path / "big.pcd", intensity_max=3000)
    assert np.allclose(pf.points[:, 3], pts[:, 3] / 3000, atol=1e-6)


def test_truncated_pcd_is_refused(tmp_path):
    from pypcd4 import PointCloud

    PointCloud.from_xyzi_points(_xyzi(100)).save(tmp_path / "t.pcd")
    data = (tmp_path / "t.pcd").read_bytes()
    (tmp_path / "t.pcd").write_bytes(data[:-160])
    with pytest.raises(DataError, match=r"t\.pcd: header says 100 points, the data holds 90"):
        read_point_file(tmp_path / "t.pcd")


# ------------------------------------------------------------------------------------ PLY


@pytest.mark.parametrize("text", [False, True])
def test_ply_round_trip(tmp_path, text):
    from plyfile import PlyData, PlyElement

    pts = _xyzi(300, seed=2, quantum=1 / 1024)
    v = np.empty(300, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("scalar_Intensity", "f4"), ("nx", "f4")])
    for k, n in enumerate(("x", "y", "z", "scalar_Intensity")):
        v[n] = pts[:, k]
    v["nx"] = 0.5
    PlyData([PlyElement.describe(v, "vertex")], text=text).write(str(tmp_path / "cc.ply"))
    pf = read_point_file(tmp_path / "cc.ply")
    assert np.array_equal(pf.points, pts) and pf.intensity_field == "scalar_Intensity"


def test_ply_without_vertex_coordinates(tmp_path):
    from plyfile import PlyData, PlyElement

    v = np.zeros(3, dtype=[("u", "f4"), ("v", "f4")])
    PlyData([PlyElement.describe(v, "vertex")]).write(str(tmp_path / "uv.ply"))
    with pytest.raises(DataError, match=r"uv\.ply: PLY vertex element has no x, y, z field"):
        read_point_file(tmp_path / "uv.ply")
    (tmp_path / "junk.ply").write_bytes(b"not a ply file\n")
    with pytest.raises(DataError, match=r"junk\.ply: not a readable PLY file"):
        read_point_file(tmp_path / "junk.ply")


# ------------------------------------------------------------------------------------ LAS


@pytest.mark.parametrize("suffix", [".las", ".laz"])
def test_las_round_trip(tmp_path, suffix):
    import laspy

    rng = np.random.default_rng(3)
    ints = rng.integers(-40_000, 40_000, size=(250, 3))
    inten = rng.integers(0, 65536, size=250).astype(np.uint16)
    header = laspy.LasHeader(point_format=1, version="1.2")
    header.scales, header.offsets = np.array([0.001] * 3), np.zeros(3)
    las = laspy.LasData(header)
    las.X, las.Y, las.Z = ints[:, 0], ints[:, 1], ints[:, 2]
    las.intensity = inten
    las.write(tmp_path / f"scan{suffix}")
    pf = read_point_file(tmp_path / f"scan{suffix}")
    assert pf.format == suffix[1:]
    assert np.array_equal(pf.points[:, :3], (ints * 0.001).astype(np.float32))
    assert np.array_equal(pf.points[:, 3], (inten / 65535.0).astype(np.float32))
    assert "LAS spec" in pf.describe()


def test_las_with_8bit_intensities_says_so(tmp_path):
    import laspy

    las = laspy.LasData(laspy.LasHeader(point_format=0, version="1.2"))
    las.x, las.y, las.z = np.arange(5.0), np.zeros(5), np.zeros(5)
    las.intensity = np.array([0, 10, 200, 255, 7], dtype=np.uint16)
    las.write(tmp_path / "b.las")
    pf = read_point_file(tmp_path / "b.las")
    assert "pass intensity_max=255" in pf.describe()
    assert np.array_equal(read_point_file(tmp_path / "b.las", intensity_max=255).points[:, 3],
                          (np.array([0, 10, 200, 255, 7]) / 255.0).astype(np.float32))


# ------------------------------------------------------------------------------------ numpy


def test_npy_and_npz(tmp_path):
    pts = _xyzi(120, seed=4)
    np.save(tmp_path / "a.npy", pts)
    np.save(tmp_path / "xyz.npy", pts[:, :3])
    np.savez(tmp_path / "b.npz", points=pts)
    np.savez(tmp_path / "c.npz", x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], reflectance=pts[:, 3])
    rec = np.empty(120, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("intensity", "u1")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    rec["intensity"] = np.arange(120)
    np.save(tmp_path / "rec.npy", rec)
    for name in ("a.npy", "b.npz", "c.npz"):
        assert np.array_equal(read_point_file(tmp_path / name).points, pts), name
    assert read_point_file(tmp_path / "c.npz").intensity_field == "reflectance"
    assert np.array_equal(read_point_file(tmp_path / "rec.npy").points[:, 3], (np.arange(120) / 255.0).astype(np.float32))
    with pytest.raises(DataError, match=r"xyz\.npy: no intensity field"):
        read_point_file(tmp_path / "xyz.npy")
    assert np.array_equal(read_point_file(tmp_path / "xyz.npy", intensity="zero").points[:, :3], pts[:, :3])
    np.save(tmp_path / "bad.npy", np.zeros((4, 7), np.float32))
    with pytest.raises(DataError, match=r"bad\.npy: \.npy array has shape \(4, 7\)"):
        read_point_file(tmp_path / "bad.npy")
    np.savez(tmp_path / "d.npz", a=pts, b=pts)
    with pytest.raises(DataError, match=r"d\.npz: \.npz holds \['a', 'b'\]"):
        read_point_file(tmp_path / "d.npz")


# ----------------------------------------------------------------------------------- inputs


def test_expand_inputs(tmp_path):
    d = tmp_path / "scans"
    d.mkdir()
    for name in ("b.bin", "a.bin", "c.pcd.bin"):
        _xyzi(3).tofile(d / name)
    got = expand_inputs([d, str(d / "*.bin"), d / "a.bin"])
    assert [p.name for p in got] == ["a.bin", "b.bin", "c.pcd.bin"]  # sorted, each once
    (d / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=r"notes\.txt: unknown point-cloud file type"):
        expand_inputs([d])
    assert [p.name for p in expand_inputs([str(d / "*.bin")])] == ["a.bin", "b.bin", "c.pcd.bin"]
    with pytest.raises(DataError, match=r"\*\.las: the pattern matches no files"):
        expand_inputs([str(d / "*.las")])
    with pytest.raises(DataError, match=r"missing\.bin: no such file or folder"):
        expand_inputs([d / "missing.bin"])


def test_output_stems_stay_distinct(tmp_path):
    assert output_stems([tmp_path / "a" / "000000.bin", tmp_path / "a" / "x.pcd.bin"]) == ["000000", "x"]
    assert output_stems([tmp_path / "a" / "000000.bin", tmp_path / "b" / "000000.bin"]) == ["a/000000", "b/000000"]
    assert output_stems([tmp_path / "s.bin", tmp_path / "s.ply"]) == ["s.bin", "s.ply"]


# ---------------------------------------------------------------------------------- writers


def test_writers(tmp_path):
    from plyfile import PlyData

    kitti, nus = semantickitti_labels(), nuscenes_labels()
    pts = _xyzi(40)
    ids = np.arange(40) % kitti.num_classes
    paths = write_outputs(tmp_path / "out", "scan", ids, kitti, formats=("label", "npy", "ply"), points=pts)
    assert [p.name for p in paths] == ["scan.label", "scan.npy", "scan.ply"]
    assert np.array_equal(np.fromfile(paths[0], dtype=np.uint32), kitti.train_to_raw[ids])
    assert np.load(paths[1]).dtype == np.uint8 and np.array_equal(np.load(paths[1]), ids)
    v = PlyData.read(str(paths[2]))["vertex"].data
    assert np.array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), kitti.colors[ids])
    assert np.array_equal(v["label"], ids) and np.array_equal(v["x"], pts[:, 0])
    # the coloured ply reads back as a point file (intensity field "intensity", 0..1)
    assert np.array_equal(read_point_file(paths[2]).points, pts)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scan.label", "scan.npy", "scan.ply"]  # no temp files
    nus_ids = np.arange(16)
    (seg,) = write_outputs(tmp_path / "out", "n", nus_ids, nus, formats=("lidarseg",))
    assert seg.name == "n_lidarseg.bin" and np.fromfile(seg, dtype=np.uint8).tolist() == list(range(1, 17))
    with pytest.raises(ConfigError, match=r"\.label files hold SemanticKITTI raw ids"):
        write_label_file(tmp_path / "n.label", nus_ids, nus)
    with pytest.raises(ValueError, match="train ids"):
        write_label_file(tmp_path / "k.label", np.array([0, 19]), kitti)
    with pytest.raises(ConfigError, match="unknown output format"):
        write_outputs(tmp_path, "x", ids, kitti, formats=("txt",))
    # ground truth with ignore (255) can be coloured too
    write_colored_ply(tmp_path / "gt.ply", pts[:3], np.array([0, 255, 3]), kitti)
    assert PlyData.read(str(tmp_path / "gt.ply"))["vertex"].data["red"].tolist() == [100, 0, 80]


# -------------------------------------------------------------------------------- real scans


@needs_real
def test_real_kitti_scan():
    path = REAL / "semantickitti" / "sequences" / "00" / "velodyne" / "000000.bin"
    pf = read_point_file(path)
    assert pf.points.shape == (124_668, 4)
    reader = SemanticKITTI(REAL / "semantickitti", "train", sequences=["00"])
    assert np.array_equal(pf.points, reader.load_points(0))
    assert 0.0 <= pf.stored_range[0] and pf.stored_range[1] <= 1.0


@needs_real
def test_real_nuscenes_scans():
    files = sorted((REAL / "nuscenes").glob("*.pcd.bin"))
    assert [len(read_point_file(f, dataset="nuscenes").points) for f in files] == [34_752, 34_688]
    for f in files:
        raw = np.fromfile(f, dtype=np.float32).reshape(-1, 5)
        pf = read_point_file(f, dataset="nuscenes")
        assert np.array_equal(pf.points[:, 0], raw[:, 1]) and np.array_equal(pf.points[:, 1], -raw[:, 0])
        assert np.array_equal(pf.points[:, 3], raw[:, 3]) and pf.stored_range[1] <= 255
        # for a SemanticKITTI model the intensity is put on 0..1
        assert read_point_file(f).points[:, 3].max() <= 1.0
