"""Label-efficient training splits: frame lists with a documented, seeded rule (splits/README.md).

Methods (percent p of the training frames):
- "uniform": every k-th frame of the time-ordered frame list, `sorted(frames)[::k]` with
  k = round(100 / p). This is the rule of ScaLR (Puy et al., CVPR 2024; valeoai/ScaLR
  datasets/semantic_kitti_for_scalr.py, 1 % = [::100]) and of SLidR's `dataset_skip_step` on
  SemanticKITTI. Frames sort in time order: "SS/NNNNNN" for SemanticKITTI, and for nuScenes the
  reader's key "scene-XXXX/NNN" (scene name / keyframe number), never the random-looking token.
- "random": n = max(1, round(N * p / 100)) frames, the first n of
  `numpy.random.default_rng(seed).permutation(N)` applied to the time-ordered list, returned in
  time order.
- "scenes" (nuScenes only): every k-th scene of the official train scenes sorted by name (the
  1-based k-th, 2k-th, ... scene: SLidR/ALSO's `skip_counter % skip_ratio == 0` rule, which walks
  the scene table in its file order), all keyframes of each.

A split file is text: one frame id per line, `#` starts a comment (whole line or after the id).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import ensure_writable, write_text
from .base import ScanDataset
from .labels import IGNORE, load_yaml

METHODS = ("uniform", "random", "scenes")
DEFAULT_PERCENTS = (0.1, 1.0, 10.0, 100.0)
# Scans per SemanticKITTI training sequence (velodyne/*.bin of the odometry benchmark; 19130 in all)
KITTI_TRAIN_COUNTS = {
    "00": 4541, "01": 1101, "02": 4661, "03": 801, "04": 271,
    "05": 2761, "06": 1101, "07": 1101, "09": 1591, "10": 1201,
}  # fmt: skip
REPRODUCE = "balvit splits --dataset {dataset} --percents {percents} --method {method} --seed {seed} --out {out}{data}"


# --------------------------------------------------------------------------------- the rules


def stride_for(percent: float) -> int:
    """k of the uniform rule: round(100 / percent) (0.1 % -> 1000, 1 % -> 100, 10 % -> 10)."""
    if not (0 < percent <= 100):
        raise ConfigError(f"split percent must be in (0, 100], got {percent}")
    return max(1, int(round(100.0 / percent)))


def count_for(total: int, percent: float) -> int:
    """n of the random rule: max(1, round(total * percent / 100))."""
    stride_for(percent)  # range check
    return max(1, int(round(total * percent / 100.0)))


def make_split(frames: Sequence[str], percent: float, method: str = "uniform", seed: int = 0) -> list[str]:
    """A `percent` % subset of `frames` (ids that sort in time order), returned sorted.

    uniform: sorted(frames)[::round(100 / percent)]; random: seeded sample of
    max(1, round(N * percent / 100)) frames (see the module docstring for the exact draw).
    """
    ordered = sorted(frames)
    if len(set(ordered)) != len(ordered):
        dup = sorted(f for f, c in Counter(ordered).items() if c > 1)
        raise ValueError(f"frame ids must be unique, repeated: {dup[:5]}")
    if not ordered:
        raise ValueError("no frames to split")
    if method == "uniform":
        return ordered[:: stride_for(percent)]
    if method == "random":
        n = count_for(len(ordered), percent)
        picked = np.sort(np.random.default_rng(seed).permutation(len(ordered))[:n])
        return [ordered[k] for k in picked]
    raise ConfigError(f"unknown split method {method!r}: expected 'uniform' or 'random'")


def scene_split(scenes: Sequence[str], percent: float) -> list[str]:
    """Every k-th scene (1-based k-th, 2k-th, ...) of `scenes` in the given order, k = round(100 / p)."""
    k = stride_for(percent)
    chosen = list(scenes)[k - 1 :: k]
    if not chosen:
        raise ConfigError(
            f"{percent:g} % of {len(scenes)} scenes is less than one scene (every {k}-th); "
            "use the frame-level 'uniform' or 'random' method"
        )
    return chosen


def select_frames(dataset: ScanDataset, percent: float, method: str = "uniform", seed: int = 0) -> list[str]:
    """`make_split` on a reader's time-ordered keys (`frame_keys`), returned as its frame ids."""
    keys = list(getattr(dataset, "frame_keys", dataset.frames))
    to_frame = dict(zip(keys, dataset.frames))
    if method == "scenes":
        if not hasattr(dataset, "split_scenes"):
            raise ConfigError(f"method 'scenes' needs a dataset made of scenes (nuScenes), not {dataset.name}")
        scenes = set(scene_split(sorted(dataset.split_scenes), percent))
        return [f for f, s in zip(dataset.frames, dataset.scenes) if s in scenes]
    return [to_frame[k] for k in make_split(keys, percent, method, seed)]


