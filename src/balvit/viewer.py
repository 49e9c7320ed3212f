"""Interactive 3D view of one segmented scan: a self-contained HTML page (plotly.js embedded, WebGL
`scatter3d`), so it opens offline in any browser.

The page shows the point cloud coloured by class with the dataset's official colour map
(data/labels/*.yaml: semantic-kitti-api colours, nuScenes devkit colours): the prediction and, when
ground truth is given, the ground truth beside it in a second, camera-linked 3D view. Buttons switch the
right view to the errors (wrongly predicted points in red, correct ones grey, unlabelled ones dim) and
move both cameras to a bird's-eye or a driver's view; the legend toggles every class in both views.

Large scans are drawn as a seeded random subset (`max_points`, default 60,000 of the ~120,000 points
of a SemanticKITTI scan, so the page stays responsive); the page says so with the counts. The accuracy
line is computed on all points, not on the subset. Written atomically (balvit.io).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

import numpy as np

from .io import write_text

IGNORE = 255
ERROR_COLOR = "rgb(255,30,30)"
CORRECT_COLOR = "rgb(150,150,150)"
UNLABELLED_COLOR = "rgb(70,70,70)"
BACKGROUND = "rgb(18,18,22)"  # the page
SCENE_BACKGROUND = "rgb(40,42,50)"  # the 3D views: dark, but the dark official colours (sidewalk) still show
# light buttons with dark text: plotly.js draws the active button near-white whatever bgcolor says
BUTTON_STYLE = {"bgcolor": "rgb(200,202,210)", "bordercolor": "rgb(90,90,100)", "font": {"color": "rgb(20,20,25)"}}
SPLIT = 0.43  # the left view spans 0..SPLIT of the width, the right one SPLIT..2*SPLIT; the legend the rest
# plotly camera positions in its normalised scene coordinates (the scene box is centred on the sensor)
CAMERAS = {
    "bird's-eye": {"eye": {"x": 0.0, "y": 0.0, "z": 0.8}, "up": {"x": 1.0, "y": 0.0, "z": 0.0},
                   "center": {"x": 0.0, "y": 0.0, "z": 0.0}},
    "driver's view": {"eye": {"x": -0.07, "y": 0.0, "z": 0.025}, "up": {"x": 0.0, "y": 0.0, "z": 1.0},
                      "center": {"x": 0.15, "y": 0.0, "z": 0.0}},
    "oblique": {"eye": {"x": -0.46, "y": -0.28, "z": 0.28}, "up": {"x": 0.0, "y": 0.0, "z": 1.0},
                "center": {"x": 0.02, "y": 0.0, "z": -0.04}},
}  # fmt: skip


# keeps the two 3D views' cameras together: a camera change in one is applied to the other
LINK_CAMERAS = """
var gd = document.getElementById('{plot_id}'), syncing = false;
gd.on('plotly_relayout', function (e) {
  if (syncing) return;
  var a = e['scene.camera'], b = e['scene2.camera'], upd = null;
  if (a && !b) upd = {'scene2.camera': a}; else if (b && !a) upd = {'scene.camera': b};
  if (upd) { syncing = true; Plotly.relayout(gd, upd).then(function () { syncing = false; }); }
});
"""


def display_subset(n: int, max_points: int, seed: int = 0) -> np.ndarray:
    """Indices (M,) of the points drawn: all when n <= max_points, else a seeded random subset (sorted)."""
    if max_points <= 0 or n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_points, replace=False))


def scan_figure(
    points: np.ndarray,
    pred: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    colors: np.ndarray,
    *,
    max_points: int = 60_000,
    seed: int = 0,
    radius: float = 50.0,
    marker_size: float = 1.6,
    camera: str | None = None,
    right: str = "truth",
):
    """The plotly figure of one scan and the notes for the page header (counts, subset, accuracy).

    points (N, >=3) x, y, z (library frame: x forward, y left, z up); pred (N,) train ids 0..C-1;
    labels (N,) train ids with 255 = unlabelled, or None (prediction only); class_names (C,);
    colors (C, 3) uint8 RGB; radius: metres around the sensor the scene box spans (points beyond
    are still drawn; the box grows to hold them); camera: the initial preset (a key of CAMERAS,
    default "oblique"); right: what the right view shows first, "truth" or "errors".

    Traces: one per class present in the prediction (left view, legend entry, legendgroup = class
    name), then with labels one per class of the ground truth (right view, same legendgroups, so a
    legend click toggles the class in both) and "unlabelled", then the error view: "correct",
    "error", "unlabelled" (shown instead of the ground truth by the "right: errors" button).
    """
    import plotly.graph_objects as go

    points = np.asarray(points)
    pred = np.asarray(pred).astype(np.int64)
    n, C = len(points), len(class_names)
    colors = np.asarray(colors, dtype=np.uint8)
    if points.ndim != 2 or points.shape[1] < 3:
        raise ValueError(f"points must be (N, >=3), got {points.shape}")
    if pred.shape != (n,) or (labels is not None and np.shape(labels) != (n,)):
        raise ValueError(f"pred and labels must be ({n},), got {pred.shape} and {None if labels is None else np.shape(labels)}")
    if colors.shape != (C, 3):
        raise ValueError(f"colors must be ({C}, 3), got {colors.shape}")
    if n and (pred.min() < 0 or pred.max() >= C):
        raise ValueError(f"pred must hold train ids 0..{C - 1}")
    if right not in ("truth", "errors"):
        raise ValueError(f"right must be 'truth' or 'errors', got {right!r}")
    camera = camera or "oblique"
    if camera not in CAMERAS:
        raise ValueError(f"unknown camera preset {camera!r}: expected one of {', '.join(CAMERAS)}")
    gt = None if labels is None else np.asarray(labels).astype(np.int64)

    shown = display_subset(n, max_points, seed)
    xyz = points[shown, :3].astype(np.float32)  # (M, 3)
    p, g = pred[shown], None if gt is None else gt[shown]
    both = gt is not None
    fig = go.Figure()

    def cloud(mask: np.ndarray, name: str, color: str, scene: str, group: str, legend: bool, size=marker_size,
              visible=True) -> None:
        pts = xyz[mask]
        fig.add_trace(go.Scatter3d(
            x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name=name, legendgroup=group,
            showlegend=legend, scene=scene, visible=visible, hoverinfo="name",
            marker={"size": size, "color": color, "line": {"width": 0}},
        ))  # fmt: skip

    rgb = [f"rgb({r},{gg},{b})" for r, gg, b in colors.tolist()]
    present = sorted(set(np.unique(p).tolist()) | (set(np.unique(g).tolist()) - {IGNORE} if both else set()))
    for c in present:  # prediction (left), legend entries; toggling one toggles its group in both views
        cloud(p == c, class_names[c], rgb[c], "scene", class_names[c], True)
    truth: list[int] = []  # trace indices of the ground-truth view
    errors: list[int] = []  # trace indices of the error view
    if both:
        for c in present:
            truth.append(len(fig.data))
            cloud(g == c, class_names[c], rgb[c], "scene2", class_names[c], False, visible=right == "truth")
        truth.append(len(fig.data))
        cloud(g == IGNORE, "unlabelled (ground truth)", UNLABELLED_COLOR, "scene2", "unlabelled", True,
              visible=right == "truth")
        labelled = g != IGNORE
        for mask, name, color, size in ((labelled & (p == g), "correct", CORRECT_COLOR, marker_size),
                                        (labelled & (p != g), "error", ERROR_COLOR, marker_size * 1.6),
                                        (~labelled, "unlabelled", UNLABELLED_COLOR, marker_size)):
            errors.append(len(fig.data))
            cloud(mask, name, color, "scene2", f"err-{name}", True, size=size, visible=right == "errors")

    # the scene box: centred on the sensor, `radius` metres (or more, to hold every point)
    extent = max(radius, float(np.abs(xyz[:, :2]).max()) if len(xyz) else radius)
    zmin, zmax = (float(xyz[:, 2].min()), float(xyz[:, 2].max())) if len(xyz) else (-3.0, 3.0)
    zmin, zmax = min(zmin, -3.0), max(zmax, 3.0)
    axis = {"showbackground": False, "showgrid": False, "zeroline": False, "showticklabels": False, "title": ""}
    scene = {
        "xaxis": {**axis, "range": [-extent, extent]}, "yaxis": {**axis, "range": [-extent, extent]},
        "zaxis": {**axis, "range": [zmin, zmax]}, "aspectmode": "manual",
        "aspectratio": {"x": 1.0, "y": 1.0, "z": (zmax - zmin) / (2 * extent)},
        "camera": CAMERAS[camera], "bgcolor": SCENE_BACKGROUND,
    }  # fmt: skip
    ntr = len(fig.data)
    buttons_cam = [
        {"label": name, "method": "relayout",
         "args": [{"scene.camera": cam, **({"scene2.camera": cam} if both else {})}]}
        for name, cam in CAMERAS.items()
    ]  # fmt: skip
    menus = [{"type": "buttons", "direction": "right", "x": 0.0, "y": 1.0, "xanchor": "left", "yanchor": "bottom",
              "buttons": buttons_cam, "showactive": False, **BUTTON_STYLE}]
    if both:
        vis_gt = [k not in errors for k in range(ntr)]
        vis_err = [k not in truth for k in range(ntr)]
        menus.append({"type": "buttons", "direction": "right", "x": SPLIT, "y": 1.0, "xanchor": "left",
                      "yanchor": "bottom", "showactive": True, "active": 0 if right == "truth" else 1,
                      **BUTTON_STYLE,
                      "buttons": [{"label": "right: ground truth", "method": "restyle", "args": [{"visible": vis_gt}]},
                                  {"label": "right: errors", "method": "restyle", "args": [{"visible": vis_err}]}]})
    layout = {
        "scene": {**scene, "domain": {"x": [0.0, SPLIT if both else 2 * SPLIT], "y": [0.0, 1.0]}},
        "paper_bgcolor": BACKGROUND, "font": {"color": "rgb(225,225,225)"},
        "margin": {"l": 0, "r": 0, "t": 30, "b": 0},
        "legend": {"itemsizing": "constant", "bgcolor": BACKGROUND, "x": 2 * SPLIT + 0.005, "xanchor": "left",
                   "y": 1.0, "yanchor": "top", "title": {"text": "click: hide / show<br>double-click: only this"}},
        "updatemenus": menus,
        "annotations": [{"text": "prediction", "x": SPLIT / 2 if both else SPLIT, "y": 0.97, "xref": "paper", "yref": "paper",
                         "showarrow": False, "font": {"size": 15}}],
    }  # fmt: skip
    if both:
        layout["scene2"] = {**scene, "domain": {"x": [SPLIT, 2 * SPLIT], "y": [0.0, 1.0]}}
        layout["annotations"].append({"text": "ground truth / errors", "x": 1.5 * SPLIT, "y": 0.97, "xref": "paper",
                                      "yref": "paper", "showarrow": False, "font": {"size": 15}})
    fig.update_layout(**layout)

    # the page: a header with the counts (and the subsample), then the figure
    notes = [f"{n:,} points"]
    if len(shown) < n:
        notes.append(f"showing a random subset of {len(shown):,} of {n:,} points for display (seed {seed}); "
                     "the accuracy counts all points")
    if both:
        lab = gt != IGNORE
        wrong = int((pred[lab] != gt[lab]).sum())
        total = int(lab.sum())
        acc = 100.0 * (total - wrong) / total if total else float("nan")
        notes.append(f"point accuracy {acc:.2f} % ({wrong:,} errors in {total:,} labelled points; "
                     f"{n - total:,} unlabelled)")
    return fig, notes


def write_scan_viewer(
    path: str | Path,
    points: np.ndarray,
    pred: np.ndarray,
    labels: np.ndarray | None,
    class_names: Sequence[str],
    colors: np.ndarray,
    title: str = "",
    **options,
) -> Path:
    """Write the interactive page of one scan to `path` (.html, plotly.js embedded: opens offline)
    and return the path. Arguments and `options` (max_points, seed, radius, marker_size, camera,
    right) as in `scan_figure`."""
    import plotly.io as pio

    fig, notes = scan_figure(points, pred, labels, class_names, colors, **options)
    both = labels is not None
    div = pio.to_html(fig, include_plotlyjs=True, full_html=False, default_height="calc(100vh - 70px)",
                      config={"responsive": True, "displaylogo": False, "scrollZoom": True},
                      post_script=LINK_CAMERAS if both else None)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title or 'balvit scan')}</title>"
        f"<style>body{{margin:0;background:{BACKGROUND};color:#e1e1e1;font-family:sans-serif}}"
        "header{padding:6px 12px;font-size:14px}header b{font-size:16px}</style></head><body>"
        f"<header><b>{html.escape(title)}</b><br>{html.escape(' · '.join(notes))}. "
        "Drag to rotate, scroll to zoom; the buttons set the view.</header>\n"
        f"{div}\n</body></html>\n"
    )
    return write_text(path, page)


class ViewerPages:
    """Per-frame consumer of the inference loop (engine/evaluate.py `PerFrame`; `balvit eval / predict
    --viewer N`): the interactive page of each of the first `limit` frames it sees, written to
    `out_dir/<frame>.html` ("/" in a frame id becomes "_"), with the ground truth beside the
    prediction when `with_gt` and the frame has labels. A page that cannot be written is logged and
    skipped: pages are a convenience, never a reason to lose an evaluation."""

    def __init__(self, out_dir: str | Path, labels, limit: int, with_gt: bool = True, **options):
        self.out_dir, self.labels, self.limit, self.with_gt, self.options = Path(out_dir), labels, limit, with_gt, options
        self.written: list[Path] = []

    def __call__(self, item: dict) -> None:
        if len(self.written) >= self.limit:
            return
        import logging

        frame = str(item["frame"])
        gt = item["labels"].numpy() if self.with_gt else None
        if gt is not None and (gt == IGNORE).all():
            gt = None  # an unlabelled frame: prediction only
        try:
            self.written.append(write_scan_viewer(
                self.out_dir / f"{frame.replace('/', '_')}.html", item["points"].numpy(), item["pred"].numpy(), gt,
                self.labels.class_names, self.labels.colors, title=frame, **self.options))
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            logging.getLogger(__name__).warning("could not write the viewer page of frame %s: %s", frame, exc)
