"""nuScenes-lidarseg reader (Caesar et al., CVPR 2020; Fong et al., RA-L 2022), official layout,
read straight from the JSON tables (no nuscenes-devkit):

    <root>/<version>/{scene,sample,sample_data,calibrated_sensor,ego_pose,category,lidarseg}.json
    <root>/samples/LIDAR_TOP/<name>.pcd.bin        float32 (N, 5): x, y, z, intensity (0..255), ring
    <root>/lidarseg/<version>/<token>_lidarseg.bin uint8 (N,): raw class = category.json "index"
    <root>/samples/CAM_*/<name>.jpg                six cameras, calibrated_sensor intrinsics

Frames are the keyframes (samples) of the split's scenes, addressed by the LIDAR_TOP sample_data
token and ordered by scene name, then timestamp. The split picks scenes by name from the devkit's
official lists (data/labels/nuscenes_splits.yaml); on v1.0-mini "train"/"val" mean mini_train/mini_val.

Frames: the LIDAR_TOP sensor frame is x right, y forward, z up. Points are rotated into the library
convention x forward, y left, z up: x' = y, y' = -x (a -90 degree yaw). Camera transforms include
this rotation, so `camera.project_points` works on the points as returned. `frame="lidar_top"`
(data.nuscenes_frame) keeps the points as stored, as the official WaffleIron, ScaLR and RangeViT
loaders read them (e.g. valeoai/WaffleIron datasets/nuscenes.py load_pc): their converted checkpoints
expect that frame (and the raw 0..255 intensity, data.intensity_scale 1).

Range view: every point's laser ring (`load_rings`) is its range-image row (one ring per row: the
HDL-32E rings span -30.6 .. +10.6 degrees, which no fixed +10 / -30 degree field of view separates).
Returns within data.range.min_range (1 m in config/nuscenes.yaml: 8-14 k points of a scan hit the ego
vehicle) keep their pixel and get a prediction but never hide the scene behind them.

Labels are mapped by category *name* (category.json may index the 32 classes in any order).
Predictions go to <out>/lidarseg/<eval set>/<lidar token>_lidarseg.bin as uint8 1..16, which is what
the devkit's lidarseg evaluation reads (eval set "val" for the validation split).

sample_data.json and ego_pose.json of v1.0-trainval hold ~2.6 M records each (about 1 GB): they
are streamed record by record and only the keyframe lidar/camera entries (and the ego poses they
point to) are kept, once per process and (root, version).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import DataError
from .base import CameraFrame, ScanDataset, check_points
from .camera import image_size, invert_pose, pose_matrix
from .labels import load_yaml, nuscenes_labels

POINT_FIELDS = 5  # x, y, z, intensity, ring index
POINT_BYTES = 4 * POINT_FIELDS
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
LIDAR = "LIDAR_TOP"
SPLITS = ("train", "val", "test", "mini_train", "mini_val")
SPLIT_ALIASES = {"valid": "val"}

# (4, 4): LIDAR_TOP frame (x right, y forward) -> library frame (x forward, y left)
LIDAR_TO_LIB = np.array([[0.0, 1, 0, 0], [-1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
LIB_TO_LIDAR = LIDAR_TO_LIB.T.copy()


def lidar_top_to_library(raw: np.ndarray) -> np.ndarray:
    """(N, >=4) x, y, z, intensity (, ring) in the LIDAR_TOP frame -> float32 (N, 4) in the library
    frame: x' = y (forward), y' = -x (left), z' = z, intensity as stored (the rotation LIDAR_TO_LIB)."""
    points = np.empty((len(raw), 4), dtype=np.float32)
    points[:, 0] = raw[:, 1]  # forward
    points[:, 1] = -raw[:, 0]  # left
    points[:, 2] = raw[:, 2]
    points[:, 3] = raw[:, 3]
    return points


# ------------------------------------------------------------------------------ JSON tables


