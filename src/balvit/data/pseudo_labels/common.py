"""What every camera pseudo-labeller shares: labelled LiDAR points -> a z-buffered sparse label image,
densification, and label PNGs on disk.

Used by MultiViT's box-prompt labeller (boxes.py; Ando et al., CVPR 2023) and ELiTe's SAM-PLG
(samplg.py; Zhang et al., ICME 2024). Label images hold train ids 0..C-1; 255 (IGNORE) = no label;
MultiViT also uses C for background (no LiDAR evidence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import DataError
from ..camera import pixel_index
from ..labels import IGNORE

# ---------------------------------------------------------------------------- projection


def camera_depth(xyz: np.ndarray, T_cam_lidar: np.ndarray) -> np.ndarray:
    """(N, 3) lidar points -> (N,) depth along the camera's optical axis."""
    T = np.asarray(T_cam_lidar, dtype=np.float64)
    return xyz[:, :3].astype(np.float64) @ T[2, :3] + T[2, 3]


def project_labels(shape: tuple[int, int], uv: np.ndarray, valid: np.ndarray, labels: np.ndarray,
                   depth: np.ndarray | None = None, return_depth: bool = False):
    """z-buffer of the projected points: (H, W) int64 label image where each pixel hit by visible
    points takes the label of the nearest one (a nearest point labelled 255 occupies its pixel and
    leaves 255); 255 where no point projects. `depth` (N,) orders the points of a pixel (None: the
    last point wins ties in input order). With `return_depth` also the (H, W) float64 depth of the
    winning point (inf where empty)."""
    h, w = shape
    label_img = np.full(h * w, IGNORE, dtype=np.int64)
    depth_img = np.full(h * w, np.inf, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if valid.any():
        px = pixel_index(np.asarray(uv)[valid])
        flat = px[:, 1] * w + px[:, 0]
        d = np.zeros(len(flat)) if depth is None else np.asarray(depth, dtype=np.float64)[valid]
        lab = np.asarray(labels)[valid]
        order = np.lexsort((d, flat))  # by pixel, nearest first
        flat, d, lab = flat[order], d[order], lab[order]
        first = np.ones(len(flat), dtype=bool)
        first[1:] = flat[1:] != flat[:-1]
        label_img[flat[first]] = lab[first]
        depth_img[flat[first]] = d[first]
    if return_depth:
        return label_img.reshape(h, w), depth_img.reshape(h, w)
    return label_img.reshape(h, w)


def densify(sparse: np.ndarray, radius: int, depth: np.ndarray | None = None, background: int = IGNORE,
            occlusion_ratio: float = 0.0) -> np.ndarray:
    """Sparse label image -> dense (H, W): every pixel within `radius` pixels of a source pixel takes
    the nearest source's label, `background` beyond.

    Sources: the labelled pixels (sparse != 255), or with `depth` (the z-buffer of
    `project_labels`) every occupied pixel, unlabelled ones included (they spread 255). With
    `occlusion_ratio` > 0 and `depth`, a source farther than occlusion_ratio x the nearest source
    within the window is dropped first (background seen between the points of a nearer surface)."""
    from scipy import ndimage

    source = sparse != IGNORE if depth is None else np.isfinite(depth)
    out = np.full(sparse.shape, background, dtype=np.int64)
    if not source.any():
        return out
    if depth is not None and occlusion_ratio > 0 and radius > 0:
        local_min = ndimage.minimum_filter(np.where(source, depth, np.inf), size=2 * radius + 1, mode="nearest")
        source &= depth <= occlusion_ratio * local_min
    dist, (ri, ci) = ndimage.distance_transform_edt(~source, return_indices=True)
    near = dist <= radius
    out[near] = sparse[ri[near], ci[near]]
    return out


# ---------------------------------------------------------------------------- label PNGs


def read_label_png(path: str | Path, missing: str = "") -> np.ndarray:
    """(H, W) int64 label image of an 8-bit grey PNG; a missing file is a DataError (+ `missing`)."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pseudo-label image missing{' (' + missing + ')' if missing else ''}")
    try:
        with Image.open(path) as im:
            return np.asarray(im).astype(np.int64)
    except OSError as err:
        raise DataError(f"{path}: cannot read pseudo-label image ({err}); delete or rewrite it") from None


def write_label_png(path: str | Path, label: np.ndarray) -> None:
    """(H, W) labels (0..255) -> 8-bit grey PNG, written atomically."""
    from PIL import Image

    from ...io import save_image

    save_image(Path(path), Image.fromarray(np.ascontiguousarray(label.astype(np.uint8))))  # 2D uint8: mode L
