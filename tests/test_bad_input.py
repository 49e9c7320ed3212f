"""Issue 17, "No silent wrong result, no lost run": one test per numbered case, named after it.

Each test runs the command as a user would (`balvit.cli.main`, in this process, so that an uncaught
exception fails the test just as a traceback would; as a subprocess where the case is about the
process: argument parsing, torchrun) on tiny `balvit generate` data, and asserts the exit status,
that the message names the file or field at fault, and that the run folder did not change where
the case is about a run folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from balvit.cli import main
from conftest import CPU, REPO, config_of, generated_dataset

TINY = str(REPO / "config" / "synthetic" / "tiny.yaml")
NUSC = ["data.dataset=nuscenes", "data.version=v1.0-mini", "data.train_sequences=[]", "data.val_sequences=[]",
        "data.intensity_scale=0.0039"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}


# ------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def _keep_logging():
    """`balvit train` replaces the root logger's handlers (engine/log.py); put pytest's back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def cli(capsys, *args) -> tuple[int, str, str]:
    """(exit status, stderr, stdout) of `balvit ARGS`."""
    capsys.readouterr()
    rc = main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.err, captured.out


def train(capsys, root, save_path, *more):
    return cli(capsys, "train", TINY, "--data_root", root, "--save_path", save_path, "--no-progress", *more)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (hidden ones included)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def add_unlabelled_sequence(root: Path, seq: str = "01") -> None:
    shutil.copytree(root / "sequences" / "08", root / "sequences" / seq)
    shutil.rmtree(root / "sequences" / seq / "labels")


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "bad_kitti", image_scale=0.1)


@pytest.fixture(scope="module")
def nusc(tmp_path_factory):
    return generated_dataset(tmp_path_factory, "bad_nusc", fmt="nuscenes")


@pytest.fixture(scope="module")
def base_run(kitti, tmp_path_factory):
    """A one-step training run of tiny.yaml (its folder: config.yaml, last.pt, best.pt, metrics.jsonl)."""
    from balvit.engine.trainer import Trainer

    run = tmp_path_factory.mktemp("base") / "run"
    Trainer(config_of("tiny.yaml", kitti, "train.steps=1"), run, CPU, progress=False).fit()
    return run


@pytest.fixture(scope="module")
def nusc_checkpoint(nusc, tmp_path_factory):
    """An untrained nuScenes checkpoint of tiny.yaml (16 classes)."""
    from balvit.config import to_dict
    from balvit.engine.checkpoint import save_checkpoint
    from balvit.models import build_model

    cfg = config_of("tiny.yaml", nusc, *NUSC)
    path = tmp_path_factory.mktemp("nusc_ckpt") / "last.pt"
    save_checkpoint(path, model=build_model(cfg, 16), step=0, config=to_dict(cfg))
    return path


# ----------------------------------------------------------------------- silent wrong results


def test_case01_unlabelled_training_sequence_is_refused(kitti, tmp_path, capsys):
    root = copy(kitti, tmp_path / "data")
    add_unlabelled_sequence(root, "01")
    for sequences in ('["01"]', '["00","01"]'):  # alone, and next to the labelled 00
        for preflight in ("true", "false"):  # the pre-flight check, and the readers without it
            rc, err, _ = train(capsys, root, tmp_path / "run", "train.steps=1", f"data.train_sequences={sequences}",
                               f"data.preflight={preflight}")
            assert rc == 2 and "sequences/01/labels" in err and "Traceback" not in err, (sequences, preflight, err)
    assert not (tmp_path / "run").exists()


def test_case02_nuscenes_without_lidarseg_json_names_it(nusc, nusc_checkpoint, tmp_path, capsys):
    root = copy(nusc, tmp_path / "data")
    (root / "v1.0-mini" / "lidarseg.json").unlink()
    for preflight in ("true", "false"):
        rc, err, _ = train(capsys, root, tmp_path / "run", "train.steps=1", f"data.preflight={preflight}", *NUSC)
        assert rc == 2 and "v1.0-mini/lidarseg.json" in err, err
    assert not (tmp_path / "run").exists()
    rc, err, _ = cli(capsys, "eval", TINY, "--data_root", root, "--checkpoint", nusc_checkpoint, "--no-progress",
                     "data.preflight=false", *NUSC)
    assert rc == 2 and "lidarseg.json" in err and "balvit eval" in err
    # prediction needs no labels: the same copy is predicted
    rc, err, out = cli(capsys, "predict", TINY, "--data_root", root, "--checkpoint", nusc_checkpoint, "--out",
                       tmp_path / "pred", "--pictures", 0, "--no-progress", *NUSC)
    assert rc == 0 and "predicted 2 of 2" in out, err


