"""Point clouds from single files, outside any dataset layout, and per-file prediction outputs.

Formats (the reader is chosen by the file name's ending):

    .bin       KITTI velodyne scan: float32 (N, 4) x, y, z, remission 0..1 (SemanticKITTI layout)
    .pcd.bin   nuScenes LIDAR_TOP scan: float32 (N, 5) x, y, z, intensity 0..255, ring (nuScenes
               devkit LidarPointCloud.from_file); rotated into the library frame like the nuScenes reader
    .pcd       PCL point cloud data, ascii / binary / binary_compressed (PCL PCD v0.7 spec), via pypcd4
    .ply       Stanford PLY (ascii / binary), element "vertex", via plyfile
    .las/.laz  ASPRS LAS 1.0-1.4 (LAZ through the lazrs backend), via laspy
    .npy/.npz  numpy arrays: (N, 3) / (N, 4) x, y, z[, intensity], a structured array with named
               fields, or an .npz holding "points" or separate x, y, z[, intensity] arrays

`read_point_file` returns float32 (N, 4) x, y, z, intensity in the library's convention (DESIGN.md
section 2): metres, x forward, y left, z up; the intensity on the scale of the dataset the model was
trained on (SemanticKITTI remission 0..1, nuScenes intensity 0..255; `data.intensity_scale` is then
applied by the dataset code as in training). It says which field was taken as intensity and how it was
scaled (`PointFile.describe()`), and refuses, with one line naming the file, a file that has no
intensity (unless `intensity="zero"` is asked for), an unknown field, negative values or values above
the field's full scale. The full scale of a field is known from the format (KITTI remission 1, nuScenes
255, LAS 65535: the LAS 1.4 spec normalises intensity to 16 bits), from an unsigned integer type (its
maximum), from `intensity_max`, or else inferred from the values (max <= 1 -> 1, <= 255 -> 255), which
the description then says.

Outputs: `<stem>.label` (SemanticKITTI raw ids, uint32, as the semantic-kitti-api reads them),
`<stem>_lidarseg.bin` (nuScenes challenge ids 1..16, uint8), `<stem>.npy` (train ids, uint8) and a
coloured `<stem>.ply` (the dataset's official colour map: labels/*.yaml), all written atomically.
"""

from __future__ import annotations

import glob
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, DataError
from ..io import write_bytes
from .base import check_points
from .labels import IGNORE, LabelSpec

# file-name ending -> format; ".pcd.bin" is tested before ".bin"
FORMATS = {
    ".pcd.bin": "nuscenes-bin",
    ".bin": "kitti-bin",
    ".pcd": "pcd",
    ".ply": "ply",
    ".las": "las",
    ".laz": "laz",
    ".npy": "npy",
    ".npz": "npz",
}
# fields taken as intensity by intensity="auto", in this order (matched case-insensitively)
INTENSITY_FIELDS = ("intensity", "remission", "reflectance", "scalar_intensity", "reflectivity", "i")
# the intensity scale each dataset's models were trained on (DESIGN.md section 2)
DATASET_FULL_SCALE = {"semantickitti": 1.0, "nuscenes": 255.0}
OUTPUT_FORMATS = ("label", "lidarseg", "npy", "ply")
FAR_FROM_SENSOR = 1000.0  # metres: coordinates beyond this are noted (georeferenced, not sensor-centred)


def point_format(path: str | Path) -> str:
    """The format of a point file from its name ("kitti-bin", "nuscenes-bin", "pcd", ...)."""
    name = Path(path).name.lower()
    for ending, fmt in FORMATS.items():
        if name.endswith(ending):
            return fmt
    raise DataError(f"{path}: unknown point-cloud file type: expected one of {', '.join(FORMATS)}")


def output_stem(path: str | Path) -> str:
    """The file name without its point-file ending ("000000.bin" -> "000000", "a.pcd.bin" -> "a")."""
    name = Path(path).name
    for ending in FORMATS:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return Path(path).stem


