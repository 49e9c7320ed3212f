"""The Python API (balvit/api.py) and `balvit predict --input`: every model of the registry predicts
through `balvit.load(...)` exactly what `balvit predict` writes for the same scans."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

import balvit
from balvit.cli import main as balvit_main
from balvit.config import to_dict
from balvit.data.dataset import build_reader
from balvit.data.labels import labels_for
from balvit.engine.checkpoint import save_checkpoint
from balvit.errors import BalvitError, ConfigError, DataError
from balvit.models import MODELS, build_model
from conftest import REPO, TINY_MODELS, generated_dataset, tiny_model_config


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "api", frames=2, image_scale=0.3)


def perturbed_checkpoint(cfg, path, seed: int = 0):
    """A freshly built model whose trainable tensors are moved off their initialisation (zero-initialised
    heads would predict class 0 everywhere), saved as a checkpoint of `cfg`."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untrained tiny backbones say so
        model = build_model(cfg, labels_for(cfg.data.dataset).num_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:  # half the tensor's own scale of noise; all-zero tensors: 0.25, biases 0.01
                scale = float(p.abs().mean()) or (0.02 if name.endswith("bias") else 0.5)
                p.add_(torch.randn_like(p) * 0.5 * scale)
    save_checkpoint(path, model=model, step=1, config=to_dict(cfg))
    return path


@pytest.fixture(scope="module")
def checkpoints(syn, tmp_path_factory):
    work = tmp_path_factory.mktemp("api_ck")
    return {name: perturbed_checkpoint(tiny_model_config(name, syn), work / f"{name}.pt") for name in MODELS}


def predict_files(name, syn, ck, out):
    """`balvit predict CONFIG --data_root ...` of the tiny config of `name`: {frame: raw ids}."""
    path, overrides = TINY_MODELS[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = balvit_main(["predict", str(REPO / "config/synthetic" / path), "--data_root", str(syn), "--checkpoint",
                          str(ck), "--out", str(out), "--no-progress", *overrides, "eval.pictures=0",
                          *(["data.cameras=true"] if name == "elite_teacher" else [])])
    assert rc == 0
    files = sorted(out.glob("sequences/*/predictions/*.label"))
    return {f"{f.parent.parent.name}/{f.stem}": np.fromfile(f, dtype=np.uint32) for f in files}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_api_predicts_what_balvit_predict_writes(name, syn, checkpoints, tmp_path):
    files = predict_files(name, syn, checkpoints[name], tmp_path / "pred")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = balvit.load(checkpoints[name], device="cpu")
    assert model.name == name and model.class_names == tuple(model.labels.class_names) and model.num_classes == 19
    cfg = model.config
    reader = build_reader(cfg.data, "valid")
    assert sorted(files) == sorted(reader.frames) and len(reader) == 2
    if name == "elite_teacher":  # camera images, not point arrays: refused with a clear message ...
        with pytest.raises(ConfigError, match="camera images"):
            model.predict(reader.load_points(0))
        # ... and predicts through the same path from a reader that has cameras
        from balvit.engine.evaluate import PerFrame

        got = {}
        model.run(reader, [PerFrame(lambda item: got.__setitem__(item["frame"], item["pred"].numpy()))])
        assert sorted(got) == sorted(files)
        for frame, pred in got.items():
            np.testing.assert_array_equal(model.to_raw(pred), files[frame])
        return
    scans = [reader.load_points(i) for i in range(len(reader))]
    preds = model.predict(scans)  # a list: batched by eval.batch_size
    for frame, scan, pred in zip(reader.frames, scans, preds):
        assert pred.shape == (len(scan),) and pred.dtype == np.int64
        np.testing.assert_array_equal(model.to_raw(pred), files[frame])
    assert len(np.unique(np.concatenate(preds))) > 1  # not a constant prediction
    one = model.predict(scans[1])  # a single scan: an array back, the same as in the batch
    np.testing.assert_array_equal(one, preds[1])
    proba = model.predict_proba(scans[0])
    assert proba.shape == (len(scans[0]), 19) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(proba.argmax(1), preds[0])


def test_api_input_checks(syn, checkpoints):
    model = balvit.load(checkpoints["elite_student"], device="cpu")
    with pytest.raises(DataError, match=r"\(N, 4\)"):
        model.predict(np.zeros((10, 3), np.float32))
    with pytest.raises(DataError, match="empty"):
        model.predict(np.zeros((0, 4), np.float32))
    bad = np.ones((5, 4), np.float32)
    bad[2, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        model.predict(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            balvit.load(checkpoints["elite_student"], device="cuda")
    with pytest.raises(BalvitError, match="not found"):
        balvit.load(syn / "missing.pt")


def test_rings_are_required_where_the_rows_are_rings(syn, tmp_path):
    cfg = tiny_model_config("elite_student", syn, "data.range.rows=ring")
    model = balvit.load(perturbed_checkpoint(cfg, tmp_path / "ring.pt"), device="cpu")
    reader = build_reader(cfg.data, "valid")
    points = reader.load_points(0)
    with pytest.raises(DataError, match="rings="):
        model.predict(points)
    with pytest.raises(DataError, match="whole numbers"):
        model.predict(points, rings=np.full(len(points), 0.5))
    rings = np.random.default_rng(0).integers(0, cfg.data.range.height, len(points))
    pred = model.predict(points, rings=rings)
    other = model.predict(points, rings=(rings + 1) % cfg.data.range.height)
    assert pred.shape == (len(points),) and (pred != other).any()  # the rings decide the rows


def test_import_balvit_errors_stays_light():
    import subprocess
    import sys

    code = "import sys, balvit, balvit.errors; assert 'torch' not in sys.modules; print(callable(balvit.load))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


# --------------------------------------------------------------------------- predict --input


def run_cli(*args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return balvit_main(list(args))


def test_predict_input_files_match_the_api(syn, checkpoints, tmp_path, capsys):
    from balvit.data.pointfiles import read_point_file

    ck = checkpoints["balvit"]
    scans = sorted((syn / "sequences/08/velodyne").glob("*.bin"))
    pcd_dir = tmp_path / "in"
    pcd_dir.mkdir()
    # the same scan as a .npy array (x, y, z, remission), to be found through a folder
    np.save(pcd_dir / "copy.npy", np.fromfile(scans[0], dtype=np.float32).reshape(-1, 4))
    out = tmp_path / "out"
    capsys.readouterr()
    assert run_cli("predict", "--checkpoint", str(ck), "--input", str(scans[0].parent / "*.bin"), str(pcd_dir),
                   "--out", str(out), "--format", "npy", "--ply", "--viewer", "1", "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "kitti-bin" in printed and "npy" in printed and "remission" in printed
    model = balvit.load(ck, device="cpu")
    for path in [*scans, pcd_dir / "copy.npy"]:
        stem = path.stem
        want = model.predict(read_point_file(path, dataset="semantickitti").points)
        np.testing.assert_array_equal(np.load(out / f"{stem}.npy"), want)
        assert (out / f"{stem}.ply").is_file()
    np.testing.assert_array_equal(np.load(out / "copy.npy"), np.load(out / f"{scans[0].stem}.npy"))
    pages = sorted((out / "viewer").glob("*.html"))
    assert len(pages) == 1 and "plotly" in pages[0].read_text()[:20000].lower()
    summary = json.loads((out / "predictions.json").read_text())
    assert summary["files"] == 3 and summary["checkpoint"] == str(ck) and len(summary["inputs"]) == 3


def test_predict_input_refusals(syn, checkpoints, tmp_path, capsys):
    ck = str(checkpoints["balvit"])
    (tmp_path / "a.xyz").write_text("1 2 3\n")
    (tmp_path / "short.bin").write_bytes(b"\0" * 10)
    np.save(tmp_path / "noint.npy", np.zeros((20, 3), np.float32) + 5)
    cases = [
        ([str(tmp_path / "a.xyz")], "unknown point-cloud file type"),
        ([str(tmp_path / "short.bin")], "not a multiple of 16"),
        ([str(tmp_path / "noint.npy")], "no intensity field"),
        ([str(tmp_path / "missing.bin")], "no such file"),
    ]
    for inputs, message in cases:
        capsys.readouterr()
        assert run_cli("predict", "--checkpoint", ck, "--input", *inputs, "--out", str(tmp_path / "o")) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # --intensity zero accepts the file without intensity
    assert run_cli("predict", "--checkpoint", ck, "--input", str(tmp_path / "noint.npy"), "--intensity", "zero",
                   "--out", str(tmp_path / "o"), "--no-progress") == 0
    assert np.fromfile(tmp_path / "o/noint.label", dtype=np.uint32).shape == (20,)
    capsys.readouterr()
    # a nuScenes-only format for a SemanticKITTI model, and the dataset form without a config
    assert run_cli("predict", "--checkpoint", ck, "--input", str(tmp_path / "noint.npy"), "--intensity", "zero",
                   "--format", "lidarseg", "--out", str(tmp_path / "o")) == 2
    assert "lidarseg" in capsys.readouterr().err
    assert run_cli("predict", "--checkpoint", ck, "--out", str(tmp_path / "o")) == 2
    assert "CONFIG" in capsys.readouterr().err


# --------------------------------------------------------------------------- viewer wiring


def test_eval_and_predict_write_viewer_pages(syn, checkpoints, tmp_path, capsys):
    config = str(REPO / "config/synthetic/tiny.yaml")
    ck = str(checkpoints["balvit"])
    assert run_cli("eval", config, "--data_root", str(syn), "--checkpoint", ck, "--save_path", str(tmp_path / "ev"),
                   "--viewer", "1", "--pictures", "0", "--no-progress") == 0
    pages = sorted((tmp_path / "ev/viewer").glob("*.html"))
    assert [p.name for p in pages] == ["08_000000.html"]
    page = pages[0].read_text()
    assert "ground truth" in page and "point accuracy" in page  # labelled split: both views
    assert run_cli("predict", config, "--data_root", str(syn), "--checkpoint", ck, "--out", str(tmp_path / "pr"),
                   "--viewer", "5", "--pictures", "0", "--no-progress") == 0
    assert len(list((tmp_path / "pr/viewer").glob("*.html"))) == 2  # the split has 2 frames
    capsys.readouterr()
    assert run_cli("eval", config, "--data_root", str(syn), "--checkpoint", ck, "--viewer", "1") == 2
    assert "--viewer needs --save_path" in capsys.readouterr().err
    assert run_cli("predict", config, "--data_root", str(syn), "--checkpoint", ck, "--out", str(tmp_path / "x"),
                   "--ply") == 2
    assert "only with --input" in capsys.readouterr().err


def test_predict_input_under_two_processes(syn, checkpoints, tmp_path):
    """`torchrun -m balvit` (the README form) with 2 gloo processes: every file predicted once, the viewer pages on rank 0 only (every
    rank runs the same evaluators, so the reductions match and nothing hangs)."""
    import os
    import subprocess
    import sys

    scans = sorted((syn / "sequences").glob("*/velodyne/*.bin"))
    assert len(scans) == 4
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "balvit", "predict", "--checkpoint", str(checkpoints["elite_student"]),
                           "--input", *map(str, scans), "--out", str(tmp_path / "out"), "--viewer", "1",
                           "--no-progress", "--format", "npy"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.npy"))
    # the two sequences' equal stems stay distinct: named by their path below the inputs' common folder
    assert written == [f"{s}/velodyne/{f}.npy" for s in ("00", "08") for f in ("000000", "000001")]
    summary = json.loads((tmp_path / "out/predictions.json").read_text())
    assert summary["files"] == 4 and summary["viewer_pages"] == 1
    assert len(list((tmp_path / "out/viewer").glob("*.html"))) == 1


# --------------------------------------------------------------------------- real scans

REAL = REPO.parent / "shared" / "data" / "real"
REAL_KITTI = REAL / "semantickitti"
REAL_NUSCENES = sorted((REAL / "nuscenes").glob("*.pcd.bin")) if (REAL / "nuscenes").is_dir() else []
NUSCENES_TINY = ["data.dataset=nuscenes", "data.intensity_scale=0.00392156862745098", "data.range.rows=ring",
                 "data.range.height=32", "data.range.fov_up=11.3", "data.range.fov_down=-31.4",
                 "data.range.min_range=1.0"]


@pytest.mark.skipif(not (REAL_KITTI / "sequences/00/velodyne").is_dir(), reason="real scans not found (../shared/data/real)")
def test_real_semantickitti_scans(checkpoints, tmp_path, capsys):
    """The three real SemanticKITTI scans (124 k points each): the API, `balvit predict --input` and the
    dataset form `balvit predict CONFIG --data_root` give the same predictions on every point; eval
    writes the page with the official labels."""
    from balvit.data.semantickitti import SemanticKITTI

    ck = checkpoints["balvit"]
    config = str(REPO / "config/synthetic/tiny.yaml")
    seq = ["data.val_sequences=['00']"]
    assert run_cli("predict", config, "--data_root", str(REAL_KITTI), "--checkpoint", str(ck), "--out",
                   str(tmp_path / "ds"), "--pictures", "0", "--no-progress", *seq) == 0
    assert run_cli("predict", "--checkpoint", str(ck), "--input", str(REAL_KITTI / "sequences/00/velodyne"),
                   "--out", str(tmp_path / "files"), "--no-progress") == 0
    model = balvit.load(ck, device="cpu")
    reader = SemanticKITTI(REAL_KITTI, "valid", sequences=["00"])
    assert len(reader) == 3
    preds = model.predict([reader.load_points(i) for i in range(3)])
    for i, frame in enumerate(reader.frames):
        stem = frame.split("/")[1]
        dataset_form = np.fromfile(tmp_path / f"ds/sequences/00/predictions/{stem}.label", dtype=np.uint32)
        files_form = np.fromfile(tmp_path / f"files/{stem}.label", dtype=np.uint32)
        assert len(files_form) == reader.num_points(i) > 120_000
        np.testing.assert_array_equal(files_form, dataset_form)
        np.testing.assert_array_equal(model.to_raw(preds[i]), files_form)
    assert run_cli("eval", config, "--data_root", str(REAL_KITTI), "--checkpoint", str(ck), "--save_path",
                   str(tmp_path / "ev"), "--viewer", "1", "--pictures", "0", "--no-progress", *seq) == 0
    page = (tmp_path / "ev/viewer/00_000000.html").read_text()
    assert "showing a random subset of 60,000 of 124,668 points" in page and "ground truth" in page


@pytest.mark.skipif(len(REAL_NUSCENES) < 2, reason="real nuScenes scans not found (../shared/data/real)")
def test_real_nuscenes_scans_take_their_rings(syn, tmp_path, capsys):
    """A nuScenes model whose range-view rows are the laser rings predicts the two real LIDAR_TOP scans
    from `balvit predict --input` (rings from the .pcd.bin's 5th float) exactly as the API does from the
    rotated points and the rings; lidarseg output ids are 1..16."""
    from balvit.data.nuscenes import lidar_top_to_library

    cfg = tiny_model_config("elite_student", syn, *NUSCENES_TINY)
    ck = perturbed_checkpoint(cfg, tmp_path / "nu.pt")
    capsys.readouterr()
    assert run_cli("predict", "--checkpoint", str(ck), "--input", *map(str, REAL_NUSCENES), "--out",
                   str(tmp_path / "out"), "--no-progress") == 0
    printed = capsys.readouterr().out
    assert "range-view rows = field 'ring' (0..31)" in printed and "nuScenes intensity 0..255" in printed
    model = balvit.load(ck, device="cpu")
    for path in REAL_NUSCENES:
        raw = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
        want = model.to_raw(model.predict(lidar_top_to_library(raw), rings=raw[:, 4]))
        stem = path.name[: -len(".pcd.bin")]
        got = np.fromfile(tmp_path / f"out/{stem}_lidarseg.bin", dtype=np.uint8)
        np.testing.assert_array_equal(got, want)
        assert got.min() >= 1 and got.max() <= 16 and len(got) == len(raw)


def test_missing_backbone_weights_fail_as_in_training(syn, checkpoints, tmp_path):
    """A checkpoint whose frozen backbone comes from weights that are not on this machine: balvit.load
    stops with the weight source's own message, naming the checkpoint and the file."""
    from balvit.engine.checkpoint import load_checkpoint
    from balvit.errors import CheckpointError
    from balvit.io import torch_save

    state = load_checkpoint(checkpoints["balvit"])
    missing = tmp_path / "dinov2_missing.safetensors"
    state["config"]["model"]["backbone"]["weights"] = str(missing)
    torch_save(state, tmp_path / "moved.pt")
    with pytest.raises(CheckpointError) as err:
        balvit.load(tmp_path / "moved.pt", device="cpu")
    text = str(err.value)
    assert str(tmp_path / "moved.pt") in text and str(missing) in text and "\n" not in text
