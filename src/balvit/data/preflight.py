"""Dataset pre-flight check: find every missing, truncated or inconsistent file of the configured
splits before a run reads them, by file sizes alone (no point is loaded).

What is checked, in the official layouts the readers implement (semantickitti.py, nuscenes.py):

SemanticKITTI (semantic-kitti-api layout)
    every sequence of the split has velodyne/ (and labels/ unless it is the test split);
    every scan NNNNNN.bin is a non-empty multiple of 16 bytes (x, y, z, remission float32);
    every label NNNNNN.label exists and holds 4 bytes (uint32) per point of its scan;
    a label without its scan (a scan was lost) is named;
    calib.txt parses (P0..P3, Tr: an error when data.cameras needs it, else a warning);
    poses.txt, when present, has one pose per scan (not read by training: a warning);
    with data.cameras: every image_2/NNNNNN.png exists.
nuScenes-lidarseg (nuScenes devkit layout)
    the tables <version>/{scene,sample,sample_data,category}.json, lidarseg.json for a labelled split,
    calibrated_sensor.json and ego_pose.json with data.cameras;
    every LIDAR_TOP keyframe's .pcd.bin is a non-empty multiple of 20 bytes (5 float32);
    every keyframe has a lidarseg.json entry whose <token>_lidarseg.bin holds 1 byte per point;
    with data.cameras: the six camera records resolve and their images exist.
Both
    data.split_file exists, parses, and names only frames of the training split.

All problems are collected and returned together (`preflight`); the paths come from the readers'
own path methods (scan_path, label_path, load_cameras), so the check sees what a run would read.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..errors import DataError

ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Problem:
    """One problem: the file (or folder / table) at fault and what is wrong with it."""

    path: str
    problem: str
    severity: str = ERROR  # "error" fails the check; "warning" is reported only


@dataclass
class PreflightReport:
    problems: list[Problem] = field(default_factory=list)
    frames: int = 0  # frames checked (over all splits)
    files: int = 0  # files stat-ed
    seconds: float = 0.0
    splits: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def rate(self) -> float:
        """Files checked per second."""
        return self.files / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (f"{len(self.errors)} error(s), {len(self.warnings)} warning(s) in {self.frames} frames of "
                f"{', '.join(self.splits) or 'no split'} ({self.files} files checked in {self.seconds:.2f} s, "
                f"{self.rate:,.0f} files/s)")


def format_problems(problems: list[Problem], limit: int | None = None) -> str:
    """A plain-text table: severity, file, problem (errors first); `limit` rows at most."""
    rows = sorted(problems, key=lambda p: (p.severity != ERROR, p.path))
    shown = rows if limit is None else rows[:limit]
    width = min(max((len(p.path) for p in shown), default=4), 90)
    lines = [f"{'severity':<8}  {'file':<{width}}  problem"]
    lines += [f"{p.severity:<8}  {p.path:<{width}}  {p.problem}" for p in shown]
    if len(rows) > len(shown):
        lines.append(f"... and {len(rows) - len(shown)} more")
    return "\n".join(lines)


def preflight(cfg, splits: Iterable[str] | None = None, labels: bool = True) -> list[Problem]:
    """All problems of the configured splits (`cfg`: a Config or its DataConfig); empty = ready."""
    return run_preflight(cfg, splits, labels).problems


def check_or_raise(cfg, splits: Iterable[str] | None = None, limit: int = 20, labels: bool = True) -> PreflightReport:
    """`run_preflight`, raising one DataError that lists the errors (the trainer calls this before
    step 1, eval and predict before the first frame); warnings are returned in the report."""
    report = run_preflight(cfg, splits, labels)
    if report.errors:
        raise DataError(f"pre-flight check of {_data(cfg).root}: {report.summary()}\n"
                        f"{format_problems(report.errors, limit)}\n(`balvit check CONFIG --data_root DIR` lists all)")
    return report


def run_preflight(cfg, splits: Iterable[str] | None = None, labels: bool = True) -> PreflightReport:
    """Check `splits` (default: data.train_split and data.val_split) of the configured dataset;
    `labels=False`: only the scans (and cameras) are needed (prediction, distillation)."""
    data = _data(cfg)
    wanted = list(dict.fromkeys(splits if splits is not None else (data.train_split, data.val_split)))
    report = PreflightReport(splits=wanted)
    start = time.perf_counter()
    if not data.root:
        report.problems.append(Problem("data.root", "no dataset root given: pass --data_root DIR"))
    elif data.dataset == "semantickitti":
        _KittiCheck(data, report, labels).run(wanted)
    elif data.dataset == "nuscenes":
        _NuScenesCheck(data, report, labels).run(wanted)
    else:
        report.problems.append(Problem("data.dataset", f"unknown dataset {data.dataset!r}"))
    report.seconds = time.perf_counter() - start
    return report


def _data(cfg):
    return getattr(cfg, "data", cfg)


def _reason(exc: DataError, path: Path) -> str:
    """The message of a reader's DataError without its leading "<path>: "."""
    text = str(exc)
    return text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text