def split_name(percent: float, method: str) -> str:
    """File stem: "1" (uniform), "random_1", "scenes_1"."""
    if method not in METHODS:
        raise ConfigError(f"unknown split method {method!r}: expected one of {', '.join(METHODS)}")
    return f"{percent:g}" if method == "uniform" else f"{method}_{percent:g}"


def kitti_official_frames() -> list[str]:
    """The 19130 SemanticKITTI training frame ids from the official per-sequence scan counts."""
    return [f"{seq}/{k:06d}" for seq, n in KITTI_TRAIN_COUNTS.items() for k in range(n)]


def _official_train_scenes() -> list[str]:
    return list(load_yaml("nuscenes_splits")["train"])


# -------------------------------------------------------------------------------- split files


def read_split_file(path: str | Path) -> list[str]:
    """Frame ids of a split file (blank lines and `#` comments skipped); repeated ids are an error."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: split file is missing") from exc
    frames = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    frames = [f for f in frames if f]
    if not frames:
        raise DataError(f"{path}: split file lists no frames")
    dup = sorted(f for f, c in Counter(frames).items() if c > 1)
    if dup:
        raise DataError(f"{path}: frames listed twice: {dup[:10]}")
    return frames


def write_split_file(path: str | Path, frames: Sequence[str], header: str, notes: Sequence[str] | None = None) -> Path:
    """Write a split file atomically: `# header` lines, then one frame per line (`# note` optional)."""
    lines = [f"# {h}".rstrip() for h in header.splitlines()]
    for k, frame in enumerate(frames):
        lines.append(f"{frame}  # {notes[k]}" if notes else frame)
    return write_text(path, "\n".join(lines) + "\n")


# the shipped frame lists: package data of balvit (`splits/` in a checkout links here)
PACKAGE_SPLITS = Path(__file__).resolve().parents[1] / "splits"


def resolve_split_file(path: str | Path) -> Path:
    """Absolute path as given; a relative one from the working directory, else, for `splits/<...>`,
    the shipped lists (package data), so installed configs find them too."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    tried = [Path.cwd() / p]
    if p.parts and p.parts[0] == "splits":
        tried.append(PACKAGE_SPLITS.joinpath(*p.parts[1:]))
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise DataError(f"split file {path} not found (looked in {', '.join(str(t) for t in tried)})")


# ------------------------------------------------------------------------ class statistics


