"""The trainer, evaluation and prediction on tiny datasets in the official layouts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from balvit.run_config import load_config
from balvit.data.labels import semantickitti_labels
from balvit.engine.checkpoint import load_checkpoint
from balvit.engine.trainer import Trainer, run_eval, run_predict
from balvit.errors import CheckpointError
from conftest import CPU, REPO, config_of
from fakedata import write_kitti, write_nuscenes

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("kitti")
    write_kitti(root, counts={"00": 5, "08": 3}, n_points=1500, seed=4)
    return root


def tiny(root, *more):
    return config_of("tiny.yaml", root, *more)


def losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "train/loss" in rec:
            out[rec["step"]] = rec["train/loss"]
    return out


def test_resumed_run_equals_uninterrupted_run(kitti_root, tmp_path):
    cfg = tiny(kitti_root, "train.steps=4", "train.save_every=2")
    full = Trainer(cfg, tmp_path / "full", CPU, progress=False)
    full.fit()
    part = Trainer(cfg, tmp_path / "part", CPU, progress=False)
    part.fit(max_steps=2)  # "interrupted" after step 2: last.pt holds step 2
    assert load_checkpoint(tmp_path / "part/last.pt")["step"] == 2
    resumed = Trainer(cfg, tmp_path / "part", CPU, progress=False)
    resumed.fit()
    assert resumed.step == 4
    a, b = full.model.trainable_state_dict(), resumed.model.trainable_state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert losses(tmp_path / "full") == losses(tmp_path / "part")
    # the run directory holds what a user expects
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "val_metrics.json"):
        assert (tmp_path / "full" / name).exists(), name
    assert list((tmp_path / "full" / "tensorboard").glob("events.out.tfevents.*"))


def test_checkpoint_holds_only_trainable_state_and_backbone_identity(kitti_root, tmp_path):
    cfg = tiny(kitti_root, "train.steps=1")
    Trainer(cfg, tmp_path, CPU, progress=False).fit()
    state = load_checkpoint(tmp_path / "last.pt")
    assert not any(k.startswith("backbone.") for k in state["model"])
    assert state["frozen"]["backbone"]["name"] == "tiny" and len(state["frozen"]["backbone"]["sha256"]) == 64
    assert state["config"]["model"]["name"] == "balvit" and state["step"] == 1
    for key in ("optimizer", "scheduler", "rng"):
        assert state[key]
    # a different backbone is refused, naming the checkpoint
    other = tiny(kitti_root, "model.backbone.name=tiny_reg")
    with pytest.raises(Exception, match="last.pt"):
        run_eval(other, tmp_path / "last.pt", CPU)
    with pytest.raises(CheckpointError, match="not found"):
        run_eval(cfg, tmp_path / "missing.pt", CPU)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        run_eval(cfg, tmp_path / "broken.pt", CPU)


def test_eval_writes_metrics_and_pictures(kitti_root, tmp_path, capsys):
    cfg = tiny(kitti_root, "train.steps=2")
    Trainer(cfg, tmp_path / "run", CPU, progress=False).fit()
    metrics = run_eval(cfg, tmp_path / "run/best.pt", CPU, save_path=tmp_path / "eval", pictures=1, progress=False)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"mIoU: {metrics['miou']:.2f}"
    saved = json.loads((tmp_path / "eval/metrics.json").read_text())
    assert set(saved["iou"]) == set(semantickitti_labels().class_names) and 0 <= saved["miou"] <= 100
    assert saved["frames"] == 3
    conf = np.array(json.loads((tmp_path / "eval/confusion.json").read_text())["rows_gt_cols_pred"])
    # every labelled (non-ignored) point of sequence 08 is counted exactly once
    from balvit.data.semantickitti import SemanticKITTI

    val = SemanticKITTI(kitti_root, "valid")
    assert conf.sum() == sum(int((val.load_labels(i) != 255).sum()) for i in range(len(val)))
    assert (tmp_path / "eval/metrics.md").read_text().count("|") > 20
    assert len(list((tmp_path / "eval/pictures").glob("*.png"))) == 2


def test_kitti_predictions_in_the_official_layout(kitti_root, tmp_path):
    cfg = tiny(kitti_root, "train.steps=1")
    Trainer(cfg, tmp_path / "run", CPU, progress=False).fit()
    n = run_predict(cfg, tmp_path / "run/last.pt", CPU, tmp_path / "pred", split="valid", pictures=0, progress=False)
    assert n == 3
    spec = semantickitti_labels()
    for k in range(3):
        f = tmp_path / f"pred/sequences/08/predictions/{k:06d}.label"
        scan = kitti_root / f"sequences/08/velodyne/{k:06d}.bin"
        assert f.stat().st_size == scan.stat().st_size // 16 * 4  # one uint32 per point
        raw = np.fromfile(f, dtype=np.uint32)
        assert set(np.unique(raw)) <= set(spec.train_to_raw.tolist())
        spec.to_train(raw, f)  # readable through the dataset's own label map
    assert not list((tmp_path / "pred").rglob("*.tmp"))


def test_nuscenes_predictions_are_uint8_1_to_16(tmp_path):
    root = tmp_path / "nus"
    write_nuscenes(root, n_points=400, samples_per_scene=2)
    cfg = load_config(REPO / "config/synthetic/tiny.yaml", [
        f"data.root={root}", "data.dataset=nuscenes", "data.version=v1.0-mini", "data.train_sequences=[]",
        "data.val_sequences=[]", "data.intensity_scale=0.0039", "train.steps=1"])
    Trainer(cfg, tmp_path / "run", CPU, progress=False).fit()
    n = run_predict(cfg, tmp_path / "run/last.pt", CPU, tmp_path / "pred", split="valid", pictures=0, progress=False)
    files = sorted((tmp_path / "pred/lidarseg/mini_val").glob("*_lidarseg.bin"))
    assert n == len(files) == 2
    for f in files:
        pred = np.fromfile(f, dtype=np.uint8)
        assert pred.min() >= 1 and pred.max() <= 16 and len(pred) == 400
    # one file per validation keyframe, named by its LIDAR_TOP sample_data token
    from balvit.data.nuscenes import NuScenes

    val = NuScenes(root, "valid", version="v1.0-mini")
    assert {f.name for f in files} == {f"{t}_lidarseg.bin" for t in val.frames}


def run_cli(args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV, cwd=REPO, **kw)


def test_two_process_ddp_training_and_evaluation_equal_one_process(kitti_root, tmp_path):
    run = tmp_path / "ddp"
    cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "main.py", "config/synthetic/tiny.yaml", f"--data_root={kitti_root}", f"--save_path={run}", "train.steps=2"]
    proc = run_cli(cmd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "last.pt").exists() and load_checkpoint(run / "last.pt")["step"] == 2
    assert len(load_checkpoint(run / "last.pt")["rng"]) == 2  # RNG state of both ranks
    one, two = tmp_path / "eval1", tmp_path / "eval2"
    p1 = run_cli(["main.py", "config/synthetic/tiny.yaml", f"--data_root={kitti_root}", f"--save_path={one}",
                  "--test_only", "--checkpoint", str(run / "best.pt")], timeout=600)
    assert p1.returncode == 0, p1.stderr[-3000:]
    p2 = run_cli(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "main.py",
                  "config/synthetic/tiny.yaml", f"--data_root={kitti_root}", f"--save_path={two}",
                  "--test_only", "--checkpoint", str(run / "best.pt")], timeout=600)
    assert p2.returncode == 0, p2.stderr[-3000:]
    c1 = json.loads((one / "confusion.json").read_text())["rows_gt_cols_pred"]
    c2 = json.loads((two / "confusion.json").read_text())["rows_gt_cols_pred"]
    assert c1 == c2 and np.sum(c1) > 0
    m1, m2 = json.loads((one / "metrics.json").read_text()), json.loads((two / "metrics.json").read_text())
    assert m1["frames"] == m2["frames"] == 3  # 3 frames over 2 ranks: each counted once
    assert "mIoU:" in p2.stdout and p2.stdout.count("mIoU:") == 1  # printed by rank 0 only


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_saves_a_checkpoint_and_exits_130(kitti_root, tmp_path, workers):
    """workers=0: the signal reaches the trainer alone (`kill PID`); workers=1: the whole process group,
    loader worker included, gets it (`kill -- -PGID`, Slurm's scancel): the worker must not take the run down."""
    run = tmp_path / "sig"
    cmd = [sys.executable, "-m", "balvit.cli", "train", "config/synthetic/tiny.yaml", f"--data_root={kitti_root}",
           f"--save_path={run}", "train.steps=100000", "train.save_every=100000", f"data.num_workers={workers}",
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2):
        time.sleep(0.2)
    if workers:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    state = load_checkpoint(run / "last.pt")
    assert state["step"] >= 2
    assert "saved" in err or "last.pt" in err


def test_cli_errors_are_one_clear_line(kitti_root, tmp_path):
    bad = run_cli(["-m", "balvit.cli", "info", "config/synthetic/tiny.yaml", "train.stpes=3"])
    assert bad.returncode == 2 and "unknown config key 'train.stpes'" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli(["-m", "balvit.cli", "eval", "config/synthetic/tiny.yaml", f"--data_root={kitti_root}",
                       "--checkpoint", str(tmp_path / "nope.pt")])
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr and "nope.pt" in missing.stderr
    wrong_root = run_cli(["-m", "balvit.cli", "train", "config/synthetic/tiny.yaml", f"--data_root={tmp_path}",
                          f"--save_path={tmp_path / 'r'}"])
    assert wrong_root.returncode == 2 and str(tmp_path) in wrong_root.stderr and "Traceback" not in wrong_root.stderr


def test_info_prints_parameter_counts():
    proc = run_cli(["-m", "balvit.cli", "info", "config/synthetic/tiny.yaml"])
    assert proc.returncode == 0, proc.stderr
    lines = dict(l.split(": ", 1) for l in proc.stdout.splitlines() if l.split(":")[0] in ("trainable", "frozen", "total"))
    assert int(lines["trainable"]) + int(lines["frozen"]) == int(lines["total"]) and int(lines["frozen"]) > 0
