import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from balvit.config import LossConfig
from balvit.losses import class_weights_from_counts, cross_entropy, kl_distillation, lovasz_softmax, segmentation_loss


def test_lovasz_equals_jaccard_loss_on_hard_predictions():
    # with one-hot probabilities the Lovasz extension is exactly 1 - IoU of each present class
    rng = np.random.default_rng(0)
    gt = torch.from_numpy(rng.integers(0, 4, 400))
    pred = gt.clone()
    flip = torch.from_numpy(rng.random(400) < 0.3)
    pred[flip] = torch.from_numpy(rng.integers(0, 4, int(flip.sum())))
    logits = F.one_hot(pred, 4).float() * 1e4  # softmax is one-hot to float precision
    ious = []
    for c in torch.unique(gt).tolist():
        inter = ((pred == c) & (gt == c)).sum().item()
        union = ((pred == c) | (gt == c)).sum().item()
        ious.append(inter / union)
    expected = float(np.mean([1 - i for i in ious]))
    assert lovasz_softmax(logits, gt).item() == pytest.approx(expected, abs=1e-5)


def test_lovasz_ignores_255_and_is_zero_when_perfect():
    gt = torch.tensor([0, 1, 2, 255, 255])
    logits = F.one_hot(torch.tensor([0, 1, 2, 0, 1]), 3).float() * 1e4
    assert lovasz_softmax(logits, gt).item() == pytest.approx(0.0, abs=1e-6)
    assert lovasz_softmax(logits, torch.full((5,), 255)).item() == 0.0


def test_lovasz_has_gradients():
    logits = torch.randn(50, 5, requires_grad=True)
    gt = torch.randint(0, 5, (50,))
    lovasz_softmax(logits, gt).backward()
    assert logits.grad.abs().sum() > 0


def test_focal_with_gamma_zero_is_cross_entropy_and_down_weights_easy_points():
    logits = torch.randn(64, 6)
    gt = torch.randint(0, 6, (64,))
    gt[:5] = 255
    ce = F.cross_entropy(logits[5:], gt[5:])
    assert cross_entropy(logits, gt).item() == pytest.approx(ce.item(), rel=1e-6)
    assert cross_entropy(logits, gt, gamma=2.0).item() < ce.item()
    # focal by hand for one point
    lg = torch.tensor([[2.0, 0.0]])
    p = torch.softmax(lg, 1)[0, 0]
    assert cross_entropy(lg, torch.tensor([0]), gamma=2.0).item() == pytest.approx((-(1 - p) ** 2 * torch.log(p)).item(), rel=1e-6)


def test_class_weights_favour_rare_classes():
    w = class_weights_from_counts(np.array([1000, 10, 0]), "inverse_sqrt_freq")
    assert w[1] > w[0] and w.mean().item() == pytest.approx(1.0)
    assert class_weights_from_counts(np.array([1, 2]), "none") is None


def test_inverse_cbrt_class_weights_are_2dpass_elites_by_hand():
    """(max f / f)^(1/3) with f = counts / sum (dachr8/ELiTe network/arch_elite.py seg_labelweights);
    a class without points (never a target) gets the largest weight of the others, not infinity."""
    counts = np.array([800, 100, 27, 0])
    w = class_weights_from_counts(counts, "inverse_cbrt_freq")
    f = counts[:3] / counts.sum()
    assert w[:3].tolist() == pytest.approx(list((f.max() / f) ** (1 / 3)), rel=1e-6)
    assert w[0].item() == pytest.approx(1.0) and w[2].item() == pytest.approx((800 / 27) ** (1 / 3), rel=1e-6)
    assert w[3].item() == pytest.approx(w[2].item())


def test_rangevit_focal_alpha_and_its_plain_mean_by_hand():
    """RangeViT (train.py, utils/optim/focal_softmax.py): alpha_c = log(1 + 1 / (f_c + 1e-3)) and the
    loss = mean over the points of -alpha_t (1 - p_t)^2 log p_t (weight_norm "points")."""
    counts = np.array([900, 90, 10])
    w = class_weights_from_counts(counts, "log_inverse_freq")
    f = counts / counts.sum()
    assert w.tolist() == pytest.approx(list(np.log(1 + 1 / (f + 1e-3))), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(20, 3, generator=g), torch.randint(0, 3, (20,), generator=g)
    target[0] = 255
    p = torch.softmax(logits, 1)[torch.arange(20), target.clamp(max=2)]
    per_point = -(1 - p) ** 2 * torch.log(p) * w[target.clamp(max=2)]
    want = per_point[1:].mean()
    assert cross_entropy(logits, target, w, gamma=2.0, weight_norm="points").item() == pytest.approx(want.item(), rel=1e-5)
    normalised = (per_point[1:].sum() / w[target[1:]].sum()).item()
    assert cross_entropy(logits, target, w, gamma=2.0).item() == pytest.approx(normalised, rel=1e-5)  # the default
    ce = torch.nn.functional.cross_entropy(logits[1:], target[1:], reduction="none") * w[target[1:]]
    assert cross_entropy(logits, target, w, weight_norm="points").item() == pytest.approx(ce.mean().item(), rel=1e-5)


def test_kl_element_reduction_is_torchs_kl_div_default_mean():
    """ELiTe's F.kl_div(F.log_softmax(s), F.softmax(t)) with the default reduction 'mean'."""
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(30, 7, generator=g), torch.randn(30, 7, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that 'mean' is not 'batchmean'
        official = F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1))
    assert kl_distillation(s, t, reduction="elements").item() == pytest.approx(official.item(), rel=1e-6)
    assert kl_distillation(s, t).item() == pytest.approx(7 * official.item(), rel=1e-5)  # "points": x C


def test_segmentation_loss_terms():
    logits = torch.randn(30, 4)
    gt = torch.randint(0, 4, (30,))
    terms = segmentation_loss(logits, gt, LossConfig(ce_weight=1.0, lovasz_weight=0.5))
    assert set(terms) == {"ce", "lovasz", "total"}
    assert terms["total"].item() == pytest.approx(terms["ce"].item() + terms["lovasz"].item())
    assert terms["lovasz"].item() == pytest.approx(0.5 * lovasz_softmax(logits, gt).item())


def reference_lovasz(logits, gt):
    """Per-class loop written from the paper's Algorithm 1 (Berman et al. 2018)."""
    probs = torch.softmax(logits, 1)
    out = []
    for c in torch.unique(gt).tolist():
        fg = (gt == c).float()
        err = (fg - probs[:, c]).abs()
        err_s, perm = torch.sort(err, descending=True)
        g = fg[perm]
        jac = 1 - (g.sum() - g.cumsum(0)) / (g.sum() + (1 - g).cumsum(0))
        jac[1:] = jac[1:] - jac[:-1].clone()
        out.append((err_s * jac).sum())
    return torch.stack(out).mean()


def test_vectorised_lovasz_equals_the_per_class_loop():
    torch.manual_seed(0)
    logits = torch.randn(300, 7, dtype=torch.float64)
    gt = torch.randint(0, 5, (300,))
    # lovasz_softmax works in float32
    assert lovasz_softmax(logits, gt).item() == pytest.approx(reference_lovasz(logits, gt).item(), rel=1e-6)