def frame_class_counts(dataset: ScanDataset, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame point counts of every train class: counts (n, C) int64 and ignored (n,) int64."""
    from tqdm import tqdm

    C = dataset.labels.num_classes
    counts = np.zeros((len(indices), C), dtype=np.int64)
    ignored = np.zeros(len(indices), dtype=np.int64)
    for row, i in enumerate(tqdm(indices, desc=f"class counts ({dataset.name})", disable=None, file=sys.stderr)):
        labels = dataset.load_labels(i)
        hist = np.bincount(labels, minlength=IGNORE + 1)
        counts[row] = hist[:C]
        ignored[row] = hist[IGNORE]
    return counts, ignored


def presence_from_counts(class_names: Sequence[str], counts: np.ndarray, ignored: np.ndarray) -> dict:
    """Aggregate per-frame counts (n, C) into the class-presence dict of `class_presence`."""
    return {
        "num_frames": int(len(counts)),
        "num_points": int(counts.sum() + ignored.sum()),
        "ignored_points": int(ignored.sum()),
        "classes": {
            name: {"frames": int((counts[:, c] > 0).sum()), "points": int(counts[:, c].sum())}
            for c, name in enumerate(class_names)
        },
    }


def class_presence(dataset: ScanDataset, indices: Sequence[int]) -> dict:
    """For the frames `indices`: per class the number of frames containing it and of its points.

    {"num_frames", "num_points", "ignored_points", "classes": {name: {"frames", "points"}}}
    """
    counts, ignored = frame_class_counts(dataset, indices)
    return presence_from_counts(dataset.labels.class_names, counts, ignored)


def format_presence_table(stats: dict, title: str = "") -> str:
    """Markdown table of a class-presence dict; classes in no frame are marked **absent**."""
    n, total = stats["num_frames"], max(stats["num_points"], 1)
    lines = [f"### {title}", ""] if title else []
    lines += [
        f"{n} frames, {stats['num_points']} points ({stats['ignored_points']} ignored, "
        f"{100.0 * stats['ignored_points'] / total:.2f} %)",
        "",
        "| class | frames | % of frames | points | % of points |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, c in stats["classes"].items():
        frames = f"{c['frames']}" if c["frames"] else "**absent**"
        lines.append(
            f"| {name} | {frames} | {100.0 * c['frames'] / max(n, 1):.1f} | {c['points']} | "
            f"{100.0 * c['points'] / total:.3f} |"
        )
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- balvit splits


def _header(dataset_name: str, percent: float, method: str, seed: int, rule: str, total: str, n: int, cmd: str) -> str:
    return "\n".join(
        [
            f"balvit label-efficient split: {dataset_name} train, {percent:g} % ({method})",
            f"rule: {rule}",
            f"from: {total}",
            f"entries: {n}",
            f"reproduce: {cmd}",
        ]
    )


def _rule(method: str, percent: float, seed: int) -> str:
    if method == "uniform":
        return f"sorted(frames)[::{stride_for(percent)}] (every {stride_for(percent)}-th frame in time order, as ScaLR)"
    if method == "random":
        return f"first max(1, round(N*{percent:g}/100)) of numpy.random.default_rng({seed}).permutation(N), time order"
    return f"every {stride_for(percent)}-th official train scene (1-based), all its keyframes (SLidR/ALSO rule)"


def run_splits(
    dataset_name: str,
    out_dir: str | Path,
    percents: Sequence[float] = DEFAULT_PERCENTS,
    method: str = "uniform",
    seed: int = 0,
    data_root: str | Path | None = None,
    version: str = "v1.0-trainval",
    sequences: Sequence[str] | None = None,
) -> list[Path]:
    """Write the split files of `balvit splits` into `out_dir` (e.g. splits/semantickitti).

    `sequences` (SemanticKITTI with data_root) replaces the official training sequences, e.g. for
    the synthetic data that holds only sequence 00.

    Without data_root: SemanticKITTI lists from the official scan counts; nuScenes scene lists
    (method "scenes") only, since sample tokens are unknown without the tables. With data_root the
    user's copy is read, frame lists are written for every method, and `<name>.stats.md` with the
    class presence of each list next to it. Returns the written paths.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown split method {method!r}: expected one of {', '.join(METHODS)}")
    out_dir = Path(out_dir)
    percents = [float(p) for p in percents]
    for p in percents:
        stride_for(p)
    ensure_writable(out_dir, "--out")  # before the dataset is read
    cmd_data = f" --data_root {data_root}" if data_root is not None else ""
    if sequences:
        cmd_data += f" --sequences {','.join(sequences)}"
    if dataset_name == "nuscenes" and version != "v1.0-trainval" and data_root is not None:
        cmd_data += f" --version {version}"
    cmd = REPRODUCE.format(
        dataset=dataset_name, percents=",".join(f"{p:g}" for p in percents), method=method, seed=seed,
        out=out_dir.as_posix(), data=cmd_data,
    )
    if dataset_name == "semantickitti":
        if method == "scenes":
            raise ConfigError("method 'scenes' is for nuScenes; SemanticKITTI uses 'uniform' or 'random'")
        return _kitti_splits(out_dir, percents, method, seed, data_root, cmd, sequences)
    if dataset_name == "nuscenes":
        return _nuscenes_splits(out_dir, percents, method, seed, data_root, version, cmd)
    raise ConfigError(f"unknown dataset {dataset_name!r}: expected semantickitti or nuscenes")


def _write_with_stats(
    out_dir: Path, name: str, frames: list[str], header: str, dataset: ScanDataset | None,
    cache: dict[int, tuple[np.ndarray, int]], notes: list[str] | None = None,
) -> list[Path]:
    paths = [write_split_file(out_dir / f"{name}.txt", frames, header, notes)]
    if dataset is not None and dataset.has_labels:
        indices = [dataset.frame_index(f) for f in frames]
        todo = [i for i in indices if i not in cache]
        if todo:
            counts, ignored = frame_class_counts(dataset, todo)
            cache.update({i: (counts[r], int(ignored[r])) for r, i in enumerate(todo)})
        counts = np.stack([cache[i][0] for i in indices])
        ignored = np.array([cache[i][1] for i in indices], dtype=np.int64)
        stats = presence_from_counts(dataset.labels.class_names, counts, ignored)
        title = f"{dataset.name} {name}: class presence"
        paths.append(write_text(out_dir / f"{name}.stats.md", format_presence_table(stats, title)))
    return paths


def _kitti_splits(out_dir: Path, percents: list[float], method: str, seed: int, data_root, cmd: str,
                  sequences: Sequence[str] | None = None) -> list[Path]:
    dataset = None
    if data_root is None:
        frames = kitti_official_frames()
        source = f"{len(frames)} frames = official scan counts of sequences " + ", ".join(
            f"{s}: {n}" for s, n in KITTI_TRAIN_COUNTS.items()
        )
    else:
        from .semantickitti import SemanticKITTI

        dataset = SemanticKITTI(data_root, "train", sequences=list(sequences) if sequences else None)
        frames = dataset.frames
        per_seq = Counter(f.split("/")[0] for f in frames)
        source = f"{len(frames)} frames found in {dataset.root}: " + ", ".join(f"{s}: {n}" for s, n in sorted(per_seq.items()))
        if dict(per_seq) != KITTI_TRAIN_COUNTS:
            print(f"note: {dataset.root} is not the complete official training set ({source})", file=sys.stderr)
        if not dataset.has_labels:  # said, not silently left out
            print(f"note: no class-presence statistics: {dataset.missing_labels()[0]}", file=sys.stderr)
    written: list[Path] = []
    cache: dict[int, tuple[np.ndarray, int]] = {}
    for p in percents:
        chosen = make_split(frames, p, method, seed)
        header = _header("SemanticKITTI", p, method, seed, _rule(method, p, seed), source, len(chosen), cmd)
        header += "\nformat: one frame per line, SS/NNNNNN = sequences/SS/velodyne/NNNNNN.bin"
        written += _write_with_stats(out_dir, split_name(p, method), chosen, header, dataset, cache)
    return written


def _nuscenes_splits(
    out_dir: Path, percents: list[float], method: str, seed: int, data_root, version: str, cmd: str
) -> list[Path]:
    dataset = None
    if data_root is not None:
        from .nuscenes import NuScenes

        dataset = NuScenes(data_root, "train", version=version)
        if not dataset.has_labels:  # said, not silently left out
            print(f"note: no class-presence statistics: {dataset.missing_labels()[0]}", file=sys.stderr)
        scene_pool = sorted(dataset.split_scenes)
        pool_text = f"{len(scene_pool)} official {dataset.split} scenes (nuscenes-devkit splits.py), sorted by name"
    elif method == "scenes":
        scene_pool = sorted(_official_train_scenes())
        pool_text = f"{len(scene_pool)} official train scenes (nuscenes-devkit splits.py), sorted by name"
    else:
        raise DataError(
            "nuScenes frame lists need the dataset (--data_root): the LIDAR_TOP sample_data tokens are only "
            "known from its tables; without it only the scene lists (--method scenes) can be written"
        )

    written: list[Path] = []
    if method == "scenes":
        feasible = [p for p in percents if stride_for(p) <= len(scene_pool)]
        for p in percents:
            if p not in feasible:
                print(f"note: {p:g} % of {len(scene_pool)} scenes is less than one scene: no scene list", file=sys.stderr)
        percents = feasible
        for p in percents:
            chosen = scene_split(scene_pool, p)
            header = _header("nuScenes", p, method, seed, _rule(method, p, seed), pool_text, len(chosen), cmd)
            header += "\nformat: one scene name per line (all its keyframes; --data_root also writes them as frames)"
            written.append(write_split_file(out_dir / f"{split_name(p, method)}.txt", chosen, header))
    if dataset is None:
        return written

    key_of = dict(zip(dataset.frames, dataset.frame_keys))
    source = f"{len(dataset)} keyframes of {len(set(dataset.scenes))} {dataset.split} scenes in {dataset.root / version}"
    cache: dict[int, tuple[np.ndarray, int]] = {}
    for p in percents:
        name = split_name(p, method) + ("_frames" if method == "scenes" else "")
        chosen = select_frames(dataset, p, method, seed)
        if not chosen:
            raise DataError(f"{dataset.root / version}: the {p:g} % {method} split selects no frames of this copy")
        header = _header("nuScenes", p, method, seed, _rule(method, p, seed), source, len(chosen), cmd)
        header += "\nformat: one LIDAR_TOP sample_data token per line  # scene name / keyframe number"
        written += _write_with_stats(out_dir, name, chosen, header, dataset, cache, [key_of[f] for f in chosen])
    return written
