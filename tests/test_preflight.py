"""Dataset pre-flight check (data/preflight.py, `balvit check`): clean generated datasets pass;
corrupted copies report every problem in one run; the real SemanticKITTI scans pass."""

from __future__ import annotations

import json
import shutil

import pytest

from balvit.cli import main
from balvit.run_config import load_config
from balvit.data.preflight import ERROR, WARNING, check_or_raise, preflight, run_preflight
from balvit.errors import DataError
from conftest import REPO, generated_dataset

REAL = REPO.parent / "shared" / "data" / "real"
KITTI_SEQS = ['data.train_sequences=["00"]', 'data.val_sequences=["08"]']


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "pf_kitti", frames=3, image_scale=0.1)


@pytest.fixture(scope="module")
def nusc(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "pf_nus", "nuscenes")


def kitti_cfg(root, *more):
    return load_config(None, [f"data.root={root}", *KITTI_SEQS, *more])


def nus_cfg(root, *more):
    return load_config(None, [f"data.root={root}", "data.dataset=nuscenes", "data.version=v1.0-mini", *more])


def table(problems) -> dict[str, list[tuple[str, str]]]:
    """path relative to the dataset -> [(severity, problem)]"""
    out: dict[str, list[tuple[str, str]]] = {}
    for p in problems:
        out.setdefault(p.path, []).append((p.severity, p.problem))
    return out


def test_clean_generated_datasets_pass(kitti, nusc):
    report = run_preflight(kitti_cfg(kitti, "data.cameras=true"))
    assert report.problems == [] and report.frames == 6
    assert report.files == 6 + 6 + 6  # scans, labels, images
    nreport = run_preflight(nus_cfg(nusc, "data.cameras=true"))
    assert nreport.problems == [] and nreport.frames >= 4
    assert check_or_raise(kitti_cfg(kitti)).errors == []


def test_corrupted_kitti_copy_reports_every_problem(kitti, tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(kitti, root)
    seq0, seq8 = root / "sequences" / "00", root / "sequences" / "08"
    scan = seq0 / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-3])  # truncated scan
    (seq0 / "labels" / "000002.label").unlink()  # missing label
    lab = seq8 / "labels" / "000000.label"
    lab.write_bytes(lab.read_bytes()[:-8])  # two labels short
    (seq8 / "calib.txt").unlink()  # missing calibration (needed with cameras)
    (seq8 / "velodyne" / "000002.bin").unlink()  # a lost scan: its label remains
    (seq0 / "image_2" / "000000.png").unlink()
    split = tmp_path / "split.txt"
    split.write_text("# test list\n00/000000\n00/000077\n")
    cfg = kitti_cfg(root, "data.cameras=true", f"data.split_file={split}")

    got = table(preflight(cfg))
    n8 = (seq8 / "velodyne" / "000000.bin").stat().st_size // 16
    assert got == {
        str(scan): [(ERROR, f"size {scan.stat().st_size} bytes is not a multiple of 16 "
                            "(x, y, z, remission float32): truncated?")],
        str(seq0 / "labels" / "000002.label"): [(ERROR, "label file is missing (scan 000002.bin)")],
        str(lab): [(ERROR, f"{n8 - 2} labels, but the scan 000000.bin has {n8} points")],
        str(seq8 / "calib.txt"): [(ERROR, "calibration file is missing (needed for the camera projection)")],
        str(seq8 / "labels" / "000002.label"): [
            (ERROR, "label file without its scan velodyne/000002.bin (scan missing?)")],
        str(seq0 / "velodyne" / "000000.bin"): [
            (ERROR, f"camera: {seq0 / 'image_2' / '000000.png'}: camera image is missing")],
        str(split): [(ERROR, f"names frame 00/000077, which is not in the train split under {root / 'sequences'}")],
    }
    # the CLI prints them all in one table and exits 2
    rc = main(["check", str(REPO / "config" / "kitti.yaml"), "--data_root", str(root), *KITTI_SEQS,
               "data.cameras=true", f"data.split_file={split}"])
    out = capsys.readouterr().out
    assert rc == 2 and all(path in out for path in got) and "7 error(s), 0 warning(s) in 5 frames" in out
    with pytest.raises(DataError, match=r"pre-flight check .* 7 error\(s\)"):
        check_or_raise(cfg)


def test_kitti_optional_files_are_warnings(kitti, tmp_path):
    root = tmp_path / "nocalib"
    shutil.copytree(kitti, root)
    (root / "sequences" / "00" / "calib.txt").unlink()
    (root / "sequences" / "08" / "poses.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0\n")
    problems = preflight(kitti_cfg(root))  # without cameras the calibration is not needed
    assert sorted((p.severity, p.path.rsplit("/", 2)[-2:][0]) for p in problems) == [(WARNING, "00"), (WARNING, "08")]
    assert {p.problem for p in problems} == {
        "calibration file is missing (needed for the camera projection) (not needed without data.cameras)",
        "1 poses, but scans go up to 000002.bin"}
    assert main(["check", str(REPO / "config" / "kitti.yaml"), "--data_root", str(root), *KITTI_SEQS]) == 0
    # a missing sequence is named (and the rest is still checked)
    shutil.rmtree(root / "sequences" / "08" / "velodyne")
    problems = preflight(kitti_cfg(root))
    assert [p.problem for p in problems if p.severity == ERROR] == ["missing: sequence 08 belongs to split 'valid' "
                                                                    "(a partial copy: set data.val_sequences)"]


