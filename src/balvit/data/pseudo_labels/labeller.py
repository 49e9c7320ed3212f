"""The one camera pseudo-labeller of the toolkit: config section `pseudo_labels`, methods, cache.

Every task that learns from camera images (MultiViT's camera branch, Ando et al. CVPR 2023 and the
MultiViT study; ELiTe's teacher, Zhang et al. ICME 2024) asks `PseudoLabels` for the label image of
one camera view of a frame, computed from the frame's labelled LiDAR points (un-augmented, in the
reader's frame):

  - projection: each labelled point marks its pixel (z-buffer: the nearest point wins);
  - densify: + every pixel within `densify_radius` of a source pixel takes the nearest source's
    label, pixels farther away get the task's `background` (MultiViT's camera head has a background
    class C; the ELiTe teacher has none: 255). With `occlusion_ratio` > 0 the densification is
    depth-aware: every occupied pixel is a source (unlabelled points spread "no label") and a source
    farther than occlusion_ratio x the nearest source around it is dropped first (background seen
    between the points of a nearer surface);
  - boxes (MultiViT): densify, then the masks of thing instances prompted by their projected 3D
    boxes (`box_predictor`: SAM, or the convex-hull stand-in) painted over it (boxes.py);
  - box_masks (the MultiViT thesis' camera labels): only those instance masks, every other pixel
    background;
  - samplg (ELiTe's SAM-PLG): point + mask prompts from the projected labels, SAM masks accepted by
    predicted IoU / stability / purity, the rest densified (samplg.py);
  - files: label images written beforehand (`balvit pseudolabels --out DIR`, or another tool) at
    `<directory>/<frame>/<camera>.png`.

With `cache_dir`, computed images are stored once and reused: `<cache_dir>/<method>-<key>/<frame>/
<camera>.png`, `key` a hash of every setting that changes the result. Label images hold train ids,
C = background where the task has one, 255 = no label. `write_pseudolabels` is `balvit pseudolabels`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from ...errors import ConfigError, DataError
from ...io import ensure_writable, write_json
from ...metrics import camera_pixel_scores, pixel_confusion
from ..camera import load_image, load_mask, project_points
from ..dataset import build_reader
from ..labels import IGNORE
from .common import camera_depth, densify, project_labels, read_label_png, write_label_png


@dataclass
class PseudoLabelConfig:
    """Config section `pseudo_labels`: camera label images from labelled LiDAR points (see the module docstring)."""

    method: Literal["projection", "densify", "boxes", "box_masks", "samplg", "files"] = "densify"
    densify_radius: int = 4  # pixels
    occlusion_ratio: float = 0.0  # > 0: depth-aware densification (MultiViT: 1.3)
    directory: str = ""  # method files: <directory>/<frame>/<camera>.png
    cache_dir: str = ""  # store / reuse computed label images here ("" : compute every time)
    # -- boxes (MultiViT): instance masks from projected 3D boxes
    # standin (convex hull of the instance's projected points) | sam:<local dir, hf:<id> in the local
    # cache, or random (untrained tiny SAM, smoke runs)>
    box_predictor: str = "standin"
    thing_classes: list[str] = field(default_factory=list)  # empty: the dataset's thing classes
    cluster_radius: float = 0.5  # metres: thing points closer than this join one instance cluster
    min_cluster_points: int = 10
    max_occlusion: float = 0.6  # a box more than this fraction covered by nearer boxes is dropped
    min_inside: float = 0.5  # a box with less than this fraction inside the image becomes ignore
    # -- samplg (ELiTe): SAM-PLG
    mask_predictor: Literal["sam", "color"] = "sam"  # color: a stand-in without weights (tests)
    sam_weights: str = "hf:facebook/sam-vit-base"  # hf:<id> | a directory | random
    sam_arch: Literal["vit_b", "tiny"] = "vit_b"  # architecture built for sam_weights=random
    points_per_prompt: int = 4  # positive point prompts (labelled pixels of the class) per mask
    negative_points: int = 2  # negative points (labelled pixels of other classes) per mask
    mask_prompt: bool = True  # also prompt with the (dilated) sparse mask of the class
    prompt_dilation: int = 3  # pixels: sparse labels of one class closer than this form one prompt
    min_points: int = 3  # labelled pixels a prompt needs
    max_prompts: int = 96  # per image (the largest clusters first)
    pred_iou_thresh: float = 0.88  # SAM automatic mask generator defaults (Kirillov et al. 2023)
    stability_thresh: float = 0.92
    stability_offset: float = 1.0
    min_purity: float = 0.8  # share of the labelled pixels inside a mask that must carry its class
    fill: Literal["densify", "none"] = "densify"  # pixels no accepted mask covers

    def check(self) -> None:
        if self.method == "files" and not self.directory:
            raise ConfigError("pseudo_labels.method=files needs pseudo_labels.directory")
        if self.densify_radius < 0 or self.prompt_dilation < 0 or self.occlusion_ratio < 0:
            raise ConfigError("pseudo_labels: densify_radius, prompt_dilation and occlusion_ratio must be >= 0")
        if self.points_per_prompt <= 0:
            raise ConfigError("pseudo_labels.points_per_prompt must be positive")
        if self.box_predictor != "standin" and not self.box_predictor.startswith("sam:"):
            raise ConfigError("pseudo_labels.box_predictor must be standin or sam:<local dir, hf:id or random>, "
                              f"got {self.box_predictor!r}")


def files_path(directory: str | Path, frame: str, camera: str) -> Path:
    """Where `balvit pseudolabels` writes (and method=files reads) one camera's label image of a frame."""
    return Path(directory) / frame / f"{camera}.png"