def test_case03_resuming_with_a_changed_config_is_refused_naming_the_field(base_run, tmp_path, capsys, kitti):
    run = copy(base_run, tmp_path / "run")
    before = snapshot(run)
    rc, err, _ = train(capsys, kitti, run, "train.steps=1", "train.lr=0.01")
    assert rc == 2 and "train.lr" in err and "0.001" in err and "0.01" in err and "--restart" in err
    assert snapshot(run) == before
    # a field documented as safe to change on resume is accepted (here: more steps)
    from balvit.config import RESUME_SAFE

    assert "train.steps" in RESUME_SAFE and "train.lr" not in RESUME_SAFE
    # --restart moves the old run aside and starts over with the new config
    rc, err, _ = train(capsys, kitti, run, "train.steps=1", "train.lr=0.01", "--restart")
    assert rc == 0, err
    (old,) = run.glob("replaced-*")
    assert snapshot(old)["last.pt"] == before["last.pt"]
    from balvit.engine.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt")["config"]["train"]["lr"] == 0.01


@pytest.mark.parametrize("change,named", [("data.range.mean=[1,1,1,1,1]", "data.range.mean"),
                                          ("data.bev.radius_bins=16", "data.bev.radius_bins")])
def test_case04_eval_refuses_data_settings_the_model_was_not_trained_with(base_run, kitti, change, named, tmp_path,
                                                                         capsys):
    rc, err, out = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", base_run / "last.pt",
                       "--save_path", tmp_path / "eval", "--no-progress", change)
    assert rc == 2 and named in err and str(base_run / "last.pt") in err and "mIoU" not in out
    assert not (tmp_path / "eval").exists()  # nothing written for a refused checkpoint


def test_case05_a_missing_scan_whose_label_exists_is_refused(kitti, base_run, nusc, nusc_checkpoint, tmp_path, capsys):
    ckpt = base_run / "last.pt"
    rc, err, out = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", ckpt, "--pictures", 0,
                       "--no-progress")
    assert rc == 0 and "evaluated 3 of 3 valid frames" in out, err
    root = copy(kitti, tmp_path / "data")
    (root / "sequences/08/velodyne/000001.bin").unlink()  # a validation scan
    for preflight in ("true", "false"):
        rc, err, out = cli(capsys, "eval", TINY, "--data_root", root, "--checkpoint", ckpt, "--no-progress",
                           f"data.preflight={preflight}")
        assert rc == 2 and "sequences/08/labels/000001.label" in err and "evaluated" not in out, err
    shutil.copy(kitti / "sequences/08/velodyne/000001.bin", root / "sequences/08/velodyne/000001.bin")
    (root / "sequences/00/velodyne/000002.bin").unlink()  # a training scan
    for preflight in ("true", "false"):
        rc, err, _ = train(capsys, root, tmp_path / "run", "train.steps=1", f"data.preflight={preflight}")
        assert rc == 2 and "sequences/00/labels/000002.label" in err, err
    assert not (tmp_path / "run").exists()
    # nuScenes lists its frames from the tables: a listed frame whose scan is missing is refused
    from balvit.data.nuscenes import NuScenes

    nroot = copy(nusc, tmp_path / "nusc")
    scan = NuScenes(nroot, "valid", version="v1.0-mini").scan_path(1)
    scan.unlink()
    for preflight in ("true", "false"):
        rc, err, out = cli(capsys, "eval", TINY, "--data_root", nroot, "--checkpoint", nusc_checkpoint,
                           "--no-progress", f"data.preflight={preflight}", *NUSC)
        assert rc == 2 and scan.name in err and "mIoU" not in out, err


