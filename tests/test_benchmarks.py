"""The benchmark scripts (benchmarks/): the --quick paths run end to end and write well-formed
outputs; the fit, table, resampling and study-spec code on known inputs. Speeds are never asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import common  # noqa: E402
import export_bench  # noqa: E402
import label_efficiency as le  # noqa: E402
import run_all  # noqa: E402
import scaling_bench  # noqa: E402
import speed_bench  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------- helpers


def test_linear_fit_recovers_a_line_and_scores_noise():
    x = [30_000, 60_000, 120_000, 250_000]
    exact = common.linear_fit(x, [2e-6 * v + 0.5 for v in x])
    assert exact["slope"] == pytest.approx(2e-6) and exact["intercept"] == pytest.approx(0.5)
    assert exact["r2"] == pytest.approx(1.0)
    # y = x^2 on 0..3: least squares y = 3x - 1, residuals (1, -1, -1, 1), SS_tot 49: R^2 = 1 - 4 / 49
    quad = common.linear_fit([0, 1, 2, 3], [0, 1, 4, 9])
    assert quad["slope"] == pytest.approx(3.0) and quad["intercept"] == pytest.approx(-1.0)
    assert quad["r2"] == pytest.approx(1 - 4 / 49)
    assert common.linear_fit([1, 2, 3], [5, 5, 5])["r2"] == 1.0  # a flat line is fitted exactly
    with pytest.raises(ValueError, match="two equally long"):
        common.linear_fit([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        common.linear_fit([1], [1])


def test_md_table_formats_and_aligns():
    text = common.md_table(["model", "s", "params"], [["a", 0.01234, 1234567], ["b", None, float("nan")], ["c", 1234.5, 12.25]])
    assert text.splitlines() == [
        "| model | s | params |",
        "| --- | ---: | ---: |",
        "| a | 0.0123 | 1,234,567 |",
        "| b | - | - |",
        "| c | 1,234 | 12.2 |",
    ]
    assert common.md_table(["x", "y"], [], "ll").splitlines()[1] == "| --- | --- |"
    with pytest.raises(ValueError):
        common.md_table(["x", "y"], [["only one"]])


def test_run_child_names_a_kill_and_an_exit_code(tmp_path):
    script = tmp_path / "child.py"
    script.write_text("import json, os, signal, sys\n"
                      "mode = sys.argv[1]\n"
                      "if mode == 'ok': print('noise'); print(json.dumps({'seconds': 1.5}))\n"
                      "elif mode == 'kill': os.kill(os.getpid(), signal.SIGKILL)\n"
                      "else: sys.stderr.write('broken input'); sys.exit(3)\n")
    assert common.run_child(script, ["ok"]) == {"seconds": 1.5}  # the last stdout line is the result
    with pytest.raises(RuntimeError, match="killed by SIGKILL - most likely the kernel's out-of-memory killer"):
        common.run_child(script, ["kill"])
    with pytest.raises(RuntimeError, match=r"failed \(exit 3\):\nbroken input"):
        common.run_child(script, ["fail"])


def test_resample_scan_subsets_and_jittered_copies():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(100, 4)).astype(np.float32)
    lab = np.arange(100, dtype=np.uint32)
    p, lb = scaling_bench.resample_scan(pts, lab, 40, rng)
    assert p.shape == (40, 4) and len(set(lb.tolist())) == 40  # distinct points of the scan
    np.testing.assert_array_equal(p, pts[lb])  # each point keeps its label
    p, lb = scaling_bench.resample_scan(pts, lab, 250, rng)
    assert p.shape == (250, 4) and lb.shape == (250,)
    np.testing.assert_array_equal(p[:100], pts)  # every original point, then copies
    offset = p[100:, :3] - pts[lb[100:], :3]
    assert 0 < np.abs(offset).max() < 0.1 and np.abs(offset).mean() < 0.02  # ~1 cm jitter, same label
    np.testing.assert_array_equal(p[100:, 3], pts[lb[100:], 3])


def test_make_sized_root_writes_readable_scans(tmp_path):
    from balvit.run_config import load_config
    from balvit.data.dataset import build_reader

    base = tmp_path / "base" / "sequences" / "08"
    (base / "velodyne").mkdir(parents=True)
    (base / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        pts = np.concatenate([rng.uniform(-20, 20, (500, 3)), rng.uniform(0, 1, (500, 1))], 1).astype(np.float32)
        pts.tofile(base / "velodyne" / f"{i:06d}.bin")
        np.full(500, 40, np.uint32).tofile(base / "labels" / f"{i:06d}.label")
    root = scaling_bench.make_sized_root(tmp_path / "base", tmp_path / "sized", 1234, frames=2)
    cfg = load_config(REPO / "config/synthetic/tiny.yaml", [f"data.root={root}", "data.val_sequences=['08']"])
    reader = build_reader(cfg.data, "valid")
    assert len(reader) == 2 and all(len(reader.load_points(i)) == 1234 for i in range(2))
    assert (reader.load_labels(0) != 255).all()


# ------------------------------------------------------------------------------------- the scripts


def test_speed_bench_quick_writes_every_model(tmp_path, monkeypatch):
    out = tmp_path / "speed.json"
    monkeypatch.setattr(sys, "argv", ["speed_bench.py", "--quick", "--resolutions", "kitti", "--out", str(out),
                                      "--models", "balvit,waffleiron,elite_student"])
    speed_bench.main()
    d = json.loads(out.read_text())
    rows = d["rows"]["kitti"]
    assert [r["model"] for r in rows] == ["balvit", "waffleiron", "elite_student"]
    for r in rows:
        assert not r["errors"], r["errors"]
        assert r["infer_s"] > 0 and r["train_step_s"] > 0 and r["points"] > 1000
        assert r["scans_per_s"] == pytest.approx(1 / r["infer_s"])
        assert 0 < r["trainable_params"] <= r["total_params"]
        assert r["infer_peak_rss_mb"] > 0
    assert rows[0]["infer_s_vs_balvit"] == pytest.approx(1.0)
    assert rows[1]["infer_s_vs_balvit"] == pytest.approx(rows[1]["infer_s"] / rows[0]["infer_s"])
    assert rows[0]["trainable_params"] < rows[0]["total_params"]  # BALViT's frozen ViT
    md = speed_bench.markdown(d)
    assert "| waffleiron |" in md and "QUICK" in d["machine"]["cpu"] or "QUICK" in md


def test_export_bench_quick_times_both_runtimes_and_checks_parity(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "export.json"
    monkeypatch.setattr(sys, "argv", ["export_bench.py", "--quick", "--models", "elite_student,waffleiron", "--out", str(out)])
    export_bench.main()
    d = json.loads(out.read_text())
    assert sorted(r["name"] for r in d["rows"]) == ["elite_student", "waffleiron"]
    for r in d["rows"]:
        assert "error" not in r, r
        assert r["torch_s"] > 0 and r["ort_s"] > 0 and r["torch_over_ort"] == pytest.approx(r["torch_s"] / r["ort_s"])
        assert r["max_abs_diff"] < 1e-4 and r["argmax_agreement"] == 1.0 and r["logit_std"] > 0.05
        assert len(r["load_before"]) == 3 and r["points"] > 1000
    md = export_bench.markdown(d)
    assert "| elite_student |" in md and "QUICK" in md and "Load average" in md


def test_speed_bench_merge_keeps_other_rows_and_flags_a_separate_invocation(tmp_path, monkeypatch):
    out = tmp_path / "speed.json"
    base = ["speed_bench.py", "--quick", "--resolutions", "kitti", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", [*base, "--models", "balvit,elite_student"])
    speed_bench.main()
    first = json.loads(out.read_text())
    monkeypatch.setattr(sys, "argv", [*base, "--models", "elite_student", "--merge"])
    speed_bench.main()
    d = json.loads(out.read_text())
    rows = {r["model"]: r for r in d["rows"]["kitti"]}
    assert list(rows) == ["balvit", "elite_student"] and len(d["invocations"]) == 2
    assert d["raw"]["kitti"]["balvit"] == first["raw"]["kitti"]["balvit"]  # kept as measured, not re-run
    assert rows["balvit"]["invocation"] == 0 and not rows["balvit"]["separate_invocation"]
    assert rows["elite_student"]["invocation"] == 1 and rows["elite_student"]["separate_invocation"]
    assert rows["elite_student"]["infer_s_vs_balvit"] == pytest.approx(rows["elite_student"]["infer_s"] / rows["balvit"]["infer_s"])
    md = speed_bench.markdown(d)
    assert md.count("measured in a separate invocation") == 1 and "`elite_student`: " in md
    # without --merge the file is replaced; a file of another setting is refused, not mixed in
    monkeypatch.setattr(sys, "argv", [*base, "--models", "elite_student", "--merge", "--train-batch", "1"])
    with pytest.raises(SystemExit, match="train_batch"):
        speed_bench.main()
    assert json.loads(out.read_text())["invocations"] == d["invocations"]
    monkeypatch.setattr(sys, "argv", [*base, "--models", "elite_student"])
    speed_bench.main()
    assert [r["model"] for r in json.loads(out.read_text())["rows"]["kitti"]] == ["elite_student"]


def test_speed_bench_reports_a_timeout_as_a_lower_bound():
    def meas(seconds):
        return {"seconds": seconds, "points": 1000, "image": [1, 6, 8, 64], "params": {"trainable": 3, "total": 5},
                "peak_rss_mb": 100.0}

    raw = {"kitti": {"balvit": {"model": meas(2.0), "train": meas(4.0)},
                     "scalr": {"model": meas(8.0), "train": {"error": "timed out after 600 s (1 warm-up + 3 runs)",
                                                              "timeout_s": 600.0, "runs": 4}}}}
    rows = speed_bench.summarize(raw, speed_bench.model_table(False, None))["kitti"]
    scalr = rows[1]
    assert scalr["model"] == "scalr" and scalr["train_step_s"] is None and scalr["train_step_s_at_least"] == 150.0
    assert scalr["infer_s_vs_balvit"] == 4.0 and scalr["infer_s_at_least"] is None
    d = {"machine": common.machine(), "device": "cpu", "repeats": 3, "warmup": 1, "train_batch": 2, "rows": {"kitti": rows}}
    md = speed_bench.markdown(d)
    assert "| scalr | 0.125 | 8.00 | 4.00 | > 150.0 | - |" in md and "timed out after 600 s" in md


def test_scaling_bench_quick_fits_and_plots(tmp_path, monkeypatch):
    out = tmp_path / "scaling.json"
    monkeypatch.setattr(sys, "argv", ["scaling_bench.py", "--quick", "--models", "balvit,waffleiron",
                                      "--points", "1000,3000,6000", "--out", str(out)])
    scaling_bench.main()
    d = json.loads(out.read_text())
    for name in ("balvit", "waffleiron"):
        r = d["models"][name]
        assert "error" not in r, r
        assert [round(p) for p in r["points"]] == [1000, 3000, 6000]
        assert all(t > 0 for t in r["load_s"] + r["infer_s"])
        assert -1e9 < r["infer_fit"]["r2"] <= 1.0 and "slope" in r["load_fit"]
    assert out.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    md = scaling_bench.markdown(d, plot_link="plots/scaling_bench.png")
    assert "infer ms @3k" in md and "![scaling](plots/scaling_bench.png)" in md


def test_label_efficiency_quick_runs_resumes_and_refuses_a_changed_budget(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["--quick", "--out", str(out), "--methods", "balvit,scalr", "--fractions", "100"]
    assert le.main(args) == 0
    d = json.loads((out / "results.json").read_text())
    assert [(r["method"], r["fraction"]) for r in d["results"]] == [("balvit", 100.0), ("scalr", 100.0)]
    for r in d["results"]:
        assert 0 <= r["miou"] <= 100 and r["steps"] == 2 and r["train_seconds"] > 0
        assert (out / "runs" / r["method"] / "f100" / "eval" / "metrics.json").is_file()
    assert [p["name"] for p in d["pretrain"]] == ["scalr_distill"]
    scalr = next(r for r in d["results"] if r["method"] == "scalr")
    assert f"train.init_from={out / 'runs' / 'pretrain_scalr_distill'}/last.pt" in scalr["train_overrides"]
    assert (out / "label_efficiency.png").read_bytes()[:8] == PNG_MAGIC
    md = (out / "label_efficiency.md").read_text()
    assert "| BALViT (tiny ViT) | - | - |" not in md and "2 steps x batch 2" in md
    # resume: nothing is trained again, the numbers are the same
    before = (out / "runs" / "balvit" / "f100" / "last.pt").stat().st_mtime_ns
    capsys.readouterr()
    assert le.main(args) == 0
    assert "balvit train" not in capsys.readouterr().out
    assert (out / "runs" / "balvit" / "f100" / "last.pt").stat().st_mtime_ns == before
    assert json.loads((out / "results.json").read_text())["results"] == d["results"]
    with pytest.raises(le.SpecError, match="another config / overrides"):
        le.main([*args, "--steps", "3"])
    # widening to two seeds keeps the seed-0 runs and trains only the new seed; cells become mean +- std
    capsys.readouterr()
    assert le.main([*args, "--seeds", "0,1"]) == 0
    assert (out / "runs" / "balvit" / "f100" / "last.pt").stat().st_mtime_ns == before
    assert capsys.readouterr().out.count("balvit train") == 2  # balvit and scalr, seed 1
    d2 = json.loads((out / "results.json").read_text())
    assert d2["seeds"] == [0, 1] and len(d2["results"]) == 4
    assert "train.seed=1" in next(r for r in d2["results"] if r["method"] == "balvit" and r.get("seed") == 1)["train_overrides"]
    mean, std, n = le.cell_stats(d2, "balvit", 100.0)
    vals = [r["miou"] for r in d2["results"] if r["method"] == "balvit"]
    assert n == 2 and mean == pytest.approx(sum(vals) / 2) and std == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    assert f"{mean:.1f} ± {std:.1f}" in (out / "label_efficiency.md").read_text()


def test_study_plan_same_budget_placeholders_and_spec_errors(tmp_path):
    spec = le.load_spec(REPO / "benchmarks/label_efficiency/synthetic.yaml")
    plan = le.run_plan(spec, tmp_path, None, [1.0, 10.0, 100.0], None, None, None)
    assert len(plan["runs"]) == 6 * 3
    budgets = {tuple(o for o in r["train"] if o.startswith(("train.steps=", "train.batch_size="))) for r in plan["runs"]}
    assert budgets == {("train.steps=100", "train.batch_size=2")}  # the same compute budget for every run
    assert not any(o.startswith("train.seed=") for r in plan["runs"] for o in r["train"])  # the spec's one seed: 0
    seeded = le.run_plan(spec, tmp_path, None, [10.0], ["balvit"], None, None, [0, 3])
    assert [(r["seed"], r["dir"].name) for r in seeded["runs"]] == [(0, "f10"), (3, "f10_seed3")]
    assert seeded["runs"][1]["train"] == [*seeded["runs"][0]["train"], "train.seed=3"]
    assert seeded["runs"][1]["eval"] == seeded["runs"][0]["eval"]
    scalr10 = next(r for r in plan["runs"] if r["method"] == "scalr" and r["fraction"] == 10)
    assert scalr10["config"].endswith("config/synthetic/scalr_finetune_10.yaml")
    assert "data.label_fraction=10" in scalr10["train"] and "data.label_fraction=10" in scalr10["eval"]
    assert f"train.init_from={tmp_path / 'runs' / 'pretrain_scalr_distill'}/last.pt" in scalr10["train"]
    elite1 = next(r for r in plan["runs"] if r["method"] == "elite_student" and r["fraction"] == 1)
    assert f"elite.teacher_checkpoint={tmp_path / 'runs' / 'pretrain_elite_teacher_f1'}/last.pt" in elite1["train"]
    teachers = [p for p in plan["pretrain"] if p["name"] == "elite_teacher"]
    assert [p["fraction"] for p in teachers] == [1.0, 10.0, 100.0]  # it learns from labels: one per fraction
    assert "data.label_fraction=1" in teachers[0]["train"]
    distill = next(p for p in plan["pretrain"] if p["name"] == "scalr_distill")
    assert not any(o.startswith("data.label_fraction") for o in distill["train"])  # no labels
    only = le.run_plan(spec, tmp_path, "/data/x", [100.0], ["balvit"], 5, 4)
    assert not only["pretrain"] and only["runs"][0]["train"][:2] == ["--data_root", "/data/x"]
    assert {"train.steps=5", "train.batch_size=4"} <= set(only["runs"][0]["train"])
    with pytest.raises(le.SpecError, match="no method"):
        le.run_plan(spec, tmp_path, None, [1.0], ["nope"], None, None)

    bad = tmp_path / "bad.yaml"
    bad.write_text("fractions: [1]\nbudget: {steps: 1, batch_size: 1}\nmethods: []\nextra: 1\n")
    with pytest.raises(le.SpecError, match=r"bad.yaml: unknown key\(s\) \['extra'\]"):
        le.load_spec(bad)
    bad.write_text("fractions: [1]\nbudget: {steps: 1, batch_size: 1}\n"
                   "methods: [{name: a, config: config/kitti.yaml, needs: [ghost]}]\n")
    with pytest.raises(le.SpecError, match="needs pretraining 'ghost'"):
        le.load_spec(bad)
    bad.write_text("fractions: [1]\nbudget: {steps: 1}\nmethods: []\n")
    with pytest.raises(le.SpecError, match="budget needs exactly steps and batch_size"):
        le.load_spec(bad)
    bad.write_text("fractions: [1]\nbudget: {steps: 1, batch_size: 1}\nseeds: [0, 0]\nmethods: []\n")
    with pytest.raises(le.SpecError, match="seeds must be a list of distinct integers"):
        le.load_spec(bad)


def test_run_all_report_has_machine_tables_plots_and_reported_numbers(tmp_path, monkeypatch):
    out = tmp_path / "out"
    (out / "label_efficiency").mkdir(parents=True)
    m = common.machine()
    fit = {"slope": 1e-6, "intercept": 0.01, "r2": 0.99}
    common.write_json(out / "scaling_bench.json", {"machine": m, "device": "cpu", "repeats": 3, "frames": 2, "sizes": [1, 2],
                                                   "models": {"balvit": {"points": [30000.0, 60000.0], "load_s": [0.01, 0.02],
                                                                         "infer_s": [0.1, 0.2], "load_fit": fit, "infer_fit": fit}},
                                                   "notes": ["flat because the range image is fixed"]})
    (out / "scaling_bench.png").write_bytes(PNG_MAGIC + b"x")
    row = {"model": "balvit", "note": "n", "points": 120000, "range_image": [1, 6, 64, 2048], "infer_s": 0.5,
           "train_step_s": 2.0, "infer_peak_rss_mb": 900.0, "train_peak_rss_mb": 1500.0, "trainable_params": 10,
           "total_params": 20, "scans_per_s": 2.0, "infer_s_vs_balvit": 1.0, "train_step_s_vs_balvit": 1.0, "errors": {}}
    common.write_json(out / "speed_bench.json", {"machine": m, "device": "cpu", "amp": False, "repeats": 5, "warmup": 1,
                                                 "train_batch": 2, "quick": False, "rows": {"kitti": [row]}})
    common.write_json(out / "label_efficiency" / "results.json", {
        "spec": "synthetic.yaml", "description": "d", "sizes": {"frames": "100"}, "machine": m, "fractions": [1.0, 100.0],
        "budget": {"steps": 80, "batch_size": 2}, "methods": {"balvit": "BALViT"}, "pretrain": [], "failures": [],
        "results": [{"method": "balvit", "fraction": 1.0, "miou": 12.5, "train_seconds": 10.0, "params": {"trainable": 5}},
                    {"method": "balvit", "fraction": 100.0, "miou": 30.25, "train_seconds": 11.0, "params": {"trainable": 5}}]})
    (out / "label_efficiency" / "label_efficiency.png").write_bytes(PNG_MAGIC + b"y")
    results = tmp_path / "report" / "RESULTS.md"
    monkeypatch.setattr(sys, "argv", ["run_all.py", "--only-report", "--out-dir", str(out), "--results", str(results)])
    run_all.main()
    text = results.read_text()
    assert m["cpu"] in text and f"torch {m['torch']}" in text
    assert "| balvit | 2.00 | 0.500 | 1.00 | 2.00 | 1.00 | 900.0 | 1,500 | 10 | 20 |" in text
    assert "| BALViT | 12.5 | 30.2 | 10.5 | 5 |" in text
    assert "reported, not reproduced" in text and "51.87" in text and "59.30" in text and "valeoai/ScaLR" in text
    assert "Note: flat because the range image is fixed" in text
    assert "(plots/scaling_bench.png)" in text and (results.parent / "plots" / "label_efficiency.png").is_file()
