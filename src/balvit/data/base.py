"""The interface every dataset reader implements (SemanticKITTI, nuScenes-lidarseg).

A reader knows the files of one split of one dataset on disk and returns numpy arrays in the
library's conventions (DESIGN.md section 2):

- points: float32 (N, 4) = x, y, z in metres in the sensor frame (x forward, y left, z up) and the
  intensity as stored (SemanticKITTI remission 0..1, nuScenes 0..255);
- labels: int64 (N,) train ids 0..C-1, 255 = ignore;
- cameras: `CameraFrame`s with intrinsics and the lidar->camera transform of this scan.

Readers never drop points silently: a corrupt file raises `DataError` naming the file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .labels import LabelSpec


@dataclass
class CameraFrame:
    """One camera image of a scan and how lidar points map into it (see camera.py)."""

    name: str  # "image_2" (KITTI) or "CAM_FRONT", ... (nuScenes)
    image_path: Path
    K: np.ndarray  # (3, 3) intrinsics
    T_cam_lidar: np.ndarray  # (4, 4): homogeneous lidar point (reader's frame) -> camera frame
    width: int
    height: int
    mask_path: Path | None = None  # synthetic data only: per-pixel raw class ids (16-bit PNG)


class ScanDataset(ABC):
    """One split of a LiDAR segmentation dataset. Frames are addressed by position 0..len-1."""

    name: str  # "semantickitti" / "nuscenes"
    labels: LabelSpec
    frames: list[str]  # frame ids, e.g. "08/000123" (KITTI) or a LIDAR_TOP sample_data token
    split: str
    nan_policy: str = "error"  # see check_points

    def __len__(self) -> int:
        return len(self.frames)

    @property
    @abstractmethod
    def has_labels(self) -> bool:
        """False for splits without ground truth (e.g. the SemanticKITTI test sequences)."""

    def missing_labels(self) -> list[str]:
        """Where this split's ground truth should be and is not ("<folder or table>: <problem>"), empty
        when every frame has labels. Readers override it to name the folder / table at fault."""
        return [] if self.has_labels else [f"{self.describe()}: has no labels"]

    def require_labels(self, why: str) -> None:
        """Refuse (DataError) a split without labels for every frame, naming the missing folder or
        table; `why` says what needs them (e.g. "training", "balvit eval")."""
        missing = self.missing_labels()
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{missing[0]}{more}: {why} needs the labels of every frame of the {self.describe()}; "
                            "without them its loss or score would silently count nothing")

    @abstractmethod
    def load_points(self, i: int) -> np.ndarray:
        """float32 (N, 4) x, y, z, intensity of frame i."""

    def describe(self) -> str:
        """The split in words, for messages: dataset, split name and where it lies."""
        root = getattr(self, "root", None)
        return f"{self.name} {self.split!r} split" + (f" under {root}" if root is not None else "")

    def load_rings(self, i: int) -> np.ndarray | None:
        """int64 (N,) laser ring of every point of frame i (0 = lowest beam), or None when the format
        stores none (the range view then takes its rows from the field of view)."""
        return None

    def scan_path(self, i: int) -> Path:
        """The point file of frame i (for error messages)."""
        return Path(f"{self.name} frame {self.frames[i]}")

    def load_points_checked(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(points (N, 4), invalid (N,) bool) after `check_points` with the reader's nan_policy."""
        return check_points(self.load_points(i), self.scan_path(i), self.nan_policy)

    @abstractmethod
    def load_raw_labels(self, i: int) -> np.ndarray:
        """The raw label ids as stored (N,) (semantic part only)."""

    def load_labels(self, i: int) -> np.ndarray:
        """int64 (N,) train ids with 255 = ignore; the count is checked against the scan."""
        raw = self.load_raw_labels(i)
        return self.labels.to_train(raw, self.label_path(i))

    @abstractmethod
    def label_path(self, i: int) -> Path:
        """The ground-truth file of frame i (for error messages)."""

    @abstractmethod
    def load_cameras(self, i: int) -> list[CameraFrame]:
        """The camera views of frame i (empty list when the dataset has none)."""

    @abstractmethod
    def prediction_path(self, out_root: str | Path, i: int) -> Path:
        """Where the official tools expect the prediction file of frame i under `out_root`."""

    @abstractmethod
    def encode_prediction(self, train_ids: np.ndarray) -> bytes:
        """Train ids (N,) -> bytes of the official prediction file format."""

    def write_prediction(self, out_root: str | Path, i: int, train_ids: np.ndarray) -> Path:
        """Write the prediction of frame i atomically in the official layout; returns the path."""
        from ..io import write_bytes

        n = self.num_points(i)
        if len(train_ids) != n:
            raise DataError(f"prediction for frame {self.frames[i]} has {len(train_ids)} values, the scan has {n} points")
        return write_bytes(self.prediction_path(out_root, i), self.encode_prediction(np.asarray(train_ids)))

    def num_points(self, i: int) -> int:
        return len(self.load_points(i))

    def frame_index(self, frame: str) -> int:
        try:
            return self._index[frame]
        except AttributeError:
            self._index = {f: k for k, f in enumerate(self.frames)}
            return self._index[frame]


def check_points(points: np.ndarray, source: str | Path, nan_policy: str = "error") -> tuple[np.ndarray, np.ndarray]:
    """Validate a scan: non-empty, finite coordinates.

    Returns (points, invalid) where invalid (N,) bool marks points whose coordinates were not finite.
    With nan_policy "error" such points raise DataError; with "zero" they are moved to the origin (their
    label becomes ignore downstream) and the caller counts them. An empty scan is always an error.
    """
    if points.ndim != 2 or points.shape[1] < 4:
        raise DataError(f"{source}: expected (N, 4) points, got shape {points.shape}")
    if len(points) == 0:
        raise DataError(f"{source}: the scan is empty (0 points)")
    if np.isfinite(points[:, :4]).all():  # fast path: one flat reduction
        return points, np.zeros(len(points), dtype=bool)
    invalid = ~np.isfinite(points[:, :4]).all(axis=1)
    n_bad = int(invalid.sum())
    if n_bad:
        if nan_policy != "zero":
            raise DataError(
                f"{source}: {n_bad} of {len(points)} points have NaN/inf values "
                "(set data.nan_policy=zero to move them to the origin and ignore their labels)"
            )
        points = points.copy()
        points[invalid, :4] = 0.0
    return points, invalid