def test_case06_duplicate_yaml_key_is_refused(tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text(f"_base_: {TINY}\ntrain:\n  steps: 1\ntrain:\n  lr: 0.1\n")
    rc, err, _ = cli(capsys, "info", cfg)
    assert rc == 2 and str(cfg) in err and "'train' is given twice" in err


def test_case07_stats_of_zero_frames_is_refused(kitti, capsys):
    rc, err, out = cli(capsys, "stats", TINY, "--data_root", kitti, "--frames", 0)
    assert rc == 2 and "--frames" in err and "mean" not in out


# ------------------------------------------------------------------------- lost or corrupted runs


def test_case08_two_trainings_in_one_folder_and_a_stale_lock(base_run, kitti, tmp_path, capsys):
    import socket

    run = copy(base_run, tmp_path / "run")
    holder = subprocess.Popen(["sleep", "60"])
    try:
        (run / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "now"}))
        before = snapshot(run)
        rc, err, _ = train(capsys, kitti, run, "train.steps=2")
        assert rc == 2 and f"process {holder.pid}" in err and "in use" in err
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()
    rc, err, _ = train(capsys, kitti, run, "train.steps=2")  # the holder is gone: its lock is taken over
    assert rc == 0 and f"taking over the lock of process {holder.pid}" in err, err
    assert not (run / ".lock").exists()


def test_case09_rerun_with_another_model_changes_nothing(base_run, kitti, tmp_path, capsys):
    run = copy(base_run, tmp_path / "run")
    before = snapshot(run)
    rc, err, _ = train(capsys, kitti, run, "train.steps=2", "model.balvit.stem_channels=16")
    assert rc == 2 and "model.balvit.stem_channels" in err
    assert snapshot(run) == before  # config.yaml included


def test_case10_killed_run_leaves_no_temporaries_and_logs_every_step_once(base_run, kitti, tmp_path, capsys):
    run = copy(base_run, tmp_path / "run")
    (run / ".last.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # what SIGKILL during a save leaves
    with open(run / "metrics.jsonl", "a") as f:  # steps logged after the last checkpoint, then killed
        f.write(json.dumps({"step": 2, "time": 1.0, "train/loss": 9.9}) + "\n" + '{"step": 3, "ti')
    rc, err, _ = train(capsys, kitti, run, "train.steps=2")
    assert rc == 0, err
    assert not list(run.glob("*.tmp"))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in json.loads(line)]
    assert steps == [1, 2]
    assert 9.9 not in [json.loads(line).get("train/loss") for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread")
def test_case10_a_second_ctrl_c_still_saves_and_stops(kitti, tmp_path):
    from balvit.engine.checkpoint import load_checkpoint
    from balvit.engine.trainer import Trainer

    trainer = Trainer(config_of("tiny.yaml", kitti, "train.steps=50", "train.save_every=50"), tmp_path / "run", CPU,
                      progress=False)
    step = trainer._train_step

    def interrupted_step(task, batch):
        out = step(task, batch)
        if trainer.step == 0:  # Ctrl-C twice during the first step
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return out

    trainer._train_step = interrupted_step
    with pytest.raises(SystemExit) as stop:
        trainer.fit()
    assert stop.value.code == 130 and trainer.signals == 2
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 1
    assert not (tmp_path / "run" / ".lock").exists()


# --------------------------------------------------------------------- late failures, tracebacks


def test_case11_unusable_validation_split_is_refused_before_step_1(kitti, tmp_path, capsys):
    root = copy(kitti, tmp_path / "data")
    add_unlabelled_sequence(root, "01")
    for preflight in ("true", "false"):
        rc, err, _ = train(capsys, root, tmp_path / "run", "train.steps=1", 'data.val_sequences=["01"]',
                           f"data.preflight={preflight}")
        assert rc == 2 and "sequences/01/labels" in err and "'valid'" in err, err
    scan = root / "sequences/08/velodyne/000001.bin"
    scan.write_bytes(scan.read_bytes()[:-8])  # truncated: half a point
    rc, err, _ = train(capsys, root, tmp_path / "run", "train.steps=1")
    assert rc == 2 and "sequences/08/velodyne/000001.bin" in err and "truncated" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_case12_unwritable_output_is_one_line_before_the_work(kitti, base_run, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    ckpt = base_run / "last.pt"
    commands = {
        "train": ["train", TINY, "--data_root", kitti, "--save_path", afile / "run", "train.steps=1"],
        "eval": ["eval", TINY, "--data_root", kitti, "--checkpoint", ckpt, "--save_path", afile / "eval"],
        "predict": ["predict", TINY, "--data_root", kitti, "--checkpoint", ckpt, "--out", afile / "pred"],
        "generate": ["generate", "--format", "semantickitti", "--out", afile / "gen", "--sequences", "00",
                     "--frames", 1, "--beams", 16, "--azimuth-steps", 64, "--no-cameras"],
        "splits": ["splits", "--dataset", "semantickitti", "--out", afile / "splits", "--data_root", kitti,
                   "--sequences", "00"],
    }
    for name, args in commands.items():
        rc, err, out = cli(capsys, *args, "--no-progress") if name != "splits" else cli(capsys, *args)
        assert rc == 2, (name, err)
        (line,) = [x for x in err.splitlines() if x.startswith(f"balvit {name}: error:")]
        assert str(afile) in line and "not writable" in line, err
        assert "evaluated" not in out and "predicted" not in out
    assert afile.read_text() == "a file, not a folder"


def test_case12_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(base_run, kitti, tmp_path, capsys):
    run = copy(base_run, tmp_path / "run")
    before = snapshot(run)
    assert (run / "last.pt").stat().st_size > 1_000_000
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a short write, as on a full disk
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))
    try:
        rc, err, _ = train(capsys, kitti, run, "train.steps=2")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    assert rc == 2 and "Traceback" not in err, err
    (line,) = [x for x in err.splitlines() if x.startswith("balvit train: error:")]
    assert "cannot write" in line and ".pt" in line and "disk full" in line
    assert snapshot(run)["last.pt"] == before["last.pt"]
    assert not list(run.glob(".*.tmp")) and not (run / ".lock").exists()


