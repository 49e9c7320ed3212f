"""Semantic segmentation metrics, computed exactly as the official tools compute them.

Points: one C x C confusion matrix (rows = ground truth, columns = prediction, int64) is summed over
the whole split - across ranks by the engine (engine/evaluate.py), never averaged per rank or batch.
Points whose ground truth is ignore (255) are left out. From it:

- SemanticKITTI (semantic-kitti-api `iouEval`): IoU_c = tp / (tp + fp + fn + 1e-15) in float64 and
  the mean over *all* C classes; a class absent from ground truth and prediction counts as 0.
- nuScenes-lidarseg (devkit `ConfusionMatrix`): IoU_c = tp / float32(tp + fp + fn), NaN where the
  union is 0, and the mean is the nanmean (absent classes are left out). The float32 cast of the
  union is the devkit's, kept so the numbers match to the last digit on large splits.

Camera pixels (the one definition used by every camera evaluation and pseudo-label score): a
(C + 1) x (C + 1) confusion matrix whose last row / column is "no class" (the background class of a
camera head with one, or a pixel a pseudo-label leaves unlabelled); pixels whose ground truth is
ignore (255) are left out. IoU_c = tp / (tp + fp + fn) for the C classes, and the camera-pixel mIoU is
the mean over the classes present in the ground truth or the prediction (union > 0), in percent: a
camera view shows few of the classes, so absent ones are left out (as the nuScenes devkit does).
"""

from __future__ import annotations

import numpy as np
import torch

from .data.labels import IGNORE


class ConfusionMatrix:
    def __init__(self, num_classes: int, device: torch.device | str = "cpu"):
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """pred, gt: (N,) train ids; gt == 255 is ignored. Predictions must be real classes."""
        pred = pred.reshape(-1).long()
        gt = gt.reshape(-1).long().to(pred.device)
        keep = gt != IGNORE
        pred, gt = pred[keep], gt[keep]
        c = self.num_classes
        if pred.numel() and (pred.min() < 0 or pred.max() >= c):
            raise ValueError(f"predictions must lie in 0..{c - 1}")
        if gt.numel() and (gt.min() < 0 or gt.max() >= c):
            raise ValueError(f"ground truth must lie in 0..{c - 1} or be {IGNORE}")
        counts = torch.bincount(gt * c + pred, minlength=c * c)
        self.matrix += counts.reshape(c, c).to(self.matrix.device)

    def numpy(self) -> np.ndarray:
        return self.matrix.cpu().numpy()


def iou_from_confusion(conf: np.ndarray, mode: str) -> tuple[float, np.ndarray]:
    """(C, C) confusion (rows gt, cols pred) -> (mIoU in 0..1, per-class IoU (C,)).

    mode "all": semantic-kitti-api; "nanmean": nuScenes devkit (see the module docstring).
    """
    conf = np.asarray(conf, dtype=np.int64)
    tp = np.diag(conf)
    gt_total = conf.sum(axis=1)
    pred_total = conf.sum(axis=0)
    if mode == "all":
        fp = pred_total - tp
        fn = gt_total - tp
        iou = tp / (tp + fp + fn + 1e-15)
        return float(iou.mean()), iou
    if mode == "nanmean":
        union = gt_total + pred_total - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = tp / union.astype(np.float32)
        if not np.isfinite(iou).any():
            return float("nan"), iou
        # the devkit's matrix has the ignore class at index 0 (NaN IoU): keep it in the nanmean so
        # that numpy's pairwise summation adds in the same order, to the last bit
        return float(np.nanmean(np.concatenate([[np.nan], iou]))), iou
    raise ValueError(f"unknown mIoU mode {mode!r}")


