"""`make demo` end to end at toy size: generate, split, train, evaluate, report; then a rerun reuses the data."""

from __future__ import annotations

import json
from pathlib import Path

from balvit import demo
from balvit.data.splits import read_split_file


def test_demo_pipeline_writes_a_report_and_reuses_its_data(tmp_path: Path, capsys):
    out, data = tmp_path / "out", tmp_path / "data"
    args = ["--out", str(out), "--data", str(data), "--frames", "3", "--val-frames", "1", "--workers", "1",
            "--config", "config/synthetic/tiny.yaml", "train.steps=2"]  # a config/ path: resolved to the shipped configs
    assert demo.main(args) == 0
    first = capsys.readouterr().out
    assert "[5/5]" in first and "mIoU:" in first
    report = (out / "report.md").read_text()
    table = report.split("## Per-class IoU")[1].split("##")[0]
    assert all(f"| {name} |" in table for name in ("car", "road", "vegetation"))  # the per-class table
    assert "points per scan on average" in report and "? points" not in report
    assert (out / "iou.png").stat().st_size > 0 and list((out / "pictures").glob("*.png"))
    assert read_split_file(data / "splits" / "1.txt") == ["00/000000"]  # 1 %: sorted(frames)[::100] of 3 frames
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames"] == 1 and 0.0 <= metrics["miou"] <= 100.0
    pages = list((out / "viewer").glob("*.html"))
    assert len(pages) == 1 and "Plotly" in pages[0].read_text()[:2_000_000]  # the interactive page of one scan
    assert f"viewer/{pages[0].name}" in report and f"3D view: {pages[0]}" in first
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"generate", "split", "train", "evaluate"}

    assert demo.main(args) == 0  # the second run reuses the generated data
    assert "reusing" in capsys.readouterr().out
    assert "generate (reused the existing data)" in json.loads((out / "timings.json").read_text())
