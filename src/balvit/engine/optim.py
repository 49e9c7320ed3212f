"""The optimizer over the trainable parameters only, with a linear warm-up + cosine learning-rate schedule.

`train.optimizer`: AdamW (default, betas 0.9 / 0.999) or SGD with `train.momentum` and
`train.nesterov` (ELiTe's regime: dachr8/ELiTe network/base_model.py configure_optimizers, SGD
lr 0.24, momentum 0.9, Nesterov, weight decay 1e-4 in config/ELiTe-semantickitti.yaml).
Norm weights, biases, learnable scales and embeddings get no weight decay. A model may give
per-parameter learning-rate scales (`lr_scales(): dict[name, float]`, e.g. layer-wise decay for
fine-tuning); parameters with equal (decay, scale) share a group.

The schedule is `lr_factor`. ELiTe's config names its schedule "CosineAnnealingWarmRestarts", but
the code behind that name (utils/schedulers.py cosine_schedule_with_warmup, from 2DPASS) is one
cosine over all steps, 0.5 (1 + cos(pi k / T)), with no restart (and a 1000 / num_gpu step linear
warm-up on more than one GPU): `lr_factor` with warmup 0 and min_lr 0 is exactly that on one GPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import TrainConfig

NO_DECAY_HINTS = ("norm", "bias", "gamma", "level_embed", "pos_embed", "position_embeddings", "cls_token",
                  "register_tokens", "bn")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim <= 1 or any(h in name.lower() for h in NO_DECAY_HINTS)


def param_groups(model: nn.Module, weight_decay: float, lr_scales: dict[str, float] | None = None) -> list[dict]:
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if no_weight_decay(name, p) else weight_decay
        scale = (lr_scales or {}).get(name, 1.0)
        g = groups.setdefault((wd, scale), {"params": [], "names": [], "weight_decay": wd, "lr_scale": scale})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    scales = model.lr_scales() if hasattr(model, "lr_scales") else None  # a task adds the "model." prefix
    groups = param_groups(model, cfg.weight_decay, scales)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    for g in groups:
        g["lr"] = cfg.lr * g["lr_scale"]
    groups = [{k: v for k, v in g.items() if k != "names"} for g in groups]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the base lr at `step`: linear warm-up from ~0 to 1, then cosine down to min_ratio."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    min_ratio = cfg.min_lr / cfg.lr
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, cfg.steps, cfg.warmup_steps, min_ratio))
