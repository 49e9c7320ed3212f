"""The data commands of the CLI, run as a user runs them."""

import subprocess
import sys

from balvit.data.splits import read_split_file
from conftest import REPO

ENV_PATH = str(REPO / "src")


def balvit(*args, cwd=REPO):
    import os

    env = {**os.environ, "PYTHONPATH": ENV_PATH, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "balvit.cli", *args], capture_output=True, text=True, env=env, cwd=cwd)


def test_generate_stats_and_splits_commands(tmp_path):
    out = tmp_path / "syn"
    gen = balvit("generate", "--format", "semantickitti", "--out", str(out), "--sequences", "00", "--frames", "2",
                 "--beams", "8", "--azimuth-steps", "64", "--no-cameras", "--no-progress")
    assert gen.returncode == 0, gen.stderr
    assert "frames=2" in gen.stdout
    assert sorted(p.name for p in (out / "sequences/00/velodyne").iterdir()) == ["000000.bin", "000001.bin"]

    stats = balvit("stats", "config/synthetic/tiny.yaml", "--data_root", str(out), "data.train_sequences=['00']", "--no-progress")
    assert stats.returncode == 0, stats.stderr
    assert "mean: [" in stats.stdout and "std: [" in stats.stdout

    splits = balvit("splits", "--dataset", "semantickitti", "--out", str(tmp_path / "lists"), "--percents", "1,10")
    assert splits.returncode == 0, splits.stderr
    assert read_split_file(tmp_path / "lists/1.txt") == read_split_file(REPO / "splits/semantickitti/1.txt")
    assert len(read_split_file(tmp_path / "lists/10.txt")) == 1913

    bad = balvit("generate", "--format", "semantickitti", "--out", str(out), "--sequences", "99", "--frames", "1")
    assert bad.returncode == 2 and "99" in bad.stderr and "Traceback" not in bad.stderr