def iter_json_array(path: Path, chunk_chars: int = 1 << 24) -> Iterator[dict]:
    """Yield the objects of a JSON array file one by one without holding the whole file."""
    decoder = json.JSONDecoder()
    separators = re.compile(r"[\s,]*")
    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: nuScenes table is missing") from exc
    with handle:
        buf = handle.read(chunk_chars)
        eof = len(buf) < chunk_chars
        start = re.match(r"\s*\[", buf)
        if start is None:
            raise DataError(f"{path}: not a JSON array (nuScenes tables are lists of records)")
        pos = start.end()
        while True:
            pos = separators.match(buf, pos).end()
            if pos < len(buf) and buf[pos] == "]":
                return
            if pos < len(buf):
                try:
                    obj, end = decoder.raw_decode(buf, pos)
                except json.JSONDecodeError as exc:
                    if eof:
                        raise DataError(f"{path}: invalid JSON ({exc})") from exc
                else:
                    if not isinstance(obj, dict):
                        raise DataError(f"{path}: expected a list of records, found {type(obj).__name__}")
                    yield obj
                    pos = end
                    continue
            if eof:
                raise DataError(f"{path}: truncated JSON (no closing ']')")
            more = handle.read(chunk_chars)
            eof = len(more) < chunk_chars
            buf = buf[pos:] + more
            pos = 0