# --------------------------------------------------------------------------------- inputs


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files, folders and glob patterns -> a sorted list of point files (each once).

    A folder contributes its files (not its subfolders); every file taken must have a known ending,
    otherwise the whole call is refused naming the file (pass a glob such as DIR/*.bin to pick).
    A pattern that matches nothing, a missing path or a folder without files is refused too.
    """
    if not inputs:
        raise DataError("no input files given")
    found: dict[Path, Path] = {}
    for item in inputs:
        text = str(item)
        if any(c in text for c in "*?["):
            matches = [Path(m) for m in glob.glob(text, recursive=True)]
            files = [m for m in matches if m.is_file()]
            if not files:
                raise DataError(f"{text}: the pattern matches no files")
        else:
            p = Path(text).expanduser()
            if p.is_dir():
                files = [c for c in p.iterdir() if c.is_file() and not c.name.startswith(".")]
                if not files:
                    raise DataError(f"{p}: the folder holds no files")
            elif p.is_file():
                files = [p]
            else:
                raise DataError(f"{p}: no such file or folder")
        for f in files:
            point_format(f)  # refuses unknown endings, naming the file
            found.setdefault(f.resolve(), f)
    return sorted(found.values(), key=lambda p: str(p))


def output_stems(paths: Sequence[str | Path]) -> list[str]:
    """Output names for `paths`, one each and all different: the stem, or, where two inputs share a
    stem, the stem below the inputs' common folder ("a/000000", "b/000000"), or, where even those
    collide ("x.bin" and "x.ply"), the whole file name below it."""
    paths = [Path(p).resolve() for p in paths]
    stems = [output_stem(p) for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    common = Path(os.path.commonpath([p.parent for p in paths]))
    out = [(p.parent.relative_to(common) / s).as_posix() for p, s in zip(paths, stems)]
    if len(set(out)) != len(out):
        out = [p.relative_to(common).as_posix() for p in paths]
    return out


# --------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class PointFile:
    """One point file read into the library's convention, and how."""

    path: Path
    format: str
    points: np.ndarray  # (N, 4) float32 x, y, z, intensity (model's dataset scale)
    invalid: np.ndarray  # (N,) bool: non-finite points moved to the origin (nan_policy "zero")
    fields: tuple[str, ...]  # the fields the file holds
    intensity_field: str | None  # the field taken as intensity; None: intensity="zero"
    stored_range: tuple[float, float] | None  # min, max of that field as stored
    full_scale: float | None  # the stored value that means "full intensity"
    full_scale_source: str  # where full_scale comes from ("KITTI remission", "uint16", "values", ...)
    scale: float  # factor applied: DATASET_FULL_SCALE[dataset] / full_scale
    dataset: str  # whose convention the intensity follows
    frame: str  # what was done to the coordinates
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """One line: the file, its format and point count, the intensity field and its scaling."""
        n = len(self.points)
        target = {"semantickitti": "SemanticKITTI remission 0..1", "nuscenes": "nuScenes intensity 0..255"}[self.dataset]
        if self.intensity_field is None:
            inten = "intensity 0 for every point (intensity='zero')"
        else:
            lo, hi = self.stored_range
            inten = (f"intensity = field {self.intensity_field!r} (stored {lo:g}..{hi:g}, full scale {self.full_scale:g} "
                     f"from {self.full_scale_source}) x {self.scale:g} -> {target}")
        text = f"{self.path}: {self.format}, {n} points; {inten}; coordinates {self.frame}"
        if self.invalid.any():
            text += f"; {int(self.invalid.sum())} non-finite points moved to the origin"
        return text + "".join(f"; note: {note}" for note in self.notes)


@dataclass
class _Columns:
    """What a format reader hands over: coordinates and the fields that may hold intensity."""

    xyz: np.ndarray  # (N, 3) in the library frame
    fields: tuple[str, ...]
    get: Callable[[str], np.ndarray]  # field name (as in `fields`) -> (N,) values
    frame: str
    known_scale: dict[str, tuple[float, str]] = field(default_factory=dict)  # field -> (full scale, source)


def read_point_file(
    path: str | Path,
    *,
    dataset: str = "semantickitti",
    intensity: str = "auto",
    intensity_max: float | None = None,
    nan_policy: str = "error",
) -> PointFile:
    """Read one point file into float32 (N, 4) x, y, z, intensity for a model of `dataset`.

    intensity: "auto" (the first of INTENSITY_FIELDS the file has), a field name, or "zero".
    intensity_max: the stored value of full intensity (e.g. 255), when the format does not fix it.
    nan_policy: "error" refuses non-finite values; "zero" moves such points to the origin (`invalid`).
    """
    if dataset not in DATASET_FULL_SCALE:
        raise ConfigError(f"unknown dataset {dataset!r} for the intensity scale: expected semantickitti or nuscenes")
    if intensity_max is not None and not intensity_max > 0:
        raise ConfigError(f"intensity_max must be positive, got {intensity_max}")
    path = Path(path)
    fmt = point_format(path)
    if not path.is_file():
        raise DataError(f"{path}: point file is missing")
    cols = _READERS[fmt](path)
    notes: list[str] = []
    xyz = cols.xyz
    n = len(xyz)
    points = np.empty((n, 4), dtype=np.float32)
    points[:, :3] = xyz
    if n and np.isfinite(xyz).all():
        far = float(np.abs(xyz).max())
        if far > FAR_FROM_SENSOR:
            notes.append(f"coordinates reach {far:.0f} m from the origin: the models expect sensor-centred scans")

    if intensity == "zero":
        points[:, 3] = 0.0
        chosen = stored = full = None
        source, scale = "", 0.0
    else:
        chosen = _choose_intensity(path, cols.fields, intensity)
        values = np.asarray(cols.get(chosen))
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        lo = float(finite.min()) if finite.size else 0.0
        hi = float(finite.max()) if finite.size else 0.0
        stored = (lo, hi)
        if lo < 0:
            raise DataError(f"{path}: intensity field {chosen!r} has negative values (min {lo:g}): not an intensity; "
                            "name another field with intensity=FIELD or use intensity='zero'")
        full, source = _full_scale(path, chosen, values.dtype, hi, cols.known_scale.get(chosen), intensity_max, notes)
        scale = DATASET_FULL_SCALE[dataset] / full
        points[:, 3] = values.astype(np.float64) * scale
        if finite.size and hi == 0.0:
            notes.append(f"field {chosen!r} is 0 everywhere (not recorded?)")
    points, invalid = check_points(points, path, nan_policy)
    return PointFile(path=path, format=fmt, points=points, invalid=invalid, fields=cols.fields, intensity_field=chosen,
                     stored_range=stored, full_scale=full, full_scale_source=source, scale=scale, dataset=dataset,
                     frame=cols.frame, notes=tuple(notes))


def read_field(path: str | Path, name: str) -> np.ndarray | None:
    """The values (N,) of the field `name` (matched case-insensitively) of a point file, as stored, or
    None when the file has no such field (e.g. "ring": the laser ring of nuScenes .pcd.bin scans and of
    many ROS-recorded .pcd files)."""
    path = Path(path)
    cols = _READERS[point_format(path)](path)
    lower = {f.lower(): f for f in cols.fields}
    if name.lower() not in lower:
        return None
    return np.asarray(cols.get(lower[name.lower()]))


def _choose_intensity(path: Path, fields: tuple[str, ...], intensity: str) -> str:
    lower = {f.lower(): f for f in fields}
    if intensity == "auto":
        for name in INTENSITY_FIELDS:
            if name in lower:
                return lower[name]
        raise DataError(
            f"{path}: no intensity field (fields: {', '.join(fields)}): pass intensity='zero' to give every point "
            "intensity 0 (the model then sees no intensity), or intensity=FIELD to take another field"
        )
    if intensity in fields:
        return intensity
    if intensity.lower() in lower:
        return lower[intensity.lower()]
    raise DataError(f"{path}: no field {intensity!r} to take as intensity (fields: {', '.join(fields)})")


def _full_scale(path: Path, name: str, dtype: np.dtype, hi: float, known: tuple[float, str] | None,
                intensity_max: float | None, notes: list[str]) -> tuple[float, str]:
    """The stored value of full intensity, and where it comes from; refuses values above it."""
    if intensity_max is not None:
        full, source = float(intensity_max), "intensity_max"
    elif known is not None:
        full, source = known
    elif dtype.kind == "u":
        full, source = float(np.iinfo(dtype).max), f"{dtype.name} range"
    elif hi <= 1.0:
        full, source = 1.0, "values (max <= 1)"
    elif hi <= 255.0:
        full, source = 255.0, "values (max <= 255)"
    else:
        raise DataError(f"{path}: intensity field {name!r} reaches {hi:g}, beyond 0..1 and 0..255: pass "
                        "intensity_max=FULL_SCALE (the stored value of full intensity)")
    if hi > full:
        hint = " (pass intensity_max=255 if the file stores 0..255)" if hi <= 255 and full < 255 else ""
        raise DataError(f"{path}: intensity field {name!r} reaches {hi:g}, above its full scale {full:g} "
                        f"({source}){hint}")
    if source == "LAS spec (16-bit)" and 0 < hi <= 255:
        notes.append("all LAS intensities are <= 255: if the writer stored 0..255, pass intensity_max=255")
    return full, source


# ------------------------------------------------------------------------- format readers


def _kitti_bin(path: Path) -> _Columns:
    from .semantickitti import POINT_BYTES

    size = path.stat().st_size
    if size % POINT_BYTES:
        raise DataError(f"{path}: size {size} bytes is not a multiple of {POINT_BYTES} "
                        "(KITTI .bin: x, y, z, remission float32): truncated, or another layout?")
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    return _Columns(xyz=raw[:, :3], fields=("x", "y", "z", "remission"), get=lambda _: raw[:, 3],
                    frame="as stored (KITTI velodyne: x forward, y left, z up)",
                    known_scale={"remission": (1.0, "KITTI remission")})


def _nuscenes_bin(path: Path) -> _Columns:
    from .nuscenes import POINT_BYTES, POINT_FIELDS, lidar_top_to_library

    size = path.stat().st_size
    if size % POINT_BYTES:
        raise DataError(f"{path}: size {size} bytes is not a multiple of {POINT_BYTES} "
                        "(nuScenes .pcd.bin: x, y, z, intensity, ring float32): truncated?")
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, POINT_FIELDS)
    lib = lidar_top_to_library(raw)  # (N, 4) x forward, y left, z up, intensity
    columns = {"intensity": lib[:, 3], "ring": raw[:, 4]}
    return _Columns(xyz=lib[:, :3], fields=("x", "y", "z", "intensity", "ring"), get=columns.__getitem__,
                    frame="rotated from nuScenes LIDAR_TOP (x right, y forward) to x forward, y left, z up",
                    known_scale={"intensity": (255.0, "nuScenes intensity")})


def _structured(path: Path, data: np.ndarray, what: str, frame: str = "as stored (taken as x forward, y left, z up)") -> _Columns:
    """Columns of a structured array with fields x, y, z (any case) and more."""
    names = tuple(data.dtype.names or ())
    lower = {n.lower(): n for n in names}
    missing = [a for a in "xyz" if a not in lower]
    if missing:
        raise DataError(f"{path}: {what} has no {', '.join(missing)} field (fields: {', '.join(names) or 'none'})")
    xyz = np.stack([np.asarray(data[lower[a]], dtype=np.float64) for a in "xyz"], axis=1)
    scalar = tuple(n for n in names if data.dtype[n].shape == ())
    return _Columns(xyz=xyz, fields=scalar, get=lambda n: np.asarray(data[n]), frame=frame)


def _pcd(path: Path) -> _Columns:
    from pydantic import ValidationError
    from pypcd4 import PointCloud

    try:
        pc = PointCloud.from_path(path)
    except (ValidationError, ValueError, RuntimeError, KeyError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable PCD file ({_first_line(exc)})") from exc
    data = np.atleast_1d(pc.pc_data)
    if len(data) != pc.metadata.points:
        raise DataError(f"{path}: header says {pc.metadata.points} points, the data holds {len(data)}: truncated?")
    return _structured(path, data, f"PCD ({pc.metadata.data.value})")


def _ply(path: Path) -> _Columns:
    from plyfile import PlyData, PlyParseError

    try:
        ply = PlyData.read(str(path))
    except (PlyParseError, ValueError, EOFError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: not a readable PLY file ({_first_line(exc)})") from exc
    if "vertex" not in [e.name for e in ply.elements]:
        raise DataError(f"{path}: PLY file has no 'vertex' element (elements: {', '.join(e.name for e in ply.elements)})")
    return _structured(path, ply["vertex"].data, "PLY vertex element")


def _las(path: Path) -> _Columns:
    import laspy

    if path.suffix.lower() == ".laz" and not laspy.LazBackend.detect_available():
        raise DataError(f"{path}: .laz needs a LAZ backend: install laspy[lazrs] (or read the .las)")
    try:
        las = laspy.read(path)
    except (laspy.errors.LaspyException, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a readable LAS/LAZ file ({_first_line(exc)})") from exc
    xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    names = tuple(n for n in las.point_format.dimension_names if n not in ("X", "Y", "Z"))
    return _Columns(xyz=xyz, fields=names, get=lambda n: np.asarray(las[n]),
                    frame="as stored (scaled LAS coordinates, taken as x forward, y left, z up)",
                    known_scale={"intensity": (65535.0, "LAS spec (16-bit)")})


def _array(path: Path, arr: np.ndarray, what: str) -> _Columns:
    if arr.dtype.names:
        return _structured(path, arr.reshape(-1), what)
    if arr.ndim != 2 or arr.shape[1] not in (3, 4) or arr.dtype.kind not in "fiu":
        raise DataError(f"{path}: {what} has shape {arr.shape} ({arr.dtype}): expected numbers (N, 3) x, y, z "
                        "or (N, 4) x, y, z, intensity")
    fields = ("x", "y", "z", "intensity")[: arr.shape[1]]
    return _Columns(xyz=arr[:, :3], fields=fields, get=lambda _: arr[:, 3],
                    frame="as stored (taken as x forward, y left, z up)")


def _npy(path: Path) -> _Columns:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({_first_line(exc)})") from exc
    return _array(path, arr, ".npy array")


def _npz(path: Path) -> _Columns:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({_first_line(exc)})") from exc
    if "points" in arrays:
        return _array(path, arrays["points"], "array 'points'")
    lower = {k.lower(): k for k in arrays}
    if all(a in lower for a in "xyz"):
        n = len(arrays[lower["x"]])
        bad = [k for k, v in arrays.items() if v.shape != (n,)]
        if bad:
            raise DataError(f"{path}: arrays {bad} do not have the shape ({n},) of 'x'")
        return _Columns(xyz=np.stack([arrays[lower[a]] for a in "xyz"], axis=1), fields=tuple(arrays),
                        get=arrays.__getitem__, frame="as stored (taken as x forward, y left, z up)")
    if len(arrays) == 1:
        (key, arr), = arrays.items()
        return _array(path, arr, f"array {key!r}")
    raise DataError(f"{path}: .npz holds {sorted(arrays)}: expected an array 'points' or arrays x, y, z")


_READERS: dict[str, Callable[[Path], _Columns]] = {
    "kitti-bin": _kitti_bin, "nuscenes-bin": _nuscenes_bin, "pcd": _pcd, "ply": _ply,
    "las": _las, "laz": _las, "npy": _npy, "npz": _npz,
}  # fmt: skip


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------- writing


def _check_ids(train_ids: np.ndarray, labels: LabelSpec, n: int | None) -> np.ndarray:
    ids = np.asarray(train_ids)
    if ids.ndim != 1:
        raise ValueError(f"predictions must be (N,) train ids, got shape {ids.shape}")
    if n is not None and len(ids) != n:
        raise DataError(f"{len(ids)} predictions for a scan of {n} points")
    if ids.size and (ids.min() < 0 or ids.max() >= labels.num_classes):
        raise ValueError(f"predictions must be train ids in 0..{labels.num_classes - 1}")
    return ids.astype(np.int64, copy=False)


def write_label_file(path: str | Path, train_ids: np.ndarray, labels: LabelSpec) -> Path:
    """`.label`: SemanticKITTI raw ids (learning_map_inv), uint32 (N,), as the semantic-kitti-api reads."""
    if labels.name != "semantickitti":
        raise ConfigError(f"{path}: .label files hold SemanticKITTI raw ids; a {labels.name} model writes "
                          "'lidarseg' or 'npy'")
    return write_bytes(path, labels.to_raw(_check_ids(train_ids, labels, None)).astype(np.uint32).tobytes())


def write_lidarseg_file(path: str | Path, train_ids: np.ndarray, labels: LabelSpec) -> Path:
    """`_lidarseg.bin`: nuScenes challenge ids 1..16, uint8 (N,), as the devkit's lidarseg evaluation reads."""
    if labels.name != "nuscenes":
        raise ConfigError(f"{path}: lidarseg files hold nuScenes ids; a {labels.name} model writes 'label' or 'npy'")
    return write_bytes(path, labels.to_raw(_check_ids(train_ids, labels, None)).astype(np.uint8).tobytes())


def write_npy_file(path: str | Path, train_ids: np.ndarray, labels: LabelSpec) -> Path:
    """`.npy`: train ids 0..C-1 as uint8 (N,) (class names: labels.class_names)."""
    buf = io.BytesIO()
    np.save(buf, _check_ids(train_ids, labels, None).astype(np.uint8), allow_pickle=False)
    return write_bytes(path, buf.getvalue())


def write_colored_ply(path: str | Path, points: np.ndarray, train_ids: np.ndarray, labels: LabelSpec,
                      ignore_color: tuple[int, int, int] = (0, 0, 0)) -> Path:
    """Binary little-endian PLY: vertex x, y, z, intensity (float32), red, green, blue (official colour
    map), label (uint8 train id; 255 = ignore gets `ignore_color`)."""
    from plyfile import PlyData, PlyElement

    points = np.asarray(points)
    ids = np.asarray(train_ids).astype(np.int64)
    if points.ndim != 2 or points.shape[1] < 4 or len(points) != len(ids):
        raise DataError(f"{path}: need (N, 4) points and (N,) labels, got {points.shape} and {ids.shape}")
    if ids.size and ((ids < 0) | ((ids >= labels.num_classes) & (ids != IGNORE))).any():
        raise ValueError(f"labels must be train ids in 0..{labels.num_classes - 1} or {IGNORE}")
    rgb = labels.color(ids, ignore_color)
    vertex = np.empty(len(points), dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("intensity", "<f4"),
                                          ("red", "u1"), ("green", "u1"), ("blue", "u1"), ("label", "u1")])
    for k, name in enumerate(("x", "y", "z", "intensity")):
        vertex[name] = points[:, k]
    vertex["red"], vertex["green"], vertex["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    vertex["label"] = ids
    buf = io.BytesIO()
    PlyData([PlyElement.describe(vertex, "vertex")], text=False, byte_order="<",
            comments=[f"balvit prediction: label = train id of {labels.name} ({', '.join(labels.class_names)})"]).write(buf)
    return write_bytes(path, buf.getvalue())


def write_outputs(out_dir: str | Path, stem: str, train_ids: np.ndarray, labels: LabelSpec,
                  formats: Sequence[str] = ("label",), points: np.ndarray | None = None) -> list[Path]:
    """Write the prediction of one scan as `out_dir/<stem>.<ext>` in each of `formats`
    ("label", "lidarseg", "npy", "ply"; "ply" needs `points` (N, 4)). Returns the written paths."""
    out_dir = Path(out_dir)
    unknown = [f for f in formats if f not in OUTPUT_FORMATS]
    if unknown:
        raise ConfigError(f"unknown output format(s) {unknown}: expected {', '.join(OUTPUT_FORMATS)}")
    if points is not None and len(points) != len(train_ids):
        raise DataError(f"{out_dir / stem}: {len(train_ids)} predictions for a scan of {len(points)} points")
    written = []
    for fmt in formats:
        if fmt == "label":
            written.append(write_label_file(out_dir / f"{stem}.label", train_ids, labels))
        elif fmt == "lidarseg":
            written.append(write_lidarseg_file(out_dir / f"{stem}_lidarseg.bin", train_ids, labels))
        elif fmt == "npy":
            written.append(write_npy_file(out_dir / f"{stem}.npy", train_ids, labels))
        else:
            if points is None:
                raise ConfigError("the coloured .ply output needs the points")
            written.append(write_colored_ply(out_dir / f"{stem}.ply", points, train_ids, labels))
    return written
