"""Camera views of a LiDAR frame, for every task that uses images: one record, one sampler.

A view is a dict in `sample["cameras"]` (a list per sample; the collated batch keeps a list per scan):

    name     str               the camera (image_2, CAM_FRONT, ...)
    key      str               which pixels these are (image path, crop, flip, size): a cache key
    image    (3, h, w) uint8   RGB, after the view's column crop, flip and resize (in that order)
    uv       (N, 2) float32    the pixel of every point of the sample in `image` (pixel centres at
                               integer coordinates, OpenCV / KITTI convention); -1 where not valid
    valid    (N,) bool         the point lies >= min_depth in front of the camera and inside `image`
    label    (h, w) int64      pseudo-labels (`labeller`: data/pseudo_labels), 255 = none
    truth    (h, w) int64      true per-pixel train ids where the dataset has them (synthetic data)

Points are projected from their un-augmented coordinates (augmentation moves points, never the
pixels they came from). `CameraViews` decides which cameras a sample shows:

  - which="one": one camera per (frame, epoch), drawn from a generator seeded by (seed, epoch, frame)
    in training and by (seed, 0, frame) in evaluation (ScaLR: one random camera per scan; MultiViT);
  - which="all": every camera of the frame (or the first `max_views`), in the reader's order.

With `flip`, a view is mirrored left-right with probability 1/2 (drawn from the same generator after
the camera); with `crop_to_points` (MultiViT joint training), the image is first cut to the columns of
the sample's visible points (the range-image crop), and `aim_crop` lets the dataset aim its training
crop at the drawn camera. Images are resized bilinearly (antialiased when shrinking, rounded back to
uint8), labels by nearest neighbour, pixel coordinates as u' = (u + 0.5) W' / W - 0.5.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import DataError
from .camera import load_image, load_mask, project_points


def view_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of frame `index`'s camera choice and flips at `epoch`."""
    return np.random.default_rng([seed & 0xFFFFFFFF, epoch, index, 0xCA3])


def resize_image(image: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, h, w) uint8 tensor (bilinear, antialiased when shrinking); size (h, w)."""
    x = torch.from_numpy(np.ascontiguousarray(image).transpose(2, 0, 1).copy())
    if size is None or tuple(size) == tuple(image.shape[:2]):
        return x
    shrink = size[0] < image.shape[0] or size[1] < image.shape[1]
    y = F.interpolate(x[None].float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return y[0].round().clamp(0, 255).to(torch.uint8)


def resize_label(label: np.ndarray, size: tuple[int, int] | None) -> torch.Tensor:
    """(H, W) label image -> (h, w) int64 tensor (nearest neighbour)."""
    y = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
    if size is None or tuple(size) == tuple(label.shape):
        return y
    return F.interpolate(y[None, None].float(), size=tuple(size), mode="nearest")[0, 0].long()


def resize_uv(uv: np.ndarray, valid: np.ndarray, size: tuple[int, int], new_size: tuple[int, int]) -> np.ndarray:
    """Continuous pixel coordinates (N, 2) in an image of size (w, h) -> the same pixels in the image
    resized to (W, H): u' = (u + 0.5) W / w - 0.5; -1 where not valid."""
    (w, h), (nw, nh) = size, new_size
    out = (uv.astype(np.float64) + 0.5) * np.array([nw / w, nh / h]) - 0.5
    out[~valid] = -1.0
    return out.astype(np.float32)