def load_table(path: Path) -> list[dict]:
    """A small table (scene, sample, category, ...) as a list of records."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: nuScenes table is missing") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of records")
    return data


def _field(record: dict, key: str, path: Path) -> Any:
    try:
        return record[key]
    except KeyError as exc:
        raise DataError(f"{path}: a record has no {key!r} field: {str(record)[:200]}") from exc


def find_nuscenes_root(root: str | Path, version: str) -> Path:
    """Accept the nuScenes root (holding <version>/) or a parent holding nuscenes/<version>/."""
    root = Path(root).expanduser()
    for candidate in (root, root / "nuscenes"):
        if (candidate / version).is_dir():
            return candidate
    found = []
    for folder in (root, root / "nuscenes"):
        if folder.is_dir():
            found += [str(p) for p in folder.iterdir() if p.is_dir() and p.name.startswith("v1.0-")]
    hint = f"; found {sorted(found)}: choose it with the version setting" if found else ""
    raise DataError(
        f"{root}: not a nuScenes folder: expected {root}/{version}/sample.json (the nuScenes root) "
        f"or {root}/nuscenes/{version}/sample.json (a folder holding nuscenes/){hint}"
    )


# ------------------------------------------------------------------------------- the index


@dataclass
class _SensorData:
    """One keyframe sample_data record (lidar or camera), only the fields the reader uses."""

    token: str
    filename: str
    calib_token: str
    ego_token: str
    timestamp: int
    width: int
    height: int


@dataclass
class _Frame:
    sample_token: str
    scene: str
    timestamp: int
    lidar: _SensorData
    cameras: dict[str, _SensorData] = field(default_factory=dict)


@dataclass
class _Index:
    """Everything the reader keeps of one (root, version)."""

    frames: list[_Frame]  # all keyframes with a LIDAR_TOP sweep, ordered by (scene, timestamp)
    keys: list[str]  # "scene-XXXX/NNN": keyframe NNN (by time) of the scene, stable across copies
    lidarseg: dict[str, str] | None  # lidar token -> label file (None: no lidarseg.json)
    category_index: dict[str, int] | None  # category name -> raw index (None: no "index" field)
    calib: dict[str, dict] | None = None  # loaded with the camera geometry
    ego: dict[str, np.ndarray] | None = None  # ego_pose token -> (4, 4) ego -> global


_INDEX_CACHE: dict[tuple[str, str], tuple[tuple, _Index]] = {}


def _sensor_record(rec: dict, path: Path) -> _SensorData:
    return _SensorData(
        token=_field(rec, "token", path),
        filename=rec["filename"],
        calib_token=_field(rec, "calibrated_sensor_token", path),
        ego_token=_field(rec, "ego_pose_token", path),
        timestamp=int(_field(rec, "timestamp", path)),
        width=int(rec.get("width") or 0),
        height=int(rec.get("height") or 0),
    )


def build_index(root: Path, version: str) -> _Index:
    """Read scene, sample, sample_data (streamed), category and lidarseg of one version."""
    tables = root / version
    scene_path, sample_path, sd_path = tables / "scene.json", tables / "sample.json", tables / "sample_data.json"
    scenes = {_field(r, "token", scene_path): _field(r, "name", scene_path) for r in load_table(scene_path)}
    samples: dict[str, tuple[str, int]] = {}
    for r in load_table(sample_path):
        scene_token = _field(r, "scene_token", sample_path)
        if scene_token not in scenes:
            raise DataError(f"{sample_path}: sample {r.get('token')} points to scene {scene_token}, not in {scene_path}")
        samples[_field(r, "token", sample_path)] = (scenes[scene_token], int(_field(r, "timestamp", sample_path)))

    lidar: dict[str, _SensorData] = {}
    cams: dict[str, dict[str, _SensorData]] = {}
    for rec in iter_json_array(sd_path):
        if not rec.get("is_key_frame"):
            continue
        filename = _field(rec, "filename", sd_path)
        parts = filename.split("/")
        if len(parts) < 3 or parts[0] != "samples":
            continue
        channel = parts[1]
        if channel != LIDAR and channel not in CAMERAS:
            continue
        sample_token = _field(rec, "sample_token", sd_path)
        if sample_token not in samples:
            raise DataError(f"{sd_path}: record {rec.get('token')} points to sample {sample_token}, not in {sample_path}")
        group = lidar if channel == LIDAR else cams.setdefault(sample_token, {})
        slot = sample_token if channel == LIDAR else channel
        if slot in group:
            raise DataError(f"{sd_path}: sample {sample_token} has two {channel} keyframes")
        group[slot] = _sensor_record(rec, sd_path)
    no_lidar = sorted(set(samples) - set(lidar))
    if no_lidar:
        raise DataError(f"{sd_path}: {len(no_lidar)} samples have no {LIDAR} keyframe, e.g. {no_lidar[:3]}")

    frames = [
        _Frame(sample_token=s, scene=samples[s][0], timestamp=sd.timestamp, lidar=sd, cameras=cams.get(s, {}))
        for s, sd in lidar.items()
    ]
    frames.sort(key=lambda f: (f.scene, f.timestamp, f.lidar.token))
    keys, counter = [], Counter()
    for f in frames:
        keys.append(f"{f.scene}/{counter[f.scene]:03d}")
        counter[f.scene] += 1

    category_path = tables / "category.json"
    categories = load_table(category_path)
    if all("index" in c for c in categories):
        category_index = {_field(c, "name", category_path): int(c["index"]) for c in categories}
    else:
        category_index = None

    lidarseg_path = tables / "lidarseg.json"
    lidarseg = None
    if lidarseg_path.is_file():
        if category_index is None:
            raise DataError(
                f"{category_path}: records have no 'index' field; nuScenes-lidarseg needs the category table "
                "that ships with the lidarseg download"
            )
        lidarseg = {
            _field(r, "sample_data_token", lidarseg_path): _field(r, "filename", lidarseg_path)
            for r in load_table(lidarseg_path)
        }
    return _Index(frames=frames, keys=keys, lidarseg=lidarseg, category_index=category_index)


def load_geometry(index: _Index, root: Path, version: str) -> None:
    """Add calibrated_sensor and the ego poses the kept keyframes use (ego_pose.json is streamed)."""
    if index.calib is not None:
        return
    calib_path = root / version / "calibrated_sensor.json"
    calib = {_field(r, "token", calib_path): r for r in load_table(calib_path)}
    wanted = {f.lidar.ego_token for f in index.frames}
    wanted.update(c.ego_token for f in index.frames for c in f.cameras.values())
    ego_path = root / version / "ego_pose.json"
    ego: dict[str, np.ndarray] = {}
    for rec in iter_json_array(ego_path):
        token = rec.get("token")
        if token in wanted:
            ego[token] = pose_matrix(_field(rec, "translation", ego_path), _field(rec, "rotation", ego_path))
    missing = wanted - set(ego)
    if missing:
        raise DataError(f"{ego_path}: {len(missing)} ego poses used by sample_data are missing, e.g. {sorted(missing)[:3]}")
    index.calib, index.ego = calib, ego


def get_index(root: Path, version: str) -> _Index:
    """The index of (root, version), built once per process (rebuilt if a table file changed)."""
    tables = root / version
    stamp = tuple(
        sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in tables.iterdir() if p.suffix == ".json")
    )
    key = (str(root.resolve()), version)
    cached = _INDEX_CACHE.get(key)
    if cached is None or cached[0] != stamp:
        _INDEX_CACHE[key] = (stamp, build_index(root, version))
    return _INDEX_CACHE[key][1]


def official_scenes(split: str) -> list[str]:
    return list(load_yaml("nuscenes_splits")[split])


# ------------------------------------------------------------------------------- the reader


class NuScenes(ScanDataset):
    name = "nuscenes"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        version: str = "v1.0-trainval",
        frames: list[str] | None = None,
        scenes: list[str] | None = None,
        cameras: bool = False,
        nan_policy: str = "error",
        frame: str = "library",
    ):
        if frame not in ("library", "lidar_top"):
            raise DataError(f"unknown nuScenes point frame {frame!r}: expected library or lidar_top")
        self.frame = frame
        split = SPLIT_ALIASES.get(split, split)
        if split not in SPLITS:
            raise DataError(f"unknown nuScenes split {split!r}: expected one of {', '.join(SPLITS)} (or valid)")
        if version == "v1.0-mini" and split in ("train", "val"):
            split = f"mini_{split}"
        self.split = split
        self.version = version
        self.nan_policy = nan_policy
        self.root = find_nuscenes_root(root, version)
        self._tables = get_index(self.root, version)
        if self._tables.category_index is not None:
            try:
                self.labels = nuscenes_labels(self._tables.category_index)
            except DataError as exc:
                raise DataError(f"{self.root / version / 'category.json'}: {exc}") from exc
        else:
            self.labels = nuscenes_labels()  # official indices: only used to write predictions

        self.split_scenes = official_scenes(split)  # the devkit's order
        wanted_scenes = set(self.split_scenes)
        positions = [k for k, f in enumerate(self._tables.frames) if f.scene in wanted_scenes]
        if not positions:
            raise DataError(
                f"{self.root / version / 'scene.json'}: none of the {len(wanted_scenes)} scenes of split {split!r} "
                f"are in {version} (test scenes are in v1.0-test, mini scenes in v1.0-mini or v1.0-trainval)"
            )
        if scenes is not None:
            unknown = sorted(set(scenes) - {self._tables.frames[k].scene for k in positions})
            if unknown:
                raise DataError(
                    f"{len(unknown)} listed scene(s) are not scenes of split {split!r} in "
                    f"{self.root / version / 'scene.json'}: {unknown[:10]}"
                )
            keep = set(scenes)
            positions = [k for k in positions if self._tables.frames[k].scene in keep]
        if frames is not None:
            positions = self._restrict(positions, frames)
        self._positions = positions
        self.frames = [self._tables.frames[k].lidar.token for k in positions]
        self.frame_keys = [self._tables.keys[k] for k in positions]  # "scene-XXXX/NNN", time order
        self.scenes = [self._tables.frames[k].scene for k in positions]
        if cameras:
            self.prepare_cameras()

    def _restrict(self, positions: list[int], wanted: list[str]) -> list[int]:
        wanted_set = set(wanted)
        if len(wanted_set) != len(wanted):
            dup = sorted(f for f, c in Counter(wanted).items() if c > 1)
            raise DataError(f"frame list names frames twice: {dup[:10]}")
        by_token = {self._tables.frames[k].lidar.token: k for k in positions}
        missing = sorted(wanted_set - set(by_token))
        if missing:
            raise DataError(
                f"{len(missing)} listed frame(s) are not LIDAR_TOP keyframes of split {self.split!r} in "
                f"{self.root / self.version}: {missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
        return [k for k in positions if self._tables.frames[k].lidar.token in wanted_set]

    def _frame(self, i: int) -> _Frame:
        return self._tables.frames[self._positions[i]]

    @property
    def has_labels(self) -> bool:
        return self._tables.lidarseg is not None and self.split != "test"

    def missing_labels(self) -> list[str]:
        """lidarseg.json missing, or the keyframes it has no entry for."""
        table = self.root / self.version / "lidarseg.json"
        if self.split == "test":
            return [f"{self.root / self.version}: split 'test' has no labels"]
        if self._tables.lidarseg is None:
            return [f"{table}: missing (the nuScenes-lidarseg table, from the lidarseg download)"]
        lost = [t for t in self.frames if t not in self._tables.lidarseg]
        if lost:
            return [f"{table}: no entry for {len(lost)} of the {len(self.frames)} LIDAR_TOP keyframes of split "
                    f"{self.split!r}, e.g. sample_data {lost[0]}"]
        return []

    def has_label_entry(self, i: int) -> bool:
        """Whether lidarseg.json names a label file for frame i (see label_path)."""
        return self._tables.lidarseg is not None and self.frames[i] in self._tables.lidarseg

    # ----------------------------------------------------------------------------- paths

    def scan_path(self, i: int) -> Path:
        return self.root / self._frame(i).lidar.filename

    def label_path(self, i: int) -> Path:
        frame = self._frame(i)
        if self._tables.lidarseg is None:
            return self.root / self.version / "lidarseg.json"
        name = self._tables.lidarseg.get(frame.lidar.token)
        if name is None:
            return self.root / "lidarseg" / self.version / f"{frame.lidar.token}_lidarseg.bin"
        return self.root / name

    def prediction_path(self, out_root: str | Path, i: int) -> Path:
        return Path(out_root) / "lidarseg" / self.split / f"{self.frames[i]}_lidarseg.bin"

    # ---------------------------------------------------------------------------- points

    def num_points(self, i: int) -> int:
        path = self.scan_path(i)
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise DataError(f"{path}: lidar scan is missing") from exc
        if size % POINT_BYTES:
            raise DataError(
                f"{path}: size {size} bytes is not a multiple of {POINT_BYTES} "
                "(x, y, z, intensity, ring float32): truncated?"
            )
        return size // POINT_BYTES

    def _raw_points(self, i: int) -> np.ndarray:
        """(N, 4) x, y, z, intensity in the library frame (or, frame "lidar_top", as stored), unchecked for NaN."""
        self.num_points(i)
        raw = np.fromfile(self.scan_path(i), dtype=np.float32).reshape(-1, POINT_FIELDS)
        if self.frame == "lidar_top":
            return np.ascontiguousarray(raw[:, :4])
        return lidar_top_to_library(raw)

    def load_rings(self, i: int) -> np.ndarray:
        """int64 (N,) laser ring of every point (the 5th float; HDL-32E: 0 = lowest beam .. 31), the
        range-view row of the point under data.range.rows "ring" (config/nuscenes.yaml). Under nan_policy "zero" a point whose
        ring is not a finite whole number gets ring 0 (its label is ignored); otherwise it raises."""
        self.num_points(i)
        ring = np.fromfile(self.scan_path(i), dtype=np.float32).reshape(-1, POINT_FIELDS)[:, 4]
        bad = ~np.isfinite(ring) | (ring < 0) | (ring != np.round(ring))
        if bad.any():
            if self.nan_policy != "zero":
                raise DataError(f"{self.scan_path(i)}: {int(bad.sum())} points have a ring index (5th float) that is "
                                f"not a whole number >= 0 (set data.range.rows=fov to ignore rings)")
            ring = np.where(bad, 0, ring)
        return ring.astype(np.int64)

    def load_points_checked(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 4), invalid (N,) bool): NaN/inf points raise, or are zeroed under nan_policy "zero"."""
        return check_points(self._raw_points(i), self.scan_path(i), self.nan_policy)

    def load_points(self, i: int) -> np.ndarray:
        """float32 (N, 4) x (forward), y (left), z (up), intensity (0..255)."""
        return self.load_points_checked(i)[0]

    # ---------------------------------------------------------------------------- labels

    def load_raw_labels(self, i: int) -> np.ndarray:
        """uint8 (N,) raw category indices of the lidarseg file; the count must equal the scan's."""
        path = self.label_path(i)
        if self._tables.lidarseg is None:
            raise DataError(f"{path}: nuScenes-lidarseg table is missing (no labels for {self.version})")
        if self._tables.lidarseg.get(self.frames[i]) is None:
            raise DataError(f"{self.root / self.version / 'lidarseg.json'}: no entry for lidar sample_data {self.frames[i]}")
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise DataError(f"{path}: lidarseg label file is missing") from exc
        n = self.num_points(i)
        if size != n:
            raise DataError(f"{path}: {size} labels, but the scan {self.scan_path(i).name} has {n} points")
        return np.fromfile(path, dtype=np.uint8)

    def load_labels(self, i: int) -> np.ndarray:
        """int64 (N,) train ids 0..15, 255 = ignore (also for NaN/inf points under nan_policy "zero")."""
        labels = self.labels.to_train(self.load_raw_labels(i), self.label_path(i))
        if self.nan_policy == "zero":
            labels[~np.isfinite(self._raw_points(i)).all(axis=1)] = 255
        return labels

    def encode_prediction(self, train_ids: np.ndarray) -> bytes:
        """uint8 challenge indices 1..16 (train id + 1; 0 = noise is never written)."""
        return self.labels.to_raw(train_ids).astype(np.uint8).tobytes()

    # --------------------------------------------------------------------------- cameras

    def prepare_cameras(self) -> None:
        """Load calibrated_sensor and the needed ego poses now (do it before forking workers)."""
        load_geometry(self._tables, self.root, self.version)

    def _calib(self, token: str) -> dict:
        assert self._tables.calib is not None
        try:
            return self._tables.calib[token]
        except KeyError as exc:
            raise DataError(f"{self.root / self.version / 'calibrated_sensor.json'}: no record {token}") from exc

    def lidar_to_global(self, i: int) -> np.ndarray:
        """(4, 4) library lidar frame -> global frame at the lidar timestamp."""
        self.prepare_cameras()
        lidar = self._frame(i).lidar
        cs = self._calib(lidar.calib_token)
        T_ego_lidar = pose_matrix(cs["translation"], cs["rotation"])
        return self._tables.ego[lidar.ego_token] @ T_ego_lidar @ (LIB_TO_LIDAR if self.frame == "library" else np.eye(4))

    load_pose = lidar_to_global

    def load_cameras(self, i: int) -> list[CameraFrame]:
        """The six keyframe cameras of frame i with T_cam_lidar for the library's point frame:
        lidar -> ego (lidar time) -> global -> ego (camera time) -> camera."""
        frame = self._frame(i)
        T_global_lidar = self.lidar_to_global(i)
        out = []
        for channel in CAMERAS:
            cam = frame.cameras.get(channel)
            if cam is None:
                raise DataError(
                    f"{self.root / self.version / 'sample_data.json'}: sample {frame.sample_token} has no {channel} keyframe"
                )
            cs = self._calib(cam.calib_token)
            K = np.asarray(cs.get("camera_intrinsic") or [], dtype=np.float64)
            if K.shape != (3, 3):
                raise DataError(
                    f"{self.root / self.version / 'calibrated_sensor.json'}: record {cam.calib_token} ({channel}) "
                    "has no 3x3 camera_intrinsic"
                )
            T_ego_cam = pose_matrix(cs["translation"], cs["rotation"])
            T_cam_lidar = invert_pose(T_ego_cam) @ invert_pose(self._tables.ego[cam.ego_token]) @ T_global_lidar
            image = self.root / cam.filename
            width, height = cam.width, cam.height
            if width <= 0 or height <= 0:
                width, height = image_size(image)
            mask = self.root / "samples" / f"{channel}_SEMANTIC" / f"{Path(cam.filename).stem}.png"
            out.append(
                CameraFrame(
                    name=channel,
                    image_path=image,
                    K=K,
                    T_cam_lidar=T_cam_lidar,
                    width=width,
                    height=height,
                    mask_path=mask if mask.is_file() else None,
                )
            )
        return out
