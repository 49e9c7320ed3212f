"""Dense camera pseudo-labels from sparse projected LiDAR labels, and SAM-PLG.

Implements the Segment-Anything-based pseudo-label generation (SAM-PLG) of "ELiTe: Efficient
Image-to-LiDAR Knowledge Transfer for Semantic Segmentation" (Zhang et al., ICME 2024) on top of
Segment Anything (Kirillov et al., ICCV 2023) through `transformers`' SamModel (models/sam.py):

1. projection: every labelled LiDAR point marks its pixel (the nearest point wins a pixel);
2. prompts: for every class, the projected pixels of that class are grouped into clusters (pixels
   closer than `prompt_dilation`); each cluster gives one prompt: `points_per_prompt` positive points
   (spread over the cluster by farthest-point sampling), `negative_points` labelled pixels of other
   classes near it, and a mask prompt (the dilated cluster, as low-resolution logits);
3. SAM predicts three masks per prompt with their predicted IoU; a mask is kept when its predicted
   IoU >= `pred_iou_thresh`, its stability score (IoU of the mask thresholded at +offset and
   -offset, as SAM's automatic mask generator computes it) >= `stability_thresh`, and at least
   `min_purity` of the labelled pixels inside it carry the prompt's class; of a prompt's masks the
   one with the highest IoU x stability is used;
4. merge: every pixel takes the class of the best-scoring kept mask covering it; pixels that no mask
   covers are filled by `densify` (or left unlabelled), and the projected labels themselves win
   their pixels.

`ColorRegionPredictor` is a stand-in with the same interface and no learned weights (connected
regions of similar colour around the positive points): it lets tests and machines without SAM
weights run the whole pipeline. Projection, densification, scoring against the synthetic renderer's
per-pixel classes and label PNGs come from common.py; `write_pseudolabels` is the
`balvit pseudolabels` command.

Label images hold train ids (uint8 PNG on disk), 255 = no label.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage

from ...models.sam import SamPrompter, build_sam
from ..labels import IGNORE
from .common import densify

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- predictors


class MaskPredictor(Protocol):
    """SAM's promptable interface (what SAM-PLG needs of a mask predictor)."""

    def set_image(self, image: np.ndarray) -> None:
        """(H, W, 3) uint8 RGB; computed once per image (SAM: the image embedding)."""

    def predict(self, points: np.ndarray, labels: np.ndarray,
                masks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """points (P, K, 2) float (x = column, y = row, image pixels), labels (P, K) (1 positive,
        0 negative, -10 padding), masks (P, H, W) float prompt logits or None
        -> mask logits (P, M, H, W) float32 (mask = logits > 0), predicted IoU (P, M)."""


class SamMaskPredictor(SamPrompter):
    """A transformers SamModel (models/sam.py) behind the MaskPredictor interface; prompts go
    through the mask decoder `chunk` at a time."""

    def __init__(self, model, device: str | torch.device = "cpu", chunk: int = 8):
        super().__init__(model, device)
        self.chunk = chunk

    def predict(self, points, labels, masks):
        logits, ious = [], []
        for s in range(0, len(points), self.chunk):
            lg, iou = self.decode(points[s:s + self.chunk], labels[s:s + self.chunk],
                                  masks=None if masks is None else masks[s:s + self.chunk])
            logits.append(lg)
            ious.append(iou)
        return np.concatenate(logits), np.concatenate(ious)


class ColorRegionPredictor:
    """A stand-in for SAM with its interface and no learned weights (tests, machines without SAM).

    Colour distance d(x) = min over the positive points' colours of |rgb(x) - rgb(seed)| / sqrt(3)
    (image smoothed 3 x 3), pushed up where a negative point's colour is closer; mask m for each
    tolerance t (three granularities, like SAM's three outputs) = the connected region of d < t that
    holds a positive point, limited to a window around the mask prompt; logits = sharpness * (t - d)
    inside that region, negative outside; predicted IoU = share of positive points inside x share
    of negative points outside.
    """

    def __init__(self, tolerances: tuple[float, ...] = (0.05, 0.08, 0.12), sharpness: float = 100.0,
                 window: float = 0.5):
        self.tolerances = tolerances
        self.sharpness = sharpness
        self.window = window

    def set_image(self, image: np.ndarray) -> None:
        self.image = ndimage.uniform_filter(image.astype(np.float32) / 255.0, size=(3, 3, 1))

    def _colours(self, pts: np.ndarray) -> np.ndarray:
        h, w = self.image.shape[:2]
        rc = np.clip(np.round(pts[:, ::-1]).astype(np.int64), 0, [h - 1, w - 1])
        return self.image[rc[:, 0], rc[:, 1]]  # (K, 3)

    def _distance(self, colours: np.ndarray) -> np.ndarray:
        diff = self.image[None] - colours[:, None, None, :]  # (K, H, W, 3)
        return (np.sqrt((diff ** 2).sum(-1)) / np.sqrt(3.0)).min(0)

    def predict(self, points, labels, masks):
        h, w = self.image.shape[:2]
        p, m = len(points), len(self.tolerances)
        logits = np.empty((p, m, h, w), dtype=np.float32)
        ious = np.zeros((p, m), dtype=np.float32)
        for k in range(p):
            pos, neg = points[k][labels[k] == 1], points[k][labels[k] == 0]
            d = self._distance(self._colours(pos))
            if len(neg):
                dn = self._distance(self._colours(neg))
                d = d + np.maximum(d - dn, 0.0)
            if masks is not None and (masks[k] > 0).any():
                rows, cols = np.nonzero(masks[k] > 0)
                r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
                mr, mc = int(self.window * (r1 - r0)) + 2, int(self.window * (c1 - c0)) + 2
                inside = np.zeros((h, w), dtype=bool)
                inside[max(0, r0 - mr):r1 + mr, max(0, c0 - mc):c1 + mc] = True
                d = np.where(inside, d, 10.0)
            prc = np.clip(np.round(pos[:, ::-1]).astype(np.int64), 0, [h - 1, w - 1])
            nrc = np.clip(np.round(neg[:, ::-1]).astype(np.int64), 0, [h - 1, w - 1]) if len(neg) else None
            for j, t in enumerate(self.tolerances):
                comp, _ = ndimage.label(d < t)
                ids = np.unique(comp[prc[:, 0], prc[:, 1]])
                ids = ids[ids > 0]
                region = np.isin(comp, ids)
                lg = self.sharpness * (t - d)
                logits[k, j] = np.where(region, lg, -np.abs(lg) - 2.0)
                pos_in = region[prc[:, 0], prc[:, 1]].mean()
                neg_out = 1.0 - region[nrc[:, 0], nrc[:, 1]].mean() if nrc is not None else 1.0
                ious[k, j] = pos_in * neg_out
        return logits, ious


def build_mask_predictor(cfg, device: str | torch.device = "cpu") -> MaskPredictor:
    """The mask predictor named by `pseudo_labels.mask_predictor`."""
    if cfg.mask_predictor == "color":
        return ColorRegionPredictor()
    return SamMaskPredictor(build_sam(cfg.sam_weights, cfg.sam_arch), device)


# ---------------------------------------------------------------------------- SAM-PLG


def stability_score(logits: np.ndarray, offset: float = 1.0, threshold: float = 0.0) -> np.ndarray:
    """(..., H, W) logits -> (...) IoU of {logits > threshold + offset} and {logits > threshold - offset}."""
    hi = (logits > threshold + offset).sum((-1, -2))
    lo = (logits > threshold - offset).sum((-1, -2))
    return np.where(lo > 0, hi / np.maximum(lo, 1), 0.0)


def farthest_points(pts: np.ndarray, k: int) -> np.ndarray:
    """Up to k of pts (M, 2) spread out: start nearest the centroid, then farthest-point sampling."""
    if len(pts) <= k:
        return pts
    chosen = [int(np.argmin(((pts - pts.mean(0)) ** 2).sum(1)))]
    dist = ((pts - pts[chosen[0]]) ** 2).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((pts - pts[nxt]) ** 2).sum(1))
    return pts[chosen]