_SETTINGS = {  # the fields that change the images of each method (the cache key)
    "projection": (),
    "densify": ("densify_radius", "occlusion_ratio"),
    "boxes": ("densify_radius", "occlusion_ratio", "box_predictor", "thing_classes", "cluster_radius",
              "min_cluster_points", "max_occlusion", "min_inside"),
    "box_masks": ("box_predictor", "thing_classes", "cluster_radius", "min_cluster_points", "max_occlusion",
                  "min_inside"),
    "samplg": ("densify_radius", "mask_predictor", "sam_weights", "sam_arch", "points_per_prompt", "negative_points",
               "mask_prompt", "prompt_dilation", "min_points", "max_prompts", "pred_iou_thresh", "stability_thresh",
               "stability_offset", "min_purity", "fill"),
    "files": (),
}


class PseudoLabels:
    """Label image (H, W) int64 of one camera view from the labelled points of its frame.

    labels: the dataset's LabelSpec; background: the label of pixels without LiDAR evidence (C for a
    camera head with a background class, 255 otherwise)."""

    def __init__(self, cfg: PseudoLabelConfig, labels, background: int = IGNORE, box_predictor=None):
        """box_predictor: a predictor object for method boxes instead of the one `cfg.box_predictor` names."""
        cfg.check()
        self.cfg = cfg
        self.labels = labels
        self.background = int(background)
        self.method = cfg.method
        settings = {k: asdict(cfg)[k] for k in _SETTINGS[cfg.method]}
        settings["background"] = self.background
        self.key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        self._box_predictor = box_predictor
        self._painter = None
        self._plg = None

    # lazily built (in each loader worker): predictors may hold a SAM model
    def painter(self):
        if self._painter is None:
            from .boxes import InstancePainter, build_box_predictor

            predictor = self._box_predictor or build_box_predictor(self.cfg.box_predictor)
            self._painter = InstancePainter(self.labels, self.cfg, predictor)
        return self._painter

    def plg(self):
        if self._plg is None:
            from .samplg import SAMPLG, build_mask_predictor

            self._plg = SAMPLG(build_mask_predictor(self.cfg), self.cfg)
        return self._plg

    def cache_path(self, frame: str, camera: str) -> Path | None:
        if not self.cfg.cache_dir or self.method == "files":
            return None
        return files_path(Path(self.cfg.cache_dir) / f"{self.method}-{self.key}", frame, camera)

    def __call__(self, frame: str, cam, image: np.ndarray, xyz: np.ndarray, point_labels: np.ndarray,
                 instances: np.ndarray | None = None) -> np.ndarray:
        """frame id, camera (CameraFrame), its image (H, W, 3) uint8, the frame's points (N, >=3) in the
        reader's frame and their train-id labels (N,) (255: unlabelled), optionally instance ids (N,)."""
        h, w = image.shape[:2]
        if self.method == "files":
            path = files_path(self.cfg.directory, frame, cam.name)
            label = read_label_png(path, "write them with `balvit pseudolabels`, or choose another "
                                         "pseudo_labels.method")
            if label.shape != (h, w):
                raise DataError(f"{path}: label image is {label.shape[1]}x{label.shape[0]}, the camera image {w}x{h}")
            label[(label >= self.labels.num_classes) & (label != self.background)] = IGNORE
            return label
        path = self.cache_path(frame, cam.name)
        if path is not None and path.is_file():
            return read_label_png(path)
        out = self.compute(cam, image, xyz, point_labels, instances)
        if path is not None:
            write_label_png(path, out)
        return out

    def compute(self, cam, image: np.ndarray, xyz: np.ndarray, point_labels: np.ndarray,
                instances: np.ndarray | None = None) -> np.ndarray:
        cfg = self.cfg
        h, w = image.shape[:2]
        uv, valid = project_points(xyz[:, :3], cam)
        depth = camera_depth(xyz, cam.T_cam_lidar)
        sparse, zbuf = project_labels((h, w), uv, valid, point_labels, depth, return_depth=True)
        if self.method == "projection":
            return sparse
        if self.method == "samplg":
            return self.plg()(image, sparse)[0]
        if self.method == "box_masks":
            out = np.full((h, w), self.background, dtype=np.int64)
            self.painter().paint(out, xyz, point_labels, uv, valid, depth, cam, image, instances)
            return out
        aware = cfg.occlusion_ratio > 0
        out = densify(sparse, cfg.densify_radius, zbuf if aware else None, self.background, cfg.occlusion_ratio)
        if self.method == "boxes":
            self.painter().paint(out, xyz, point_labels, uv, valid, depth, cam, image, instances)
        return out


