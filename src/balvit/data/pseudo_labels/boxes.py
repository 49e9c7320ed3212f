"""Camera pseudo-labels from labelled LiDAR points, optionally refined with SAM box prompts.

The camera supervision of MultiViT (camera branch on top of RangeViT, Ando et al. CVPR 2023), with
prompts for the Segment Anything Model (Kirillov et al., ICCV 2023) as in LiDAR-to-camera label
transfer work:

(a) projection + densification: every labelled point is projected into the image (camera.py); the
    closest point of a pixel wins (z-buffer); a point much farther than the nearest point around it
    (depth > occlusion_ratio x the window minimum) is treated as seen through a gap and dropped;
    every pixel then takes the label of the nearest remaining point within `densify_radius` pixels
    (Euclidean distance transform). Pixels farther from any point are background.
(b) box prompts: thing points are grouped into instances (the dataset's instance ids when the
    reader has them, else Euclidean clusters of `cluster_radius` metres); each instance's
    axis-aligned 3D box is projected into the image. A box whose area lies less than `min_inside`
    inside the image becomes *ignore* (its visible part is painted 255); a box more than
    `max_occlusion` covered by the boxes of nearer instances is dropped; every other box (clipped
    to the image) prompts a mask predictor and the mask is painted with the instance's class,
    far instances first so that near ones win.

`pseudo_labels.method` chooses what the image holds: "boxes" is (a) with (b) painted over it;
"box_masks" is (b) alone on a background image: only the masks of thing instances inside their
projected boxes carry a class, every other pixel is background (the camera labels of the MultiViT
thesis, with the 10 nuScenes thing classes; the thesis itself could not be obtained here, this
follows its description in the project's issue tracker). The thesis prompts SAM with the dataset's
annotated 3D boxes; the readers here have no box annotations, so the boxes are those of the
instances' labelled points (axis-aligned), as in (b).

Label image values: train ids 0..C-1, C = background (no LiDAR evidence, e.g. sky), 255 = ignore.

Predictors share one interface, `predict(image (H, W, 3) uint8, boxes (K, 4) xyxy pixels,
points: list of (P_k, 2) (u, v) arrays or None) -> masks (K, H, W) bool`:
  - `SamBoxPredictor`: a `transformers` SamModel (models/sam.py: local weights, or a small random
    one in tests);
  - `HullPredictor`: the stand-in used when no SAM weights exist: the convex hull of the
    instance's projected points inside its box (the whole box without points), limited to pixels
    whose colour matches the colour under one of the points.
"""

from __future__ import annotations

import logging

import numpy as np

from ...errors import ConfigError
from ...models.sam import SamPrompter, build_sam
from ..camera import pixel_index
from ..labels import IGNORE

log = logging.getLogger(__name__)

# thing classes (instances) of each dataset's panoptic benchmark
THING_CLASSES = {
    "semantickitti": ("car", "bicycle", "motorcycle", "truck", "other-vehicle", "person", "bicyclist", "motorcyclist"),
    "nuscenes": ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
                 "traffic_cone", "trailer", "truck"),
}


# -------------------------------------------------------------------------------- instances


def instance_clusters(xyz: np.ndarray, labels: np.ndarray, thing_ids: list[int], instances: np.ndarray | None,
                      radius: float, min_points: int) -> list[tuple[np.ndarray, int]]:
    """Thing instances: [(point indices, class id)], from instance ids when given (per class),
    otherwise from connected components of thing points closer than `radius` metres."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    out = []
    for cls in thing_ids:
        idx = np.flatnonzero(labels == cls)
        if len(idx) < min_points:
            continue
        if instances is not None:
            inst = instances[idx]
            for v in np.unique(inst):
                members = idx[inst == v]
                if v != 0 and len(members) >= min_points:
                    out.append((members, int(cls)))
            continue
        pairs = cKDTree(xyz[idx, :3]).query_pairs(radius, output_type="ndarray")
        graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(idx), len(idx)))
        n, comp = connected_components(graph, directed=False)
        for c in range(n):
            members = idx[comp == c]
            if len(members) >= min_points:
                out.append((members, int(cls)))
    return out


def box_corners(xyz: np.ndarray) -> np.ndarray:
    """(M, 3) points -> (8, 3) corners of their axis-aligned bounding box."""
    lo, hi = xyz[:, :3].min(0), xyz[:, :3].max(0)
    return np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])


def project_box(corners: np.ndarray, cam, near: float = 1.0) -> np.ndarray | None:
    """(8, 3) lidar-frame corners (as `box_corners` orders them) -> unclipped 2D box (u0, v0, u1, v1)
    in pixel coordinates of the part of the box at least `near` metres in front of the camera (the
    box's edges are cut at that plane), or None when no part of it is."""
    T = np.asarray(cam.T_cam_lidar, dtype=np.float64)
    K = np.asarray(cam.K, dtype=np.float64)
    p = corners @ T[:3, :3].T + T[:3, 3]  # (8, 3) camera frame
    front = p[:, 2] >= near
    if not front.any():
        return None
    pts = [p[front]]
    for a in range(8):
        for bit in (1, 2, 4):  # the 12 edges join corners whose indices differ in one bit
            b = a | bit
            if b == a or front[a] == front[b]:
                continue
            t = (near - p[a, 2]) / (p[b, 2] - p[a, 2])
            pts.append((p[a] + t * (p[b] - p[a]))[None])
    q = np.concatenate(pts) @ K.T
    u, v = q[:, 0] / q[:, 2], q[:, 1] / q[:, 2]
    return np.array([u.min(), v.min(), u.max(), v.max()])


def _clip_box(box: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.array([max(box[0], -0.5), max(box[1], -0.5), min(box[2], w - 0.5), min(box[3], h - 0.5)])


def _box_area(box: np.ndarray) -> float:
    return float(max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1]))