@dataclass
class Prompt:
    cls: int
    positive: np.ndarray  # (K, 2) x, y
    negative: np.ndarray  # (M, 2) x, y
    region: np.ndarray  # (H, W) bool: the dilated cluster (the mask prompt)
    size: int  # labelled pixels of the cluster


def make_prompts(sparse: np.ndarray, cfg) -> list[Prompt]:
    """One prompt per cluster of same-class projected pixels (the largest `max_prompts`)."""
    prompts = []
    labelled = sparse != IGNORE
    other_rc = np.argwhere(labelled)
    structure = np.ones((3, 3), dtype=bool)
    for c in np.unique(sparse[labelled]):
        mask_c = sparse == c
        grown = ndimage.binary_dilation(mask_c, structure, iterations=cfg.prompt_dilation) if cfg.prompt_dilation else mask_c
        comp, n = ndimage.label(grown, structure)
        for k, sl in enumerate(ndimage.find_objects(comp), start=1):
            region = np.zeros_like(mask_c)
            region[sl] = comp[sl] == k
            rc = np.argwhere(mask_c & region)
            if len(rc) < cfg.min_points:
                continue
            pos = farthest_points(rc[:, ::-1].astype(np.float64), cfg.points_per_prompt)
            neg = np.zeros((0, 2))
            if cfg.negative_points:
                r0, r1, c0, c1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
                mr, mc = (r1 - r0) // 2 + 2, (c1 - c0) // 2 + 2
                near = other_rc[(other_rc[:, 0] >= r0 - mr) & (other_rc[:, 0] < r1 + mr)
                                & (other_rc[:, 1] >= c0 - mc) & (other_rc[:, 1] < c1 + mc)]
                near = near[sparse[near[:, 0], near[:, 1]] != c]
                if len(near):
                    neg = farthest_points(near[:, ::-1].astype(np.float64), cfg.negative_points)
            prompts.append(Prompt(int(c), pos, neg, region, len(rc)))
    prompts.sort(key=lambda q: -q.size)
    return prompts[:cfg.max_prompts]