@pytest.mark.parametrize("override", ["train.save_every=0", "train.log_every=0", "eval.batch_size=0",
                                      "data.num_workers=-1"])
def test_case13_numeric_ranges_are_checked_at_load(override, capsys):
    rc, err, _ = cli(capsys, "info", TINY, override)
    assert rc == 2 and override.split("=")[0] in err


def test_case14_under_torchrun_the_error_line_is_what_torchrun_shows_last(kitti, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "balvit.cli", "train", TINY, f"--data_root={kitti}", f"--save_path={tmp_path / 'run'}",
                           "--no-progress", "train.stpes=1"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=300)
    line = "balvit train: error: unknown config key 'train.stpes'"
    assert proc.returncode == 1  # torchrun's own status whenever a child fails (its children exit 2)
    printed = [x for x in (proc.stderr + proc.stdout).splitlines() if x.startswith("balvit train: error")]
    assert len(printed) == 1 and printed[0].startswith(line)  # every rank raises it: rank 0 prints it once
    root_cause = proc.stderr.split("Root Cause (first observed failure):")[1]
    assert "exitcode  : 2" in root_cause and f"traceback : {line}" in root_cause
    tail = [x for x in proc.stderr.strip().splitlines() if x.strip("=")][-1]
    assert line in tail  # the last line before torchrun's closing rule


def test_case14_a_failing_non_zero_rank_leaves_its_line_to_torchrun(monkeypatch, tmp_path, capsys):
    error_file = tmp_path / "error.json"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    rc, err, _ = cli(capsys, "info", TINY, "train.stpes=1")
    assert rc == 2 and err == ""  # silent: torchrun's summary shows the line from the error file
    record = json.loads(error_file.read_text())["message"]
    assert record["extraInfo"]["py_callstack"].startswith("balvit info: error: unknown config key 'train.stpes'")
    monkeypatch.delenv("TORCHELASTIC_ERROR_FILE")  # another launcher (no error file): the rank prints it
    rc, err, _ = cli(capsys, "info", TINY, "train.stpes=1")
    assert rc == 2 and err.startswith("[rank 1] balvit info: error: unknown config key")


