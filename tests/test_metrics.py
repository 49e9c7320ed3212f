"""Metrics against hand-computed confusion matrices and the official tools' conventions."""

import numpy as np
import pytest
import torch

from balvit.metrics import ConfusionMatrix, iou_from_confusion, markdown_table, summarize


def test_confusion_rows_are_ground_truth_and_ignore_is_skipped():
    cm = ConfusionMatrix(3)
    gt = torch.tensor([0, 0, 1, 1, 2, 255, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2, 0])
    cm.update(pred, gt)
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert (cm.numpy() == expected).all()


def test_semantickitti_iou_by_hand():
    # rows = gt, cols = pred
    conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    miou, iou = iou_from_confusion(conf, "all")
    # class 0: tp 5, fp 2, fn 1 -> 5/8 ; class 1: tp 3, fp 1, fn 2 -> 3/6 ; class 2 absent -> 0
    assert iou[0] == pytest.approx(5 / 8) and iou[1] == pytest.approx(0.5) and iou[2] == 0.0
    assert miou == pytest.approx((5 / 8 + 0.5 + 0) / 3)


def test_nuscenes_iou_by_hand_leaves_absent_classes_out():
    conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    miou, iou = iou_from_confusion(conf, "nanmean")
    assert np.isnan(iou[2])
    assert miou == pytest.approx((5 / 8 + 0.5) / 2)


def test_false_positives_of_an_absent_class_count_zero_in_both_modes():
    conf = np.array([[4, 0, 1], [0, 2, 0], [0, 0, 0]])  # class 2 predicted once, never in gt
    _, iou_k = iou_from_confusion(conf, "all")
    _, iou_n = iou_from_confusion(conf, "nanmean")
    assert iou_k[2] == 0 and iou_n[2] == 0  # union 1, intersection 0: a real 0, not NaN


def official_kitti(pred_raw_xent, gt_xent, n_classes):
    """The semantic-kitti-api computation (cross-entropy classes, 0 = ignored), re-derived:
    conf[pred, gt] += 1, zero the ignored gt column, IoU = tp / (tp + fp + fn + 1e-15)."""
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (pred_raw_xent, gt_xent), 1)
    conf[:, 0] = 0
    tp = np.diag(conf)
    fp = conf.sum(1) - tp
    fn = conf.sum(0) - tp
    iou = tp / (tp + fp + fn + 1e-15)
    return iou[1:].mean()


def official_nuscenes(pred, gt, n_classes):
    """The devkit computation (challenge classes, 0 = ignore): bincount(C * gt + pred), zero row and
    column 0, IoU = tp / float32(union), nanmean over all classes (row/col 0 give NaN)."""
    conf = np.bincount(n_classes * gt + pred, minlength=n_classes ** 2).reshape(n_classes, n_classes)
    conf[0, :] = 0
    conf[:, 0] = 0
    tp = np.diag(conf)
    union = conf.sum(1) + conf.sum(0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / union.astype(np.float32)
    return float(np.nanmean(iou))


def test_matches_official_semantic_kitti_formula_on_random_predictions():
    rng = np.random.default_rng(0)
    gt_train = rng.integers(0, 19, 5000)
    gt_train[rng.random(5000) < 0.1] = 255
    gt_train[gt_train == 7] = 8  # class 7 absent from gt ...
    pred = rng.integers(0, 19, 5000)
    pred[pred == 12] = 3  # ... and class 12 never predicted
    cm = ConfusionMatrix(19)
    cm.update(torch.from_numpy(pred), torch.from_numpy(gt_train))
    ours = summarize(cm.numpy(), [str(i) for i in range(19)], "all")["miou"] / 100
    gt_x = np.where(gt_train == 255, 0, gt_train + 1)
    assert ours == pytest.approx(official_kitti(pred + 1, gt_x, 20), abs=1e-12)


def test_matches_official_nuscenes_formula_including_float32_union():
    rng = np.random.default_rng(1)
    # large counts make float32(union) differ from the exact union: keep the devkit's rounding
    counts = rng.integers(20_000_000, 40_000_000, size=(16, 16)) * np.eye(16, dtype=np.int64)
    counts += rng.integers(0, 3_000_001, size=(16, 16))
    miou, _ = iou_from_confusion(counts, "nanmean")
    full = np.zeros((17, 17), np.int64)
    full[1:, 1:] = counts
    tp = np.diag(full)
    union = full.sum(1) + full.sum(0) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        ref = float(np.nanmean(tp / union.astype(np.float32)))
    assert miou == ref  # bit-identical
    # and it really differs from the exact computation at this size
    exact = float(np.mean(tp[1:] / union[1:]))
    assert miou != exact


def test_official_nuscenes_on_points():
    rng = np.random.default_rng(2)
    gt = rng.integers(0, 17, 3000)  # 0 = ignore in the challenge indexing
    pred = rng.integers(1, 17, 3000)
    cm = ConfusionMatrix(16)
    cm.update(torch.from_numpy(pred - 1), torch.from_numpy(np.where(gt == 0, 255, gt - 1)))
    ours, _ = iou_from_confusion(cm.numpy(), "nanmean")
    assert ours == pytest.approx(official_nuscenes(pred, gt, 17), abs=1e-12)


def test_out_of_range_predictions_are_refused():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(torch.tensor([3]), torch.tensor([0]))


def test_summary_and_table():
    conf = np.array([[5, 1], [2, 3]])
    m = summarize(conf, ["road", "car"], "all")
    assert m["miou"] == pytest.approx(100 * (5 / 8 + 0.5) / 2)
    assert m["gt_points"] == {"road": 6, "car": 5}
    table = markdown_table(m)
    assert "| road | 62.50 | 6 |" in table and "**56.25**" in table
