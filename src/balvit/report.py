"""Results a person can look at: class-coloured range-view and BEV pictures, IoU bar charts and a
Markdown report of a run (per-class IoU table, parameter counts, timing)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .config import DataConfig
from .data.labels import IGNORE, LabelSpec
from .geometry import closest_per_cell
from .io import save_figure, save_image, write_text
from .metrics import markdown_table

log = logging.getLogger(__name__)


def range_label_image(labels: np.ndarray, points: np.ndarray, rc: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Per-point labels (N,) -> (H, W) label image showing each pixel's closest point (255 elsewhere)."""
    h, w = shape
    depth = np.linalg.norm(points[:, :3], axis=1)
    flat = rc[:, 0] * w + rc[:, 1]
    winner = closest_per_cell(flat, depth)
    img = np.full(h * w, IGNORE, dtype=np.int64)
    img[flat[winner]] = labels[winner]
    return img.reshape(h, w)


def bev_label_image(labels: np.ndarray, points: np.ndarray, extent: float, size: int = 600) -> np.ndarray:
    """Top-down (size, size) label raster over [-extent, extent]^2 (x up, y left); highest point wins."""
    px = ((extent - points[:, 0]) / (2 * extent) * size).astype(np.int64)
    py = ((extent - points[:, 1]) / (2 * extent) * size).astype(np.int64)
    keep = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    flat = px[keep] * size + py[keep]
    height = points[keep, 2]
    winner = closest_per_cell(flat, (height.max() - height) if len(height) else height)  # highest point
    img = np.full(size * size, IGNORE, dtype=np.int64)
    img[flat[winner]] = labels[keep][winner]
    return img.reshape(size, size)


def _titled(img: np.ndarray, title: str, scale: tuple[int, int] = (1, 1)) -> Image.Image:
    im = Image.fromarray(img.astype(np.uint8))
    if scale != (1, 1):
        im = im.resize((im.width * scale[1], im.height * scale[0]), Image.NEAREST)
    canvas = Image.new("RGB", (im.width, im.height + 16), (255, 255, 255))
    canvas.paste(im, (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0))
    return canvas


def _stack(images: list[Image.Image], horizontal: bool = False) -> Image.Image:
    if horizontal:
        out = Image.new("RGB", (sum(i.width for i in images) + 8 * (len(images) - 1), max(i.height for i in images)), (255, 255, 255))
        x = 0
        for im in images:
            out.paste(im, (x, 0))
            x += im.width + 8
        return out
    out = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), (255, 255, 255))
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def error_colors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Green where right, red where wrong, black where ignored/empty."""
    out = np.zeros(pred.shape + (3,), np.uint8)
    valid = (gt != IGNORE) & (pred != IGNORE)
    out[valid & (pred == gt)] = (40, 170, 40)
    out[valid & (pred != gt)] = (230, 30, 30)
    return out


def legend(labels: LabelSpec, width: int) -> Image.Image:
    cols = 4
    rows = (labels.num_classes + cols - 1) // cols
    im = Image.new("RGB", (width, rows * 14 + 4), (255, 255, 255))
    d = ImageDraw.Draw(im)
    cw = width // cols
    for k, name in enumerate(labels.class_names):
        x, y = (k % cols) * cw + 4, (k // cols) * 14 + 2
        d.rectangle([x, y + 2, x + 10, y + 12], fill=tuple(int(c) for c in labels.colors[k]))
        d.text((x + 14, y), name, fill=(0, 0, 0))
    return im


class PictureWriter:
    """Callable on the per-frame items of `iterate_predictions`: writes, for the first `limit`
    frames, `<frame>_range.png` (ground truth / prediction / errors) and `<frame>_bev.png`."""

    def __init__(self, out_dir: str | Path, labels: LabelSpec, data: DataConfig, limit: int = 4, with_gt: bool = True):
        self.out_dir = Path(out_dir)
        self.labels, self.data, self.limit, self.with_gt = labels, data, limit, with_gt
        self.written: list[Path] = []

    def __call__(self, item: dict) -> None:
        if len(self.written) >= 2 * self.limit:
            return
        try:
            self.written += self.draw(item)
        except Exception as e:  # pictures are a convenience: never lose an evaluation over one
            log.warning("could not draw frame %s: %s", item.get("frame"), e)

    def draw(self, item: dict) -> list[Path]:
        pts = item["points"].numpy()
        rc = item["rv_rc"].numpy()
        pred = item["pred"].numpy()
        gt = item["labels"].numpy()
        shape = item["rv_shape"]
        name = str(item["frame"]).replace("/", "_")
        rows = []
        scale = (max(1, 192 // shape[0]), 1)
        pred_img = range_label_image(pred, pts, rc, shape)
        if self.with_gt:
            gt_img = range_label_image(gt, pts, rc, shape)
            rows.append(_titled(self.labels.color(gt_img), f"{name}: ground truth", scale))
        rows.append(_titled(self.labels.color(pred_img), f"{name}: prediction", scale))
        if self.with_gt:
            rows.append(_titled(error_colors(pred_img, gt_img), "green = correct, red = wrong", scale))
        rows.append(legend(self.labels, rows[0].width))
        paths = [save_image(self.out_dir / f"{name}_range.png", _stack(rows))]
        extent = self.data.bev.max_radius
        panels = []
        if self.with_gt:
            panels.append(_titled(self.labels.color(bev_label_image(gt, pts, extent)), "BEV ground truth"))
        panels.append(_titled(self.labels.color(bev_label_image(pred, pts, extent)), "BEV prediction"))
        if self.with_gt:
            err = error_colors(bev_label_image(pred, pts, extent), bev_label_image(gt, pts, extent))
            panels.append(_titled(err, "BEV errors"))
        bev = _stack(panels, horizontal=True)
        paths.append(save_image(self.out_dir / f"{name}_bev.png", _stack([bev, legend(self.labels, bev.width)])))
        return paths


def iou_bar_chart(metrics: dict, labels: LabelSpec, path: str | Path, title: str = "") -> Path:
    """Horizontal bar chart of the per-class IoU, bars in the class colours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics["iou"])
    vals = [0.0 if metrics["iou"][n] is None else metrics["iou"][n] for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.2))
    ax.barh(range(len(names)), vals, color=labels.colors[: len(names)] / 255.0, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.axvline(metrics["miou"], color="black", linestyle="--", linewidth=1)
    ax.set_title(title or f"mIoU {metrics['miou']:.2f}")
    fig.tight_layout()
    return save_figure(path, fig)


def write_run_report(path: str | Path, title: str, metrics: dict, sections: dict[str, str], pictures: list[Path]) -> Path:
    """A Markdown report: free-form sections, the per-class IoU table and the pictures."""
    path = Path(path)
    lines = [f"# {title}", ""]
    for head, body in sections.items():
        lines += [f"## {head}", "", body.rstrip(), ""]
    lines += ["## Per-class IoU", "", markdown_table(metrics), ""]
    if pictures:
        lines += ["## Pictures", ""]
        for p in pictures:
            rel = Path(p).relative_to(path.parent) if Path(p).is_relative_to(path.parent) else p
            lines.append(f"![{Path(p).stem}]({rel})")
            lines.append("")
    return write_text(path, "\n".join(lines))
