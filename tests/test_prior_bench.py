"""Issue 18's benchmark scripts (benchmarks/prior_probe.py, realism.py, sim2real.py): their --quick
paths end to end, and the pieces that compute the figures on known inputs. Real-data tests skip when
../shared/data/real is absent (a user's clone)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real" / "semantickitti"
sys.path.insert(0, str(REPO / "benchmarks"))

import prior_probe  # noqa: E402
import realism  # noqa: E402
import sim2real  # noqa: E402

needs_real = pytest.mark.skipif(not (REAL / "sequences" / "00" / "velodyne").is_dir(),
                                reason="real SemanticKITTI scans (../shared/data/real) not available")


# ------------------------------------------------------------------------------ prior probe


def test_patch_labels_take_the_majority_and_ignore_half_empty_patches():
    m = torch.full((1, 4, 6), 255)
    m[0, :2, :2] = torch.tensor([[3, 3], [3, 1]])  # patch (0, 0): majority 3
    m[0, :2, 2:4] = torch.tensor([[5, 255], [255, 255]])  # patch (0, 1): 1 of 4 labelled -> ignored
    m[0, 2:, :2] = 7  # patch (1, 0): all 7
    m[0, :2, 4:6] = torch.tensor([[2, 2], [255, 255]])  # half labelled -> kept
    lab = prior_probe.patch_labels(m, 2, 19)
    assert lab.tolist() == [[[3, 255, 2], [7, 255, 255]]]


def test_linear_probe_separates_separable_features_and_scores_chance_on_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (1, 30, 20), generator=g)
    x = torch.nn.functional.one_hot(y, 3).float() * 4 + 0.1 * torch.randn(1, 30, 20, 3, generator=g)
    res = prior_probe.linear_probe(x, y, x, y, 19)
    assert res["accuracy"] == 1.0 and res["miou"] == pytest.approx(100.0) and res["classes"] == 3
    noise = torch.randn(1, 30, 20, 8, generator=g)
    res = prior_probe.linear_probe(noise, y, torch.randn(1, 30, 20, 8, generator=g), y, 19)
    assert res["accuracy"] < 0.6


def test_prior_probe_quick_writes_probe_and_token_statistics(tmp_path):
    out = tmp_path / "prior_probe.json"
    assert prior_probe.main(["--quick", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    feats = [r["features"] for r in d["probe"]["results"]]
    assert feats[0] == "raw pixels of the patch" and any("random, final norm" in f for f in feats)
    assert all(0 <= r["miou"] <= 100 and 0 <= r["accuracy"] <= 1 for r in d["probe"]["results"])
    sets = d["tokens"]["sets"]
    assert set(sets) == {"images", "BALViT init"}
    # the tiny ViT has 2 blocks: the inputs of blocks 0, 1 and the output of the last
    assert [r["block"] for r in sets["images"]] == [0, 1, 2] == [r["block"] for r in sets["BALViT init"]]
    assert all(r["mean_norm"] > 0 and r["channel_std"] > 0 for r in sets["images"])
    assert all(-1 <= r["mean_cosine_vs_images"] <= 1 for r in sets["BALViT init"])
    md = prior_probe.markdown(d)
    assert "linear probe" in md and "| block |" in md and "not documented to be the stock DINOv2" in md
    # test-time ablation of a (2-step) trained run: as trained / blocks bypassed; skip the probe this time
    from balvit.cli import main as cli

    data = tmp_path / "prior_probe_data_quick"
    run = tmp_path / "run"
    assert cli(["train", str(REPO / "config/synthetic/tiny.yaml"), "--data_root", str(data), "--save_path", str(run),
                "--no-progress", "train.steps=2", "data.train_sequences=['00']", "data.val_sequences=['08']",
                "data.num_workers=0", "data.max_val_frames=1", "eval.pictures=0"]) in (0, None)
    assert prior_probe.main(["--quick", "--out", str(out), "--skip-probe", "--ablate", f"tiny={run / 'last.pt'}"]) == 0
    d2 = json.loads(out.read_text())
    assert d2["probe"] == d["probe"]  # kept
    assert set(d2["ablation"]["tiny"]) == {"as trained", "blocks bypassed"}  # trained with random weights: no swap
    assert all(0 <= v <= 100 for v in d2["ablation"]["tiny"].values())
    assert "Test-time ablation" in prior_probe.markdown(d2)


# ------------------------------------------------------------------------------ realism


def _rings(elevations_deg, width=360, ranges=10.0, start=0.3):
    """A KITTI-ordered scan: ring by ring (top first), each one revolution from the azimuth `start`."""
    pts = []
    for el in elevations_deg:
        az = start - 2 * np.pi * np.arange(width) / width
        e = np.deg2rad(el)
        pts.append(np.stack([ranges * np.cos(e) * np.cos(az), ranges * np.cos(e) * np.sin(az),
                             ranges * np.sin(e) * np.ones(width), np.full(width, 0.3)], 1))
    return np.concatenate(pts).astype(np.float32)


def test_ring_elevations_recover_the_beams_of_a_ring_ordered_scan():
    el = [2.0, 0.5, -3.0, -10.0, -20.0]
    got = realism.ring_elevations(_rings(el))
    np.testing.assert_allclose(got, el, atol=1e-3)


def test_range_image_stats_count_empty_pixels_hidden_points_and_the_shadow():
    pts = _rings([0.0], width=2048 * 2)  # two points per column of one row
    s = realism.range_image_stats(pts)
    assert s["hidden"] == 2048 and s["points"] == 4096
    assert s["empty"] == pytest.approx(63 / 64)  # one full row of 64
    assert s["within_3m"] == 0 and s["nearest_median_m"] == pytest.approx(10.0, rel=1e-3)
    assert s["bottom4_empty"] == 1.0 and s["outside_fov"] == 0


@needs_real
def test_realism_quick_compares_with_the_real_scans(tmp_path):
    out = tmp_path / "realism.json"
    assert realism.main(["--quick", "--out", str(out), "--label", "after"]) == 0
    d = json.loads(out.read_text())
    assert d["real"]["scans"] == 1 and set(d["generated"]) == {"after"}
    assert 0.2 < d["real"]["empty"] < 0.3  # real frame 0: 24.1 % empty pixels at 64 x 2048
    assert len(d["real"]["elevations"]) == 64 and d["real"]["elevations"][0] > 2 and d["real"]["elevations"][-1] < -23
    assert set(d["real"]["classes"]) == set(d["class_names"])
    md = realism.markdown(d)
    assert "| empty pixels % |" in md and "Class frequencies" in md and (tmp_path / "realism.png").is_file()


# ------------------------------------------------------------------------------ sim2real


def test_compare_states_whether_a_difference_is_beyond_the_seed_spread():
    d = {"results": [{"regime": "synthetic", "model": m, "seed": s, "miou_real": v}
                     for m, vals in (("a", (10.0, 12.0)), ("b", (20.0, 21.0)), ("c", (11.0, 11.5)))
                     for s, v in enumerate(vals)]}
    assert "beyond the seed spread" in sim2real.compare(d, "synthetic", "a", "b")
    assert "within the seed spread" in sim2real.compare(d, "synthetic", "a", "c")
    assert sim2real.compare(d, "one_scan", "a", "b") is None  # no runs


def test_loss_flatness_compares_the_last_two_quarters(tmp_path):
    losses = [5.0] * 8 + [2.0] * 4 + [1.95] * 4
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"step": i, "train/loss": v}) for i, v in enumerate(losses)))
    f = sim2real.loss_flatness(tmp_path)
    assert f["flat"] is True and f["previous_quarter"] == 2.0 and f["last_quarter"] == pytest.approx(1.95)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps({"train/loss": 10.0 - i}) for i in range(8)))
    assert sim2real.loss_flatness(tmp_path)["flat"] is False


@needs_real
def test_sim2real_quick_trains_and_evaluates_on_the_real_scans(tmp_path):
    out = tmp_path / "s2r"
    assert sim2real.main(["--quick", "--out", str(out), "--models", "waffleiron", "--seeds", "0,1"]) == 0
    d = json.loads((out / "results.json").read_text())
    assert sorted((r["regime"], r["seed"]) for r in d["results"]) == [("one_scan", 0), ("one_scan", 1),
                                                                      ("synthetic", 0), ("synthetic", 1)]
    for r in d["results"]:
        assert 0 <= r["miou_real"] <= 100 and r["train_argv"][0] == "train"
        assert ("miou_synthetic_val" in r) == (r["regime"] == "synthetic")
    # the one-scan regime trains on real frame 0 only and evaluates on frames 1-2
    assert [p.name for p in (out / "real_frame0" / "sequences" / "00" / "velodyne").iterdir()] == ["000000.bin"]
    assert sorted(p.name for p in (out / "real_frames12" / "sequences" / "00" / "velodyne").iterdir()) == [
        "000001.bin", "000002.bin"]
    md = sim2real.markdown(d)
    assert "evaluated on the 3 real scans" in md and "frames 1-2" in md and (out / "sim2real.png").is_file()
    # a second call keeps the finished runs (resumable)
    assert sim2real.main(["--quick", "--out", str(out), "--models", "waffleiron", "--seeds", "0",
                          "--regimes", "one_scan"]) == 0
    assert len(json.loads((out / "results.json").read_text())["results"]) == 4


def test_results_md_shows_every_sim2real_budget_but_the_quick_one(tmp_path, monkeypatch):
    """run_all.prior_sections: benchmarks/out/sim2real is the main section; every other sim2real_<name>
    folder (another budget, e.g. --steps-synthetic 240) gets its own subsection; sim2real_quick none."""
    import run_all

    result = {"machine": {"cpu": "test cpu", "cores": 2, "torch": "x"}, "sizes": "tiny", "seeds": [0],
              "models": ["balvit"], "batch_size": 2, "steps": {"synthetic": 80, "one_scan": 40}, "notes": [],
              "results": [{"model": "balvit", "label": "BALViT", "regime": "synthetic", "seed": 0, "miou_real": 9.0,
                           "miou_synthetic_val": 15.0, "iou_real": {}, "train_seconds": 60.0,
                           "loss": {"flat": True}}]}
    for name, steps in (("sim2real", 80), ("sim2real_240", 240), ("sim2real_quick", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({**result, "steps": {"synthetic": steps, "one_scan": 40}}))
    monkeypatch.setattr(run_all, "OUT", tmp_path)
    md = "\n".join(run_all.prior_sections())
    assert md.count("## Sim-to-real: trained on the synthetic world") == 1
    assert "### Sim-to-real with another budget (`benchmarks/out/sim2real_240`)" in md and "(240 steps x batch 2)" in md
    assert "sim2real_quick" not in md and "(2 steps" not in md