def _size(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------------------------ common


class _Check:
    def __init__(self, data, report: PreflightReport, labels: bool = True):
        self.data = data
        self.report = report
        self.labels = labels  # False: the labels are not needed (not checked)

    def add(self, path, problem: str, severity: str = ERROR) -> None:
        self.report.problems.append(Problem(str(path), problem, severity))

    def stat(self, path: Path) -> int | None:
        self.report.files += 1
        return _size(path)

    def check_scan(self, path: Path, record: int, layout: str) -> int | None:
        """Points in the scan at `path` (None when it is missing or broken; the problem is added)."""
        size = self.stat(path)
        if size is None:
            self.add(path, "scan is missing")
        elif size == 0:
            self.add(path, "scan is empty (0 bytes)")
        elif size % record:
            self.add(path, f"size {size} bytes is not a multiple of {record} ({layout}): truncated?")
        else:
            return size // record
        return None

    def check_labels(self, path: Path, n: int | None, record: int, what: str, scan: Path) -> None:
        size = self.stat(path)
        if size is None:
            self.add(path, f"{what} is missing (scan {scan.name})")
        elif size % record:
            self.add(path, f"size {size} bytes is not a multiple of {record}: truncated?")
        elif n is not None and size // record != n:
            self.add(path, f"{size // record} labels, but the scan {scan.name} has {n} points")

    def check_split_file(self, train_frames: set[str] | None, where: str) -> None:
        """data.split_file parses and names only frames of the training split (None: unknown)."""
        if not self.data.split_file:
            return
        from .splits import read_split_file, resolve_split_file

        try:
            path = resolve_split_file(self.data.split_file)
            frames = read_split_file(path)
        except DataError as exc:
            self.add(self.data.split_file, str(exc))
            return
        if train_frames is None:
            return
        missing = [f for f in frames if f not in train_frames]
        for f in missing:
            hint = " (a scene name: list its frames, see splits/README.md)" if f.startswith("scene-") else ""
            self.add(path, f"names frame {f}, which is not in {where}{hint}")


# ------------------------------------------------------------------------------ SemanticKITTI


class _KittiCheck(_Check):
    def run(self, splits: list[str]) -> None:
        from .semantickitti import find_sequences_dir

        try:
            self.root = find_sequences_dir(self.data.root)
        except DataError as exc:
            self.add(self.data.root, str(exc))
            return
        self.checked_seqs: set[str] = set()
        for split in splits:
            frames = self.check_split(split)
            if split == self.data.train_split:
                self.check_split_file(frames, f"the {split} split under {self.root}")

    def sequences(self, split: str) -> list[str]:
        from .semantickitti import official_sequences

        chosen = {self.data.train_split: self.data.train_sequences, self.data.val_split: self.data.val_sequences}.get(split)
        if chosen:
            return sorted(f"{int(s):02d}" if str(s).isdigit() else str(s) for s in chosen)
        return official_sequences(split)

    def check_split(self, split: str) -> set[str] | None:
        from .semantickitti import LABEL_BYTES, POINT_BYTES, SemanticKITTI

        try:
            seqs = self.sequences(split)
        except DataError as exc:
            self.add(self.data.root, str(exc))
            return None
        labelled = split != "test" and self.labels
        present = []
        for seq in seqs:
            velo = self.root / seq / "velodyne"
            if not velo.is_dir():
                key = {self.data.train_split: "train_sequences", self.data.val_split: "val_sequences"}.get(split)
                hint = (f" (a partial copy: set data.{key})" if key else
                        f" (a partial copy: set data.val_split={split} and data.val_sequences)")
                self.add(velo, f"missing: sequence {seq} belongs to split {split!r}{hint}")
                continue
            if not any(name.endswith(".bin") for name in os.listdir(velo)):
                self.add(velo, "no .bin scans")
                continue
            if labelled and not (self.root / seq / "labels").is_dir():
                self.add(self.root / seq / "labels", f"missing: split {split!r} is labelled")
            present.append(seq)
        if not present:
            return set()
        try:
            reader = SemanticKITTI(self.root, split, sequences=present, nan_policy=self.data.nan_policy,
                                   orphan_labels="ignore")  # check_orphan_labels lists them all
        except DataError as exc:
            self.add(self.root, f"split {split!r}: {exc}")
            return None
        calib_ok = {seq: self.check_sequence_files(seq, reader) for seq in present if seq not in self.checked_seqs}
        self.checked_seqs.update(present)
        labels_dirs = {seq: (self.root / seq / "labels").is_dir() for seq in present}
        for i in range(len(reader)):
            seq = reader.frames[i].split("/")[0]
            scan = reader.scan_path(i)
            n = self.check_scan(scan, POINT_BYTES, "x, y, z, remission float32")
            if labelled and labels_dirs[seq]:
                self.check_labels(reader.label_path(i), n, LABEL_BYTES, "label file", scan)
            if self.data.cameras and calib_ok.get(seq, True):
                self.check_cameras(reader, i)
        self.report.frames += len(reader)
        if labelled:
            self.check_orphan_labels(reader, [s for s in present if labels_dirs[s]])
        return set(reader.frames)

    def check_sequence_files(self, seq: str, reader) -> bool:
        """calib.txt and poses.txt of one sequence; True when the calibration is usable."""
        from .semantickitti import _read_poses, read_calib

        calib = self.root / seq / "calib.txt"
        try:
            read_calib(calib)
        except DataError as exc:
            if self.data.cameras:
                self.add(calib, _reason(exc, calib))
            else:
                self.add(calib, f"{_reason(exc, calib)} (not needed without data.cameras)", WARNING)
            usable = False
        else:
            usable = True
        poses = self.root / seq / "poses.txt"
        stems = [int(f.split("/")[1]) for f in reader.frames if f.startswith(f"{seq}/")]
        if not poses.is_file():
            self.add(poses, "missing (not read by training; tools that stack scans need it)", WARNING)
            return usable
        try:
            n_poses = len(_read_poses(poses))
        except DataError as exc:
            self.add(poses, _reason(exc, poses), WARNING)
        else:
            if n_poses <= max(stems):
                self.add(poses, f"{n_poses} poses, but scans go up to {max(stems):06d}.bin", WARNING)
        return usable

    def check_cameras(self, reader, i: int) -> None:
        try:
            cams = reader.load_cameras(i)  # resolves calib + image header: the run's own path logic
        except DataError as exc:
            self.add(reader.scan_path(i), f"camera: {exc}")
            return
        self.report.files += len(cams)

    def check_orphan_labels(self, reader, seqs: list[str]) -> None:
        frames = set(reader.frames)
        for seq in seqs:
            labels = self.root / seq / "labels"
            for name in sorted(os.listdir(labels)):
                if name.endswith(".label") and f"{seq}/{name[:-6]}" not in frames:
                    self.add(labels / name, f"label file without its scan velodyne/{name[:-6]}.bin (scan missing?)")


# ----------------------------------------------------------------------------------- nuScenes


class _NuScenesCheck(_Check):
    CORE_TABLES = ("scene", "sample", "sample_data", "category")

    def run(self, splits: list[str]) -> None:
        from .nuscenes import find_nuscenes_root

        version = self.data.version
        try:
            self.root = find_nuscenes_root(self.data.root, version)
        except DataError as exc:
            self.add(self.data.root, str(exc))
            return
        tables = self.root / version
        needed = list(self.CORE_TABLES)
        if self.labels and any(s != "test" for s in splits):
            needed.append("lidarseg")
        if self.data.cameras:
            needed += ["calibrated_sensor", "ego_pose"]
        missing = [t for t in needed if not (tables / f"{t}.json").is_file()]
        for t in missing:
            self.add(tables / f"{t}.json", "nuScenes table is missing")
        self.report.files += len(needed)
        if any(t in missing for t in self.CORE_TABLES):
            self.add(tables, "frames not checked: the scene/sample/sample_data/category tables are needed to list them",
                     WARNING)
            return
        for split in splits:
            frames = self.check_split(split, "lidarseg" in missing)
            if split == self.data.train_split:
                self.check_split_file(frames, f"the {split} split of {tables}")

    def check_split(self, split: str, no_lidarseg: bool) -> set[str] | None:
        from .nuscenes import POINT_BYTES, NuScenes

        try:
            reader = NuScenes(self.root, split, version=self.data.version, cameras=False, nan_policy=self.data.nan_policy)
        except DataError as exc:
            self.add(self.root / self.data.version, f"split {split!r}: {exc}")
            return None
        cameras = self.data.cameras
        if cameras:
            try:
                reader.prepare_cameras()
            except DataError as exc:
                self.add(self.root / self.data.version, f"camera geometry: {exc}")
                cameras = False
        labelled = reader.split != "test" and not no_lidarseg and self.labels
        lidarseg = self.root / self.data.version / "lidarseg.json"
        for i in range(len(reader)):
            scan = reader.scan_path(i)
            n = self.check_scan(scan, POINT_BYTES, "x, y, z, intensity, ring float32")
            if labelled:
                if reader.has_label_entry(i):
                    self.check_labels(reader.label_path(i), n, 1, "lidarseg label file", scan)
                else:
                    self.add(lidarseg, f"no entry for LIDAR_TOP sample_data {reader.frames[i]} ({scan.name})")
            if cameras:
                self.check_cameras(reader, i)
        self.report.frames += len(reader)
        return set(reader.frames)

    def check_cameras(self, reader, i: int) -> None:
        try:
            cams = reader.load_cameras(i)
        except DataError as exc:
            self.add(reader.scan_path(i), f"camera: {exc}")
            return
        for cam in cams:
            if self.stat(cam.image_path) is None:
                self.add(cam.image_path, f"camera image is missing ({cam.name} of {reader.scan_path(i).name})")