class CameraViews:
    """Which camera views a sample of frame i carries, and how they are prepared (module docstring).

    reader: the frames' reader; labeller: a callable (frame, cam, image, xyz, labels, instances) ->
    (H, W) label image (data/pseudo_labels/labeller.PseudoLabels) or None; truth: attach the
    dataset's per-pixel classes where present; train: draw the camera / flips per epoch."""

    def __init__(self, reader, *, which: str = "all", max_views: int = 0, image_size: tuple[int, int] | None = None,
                 flip: bool = False, crop_to_points: bool = False, aim_crop: bool = False, min_depth: float = 1.0,
                 labeller=None, truth: bool = False, train: bool = True, seed: int = 0):
        if which not in ("one", "all"):
            raise ValueError(f"which must be 'one' or 'all', got {which!r}")
        self.reader = reader
        self.which, self.max_views = which, int(max_views)
        self.image_size = tuple(int(v) for v in image_size) if image_size else None
        self.flip, self.crop_to_points, self.aim_crop = flip, crop_to_points, aim_crop
        self.min_depth = min_depth
        self.labeller, self.truth = labeller, truth
        self.train, self.seed = train, seed
        if hasattr(reader, "prepare_cameras"):  # nuScenes: read calibrations before loader workers fork
            reader.prepare_cameras()

    def pick(self, i: int, epoch: int) -> list[tuple[object, bool]]:
        """(camera, flipped) of every view of frame i at `epoch`: a pure function of them."""
        cams = self.reader.load_cameras(i)
        if not cams:
            raise DataError(f"{self.reader.scan_path(i)}: frame {self.reader.frames[i]} has no camera image")
        rng = view_rng(self.seed, epoch if self.train else 0, i)
        if self.which == "one":
            chosen = [cams[int(rng.integers(len(cams)))]]
        else:
            chosen = cams[:self.max_views] if self.max_views else cams
        return [(cam, bool(rng.integers(2)) and self.flip) for cam in chosen]

    def crop_start(self, i: int, epoch: int, points: np.ndarray, width: int, crop_width: int,
                   rng: np.random.Generator) -> int | None:
        """First column of a range-image training crop aimed (with jitter) at a random point the drawn
        camera sees; None when it sees none. `points`: the augmented scan (N, >=3)."""
        cam, _ = self.pick(i, epoch)[0]
        _, valid = project_points(self.reader.load_points(i)[:, :3], cam, self.min_depth)
        if not valid.any():
            return None
        j = int(rng.choice(np.flatnonzero(valid)))
        yaw = np.arctan2(points[j, 1], points[j, 0])
        col = int((0.5 - yaw / (2 * np.pi)) * width)
        jitter = int(rng.integers(-(crop_width // 4), crop_width // 4 + 1))
        return int(np.clip(col - crop_width // 2 + jitter, 0, width - crop_width))

    def views(self, i: int, epoch: int, point_index: np.ndarray) -> list[dict]:
        """The views of frame i for a sample holding the points `point_index` of the scan."""
        reader = self.reader
        scan = reader.load_points(i)
        original = scan[point_index, :3]
        labels = instances = None
        if self.labeller is not None:
            labels = reader.load_labels(i)
            instances = reader.load_instances(i) if hasattr(reader, "load_instances") else None
        out = []
        for cam, flipped in self.pick(i, epoch):
            image = load_image(cam)
            uv, valid = project_points(original, cam, self.min_depth)
            label = truth = None
            if self.labeller is not None:
                label = self.labeller(reader.frames[i], cam, image, scan[:, :3], labels, instances)
            if self.truth:
                mask = load_mask(cam)
                truth = reader.labels.to_train(mask, cam.mask_path) if mask is not None else None
            key = str(cam.image_path)
            if self.crop_to_points and valid.any():
                u0 = int(np.clip(np.floor(uv[valid, 0].min()), 0, cam.width - 1))
                u1 = int(np.clip(np.ceil(uv[valid, 0].max()) + 1, u0 + 1, cam.width))
                image = image[:, u0:u1]
                label = label[:, u0:u1] if label is not None else None
                truth = truth[:, u0:u1] if truth is not None else None
                uv = uv - np.array([u0, 0], dtype=uv.dtype)
                key += f"[{u0}:{u1}]"
            h, w = image.shape[:2]
            if flipped:
                image = image[:, ::-1]
                label = label[:, ::-1] if label is not None else None
                truth = truth[:, ::-1] if truth is not None else None
                uv = uv.copy()
                uv[:, 0] = (w - 1) - uv[:, 0]
                key += "@flip"
            size = self.image_size or (h, w)
            view = {
                "name": cam.name,
                "key": f"{key}@{size[0]}x{size[1]}",
                "image": resize_image(image, size),
                "uv": torch.from_numpy(resize_uv(uv, valid, (w, h), (size[1], size[0]))),
                "valid": torch.from_numpy(valid),
            }
            if label is not None:
                view["label"] = resize_label(label, size)
            if truth is not None:
                view["truth"] = resize_label(truth, size)
            out.append(view)
        return out


def stack_views(batch: dict, key: str = "label") -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's camera views (all of the same size) -> images (V, 3, h, w) uint8 and `key` (V, h, w)."""
    views = [v for sample in batch["cameras"] for v in sample]
    return torch.stack([v["image"] for v in views]), torch.stack([v[key] for v in views])


__all__ = ["CameraViews", "view_rng", "resize_image", "resize_label", "resize_uv", "stack_views"]