class SAMPLG:
    """Sparse projected labels + image -> dense pseudo-label image (see the module docstring)."""

    MASK_LOGIT = 8.0  # magnitude of the mask-prompt logits inside / outside the dilated cluster

    def __init__(self, predictor: MaskPredictor, cfg, chunk: int = 8):
        self.predictor = predictor
        self.cfg = cfg
        self.chunk = chunk

    def __call__(self, image: np.ndarray, sparse: np.ndarray) -> tuple[np.ndarray, dict]:
        cfg = self.cfg
        h, w = sparse.shape
        prompts = make_prompts(sparse, cfg)
        best = np.zeros((h, w), dtype=np.float32)
        label = np.full((h, w), IGNORE, dtype=np.int64)
        accepted = 0
        if prompts:
            self.predictor.set_image(image)
        k = cfg.points_per_prompt + cfg.negative_points
        for s in range(0, len(prompts), self.chunk):
            group = prompts[s:s + self.chunk]
            pts = np.zeros((len(group), k, 2), dtype=np.float32)
            lab = np.full((len(group), k), -10, dtype=np.int64)
            for j, q in enumerate(group):
                n_pos, n_neg = len(q.positive), len(q.negative)
                pts[j, :n_pos], lab[j, :n_pos] = q.positive, 1
                pts[j, n_pos:n_pos + n_neg], lab[j, n_pos:n_pos + n_neg] = q.negative, 0
            masks = None
            if cfg.mask_prompt:
                masks = np.stack([np.where(q.region, self.MASK_LOGIT, -self.MASK_LOGIT) for q in group]).astype(np.float32)
            logits, ious = self.predictor.predict(pts, lab, masks)
            stab = stability_score(logits, cfg.stability_offset)
            for j, q in enumerate(group):
                choice, choice_score = None, 0.0
                for m in range(logits.shape[1]):
                    if ious[j, m] < cfg.pred_iou_thresh or stab[j, m] < cfg.stability_thresh:
                        continue
                    inside = logits[j, m] > 0
                    seen = sparse[inside]
                    seen = seen[seen != IGNORE]
                    if len(seen) == 0 or (seen == q.cls).mean() < cfg.min_purity:
                        continue
                    score = float(ious[j, m] * stab[j, m])
                    if score > choice_score:
                        choice, choice_score = inside, score
                if choice is not None:
                    accepted += 1
                    win = choice & (choice_score > best)
                    best[win] = choice_score
                    label[win] = q.cls
        covered = int((label != IGNORE).sum())
        if cfg.fill == "densify":
            fill = densify(sparse, cfg.densify_radius)
            label = np.where(label == IGNORE, fill, label)
        known = sparse != IGNORE
        label[known] = sparse[known]
        return label, {"prompts": len(prompts), "accepted": accepted, "mask_pixels": covered}
