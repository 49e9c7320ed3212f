"""Semantic segmentation metrics, computed exactly as the official tools compute them.

One C x C confusion matrix (rows = ground truth, columns = prediction, int64) is summed over the
whole split - across ranks with an all-reduce, never averaged per rank or batch. Points whose
ground truth is ignore (255) are left out. From it:

- SemanticKITTI (semantic-kitti-api `iouEval`): IoU_c = tp / (tp + fp + fn + 1e-15) in float64 and
  the mean over *all* C classes; a class absent from ground truth and prediction counts as 0.
- nuScenes-lidarseg (devkit `ConfusionMatrix`): IoU_c = tp / float32(tp + fp + fn), NaN where the
  union is 0, and the mean is the nanmean (absent classes are left out). The float32 cast of the
  union is the devkit's, kept so the numbers match to the last digit on large splits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from ..data.labels import IGNORE


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

    def all_reduce(self) -> None:
        """Sum the matrices of every rank (a no-op without torch.distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.matrix, op=dist.ReduceOp.SUM)

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