def test_case15_split_file_naming_a_missing_frame_names_the_split_file(kitti, tmp_path, capsys):
    split = tmp_path / "my_split.txt"
    split.write_text("00/000000\n00/000099\n")
    rc, err, _ = train(capsys, kitti, tmp_path / "run", "train.steps=1", f"data.split_file={split}",
                       "data.preflight=false")
    assert rc == 2 and str(split) in err and "00/000099" in err
    rc, err, _ = train(capsys, kitti, tmp_path / "run", "train.steps=1", f"data.split_file={split}")
    assert rc == 2 and str(split) in err and "00/000099" in err


def test_case15_the_partial_copy_hint_names_keys_that_work(kitti, base_run, tmp_path, capsys):
    ckpt = base_run / "last.pt"
    rc, err, _ = cli(capsys, "predict", TINY, "--data_root", kitti, "--checkpoint", ckpt, "--out", tmp_path / "p",
                     "--split", "test", "--no-progress")
    assert rc == 2 and "sequences/11/velodyne" in err and "this copy has sequences 00, 08" in err
    assert "data.val_split=test data.val_sequences=[...]" in err
    rc, err, out = cli(capsys, "predict", TINY, "--data_root", kitti, "--checkpoint", ckpt, "--out", tmp_path / "p",
                       "--split", "test", "--pictures", 0, "--no-progress", "data.val_split=test",
                       'data.val_sequences=["08"]')
    assert rc == 0 and "predicted 3 of 3 test frames" in out, err


def test_case15_smaller_messages(kitti, base_run, nusc_checkpoint, tmp_path, capsys):
    rc, err, _ = cli(capsys, "splits", "--dataset", "semantickitti", "--out", tmp_path / "s", "--percents", "one")
    assert rc == 2 and "--percents" in err
    proc = subprocess.run([sys.executable, "-m", "balvit.cli", "train"], capture_output=True, text=True, env=ENV,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "required: config, --save_path" in proc.stderr and "overrides" not in proc.stderr
    rc, err, _ = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", base_run, "--no-progress")
    assert rc == 2 and "is a directory" in err and str(base_run / "best.pt") in err
    rc, err, _ = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", base_run / "last.pt", "--pictures", -1,
                     "--save_path", tmp_path / "ev", "--no-progress")
    assert rc == 2 and "--pictures" in err and not (tmp_path / "ev").exists()
    rc, err, _ = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", nusc_checkpoint, "--no-progress")
    assert rc == 2 and "nuscenes (16 classes)" in err and "semantickitti (19 classes)" in err


# ------------------------------------------------------------------------- resources, security


def test_case16_an_explicit_omp_num_threads_is_respected(monkeypatch):
    from balvit.engine.trainer import set_threads

    before = torch.get_num_threads()
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    try:
        torch.set_num_threads(1)
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads(CPU)
        assert torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        set_threads(CPU)  # not chosen: the cores are shared among the local processes
        assert torch.get_num_threads() == 8
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_case17_atomic_files_get_the_users_umask(umask, mode, tmp_path):
    from balvit.io import torch_save, write_text

    old = os.umask(umask)
    try:
        write_text(tmp_path / "config.yaml", "a: 1\n")
        torch_save({"x": torch.zeros(2)}, tmp_path / "last.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == mode
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == mode


class _RunsCode:
    """Unpickling this calls os.mkdir(marker): what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_case18_a_checkpoint_that_would_run_code_is_refused(base_run, kitti, tmp_path, capsys):
    from balvit.engine.checkpoint import load_checkpoint

    marker = tmp_path / "code_ran"
    state = load_checkpoint(base_run / "last.pt")
    state["extra"] = {"payload": _RunsCode(marker)}
    torch.save(state, tmp_path / "evil.pt")
    rc, err, out = cli(capsys, "eval", TINY, "--data_root", kitti, "--checkpoint", tmp_path / "evil.pt", "--no-progress")
    assert rc == 2 and "evil.pt" in err and "could run code" in err and "mIoU" not in out
    assert not marker.exists()