def _box_slices(box: np.ndarray) -> tuple[slice, slice]:
    """Pixel rows / columns whose centres lie in a clipped box."""
    c0, r0 = int(np.ceil(box[0] - 1e-9)), int(np.ceil(box[1] - 1e-9))
    c1, r1 = int(np.floor(box[2] + 1e-9)), int(np.floor(box[3] + 1e-9))
    return slice(max(r0, 0), max(r1 + 1, 0)), slice(max(c0, 0), max(c1 + 1, 0))


# ------------------------------------------------------------------------------- predictors


def _hull_mask(points: np.ndarray, h: int, w: int, box: np.ndarray) -> np.ndarray:
    """Pixels (centres) inside the convex hull of `points` (P, 2) (u, v), limited to `box`."""
    from scipy.spatial import ConvexHull, QhullError

    mask = np.zeros((h, w), dtype=bool)
    rs, cs = _box_slices(box)
    if rs.stop <= rs.start or cs.stop <= cs.start:
        return mask
    if points is None or len(points) < 3:
        mask[rs, cs] = True
        return mask
    try:
        hull = ConvexHull(points)
    except QhullError:  # collinear points: the box itself
        mask[rs, cs] = True
        return mask
    vv, uu = np.mgrid[rs, cs]
    q = np.stack([uu.ravel(), vv.ravel()], 1).astype(np.float64)
    eq = hull.equations  # (F, 3): a u + b v + c <= 0 inside
    inside = (q @ eq[:, :2].T + eq[:, 2] <= 0.75).all(1)  # half a pixel (and a bit) of tolerance
    mask[rs, cs] = inside.reshape(vv.shape)
    return mask


class HullPredictor:
    """Stand-in for SAM with the same interface: the convex hull of the instance's projected points
    inside its box (the box when fewer than 3 points are given), keeping only pixels whose colour
    lies within `colour_tol` (RGB units) of the colour under one of the prompt points (up to 64 of
    them), a crude appearance cue in place of SAM's; colour_tol <= 0 keeps the whole hull."""

    name = "standin-hull"

    def __init__(self, colour_tol: float = 20.0, max_colours: int = 64):
        self.colour_tol = float(colour_tol)
        self.max_colours = int(max_colours)

    def predict(self, image: np.ndarray, boxes: np.ndarray, points: list[np.ndarray] | None = None) -> np.ndarray:
        h, w = image.shape[:2]
        masks = np.zeros((len(boxes), h, w), dtype=bool)
        for k, box in enumerate(boxes):
            pts = None if points is None else points[k]
            masks[k] = _hull_mask(pts, h, w, _clip_box(box, w, h))
            if self.colour_tol > 0 and pts is not None and len(pts) >= 3:
                px = pixel_index(pts[np.linspace(0, len(pts) - 1, min(len(pts), self.max_colours)).astype(int)])
                colours = image[px[:, 1].clip(0, h - 1), px[:, 0].clip(0, w - 1)].astype(np.float32)  # (P, 3)
                rr, cc = np.nonzero(masks[k])
                dist = np.linalg.norm(image[rr, cc].astype(np.float32)[:, None, :] - colours[None], axis=-1).min(1)
                far = dist > self.colour_tol
                masks[k][rr[far], cc[far]] = False
        return masks


