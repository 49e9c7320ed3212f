"""SemanticKITTI reader (Behley et al., ICCV 2019), official file layout of the semantic-kitti-api.

    <root>/sequences/XX/velodyne/NNNNNN.bin     float32 (N, 4): x, y, z, remission (0..1)
    <root>/sequences/XX/labels/NNNNNN.label     uint32 (N,): semantic id = low 16 bits, instance = high 16
    <root>/sequences/XX/calib.txt               "P0: 12 values" .. "P3: ..", "Tr: 12 values" (velodyne -> cam0)
    <root>/sequences/XX/poses.txt               one 3x4 cam0 pose per line (world = first cam0 frame)
    <root>/sequences/XX/image_2/NNNNNN.png      left colour camera

Official split: train 00-07, 09, 10; valid 08; test 11-21 (no labels). Frames are "XX/NNNNNN".
Predictions go to <out>/sequences/XX/predictions/NNNNNN.label as uint32 raw ids, which is what the
semantic-kitti-api evaluation reads. `--data_root` may name the dataset root (holding sequences/),
the sequences/ folder itself, or a parent holding dataset/sequences/.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import CameraFrame, ScanDataset, check_points
from .camera import image_size
from .labels import load_yaml, semantickitti_labels

POINT_BYTES = 16  # 4 x float32
LABEL_BYTES = 4  # uint32
SPLIT_ALIASES = {"val": "valid"}


def official_sequences(split: str) -> list[str]:
    """Two-digit sequence names of an official split ("train", "valid", "test", "all")."""
    table = load_yaml("semantickitti")["splits"]
    split = SPLIT_ALIASES.get(split, split)
    if split == "all":
        names = [s for key in ("train", "valid", "test") for s in table[key]]
    elif split in table:
        names = list(table[split])
    else:
        raise DataError(f"unknown SemanticKITTI split {split!r}: expected train, valid (val), test or all")
    # YAML reads 00 as an int and 08 as a string: normalise both to two digits
    return sorted(f"{int(s):02d}" for s in names)


def find_sequences_dir(root: str | Path) -> Path:
    """Accept the dataset root, its sequences/ folder, or a parent holding dataset/sequences/."""
    root = Path(root).expanduser()
    for candidate in (root / "sequences", root / "dataset" / "sequences"):
        if candidate.is_dir():
            return candidate
    if root.is_dir() and any((p / "velodyne").is_dir() for p in root.iterdir() if p.is_dir()):
        return root
    raise DataError(
        f"{root}: not a SemanticKITTI folder: expected {root}/sequences/XX/velodyne/NNNNNN.bin "
        f"(the dataset root) or {root}/XX/velodyne/NNNNNN.bin (its sequences/ folder)"
    )


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """calib.txt -> {"P0".."P3": (3, 4), "Tr": (4, 4)}; a missing or short entry is a DataError."""
    if not path.is_file():
        raise DataError(f"{path}: calibration file is missing (needed for the camera projection)")
    out: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, _, values = line.partition(":")
        try:
            numbers = np.array([float(v) for v in values.split()], dtype=np.float64)
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: cannot parse {key.strip()!r} ({exc})") from exc
        if numbers.size != 12:
            raise DataError(f"{path}:{lineno}: {key.strip()!r} has {numbers.size} values, expected 12 (a 3x4 matrix)")
        out[key.strip()] = numbers.reshape(3, 4)
    for key in ("P2", "Tr"):
        if key not in out:
            raise DataError(f"{path}: no {key} entry")
    tr = np.eye(4)
    tr[:3] = out["Tr"]
    out["Tr"] = tr
    return out


def camera_from_calib(calib: dict[str, np.ndarray], name: str = "P2") -> tuple[np.ndarray, np.ndarray]:
    """K (3, 3) and T_cam_lidar (4, 4) of a rectified KITTI camera: P = K [I | t], T = [I | t] @ Tr."""
    P = calib[name]
    K = P[:, :3].copy()
    t = np.linalg.solve(K, P[:, 3])  # K^-1 P[:, 3]: the camera's offset from cam0 (rectified)
    offset = np.eye(4)
    offset[:3, 3] = t
    return K, offset @ calib["Tr"]


class SemanticKITTI(ScanDataset):
    name = "semantickitti"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sequences: list[str] | None = None,
        frames: list[str] | None = None,
        nan_policy: str = "error",
        sequences_hint: str = "sequences=[...]",
        orphan_labels: str = "error",
    ):
        """sequences_hint: how the caller chooses the sequences of a partial copy (named when one of
        the split's sequences is missing; build_reader names its config key). orphan_labels: "error"
        refuses a label file without its scan (a frame silently lost); "ignore" leaves it to the caller
        (the pre-flight check lists them all)."""
        self.split = SPLIT_ALIASES.get(split, split)
        if self.split not in ("train", "valid", "test", "all"):
            raise DataError(f"unknown SemanticKITTI split {split!r}: expected train, valid (val), test or all")
        self.root = find_sequences_dir(root)
        self.labels = semantickitti_labels()
        self.nan_policy = nan_policy
        if sequences is None:
            self.sequences = official_sequences(self.split)
        else:
            self.sequences = sorted(f"{int(s):02d}" if str(s).isdigit() else str(s) for s in sequences)
        all_frames = self._list_frames(sequences_hint, orphan_labels == "error")
        if frames is not None:
            all_frames = self._restrict(all_frames, frames)
        self.frames = all_frames
        self.frame_keys = self.frames  # "XX/NNNNNN" already sorts in time order
        self._calib: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._poses: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------------- discovery

    def _list_frames(self, sequences_hint: str, check_orphans: bool = True) -> list[str]:
        """Frames of every sequence (velodyne/*.bin); a label file without its scan is refused, since
        the frame would silently be left out."""
        frames: list[str] = []
        for seq in self.sequences:
            velo = self.root / seq / "velodyne"
            if not velo.is_dir():
                present = sorted(p.name for p in self.root.iterdir() if (p / "velodyne").is_dir())
                raise DataError(
                    f"{velo}: missing: sequence {seq} belongs to split {self.split!r} (this copy has sequences "
                    f"{', '.join(present) or 'none'}; a partial copy is read by choosing its sequences with "
                    f"{sequences_hint})"
                )
            stems = sorted(p[:-4] for p in os.listdir(velo) if p.endswith(".bin"))
            if not stems:
                raise DataError(f"{velo}: no .bin scans")
            labels = self.root / seq / "labels"
            if check_orphans and labels.is_dir():
                have = set(stems)
                orphans = sorted(p for p in os.listdir(labels) if p.endswith(".label") and p[:-6] not in have)
                if orphans:
                    raise DataError(
                        f"{labels / orphans[0]}: label file without its scan {velo / (orphans[0][:-6] + '.bin')} "
                        f"({len(orphans)} such label file(s) in {labels}): the scan is missing, so the frame would "
                        "silently be left out; restore it (or remove the label file)"
                    )
            frames.extend(f"{seq}/{stem}" for stem in stems)
        return frames

    def missing_labels(self) -> list[str]:
        """Every sequence without labels/ and every scan without its .label (one listing per sequence)."""
        if self.split == "test":
            return [f"{self.root}: split 'test' (sequences 11-21) has no labels"]
        out = []
        for seq in self.sequences:
            labels = self.root / seq / "labels"
            stems = [f.split("/")[1] for f in self.frames if f.startswith(f"{seq}/")]
            if not labels.is_dir():
                if stems:
                    out.append(f"{labels}: missing (sequence {seq} has {len(stems)} scans)")
                continue
            have = {p[:-6] for p in os.listdir(labels) if p.endswith(".label")}
            lost = [s for s in stems if s not in have]
            if lost:
                out.append(f"{labels / (lost[0] + '.label')}: label file is missing ({len(lost)} of the "
                           f"{len(stems)} scans of sequence {seq} have none)")
        return out

    def _restrict(self, available: list[str], wanted: list[str]) -> list[str]:
        wanted_set = set(wanted)
        if len(wanted_set) != len(wanted):
            dup = sorted(f for f, c in Counter(wanted).items() if c > 1)
            raise DataError(f"frame list names frames twice: {dup[:10]}")
        missing = sorted(wanted_set - set(available))
        if missing:
            raise DataError(
                f"{len(missing)} listed frame(s) are not in {self.root} (sequences {', '.join(self.sequences)}): "
                f"{missing[:10]}{' ...' if len(missing) > 10 else ''}"
            )
        return [f for f in available if f in wanted_set]

    @property
    def has_labels(self) -> bool:
        if self.split == "test":
            return False
        return all((self.root / seq / "labels").is_dir() for seq in self.sequences)

    # ----------------------------------------------------------------------------- paths

    def _parts(self, i: int) -> tuple[str, str]:
        seq, stem = self.frames[i].split("/")
        return seq, stem

    def scan_path(self, i: int) -> Path:
        seq, stem = self._parts(i)
        return self.root / seq / "velodyne" / f"{stem}.bin"

    def label_path(self, i: int) -> Path:
        seq, stem = self._parts(i)
        return self.root / seq / "labels" / f"{stem}.label"

    def prediction_path(self, out_root: str | Path, i: int) -> Path:
        seq, stem = self._parts(i)
        return Path(out_root) / "sequences" / seq / "predictions" / f"{stem}.label"

    # ---------------------------------------------------------------------------- points

    def num_points(self, i: int) -> int:
        path = self.scan_path(i)
        size = _file_size(path, "scan")
        if size % POINT_BYTES:
            raise DataError(
                f"{path}: size {size} bytes is not a multiple of {POINT_BYTES} (x, y, z, remission float32): truncated?"
            )
        return size // POINT_BYTES

    def _raw_points(self, i: int) -> np.ndarray:
        path = self.scan_path(i)
        self.num_points(i)  # size check
        return np.fromfile(path, dtype=np.float32).reshape(-1, 4)

    def load_points_checked(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 4), invalid (N,) bool): NaN/inf points raise, or are zeroed under nan_policy "zero"."""
        return check_points(self._raw_points(i), self.scan_path(i), self.nan_policy)

    def load_points(self, i: int) -> np.ndarray:
        """float32 (N, 4) x, y, z, remission."""
        return self.load_points_checked(i)[0]

    # ---------------------------------------------------------------------------- labels

    def load_raw_labels(self, i: int) -> np.ndarray:
        """uint32 (N,) semantic ids (label & 0xFFFF); the count must equal the scan's."""
        path = self.label_path(i)
        if not self.has_labels:
            raise DataError(f"{path}: split {self.split!r} has no labels")
        size = _file_size(path, "label file")
        if size % LABEL_BYTES:
            raise DataError(f"{path}: size {size} bytes is not a multiple of {LABEL_BYTES} (uint32 labels): truncated?")
        n = self.num_points(i)
        if size // LABEL_BYTES != n:
            raise DataError(f"{path}: {size // LABEL_BYTES} labels, but the scan {self.scan_path(i).name} has {n} points")
        return np.fromfile(path, dtype=np.uint32) & np.uint32(0xFFFF)

    def load_labels(self, i: int) -> np.ndarray:
        """int64 (N,) train ids, 255 = ignore (also for points with NaN/inf under nan_policy "zero")."""
        labels = self.labels.to_train(self.load_raw_labels(i), self.label_path(i))
        if self.nan_policy == "zero":
            labels[~np.isfinite(self._raw_points(i)).all(axis=1)] = 255
        return labels

    def load_instances(self, i: int) -> np.ndarray:
        """uint32 (N,) instance ids (high 16 bits of the .label file)."""
        self.load_raw_labels(i)  # size checks
        return np.fromfile(self.label_path(i), dtype=np.uint32) >> np.uint32(16)

    def encode_prediction(self, train_ids: np.ndarray) -> bytes:
        return self.labels.to_raw(train_ids).astype(np.uint32).tobytes()

    # --------------------------------------------------------------------------- cameras

    def calibration(self, seq: str) -> tuple[np.ndarray, np.ndarray]:
        """(K (3, 3), T_cam_lidar (4, 4)) of image_2 for a sequence (cached)."""
        if seq not in self._calib:
            self._calib[seq] = camera_from_calib(read_calib(self.root / seq / "calib.txt"))
        return self._calib[seq]

    def load_cameras(self, i: int) -> list[CameraFrame]:
        seq, stem = self._parts(i)
        K, T = self.calibration(seq)
        image = self.root / seq / "image_2" / f"{stem}.png"
        width, height = image_size(image)
        mask = self.root / seq / "image_2_semantic" / f"{stem}.png"
        return [
            CameraFrame(
                name="image_2",
                image_path=image,
                K=K.copy(),
                T_cam_lidar=T.copy(),
                width=width,
                height=height,
                mask_path=mask if mask.is_file() else None,
            )
        ]

    # ----------------------------------------------------------------------------- poses

    def load_pose(self, i: int, frame: str = "lidar") -> np.ndarray:
        """(4, 4) pose of scan i from poses.txt.

        frame "camera": the poses.txt matrix as stored (cam0 -> first cam0 frame);
        frame "lidar": the same motion expressed for the lidar, Tr^-1 @ pose @ Tr
        (lidar -> first lidar frame), as the semantic-kitti-api uses to stack scans.
        """
        seq, stem = self._parts(i)
        if seq not in self._poses:
            self._poses[seq] = _read_poses(self.root / seq / "poses.txt")
        poses = self._poses[seq]
        k = int(stem)
        if k >= len(poses):
            raise DataError(f"{self.root / seq / 'poses.txt'}: {len(poses)} poses, no line for frame {stem}")
        pose = poses[k]
        if frame == "camera":
            return pose.copy()
        if frame != "lidar":
            raise ValueError(f"frame must be 'lidar' or 'camera', got {frame!r}")
        tr = read_calib(self.root / seq / "calib.txt")["Tr"]
        return np.linalg.inv(tr) @ pose @ tr


def _file_size(path: Path, what: str) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} is missing") from exc


def _read_poses(path: Path) -> np.ndarray:
    """poses.txt -> (F, 4, 4)."""
    if not path.is_file():
        raise DataError(f"{path}: poses file is missing")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError as exc:
            raise DataError(f"{path}:{lineno}: cannot parse pose ({exc})") from exc
        if len(values) != 12:
            raise DataError(f"{path}:{lineno}: {len(values)} values, expected 12 (a 3x4 matrix)")
        pose = np.eye(4)
        pose[:3] = np.array(values).reshape(3, 4)
        rows.append(pose)
    return np.stack(rows) if rows else np.zeros((0, 4, 4))
