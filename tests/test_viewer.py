"""The interactive 3D viewer (viewer.py): the figure's traces hold exactly the right points, the page
is self-contained and says when it shows a subset; rendered in headless Chromium (skipped without
it) the canvas shows the class colours."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

from balvit.data.labels import semantickitti_labels
from balvit.viewer import CAMERAS, display_subset, scan_figure, write_scan_viewer
from conftest import REPO, ring_scan

sys.path.insert(0, str(REPO / "benchmarks"))
import viewer_shot  # noqa: E402

SPEC = semantickitti_labels()


def scan(n: int = 5000, seed: int = 0):
    pts, raw = ring_scan(n, seed)
    gt = SPEC.to_train(raw)
    pred = gt.copy()
    rng = np.random.default_rng(seed)
    wrong = rng.choice(n, n // 10, replace=False)
    pred[wrong] = (pred[wrong] + 1) % SPEC.num_classes
    gt[rng.choice(n, 50, replace=False)] = 255
    return pts, pred, gt


def xyz_of(trace) -> np.ndarray:
    return np.stack([np.asarray(trace.x), np.asarray(trace.y), np.asarray(trace.z)], 1)


def test_figure_traces_hold_the_right_points():
    pts, pred, gt = scan()
    fig, notes = scan_figure(pts, pred, gt, SPEC.class_names, SPEC.colors, max_points=0)
    by = {(t.scene, t.name, t.legendgroup): t for t in fig.data}
    left = [t for t in fig.data if t.scene == "scene"]
    assert sum(len(t.x) for t in left) == len(pts)
    for t in left:  # every prediction trace: exactly the points of its class, in its official colour
        c = SPEC.class_names.index(t.name)
        assert np.array_equal(xyz_of(t), pts[pred == c, :3])
        assert t.marker.color == "rgb({},{},{})".format(*SPEC.colors[c]) and t.showlegend
    truth = [t for t in fig.data if t.scene == "scene2" and not t.legendgroup.startswith("err-")]
    assert {t.legendgroup for t in truth} - {"unlabelled"} == {t.legendgroup for t in left}  # shared toggles
    err = by[("scene2", "error", "err-error")]
    labelled = gt != 255
    assert np.array_equal(xyz_of(err), pts[labelled & (pred != gt), :3]) and err.visible is False
    assert np.array_equal(xyz_of(by[("scene2", "correct", "err-correct")]), pts[labelled & (pred == gt), :3])
    # the buttons swap the right view between ground truth and errors, the left view stays
    (cams, views) = fig.layout.updatemenus
    vis_truth, vis_err = (b.args[0]["visible"] for b in views.buttons)
    for k, t in enumerate(fig.data):
        assert vis_truth[k] == (not t.legendgroup.startswith("err-"))
        assert vis_err[k] == (t.scene == "scene" or t.legendgroup.startswith("err-"))
    assert [b.label for b in cams.buttons] == list(CAMERAS)
    assert cams.buttons[0].args[0]["scene2.camera"] == CAMERAS["bird's-eye"]
    wrong = int((pred[labelled] != gt[labelled]).sum())
    assert notes == ["5,000 points", f"point accuracy {100 * (1 - wrong / labelled.sum()):.2f} % "
                                     f"({wrong:,} errors in {labelled.sum():,} labelled points; 50 unlabelled)"]


def test_prediction_only_and_subset():
    pts, pred, _ = scan(3000, seed=1)
    fig, notes = scan_figure(pts, pred, None, SPEC.class_names, SPEC.colors, max_points=1000, seed=4)
    assert {t.scene for t in fig.data} == {"scene"} and len(fig.layout.updatemenus) == 1
    shown = display_subset(3000, 1000, seed=4)
    assert len(shown) == 1000 and np.array_equal(shown, np.unique(shown))
    got = np.concatenate([xyz_of(t) for t in fig.data])
    assert sorted(map(tuple, got)) == sorted(map(tuple, pts[shown, :3]))
    assert notes[1] == "showing a random subset of 1,000 of 3,000 points for display (seed 4); the accuracy counts all points"
    with pytest.raises(ValueError, match="train ids"):
        scan_figure(pts, pred + 19, None, SPEC.class_names, SPEC.colors)
    with pytest.raises(ValueError, match="unknown camera preset"):
        scan_figure(pts, pred, None, SPEC.class_names, SPEC.colors, camera="top")


def test_page_is_self_contained(tmp_path):
    pts, pred, gt = scan(2000)
    path = write_scan_viewer(tmp_path / "v" / "scan.html", pts, pred, gt, SPEC.class_names, SPEC.colors,
                             title="frame <0>", max_points=500)
    text = path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["scan.html"]  # atomic: no temporary file left
    assert not re.search(r"<script[^>]+src=", text)  # no script is fetched (the page opens offline)
    assert "plotly.js v" in text and len(text) > 3_000_000  # the bundle is embedded
    assert "frame &lt;0&gt;" in text and "showing a random subset of 500 of 2,000 points" in text
    assert "scene2.camera" in text  # the two views' cameras are linked


@pytest.mark.slow
@pytest.mark.skipif(viewer_shot.find_chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_rendered_page_shows_the_class_colours(tmp_path):
    """As a person sees it: headless Chromium draws the WebGL canvas with the classes' colours."""
    pts, pred, gt = scan(20_000, seed=2)
    page = write_scan_viewer(tmp_path / "scan.html", pts, pred, gt, SPEC.class_names, SPEC.colors, title="test",
                             right="errors")
    png = tmp_path / "scan.png"
    viewer_shot.screenshot(page, png, 900, 500, wait_ms=8000)
    variety = viewer_shot.colour_variety(png)
    assert variety["colours"] > 50 and variety["non_background"] > 0.05, variety
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    left, right = img[60:, : int(0.43 * 900)], img[60:, int(0.43 * 900): int(0.86 * 900)]

    def share(part, rgb):
        return float((np.abs(part - np.array(rgb)).sum(-1) < 40).mean())

    road, error = SPEC.colors[SPEC.class_names.index("road")], (255, 30, 30)
    assert share(left, road) > 0.005 and share(right, error) > 0.001  # prediction colours left, errors right
    assert share(right, road) < share(left, road) / 10  # the right view shows the errors, not the classes

    blank = tmp_path / "blank.html"
    blank.write_text("<html><body style='background:#123'></body></html>")
    viewer_shot.screenshot(blank, tmp_path / "blank.png", 300, 200, wait_ms=500)
    assert viewer_shot.colour_variety(tmp_path / "blank.png")["colours"] == 1  # the measure tells blank from drawn