def summarize(conf: np.ndarray, class_names: tuple[str, ...] | list[str], mode: str) -> dict:
    """The metrics.json content: mIoU and per-class IoU in percent, accuracy, point counts."""
    miou, iou = iou_from_confusion(conf, mode)
    total = int(conf.sum())
    acc = float(np.diag(conf).sum() / total) if total else float("nan")
    return {
        "miou": 100.0 * miou,
        "iou": {n: (None if np.isnan(v) else 100.0 * float(v)) for n, v in zip(class_names, iou)},
        "accuracy": 100.0 * acc,
        "points": total,
        "gt_points": {n: int(v) for n, v in zip(class_names, conf.sum(axis=1))},
        "miou_mode": mode,
    }


def markdown_table(metrics: dict) -> str:
    """Per-class IoU table (Markdown) with the mIoU on the last row."""
    lines = ["| class | IoU (%) | ground-truth points |", "|---|---:|---:|"]
    for name, v in metrics["iou"].items():
        shown = "n/a" if v is None else f"{v:.2f}"
        lines.append(f"| {name} | {shown} | {metrics['gt_points'][name]} |")
    lines.append(f"| **mIoU** | **{metrics['miou']:.2f}** | {metrics['points']} |")
    return "\n".join(lines) + "\n"


def format_table(metrics: dict) -> str:
    """Plain-text per-class table for the terminal, ending with the `mIoU: xx.xx` line."""
    width = max(len(n) for n in metrics["iou"])
    rows = [f"{'class':<{width}}  IoU (%)"]
    for name, v in metrics["iou"].items():
        rows.append(f"{name:<{width}}  {'   n/a' if v is None else f'{v:6.2f}'}")
    rows.append(f"mIoU: {metrics['miou']:.2f}")
    return "\n".join(rows)


# ------------------------------------------------------------------------------- camera pixels


def pixel_confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(C + 1, C + 1) int64 camera-pixel confusion (rows truth, columns prediction, index C = no class).

    pred: train ids, C (background) or 255 (no label: counted as C); truth: train ids, C (background)
    or 255 (no ground truth: the pixel is left out)."""
    c = num_classes
    keep = truth != IGNORE
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    p = np.where(p == IGNORE, c, p)
    if t.size and (t.min() < 0 or t.max() > c):
        raise ValueError(f"pixel ground truth must lie in 0..{c} or be {IGNORE}")
    if p.size and (p.min() < 0 or p.max() > c):
        raise ValueError(f"pixel predictions must lie in 0..{c} or be {IGNORE}")
    return np.bincount(t * (c + 1) + p, minlength=(c + 1) ** 2).reshape(c + 1, c + 1)


def camera_pixel_scores(conf: np.ndarray, class_names=None) -> dict:
    """The camera-pixel scores of a (C + 1, C + 1) `pixel_confusion` matrix (see the module docstring):
    miou and per-class iou (percent; None for classes absent from truth and prediction), coverage (share
    of the pixels whose truth is a class that were given a class, percent), precision (share of the
    pixels given a class whose class is right, percent), the pixel count and, where the truth has
    background pixels, the IoU of the background ("no class") apart."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0] - 1
    tp = np.diag(conf)[:c].astype(np.float64)
    union = conf[:c].sum(1) + conf[:, :c].sum(0) - np.diag(conf)[:c]
    present = union > 0
    iou = np.where(present, tp / np.maximum(union, 1), np.nan)
    classed_truth = conf[:c].sum()
    given = conf[:c, :c].sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    out = {
        "miou": float(np.nanmean(iou) * 100) if present.any() else float("nan"),
        "iou": {n: (None if np.isnan(v) else float(v * 100)) for n, v in zip(names, iou)},
        "coverage": float(given / max(classed_truth, 1) * 100),
        "precision": float(tp.sum() / max(conf[:, :c].sum(), 1) * 100),
        "pixels": int(conf.sum()),
    }
    if conf[c].sum() > 0:  # the truth has a background class (MultiViT's camera labels): its IoU apart
        out["background_iou"] = float(conf[c, c] / (conf[c].sum() + conf[:, c].sum() - conf[c, c]) * 100)
    return out