class SamBoxPredictor(SamPrompter):
    """Box prompts through a `transformers` SamModel (models/sam.py): one mask per box
    (multimask_output=False), at the image's resolution, thresholded at 0."""

    @classmethod
    def from_pretrained(cls, where: str, device: str = "cpu") -> "SamBoxPredictor":
        """A local SAM directory, hf:<id> in the local Hugging Face cache (never downloaded), or
        `random` (an untrained tiny SAM, for smoke runs)."""
        return cls(build_sam(where, "tiny"), device)

    def predict(self, image: np.ndarray, boxes: np.ndarray, points: list[np.ndarray] | None = None) -> np.ndarray:
        h, w = image.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), dtype=bool)
        self.set_image(image)
        edges = np.asarray(boxes, dtype=np.float32) + 0.5  # pixel centres -> pixel edges
        logits, _ = self.decode(boxes=edges, multimask=False)  # (K, 1, H, W)
        return logits[:, 0] > 0


def build_box_predictor(spec: str, device: str = "cpu"):
    """`pseudo_labels.box_predictor` -> HullPredictor ("standin"), SamBoxPredictor ("sam:<local dir |
    hf:id | random>") or None ("none": no instance masks)."""
    if spec == "none":
        return None
    if spec == "standin":
        return HullPredictor()
    if spec.startswith("sam:"):
        return SamBoxPredictor.from_pretrained(spec[4:], device)
    raise ConfigError(f"pseudo_labels.box_predictor must be standin or sam:<local dir, hf:id or random>, got {spec!r}")


# ------------------------------------------------------------------------------ instances -> masks


class InstancePainter:
    """Paints the masks of the thing instances of a frame over a dense label image (see the module
    docstring): `cfg` a PseudoLabelConfig, `predictor` as from `build_box_predictor` (None: nothing)."""

    def __init__(self, labels, cfg, predictor=None):
        self.cfg = cfg
        self.predictor = predictor
        names = list(cfg.thing_classes) or list(THING_CLASSES.get(labels.name, ()))
        unknown = [n for n in names if n not in labels.class_names]
        if unknown:
            raise ConfigError(f"pseudo_labels.thing_classes: {unknown} are not {labels.name} classes "
                              f"({', '.join(labels.class_names)})")
        self.thing_ids = [labels.class_names.index(n) for n in names]

    def instance_boxes(self, xyz, labels, uv, valid, depth, cam, instances=None) -> list[dict]:
        """Projected instance boxes with their class, depth, inside fraction and fate:
        "prompt" (to the predictor), "ignore" (mostly outside the image) or "occluded" (dropped)."""
        cfg = self.cfg
        h, w = cam.height, cam.width
        boxes = []
        for members, cls in instance_clusters(xyz, labels, self.thing_ids, instances, cfg.cluster_radius,
                                              cfg.min_cluster_points):
            seen = members[valid[members]]
            if len(seen) == 0:  # not in this image (behind the camera, outside its view, or occluded)
                continue
            box = project_box(box_corners(xyz[members]), cam)
            if box is None:
                continue
            clipped = _clip_box(box, w, h)
            inside = _box_area(clipped) / max(_box_area(box), 1e-9)
            if _box_area(clipped) <= 0:
                continue
            boxes.append({
                "box": box, "clipped": clipped, "cls": cls, "inside": inside,
                "depth": float(np.median(depth[members])), "points": uv[seen],
                "fate": "prompt" if inside >= cfg.min_inside else "ignore",
            })
        boxes.sort(key=lambda b: b["depth"])  # near first
        covered = np.zeros((h, w), dtype=bool)
        for b in boxes:
            rs, cs = _box_slices(b["clipped"])
            area = max(1, (rs.stop - rs.start) * (cs.stop - cs.start))
            occ = covered[rs, cs].sum() / area
            b["occlusion"] = float(occ)
            if b["fate"] == "prompt" and occ > cfg.max_occlusion:
                b["fate"] = "occluded"
            covered[rs, cs] = True
        return boxes

    def paint(self, out, xyz, labels, uv, valid, depth, cam, image, instances=None) -> None:
        """In place: ignore over boxes mostly outside the image, each prompted instance's mask in its
        class, far instances first so that nearer ones win."""
        if self.predictor is None:
            return
        boxes = self.instance_boxes(xyz, labels, uv, valid, depth, cam, instances)
        prompt = [b for b in boxes if b["fate"] == "prompt"]
        masks = self.predictor.predict(image, np.array([b["clipped"] for b in prompt]).reshape(-1, 4),
                                       [b["points"] for b in prompt]) if prompt else []
        mask_of = {id(b): m for b, m in zip(prompt, masks)}
        for b in reversed(boxes):  # far first: nearer instances paint over farther ones
            if b["fate"] == "ignore":
                rs, cs = _box_slices(b["clipped"])
                out[rs, cs] = IGNORE
            elif b["fate"] == "prompt":
                out[mask_of[id(b)]] = b["cls"]
