"""Dense camera pseudo-labels from sparse projected LiDAR labels, and SAM-PLG.

Implements the Segment-Anything-based pseudo-label generation (SAM-PLG) of "ELiTe: Efficient
Image-to-LiDAR Knowledge Transfer for Semantic Segmentation" (Zhang et al., ICME 2024) on top of
Segment Anything (Kirillov et al., ICCV 2023) through `transformers`' SamModel:

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
weights run the whole pipeline. `pixel_confusion` / `pixel_scores` score any label image against the
synthetic renderer's per-pixel classes; `write_pseudolabels` is the `balvit pseudolabels` command.

Label images hold train ids (uint8 PNG on disk), 255 = no label.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from ..errors import DataError
from .camera import load_mask, pixel_index
from .labels import IGNORE

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- projection


def project_labels(shape: tuple[int, int], uv: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                   depth: np.ndarray | None = None) -> np.ndarray:
    """(H, W) int64 label image: each pixel hit by visible points takes the label of the nearest one
    (unlabelled points occlude too and leave 255); 255 where no point projects."""
    h, w = shape
    out = np.full(h * w, IGNORE, dtype=np.int64)
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        return out.reshape(h, w)
    px = pixel_index(np.asarray(uv)[valid])
    flat = px[:, 1] * w + px[:, 0]
    lab = np.asarray(labels)[valid]
    d = np.zeros(len(flat)) if depth is None else np.asarray(depth)[valid]
    order = np.lexsort((d, flat))  # by pixel, nearest first
    flat_s = flat[order]
    first = np.ones(len(flat_s), dtype=bool)
    first[1:] = flat_s[1:] != flat_s[:-1]
    out[flat_s[first]] = lab[order][first]
    return out.reshape(h, w)


def densify(sparse: np.ndarray, radius: int) -> np.ndarray:
    """Unlabelled pixels within `radius` pixels of a labelled one take the nearest one's label."""
    known = sparse != IGNORE
    if radius <= 0 or not known.any():
        return sparse.copy()
    dist, (ri, ci) = ndimage.distance_transform_edt(~known, return_indices=True)
    out = sparse[ri, ci]
    out[dist > radius] = IGNORE
    return out


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


class SamMaskPredictor:
    """A transformers SamModel behind the MaskPredictor interface: the image is resized so that its
    longer side is the model's input size, normalised and padded (bottom / right) as SAM expects;
    low-resolution mask logits are up-sampled, cropped to the image and resized back."""

    def __init__(self, model, device: str | torch.device = "cpu", chunk: int = 8):
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.size = int(model.config.vision_config.image_size)
        self.mask_in = 4 * int(model.config.prompt_encoder_config.image_embedding_size)
        self.chunk = chunk
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
        self.mean, self.std = mean.to(self.device), std.to(self.device)

    @torch.no_grad()
    def set_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        self.scale = self.size / max(h, w)
        self.shape = (h, w)
        self.resized = (max(1, int(h * self.scale + 0.5)), max(1, int(w * self.scale + 0.5)))
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=self.resized, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean) / self.std
        x = F.pad(x, (0, self.size - self.resized[1], 0, self.size - self.resized[0]))
        self.embedding = self.model.get_image_embeddings(x)  # (1, C, e, e)

    @torch.no_grad()
    def predict(self, points, labels, masks):
        logits, ious = [], []
        for s in range(0, len(points), self.chunk):
            lg, iou = self._predict(points[s:s + self.chunk], labels[s:s + self.chunk],
                                    None if masks is None else masks[s:s + self.chunk])
            logits.append(lg)
            ious.append(iou)
        return np.concatenate(logits), np.concatenate(ious)

    def _predict(self, points, labels, masks):
        p = len(points)
        pts = torch.as_tensor(points, dtype=torch.float32, device=self.device)[:, None] * self.scale  # (P, 1, K, 2)
        lab = torch.as_tensor(labels, dtype=torch.long, device=self.device)[:, None]  # (P, 1, K)
        mask_in = None
        if masks is not None:
            m = torch.as_tensor(masks, dtype=torch.float32, device=self.device)[:, None]
            m = F.interpolate(m, size=self.resized, mode="bilinear", align_corners=False)
            m = F.pad(m, (0, self.size - self.resized[1], 0, self.size - self.resized[0]), value=float(m.min()))
            mask_in = F.interpolate(m, size=(self.mask_in, self.mask_in), mode="bilinear", align_corners=False)
        emb = self.embedding.expand(p, -1, -1, -1)
        out = self.model(image_embeddings=emb, input_points=pts, input_labels=lab, input_masks=mask_in,
                         multimask_output=True)
        low = out.pred_masks[:, 0].float()  # (P, M, l, l)
        up = F.interpolate(low, size=(self.size, self.size), mode="bilinear", align_corners=False)
        up = up[..., :self.resized[0], :self.resized[1]]
        up = F.interpolate(up, size=self.shape, mode="bilinear", align_corners=False)
        return up.cpu().numpy(), out.iou_scores[:, 0].float().cpu().numpy()


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


