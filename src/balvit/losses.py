"""Segmentation losses on per-point (or per-pixel) logits.

- Cross-entropy with ignore index 255, optional class weights and label smoothing.
- Focal loss (Lin et al., ICCV 2017): FL = -(1 - p_t)^gamma log p_t.
- Lovasz-softmax (Berman et al., CVPR 2018): the convex Lovasz extension of the Jaccard loss,
  averaged over the classes present in the ground truth.
- Feature distillation (ScaLR, Puy et al., CVPR 2024): squared distance of L2-normalised features.
- Class-mean feature alignment between two modalities (supervised contrastive, Khosla et al.,
  NeurIPS 2020, applied to per-class mean features as in MultiViT): "pull" = 1 - cos between the
  two modalities' means of each shared class; "pull_push" = InfoNCE over the shared classes (a
  class's mean in one modality is the positive of the same class in the other, the other classes'
  means are negatives), symmetrised.
- Logit distillation (Hinton et al., 2015): KL(teacher || student) of temperature-softened class
  distributions (used per student stage by ELiTe / 2DPASS), reduced as ELiTe does (the mean over
  points x classes of PyTorch's `F.kl_div` default, dachr8/ELiTe network/arch_elite.py) or as the
  mean over points of the per-point KL.
- Class weights from label frequencies f: 1 / sqrt(f + 1e-3) normalised to mean 1, 2DPASS /
  ELiTe's (max f / f)^(1/3) (dachr8/ELiTe network/arch_elite.py, `seg_labelweights`), or RangeViT's
  log(1 + 1 / (f + 1e-3)) (valeoai/rangevit train.py), applied as a weights-normalised mean or, as
  RangeViT's FocalSoftmaxLoss, a plain mean over the points (`loss.weight_norm`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .config import LossConfig
from .data.labels import IGNORE


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                  gamma: float = 0.0, label_smoothing: float = 0.0, weight_norm: str = "weights") -> torch.Tensor:
    """logits (N, C), target (N,) with 255 ignored -> scalar (mean over valid points); with class
    weights w the mean is sum w_t l / sum w_t (weight_norm "weights") or sum w_t l / N ("points")."""
    valid = target != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    logits, target = logits[valid].float(), target[valid]
    if gamma <= 0 and weight_norm == "weights":
        return F.cross_entropy(logits, target, weight=weight, label_smoothing=label_smoothing)
    if gamma <= 0:
        loss = F.cross_entropy(logits, target, reduction="none", label_smoothing=label_smoothing)
    else:
        logp = F.log_softmax(logits, dim=1)
        logp_t = logp.gather(1, target[:, None])[:, 0]
        p_t = logp_t.exp()
        loss = -((1.0 - p_t) ** gamma) * logp_t
    if weight is None:
        return loss.mean()
    w = weight[target]
    if weight_norm == "points":
        return (loss * w).mean()
    return (loss * w).sum() / w.sum().clamp_min(1e-12)


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """logits (N, C), target (N,) with 255 ignored -> Lovasz-softmax averaged over present classes.

    All present classes are sorted in one call: errors (N, K) sorted down each column.
    """
    valid = target != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    probs = F.softmax(logits[valid].float(), dim=1)
    target = target[valid]
    present = torch.unique(target)  # (K,)
    fg = (target[:, None] == present[None, :]).float()  # (N, K)
    errors = (fg - probs[:, present]).abs()
    errors_sorted, order = torch.sort(errors, dim=0, descending=True)
    fg_sorted = fg.gather(0, order)
    total = fg_sorted.sum(0, keepdim=True)
    intersection = total - fg_sorted.cumsum(0)
    union = total + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union  # (N, K)
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    return (errors_sorted * grad).sum(0).mean()


def class_weights_from_counts(counts: np.ndarray, kind: str) -> torch.Tensor | None:
    """Per-class weights from labelled point counts, f = counts / sum(counts):

    none              -> None
    inverse_sqrt_freq -> 1 / sqrt(f + 1e-3), normalised to mean 1
    inverse_cbrt_freq -> (max f / f)^(1/3) (2DPASS / ELiTe): 1 for the most frequent class; a class
                         with no labelled point (never a target, so its weight is never used) gets
                         the largest weight of the others instead of infinity
    log_inverse_freq  -> log(1 + 1 / (f + 1e-3)) (RangeViT's focal alpha on SemanticKITTI), not normalised
    """
    if kind == "none":
        return None
    freq = np.asarray(counts, dtype=np.float64)
    freq = freq / max(freq.sum(), 1.0)
    if kind == "inverse_sqrt_freq":
        w = 1.0 / np.sqrt(freq + 1e-3)
        w = w / w.mean()
    elif kind == "log_inverse_freq":
        w = np.log1p(1.0 / (freq + 1e-3))
    elif kind == "inverse_cbrt_freq":
        present = freq > 0
        if not present.any():
            raise ValueError("inverse_cbrt_freq class weights need at least one labelled point")
        w = np.ones_like(freq)
        w[present] = np.cbrt(freq.max() / freq[present])
        w[~present] = w[present].max()
    else:
        raise ValueError(f"unknown class weight kind {kind!r}")
    return torch.tensor(w, dtype=torch.float32)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, cfg: LossConfig,
                      weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """CE (or focal) and Lovasz terms, weighted by the config; returns each term and their sum."""
    terms = {}
    if cfg.ce_weight:
        terms["ce"] = cfg.ce_weight * cross_entropy(logits, target, weight, cfg.focal_gamma, cfg.label_smoothing,
                                                    cfg.weight_norm)
    if cfg.lovasz_weight:
        terms["lovasz"] = cfg.lovasz_weight * lovasz_softmax(logits, target)
    terms["total"] = sum(terms.values()) if terms else logits.sum() * 0.0
    return terms


def cosine_distillation_loss(student: torch.Tensor, teacher: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """ScaLR's image-to-LiDAR distillation loss (Puy et al., CVPR 2024), per paired point p:

        l_p = || s_p / |s_p| - t_p / |t_p| ||^2  (= 2 - 2 cos(s_p, t_p))

    student, teacher (P, D) -> the mean over points (or the sum with reduction="sum"); 0 without points."""
    if student.shape != teacher.shape:
        raise ValueError(f"student {tuple(student.shape)} and teacher {tuple(teacher.shape)} features differ in shape")
    if len(student) == 0:
        return student.sum() * 0.0
    s = F.normalize(student.float(), dim=1)
    t = F.normalize(teacher.float(), dim=1)
    per_point = (s - t).pow(2).sum(1)
    return per_point.sum() if reduction == "sum" else per_point.mean()


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """features (N, D), labels (N,) (values outside 0..C-1 ignored) -> means (C, D), present (C,) bool."""
    keep = (labels >= 0) & (labels < num_classes)
    f, lab = features[keep].float(), labels[keep].long()
    sums = f.new_zeros(num_classes, f.shape[1]).index_add(0, lab, f)
    counts = torch.bincount(lab, minlength=num_classes).to(f.dtype)
    return sums / counts.clamp_min(1)[:, None], counts > 0


def class_mean_contrastive(a: torch.Tensor, a_present: torch.Tensor, b: torch.Tensor, b_present: torch.Tensor,
                           mode: str = "pull", temperature: float = 0.1) -> torch.Tensor:
    """Alignment of per-class mean features a (C, D) and b (C, D) over the classes present in both.

    pull:      mean_c (1 - cos(a_c, b_c))
    pull_push: (CE(cos(a, b)^T / t, diag) + CE(cos(b, a)^T / t, diag)) / 2 over the shared classes
    Returns 0 (with a graph) when no class is shared (or, for pull_push, fewer than 2)."""
    shared = a_present & b_present
    za = F.normalize(a[shared], dim=1)
    zb = F.normalize(b[shared], dim=1)
    k = int(shared.sum())
    if k == 0 or (mode == "pull_push" and k < 2):
        return (a.sum() + b.sum()) * 0.0
    if mode == "pull":
        return (1.0 - (za * zb).sum(1)).mean()
    if mode == "pull_push":
        sim = za @ zb.T / temperature  # (k, k)
        target = torch.arange(k, device=sim.device)
        return 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
    raise ValueError(f"unknown contrastive mode {mode!r}")


def kl_distillation(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0,
                    reduction: str = "points") -> torch.Tensor:
    """student, teacher (N, C) logits -> T^2 x the KL(softmax(t / T) || softmax(s / T)) terms
    p_t (log p_t - log p_s), reduced:

    "points":   sum over classes, mean over points (the per-point KL divergence)
    "elements": mean over points x classes, = "points" / C: what ELiTe's
                F.kl_div(F.log_softmax(s), F.softmax(t)) computes with PyTorch's default 'mean'

    The teacher is detached; 0 for N = 0."""
    if student.shape[0] == 0:
        return student.sum() * 0.0
    t = float(temperature)
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher.detach().float() / t, dim=1)
    kl = log_p_t.exp() * (log_p_t - log_p_s)  # (N, C)
    if reduction == "points":
        return kl.sum(1).mean() * t * t
    if reduction == "elements":
        return kl.mean() * t * t
    raise ValueError(f"unknown KL reduction {reduction!r}")