# ---------------------------------------------------------------------------- command


def write_pseudolabels(cfg, split: str, out: str | Path, max_frames: int = 0, progress: bool = True) -> dict:
    """`balvit pseudolabels`: the label images of `pseudo_labels` (its method) for every camera of a
    split under `out` (`<out>/<frame>/<camera>.png`, uint8 train ids, 255 = none; what
    pseudo_labels.method=files reads), plus `scores.json` comparing projection, projection +
    densification and the method against the renderer's per-pixel classes where they exist
    (camera-pixel scores, balvit/metrics.py)."""
    out = Path(out)
    pl = cfg.pseudo_labels
    if pl.method == "files":
        raise DataError("pseudo_labels.method=files reads label images; choose the method that writes them "
                        "(projection, densify, boxes or samplg)")
    ensure_writable(out, "--out")  # before the first frame is labelled
    reader = build_reader(cfg.data, split)
    reader.require_labels(f"balvit pseudolabels (split {split!r})")
    if hasattr(reader, "prepare_cameras"):
        reader.prepare_cameras()
    c = reader.labels.num_classes
    labeller = PseudoLabels(replace(pl, cache_dir=""), reader.labels)
    n = len(reader) if not max_frames else min(max_frames, len(reader))
    confs = {k: np.zeros((c + 1, c + 1), dtype=np.int64) for k in ("projection", "densify", pl.method)}
    images = 0
    scored = False
    for i in tqdm(range(n), desc="pseudo-labels", disable=not progress):
        xyz, labels = reader.load_points(i)[:, :3], reader.load_labels(i)
        instances = reader.load_instances(i) if hasattr(reader, "load_instances") else None
        for cam in reader.load_cameras(i):
            image = load_image(cam)
            label = labeller.compute(cam, image, xyz, labels, instances)
            write_label_png(files_path(out, reader.frames[i], cam.name), label)
            images += 1
            mask = load_mask(cam)
            if mask is not None:
                scored = True
                truth = reader.labels.to_train(mask, cam.mask_path)
                uv, valid = project_points(xyz, cam)
                sparse = project_labels(image.shape[:2], uv, valid, labels, camera_depth(xyz, cam.T_cam_lidar))
                confs["projection"] += pixel_confusion(sparse, truth, c)
                confs["densify"] += pixel_confusion(densify(sparse, pl.densify_radius), truth, c)
                confs[pl.method] += pixel_confusion(label, truth, c)
    result = {"split": split, "frames": n, "method": pl.method, "images": images}
    if scored:
        result["scores"] = {k: camera_pixel_scores(v, reader.labels.class_names) for k, v in confs.items()}
    write_json(out / "scores.json", result)
    return result
