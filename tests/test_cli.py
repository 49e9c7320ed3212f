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


def test_bench_runs_the_checkouts_benchmarks(tmp_path):
    """`balvit bench` hands its options to benchmarks/run_all.py (here: a report from no results yet)."""
    results = tmp_path / "RESULTS.md"
    proc = balvit("bench", "--only-report", "--out-dir", str(tmp_path / "none"), "--results", str(results))
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = results.read_text()
    assert "51.87" in text and "reported" in text  # the paper's numbers beside ours, marked
    bad = balvit("bench", "--no-such-option")
    assert bad.returncode != 0 and "--no-such-option" in bad.stderr