def build_predictor(cfg, device: str | torch.device = "cpu") -> MaskPredictor:
    """The mask predictor named by `elite.pseudo_labels.predictor`."""
    if cfg.predictor == "color":
        return ColorRegionPredictor()
    from ..models.elite import build_sam

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


# ---------------------------------------------------------------------------- scoring


def pixel_confusion(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C + 1) int64: rows = true class, columns = predicted class, last column = no label.
    Pixels whose truth is 255 (sky, unlabelled) are left out."""
    keep = truth != IGNORE
    t = truth[keep].astype(np.int64)
    p = pred[keep].astype(np.int64)
    p = np.where(p == IGNORE, num_classes, p)
    return np.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1)


def pixel_scores(conf: np.ndarray, class_names=None) -> dict:
    """mIoU (percent) over the classes present in the truth, with unlabelled pixels counted as
    misses (false negatives); coverage = labelled share of the true pixels; precision = accuracy of
    the labelled pixels."""
    conf = np.asarray(conf, dtype=np.int64)
    c = conf.shape[0]
    tp = np.diag(conf[:, :c]).astype(np.float64)
    gt = conf.sum(1).astype(np.float64)
    pred = conf[:, :c].sum(0).astype(np.float64)
    present = gt > 0
    iou = np.where(present, tp / np.maximum(gt + pred - tp, 1), np.nan)
    labelled = conf[:, :c].sum()
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    return {
        "miou": float(np.nanmean(iou) * 100) if present.any() else float("nan"),
        "coverage": float(labelled / max(conf.sum(), 1) * 100),
        "precision": float(tp.sum() / max(labelled, 1) * 100),
        "pixels": int(conf.sum()),
        "iou": {n: (None if np.isnan(v) else float(v * 100)) for n, v in zip(names, iou)},
    }


# ---------------------------------------------------------------------------- datasets


def pseudo_label_path(directory: str | Path, frame: str, camera: str) -> Path:
    """Where `balvit pseudolabels` writes the label image of one camera of one frame."""
    return Path(directory) / frame / f"{camera}.png"


def read_label_png(path: Path) -> np.ndarray:
    from PIL import Image

    if not path.is_file():
        raise DataError(f"{path}: pseudo-label image missing (write them with `balvit pseudolabels`, or set "
                        "elite.pseudo_labels.mode to projection / densify / sam)")
    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.int64)
    except OSError as err:
        raise DataError(f"{path}: cannot read pseudo-label image ({err})") from None


def write_label_png(path: Path, label: np.ndarray) -> None:
    from PIL import Image

    from ..io import save_image

    save_image(path, Image.fromarray(np.ascontiguousarray(label.astype(np.uint8))))  # 8-bit grey PNG


class CameraLabels:
    """Label images of one camera view by `elite.pseudo_labels.mode` (projection / densify / sam / files)."""

    def __init__(self, cfg, num_classes: int):
        self.cfg = cfg
        self.num_classes = num_classes
        self._plg: SAMPLG | None = None

    def plg(self) -> SAMPLG:
        if self._plg is None:  # built lazily (in each loader worker)
            self._plg = SAMPLG(build_predictor(self.cfg), self.cfg)
        return self._plg

    def __call__(self, frame: str, view: dict, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        mode = self.cfg.mode
        image = view["image"]
        h, w = image.shape[-2:]
        if mode == "files":
            label = read_label_png(pseudo_label_path(self.cfg.directory, frame, view["name"]))
            if label.shape != (h, w):
                raise DataError(f"{pseudo_label_path(self.cfg.directory, frame, view['name'])}: label image is "
                                f"{label.shape[1]}x{label.shape[0]}, the camera image {w}x{h}")
            label[(label >= self.num_classes) & (label != IGNORE)] = IGNORE
            return label
        sparse = project_labels((h, w), view["uv"].numpy(), view["valid"].numpy(), labels,
                                np.linalg.norm(points[:, :3], axis=1))
        if mode == "projection":
            return sparse
        if mode == "densify":
            return densify(sparse, self.cfg.densify_radius)
        rgb = image.numpy().transpose(1, 2, 0)
        return self.plg()(rgb, sparse)[0]


class CameraLabelDataset(Dataset):
    """Samples of a `SegmentationDataset` (cameras on) whose camera views also hold
    `pseudo` (H, W) int64 label images (train ids, 255 none) and, with `truth`, the renderer's
    per-pixel classes `truth` (H, W) int64 where the dataset has them (synthetic data).
    With `flip`, images (and labels, pixel coordinates) are mirrored left-right at random (seeded by
    frame and epoch)."""

    def __init__(self, base, pseudo_cfg, num_classes: int, pseudo: bool = True, truth: bool = False,
                 flip: bool = False, seed: int = 0):
        if not base.cfg.cameras:
            base.cfg = replace(base.cfg, cameras=True)
        self.base = base
        self.labeller = CameraLabels(pseudo_cfg, num_classes)
        self.pseudo, self.truth, self.flip, self.seed = pseudo, truth, flip, seed

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def __getitem__(self, key):
        sample = self.base[key]
        i, epoch = key if isinstance(key, tuple) else (key, self.base.epoch)
        reader = self.base.reader
        cams = reader.load_cameras(i)
        points, labels = sample["points"].numpy(), sample["labels"].numpy()
        rng = np.random.default_rng([self.seed, epoch, i, 77])
        for view, cam in zip(sample["cameras"], cams):
            if self.pseudo:
                view["pseudo"] = torch.from_numpy(self.labeller(sample["frame"], view, points, labels))
            if self.truth:
                mask = load_mask(cam)
                if mask is not None:
                    view["truth"] = torch.from_numpy(reader.labels.to_train(mask, cam.mask_path).astype(np.int64))
            if self.flip and rng.random() < 0.5:
                w = view["image"].shape[-1]
                view["image"] = view["image"].flip(-1)
                for k in ("pseudo", "truth"):
                    if k in view:
                        view[k] = view[k].flip(-1)
                uv = view["uv"].clone()
                uv[view["valid"], 0] = (w - 1) - uv[view["valid"], 0]
                view["uv"] = uv
        return sample


# ---------------------------------------------------------------------------- command


def write_pseudolabels(cfg, split: str, out: str | Path, max_frames: int = 0, progress: bool = True) -> dict:
    """`balvit pseudolabels`: SAM-PLG label images of every camera of a split under `out`
    (`<out>/<frame>/<camera>.png`, uint8 train ids, 255 = none), plus `scores.json` comparing
    projection, projection + densification and SAM-PLG against the renderer's masks when present."""
    from tqdm import tqdm

    from ..io import write_json
    from .dataset import SegmentationDataset, build_reader

    out = Path(out)
    reader = build_reader(cfg.data, split)
    if not reader.has_labels:
        raise DataError(f"split {split!r} has no LiDAR labels to build pseudo-labels from")
    data = replace(cfg.data, cameras=True)
    base = SegmentationDataset(reader, data, train=False)
    pl = cfg.elite.pseudo_labels
    c = reader.labels.num_classes
    plg = SAMPLG(build_predictor(pl), pl)
    n = len(reader) if not max_frames else min(max_frames, len(reader))
    confs = {k: np.zeros((c, c + 1), dtype=np.int64) for k in ("projection", "densify", "sam_plg")}
    stats = {"prompts": 0, "accepted": 0, "images": 0}
    scored = False
    for i in tqdm(range(n), desc="pseudo-labels", disable=not progress):
        sample = base[i]
        points, labels = sample["points"].numpy(), sample["labels"].numpy()
        for view, cam in zip(sample["cameras"], reader.load_cameras(i)):
            h, w = view["image"].shape[-2:]
            sparse = project_labels((h, w), view["uv"].numpy(), view["valid"].numpy(), labels,
                                    np.linalg.norm(points[:, :3], axis=1))
            label, st = plg(view["image"].numpy().transpose(1, 2, 0), sparse)
            write_label_png(pseudo_label_path(out, sample["frame"], view["name"]), label)
            stats["prompts"] += st["prompts"]
            stats["accepted"] += st["accepted"]
            stats["images"] += 1
            mask = load_mask(cam)
            if mask is not None:
                scored = True
                truth = reader.labels.to_train(mask, cam.mask_path)
                confs["projection"] += pixel_confusion(sparse, truth, c)
                confs["densify"] += pixel_confusion(densify(sparse, pl.densify_radius), truth, c)
                confs["sam_plg"] += pixel_confusion(label, truth, c)
    result = {"split": split, "frames": n, "predictor": pl.predictor, **stats}
    if scored:
        result["scores"] = {k: pixel_scores(v, reader.labels.class_names) for k, v in confs.items()}
    write_json(out / "scores.json", result)
    return result