def test_corrupted_nuscenes_copy_reports_every_problem(nusc, tmp_path):
    root = tmp_path / "nus"
    shutil.copytree(nusc, root)
    tables = root / "v1.0-mini"
    seg = json.loads((tables / "lidarseg.json").read_text())
    sd = {r["token"]: r for r in json.loads((tables / "sample_data.json").read_text())}
    scans = [root / sd[r["sample_data_token"]]["filename"] for r in seg]
    labels = [root / r["filename"] for r in seg]
    scans[0].write_bytes(scans[0].read_bytes()[:-4])  # truncated scan
    labels[1].unlink()  # missing label file
    labels[2].write_bytes(labels[2].read_bytes() + b"\x01")  # one label too many
    dropped = seg.pop(3)  # a keyframe without a lidarseg entry
    (tables / "lidarseg.json").write_text(json.dumps(seg))
    cam = next(r for r in sd.values() if r["sample_token"] == sd[seg[0]["sample_data_token"]]["sample_token"]
               and "CAM_FRONT/" in r["filename"])
    (root / cam["filename"]).unlink()
    got = table(preflight(nus_cfg(root, "data.cameras=true")))
    n2 = scans[2].stat().st_size // 20
    assert got == {
        str(scans[0]): [(ERROR, f"size {scans[0].stat().st_size} bytes is not a multiple of 20 "
                                "(x, y, z, intensity, ring float32): truncated?")],
        str(labels[1]): [(ERROR, f"lidarseg label file is missing (scan {scans[1].name})")],
        str(labels[2]): [(ERROR, f"{n2 + 1} labels, but the scan {scans[2].name} has {n2} points")],
        str(tables / "lidarseg.json"): [
            (ERROR, f"no entry for LIDAR_TOP sample_data {dropped['sample_data_token']} "
                    f"({(root / sd[dropped['sample_data_token']]['filename']).name})")],
        str(root / cam["filename"]): [(ERROR, f"camera image is missing (CAM_FRONT of {scans[0].name})")],
    }


def test_nuscenes_missing_tables(nusc, tmp_path):
    root = tmp_path / "nus"
    shutil.copytree(nusc, root)
    (root / "v1.0-mini" / "lidarseg.json").unlink()
    (root / "v1.0-mini" / "ego_pose.json").unlink()
    problems = preflight(nus_cfg(root, "data.cameras=true"))
    assert sorted((p.path.rsplit("/", 1)[-1], p.problem) for p in problems if p.severity == ERROR)[:2] == [
        ("ego_pose.json", "nuScenes table is missing"), ("lidarseg.json", "nuScenes table is missing")]
    (root / "v1.0-mini" / "sample.json").unlink()
    problems = preflight(nus_cfg(root))
    assert [(p.severity, p.path.rsplit("/", 1)[-1]) for p in problems] == [
        (ERROR, "sample.json"), (ERROR, "lidarseg.json"), (WARNING, "v1.0-mini")]


def test_no_root_and_wrong_root(tmp_path):
    assert [p.problem for p in preflight(load_config(None, []))] == ["no dataset root given: pass --data_root DIR"]
    (tmp_path / "empty").mkdir()
    (problem,) = preflight(kitti_cfg(tmp_path / "empty"))
    assert "not a SemanticKITTI folder" in problem.problem


@pytest.mark.skipif(not REAL.is_dir(), reason=f"{REAL} not present")
def test_real_kitti_scans_pass():
    report = run_preflight(load_config(None, [f"data.root={REAL / 'semantickitti'}", 'data.train_sequences=["00"]',
                                              'data.val_sequences=["00"]']), splits=["train"])
    assert report.errors == [] and report.frames == 3 and report.files == 6
    assert [p.problem for p in report.warnings] == ["missing (not read by training; tools that stack scans need it)"]


def test_training_refuses_a_truncated_validation_scan_before_writing_anything(kitti, tmp_path):
    from balvit.engine.trainer import Trainer
    from conftest import CPU, config_of

    root = tmp_path / "bad_val"
    shutil.copytree(kitti, root)
    scan = root / "sequences" / "08" / "velodyne" / "000001.bin"
    scan.write_bytes(scan.read_bytes()[:-8])  # half a point missing
    with pytest.raises(DataError, match="000001.bin"):
        Trainer(config_of("tiny.yaml", root), tmp_path / "run", CPU, progress=False)
    assert not (tmp_path / "run").exists()
    # data.preflight=false skips the check (the truncated file is then found when it is read)
    Trainer(config_of("tiny.yaml", root, "data.preflight=false"), tmp_path / "run2", CPU, progress=False)
