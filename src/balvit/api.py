"""The Python API: a trained model rebuilt from its checkpoint alone, predicting on point arrays.

    import balvit
    model = balvit.load("runs/x/best.pt", device="cpu")     # or "cuda"; default: cuda if available
    labels = model.predict(points)          # points (N, 4) float32 x, y, z, intensity -> (N,) train ids
    proba = model.predict_proba(points)     # (N, C) softmax
    raw = model.to_raw(labels)              # SemanticKITTI raw ids / nuScenes lidarseg ids 1..16
    model.class_names                       # (C,) in train-id order
    model.predict([scan_a, scan_b])         # a list of scans: batched by eval.batch_size, a list back

Points follow the library's convention (DESIGN.md section 2) and the intensity scale of the dataset
the model was trained on, as the readers return them: SemanticKITTI remission 0..1, nuScenes intensity
0..255 (`data.intensity_scale` is applied here, as in training); nuScenes points in the library frame
(x forward, y left, z up) unless the checkpoint was trained on the LIDAR_TOP frame
(data.nuscenes_frame=lidar_top). A model whose range view takes its rows from the laser ring
(data.range.rows=ring, the nuScenes configs) needs `rings=` (N,) (0 = lowest beam); elsewhere rings
are not used. `balvit.data.pointfiles.read_point_file` reads any point file into this convention.

Every point gets the prediction `balvit eval` / `balvit predict` computes for it, by the same code:
the arrays are wrapped in an in-memory reader (`ArrayScans`, a `ScanDataset`), `SegmentationDataset`
computes every projection and index tensor the model reads (evaluation mode: every point kept;
range-view models read their projection back, WaffleIron runs on one point per voxel and up-samples
with `up_index`), and `engine/evaluate.run_evaluation` runs the model under the checkpoint's
autocast setting. `Segmenter.run(reader, evaluators)` is that path for any reader (`balvit predict
--input` runs it on `PointFileScans`), `Segmenter.sample(points)` the one-scan batch it builds
(`onnx_inputs` picks an exported graph's inputs from it, balvit/export.py).

The ELiTe teacher segments camera images: it is rebuilt like every model, but predicts through
`run(reader)` with a reader that has cameras (`balvit predict CONFIG --data_root DIR`), not from
point arrays.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.base import ScanDataset
from .data.dataset import SegmentationDataset, collate
from .data.labels import LabelSpec, labels_for
from .engine import dist as D
from .engine.evaluate import Evaluation, PerFrame, autocast_dtype, run_evaluation
from .engine.pretrained import load_trained_model
from .errors import ConfigError, DataError
from .models import loader_geometry

CAMERA_MODELS = ("elite_teacher",)  # models that segment camera images, not point arrays


def _device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r}: this machine has no CUDA device (torch {torch.__version__})")
    return dev


class _UnlabelledScans(ScanDataset):
    """What the two readers of this module share: scans without labels or cameras, whose predictions are
    written as SemanticKITTI-style `<frame>.label` raw ids when a caller asks for files. Subclasses give
    `frames`, `scan_path`, `load_points` and `load_rings`."""

    has_cameras = False
    split = "input"

    @property
    def has_labels(self) -> bool:
        return False

    def load_raw_labels(self, i: int) -> np.ndarray:
        raise DataError(f"{self.scan_path(i)}: {self.unlabelled_reason}")

    def label_path(self, i: int) -> Path:
        return self.scan_path(i)

    def load_cameras(self, i: int) -> list:
        return []

    def prediction_path(self, out_root: str | Path, i: int) -> Path:
        return Path(out_root) / f"{self.frames[i]}.label"

    def encode_prediction(self, train_ids: np.ndarray) -> bytes:
        return self.labels.to_raw(train_ids).astype(np.uint32).tobytes()


class ArrayScans(_UnlabelledScans):
    """A reader over point arrays held in memory (no labels, no cameras), in `labels`' label space.

    points: float32 (N_k, 4) per scan; rings: (N_k,) laser rings per scan or None; names: frame ids."""

    unlabelled_reason = "point arrays carry no labels"

    def __init__(self, points: Sequence[np.ndarray], labels: LabelSpec, rings: Sequence[np.ndarray | None] | None = None,
                 names: Sequence[str] | None = None, nan_policy: str = "error"):
        self.name = labels.name
        self.labels = labels
        self.nan_policy = nan_policy
        self.frames = list(names) if names is not None else [f"scan {k}" for k in range(len(points))]
        self.points = [_as_points(p, self.frames[k]) for k, p in enumerate(points)]
        rings = list(rings) if rings is not None else [None] * len(self.points)
        if len(rings) != len(self.points):
            raise DataError(f"{len(rings)} ring arrays for {len(self.points)} scans")
        self.rings = [_as_rings(r, len(p), self.frames[k]) for k, (p, r) in enumerate(zip(self.points, rings))]

    def scan_path(self, i: int) -> Path:
        return Path(self.frames[i])

    def load_points(self, i: int) -> np.ndarray:
        return self.points[i]

    def load_rings(self, i: int) -> np.ndarray | None:
        return self.rings[i]

    def num_points(self, i: int) -> int:
        return len(self.points[i])


def _as_points(points, name: str) -> np.ndarray:
    if torch.is_tensor(points):
        points = points.detach().cpu().numpy()
    arr = np.asarray(points)
    if arr.ndim != 2 or arr.shape[1] != 4 or arr.dtype.kind not in "fiu":
        raise DataError(f"{name}: points must be a (N, 4) array of numbers (x, y, z, intensity), got shape "
                        f"{arr.shape} ({arr.dtype})")
    if len(arr) == 0:
        raise DataError(f"{name}: the scan is empty (0 points)")
    return np.ascontiguousarray(arr, dtype=np.float32)


def _as_rings(rings, n: int, name: str) -> np.ndarray | None:
    if rings is None:
        return None
    if torch.is_tensor(rings):
        rings = rings.detach().cpu().numpy()
    arr = np.asarray(rings)
    if arr.shape != (n,):
        raise DataError(f"{name}: rings must be (N,) = ({n},), got shape {arr.shape}")
    if arr.dtype.kind == "f" and (~np.isfinite(arr) | (arr != np.round(arr))).any():
        raise DataError(f"{name}: rings must be whole numbers (laser ring 0 = lowest beam)")
    if n and arr.min() < 0:
        raise DataError(f"{name}: rings must be >= 0 (laser ring 0 = lowest beam), got {arr.min()}")
    return arr.astype(np.int64)


class Segmenter:
    """A trained segmentation model with its config: predictions on point arrays (module docstring).

    Attributes: model (the nn.Module, eval mode, frozen), config (the checkpoint's resolved Config),
    labels (LabelSpec), class_names, num_classes, device, checkpoint (path), batch_size (scans per
    forward pass; default eval.batch_size)."""

    def __init__(self, model: torch.nn.Module, config, checkpoint: str | Path, device: torch.device,
                 batch_size: int | None = None):
        self.model = model.to(device)
        self.config = config
        self.checkpoint = Path(checkpoint)
        self.device = device
        self.labels = labels_for(config.data.dataset)
        self.batch_size = int(batch_size or config.eval.batch_size)
        if self.batch_size <= 0:
            raise ConfigError(f"batch_size must be positive, got {self.batch_size}")
        self.info = D.DistInfo(0, 1, 0, device)

    # ------------------------------------------------------------------------------ facts

    @property
    def name(self) -> str:
        """The registry name of the model (balvit, rangevit, waffleiron, elite_student, ...)."""
        return self.config.model.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.labels.class_names

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    @property
    def needs_rings(self) -> bool:
        """True when the range view takes its rows from the laser ring (data.range.rows=ring)."""
        return self.config.data.range.rows == "ring"

    def to_raw(self, labels) -> np.ndarray:
        """Train ids (N,) -> the dataset's raw ids (N,): SemanticKITTI raw ids (learning_map_inv), nuScenes
        lidarseg challenge ids 1..16 (what the official tools read)."""
        return self.labels.to_raw(np.asarray(labels))

    def __repr__(self) -> str:
        return (f"Segmenter({self.name}, {self.config.data.dataset}, {self.num_classes} classes, "
                f"device={self.device}, checkpoint={str(self.checkpoint)!r})")

    # ------------------------------------------------------------------------------ the path

    def run(self, reader: ScanDataset, evaluators: list, *, info: D.DistInfo | None = None, workers: int = 0,
            progress: bool = False, name: str = "predict", data_cfg=None) -> dict:
        """The inference path of `balvit eval` / `balvit predict` on every frame of `reader`:
        SegmentationDataset (evaluation mode, the model's loader geometry) + run_evaluation, feeding
        `evaluators` (engine/evaluate.py, e.g. PerFrame). `info`: the ranks (default one process on
        self.device); `data_cfg`: the data section (default the checkpoint's, without cameras for readers
        that have none (`has_cameras` False: point arrays and files), with every camera's image for a
        camera model). Returns their results."""
        info = info or self.info
        if data_cfg is None:
            data_cfg = self.config.data
            if not getattr(reader, "has_cameras", True):
                data_cfg = replace(data_cfg, cameras=False)
            elif self.name in CAMERA_MODELS:
                data_cfg = replace(data_cfg, cameras=True)
        dataset = SegmentationDataset(reader, data_cfg, train=False,
                                      geometry=loader_geometry(self.config))
        evaluation = Evaluation(name, dataset, self.model, self.model, list(evaluators))
        return run_evaluation(evaluation, info, batch_size=self.batch_size, workers=workers,
                              dtype=autocast_dtype(self.config.train.amp, info.device), progress=progress)

    def refuse_camera_model(self) -> None:
        """A ConfigError for a model that segments camera images (it cannot predict from points alone)."""
        if self.name in CAMERA_MODELS:
            raise ConfigError(f"{self.checkpoint}: the {self.name} model segments camera images and cannot predict "
                              "from points alone: use a LiDAR model (e.g. the ELiTe student), or `balvit predict "
                              "CONFIG --data_root DIR` on a dataset with cameras")

    def _reader(self, points, rings) -> tuple[ArrayScans, bool]:
        self.refuse_camera_model()
        single = not isinstance(points, (list, tuple))
        scans = [points] if single else list(points)
        if not scans:
            raise DataError("no scans given")
        if rings is not None:
            rings = [rings] if single else list(rings)
        elif self.needs_rings:
            raise DataError(f"{self.checkpoint}: this model's range-view rows are the laser rings "
                            "(data.range.rows=ring): pass rings=(N,) laser ring of every point (0 = lowest beam)")
        else:
            rings = None
        reader = ArrayScans(scans, self.labels, rings if self.needs_rings else None,
                            nan_policy=self.config.data.nan_policy)
        return reader, single

    def _predictions(self, points, rings, key: str) -> list[torch.Tensor]:
        reader, single = self._reader(points, rings)
        out: list = [None] * len(reader)

        def keep(item: dict) -> None:
            out[item["index"]] = item[key]

        self.run(reader, [PerFrame(keep, "predicted")])
        return out, single

    def predict(self, points, rings=None):
        """(N, 4) float32 points -> (N,) int64 train ids; a list of scans -> a list of (N_k,) arrays."""
        out, single = self._predictions(points, rings, "pred")
        preds = [p.numpy().astype(np.int64) for p in out]
        return preds[0] if single else preds

    def predict_proba(self, points, rings=None):
        """(N, 4) float32 points -> (N, C) float32 class probabilities (softmax of the logits whose
        argmax `predict` returns); a list of scans -> a list of arrays."""
        out, single = self._predictions(points, rings, "logits")
        probs = [torch.softmax(lg.float(), dim=1).numpy() for lg in out]
        return probs[0] if single else probs

    def sample(self, points, rings=None) -> dict:
        """The collated batch of one scan exactly as the inference path builds it (tensors on the CPU):
        points, rv, rv_rc, bev_cell, ... (data/dataset.py), with `batch` and `offsets`."""
        reader, single = self._reader(points, rings)
        if not single:
            raise DataError("sample() takes one scan (an (N, 4) array)")
        dataset = SegmentationDataset(reader, replace(self.config.data, cameras=False), train=False,
                                      geometry=loader_geometry(self.config))
        return collate([dataset[0]])

    def onnx_inputs(self, points, rings=None) -> dict[str, np.ndarray]:
        """The inputs of this model's exported ONNX graph (balvit/export.py `graph_inputs`) for one scan:
        name -> numpy array, ready for onnxruntime's `session.run(None, feed)` (-> logits (N, C))."""
        from .export import graph_inputs

        names = graph_inputs(self.name, self.config)
        batch = self.sample(points, rings)
        return {k: batch[k].numpy() for k in names}


# ------------------------------------------------------------------------------ point files


class PointFileScans(_UnlabelledScans):
    """A reader over point files (balvit/data/pointfiles.py: .bin, .pcd.bin, .pcd, .ply, .las/.laz,
    .npy/.npz), read on demand with `read_point_file` into the convention of a model of `labels`'
    dataset. Frames are the output stems (`output_stems`). rings: read each file's "ring" field (a
    DataError naming the file when it has none); lidar_top: nuScenes .pcd.bin scans keep their stored
    LIDAR_TOP frame (x right, y forward) instead of being rotated to the library frame."""

    unlabelled_reason = "point files carry no labels here"

    def __init__(self, paths: Sequence[Path], stems: Sequence[str], labels: LabelSpec, *, intensity: str = "auto",
                 intensity_max: float | None = None, nan_policy: str = "error", rings: bool = False,
                 lidar_top: bool = False):
        self.name = labels.name
        self.labels = labels
        self.paths = [Path(p) for p in paths]
        self.frames = list(stems)
        self.intensity, self.intensity_max, self.nan_policy = intensity, intensity_max, nan_policy
        self.rings, self.lidar_top = rings, lidar_top

    def read(self, i: int):
        """The `PointFile` of frame i (pointfiles.read_point_file with this reader's options)."""
        from .data.pointfiles import read_point_file

        return read_point_file(self.paths[i], dataset=self.name, intensity=self.intensity,
                               intensity_max=self.intensity_max, nan_policy=self.nan_policy)

    def describe_file(self, i: int) -> str:
        """One line on frame i: PointFile.describe(), plus the frame and ring notes of this reader."""
        pf = self.read(i)
        text = pf.describe()
        if self.lidar_top and pf.format == "nuscenes-bin":
            text += "; note: kept in the LIDAR_TOP frame (x right, y forward): the model was trained on it"
        if self.rings:
            ring = self.load_rings(i)
            text += f"; range-view rows = field 'ring' ({int(ring.min())}..{int(ring.max())})"
        return text

    def load_points_checked(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        pf = self.read(i)
        points = pf.points
        if self.lidar_top and pf.format == "nuscenes-bin":  # undo lidar_top_to_library: x = -y', y = x'
            points = points.copy()
            points[:, 0], points[:, 1] = -pf.points[:, 1], pf.points[:, 0]
        return points, pf.invalid

    def load_points(self, i: int) -> np.ndarray:
        return self.load_points_checked(i)[0]

    def load_rings(self, i: int) -> np.ndarray | None:
        if not self.rings:
            return None
        from .data.pointfiles import read_field

        ring = read_field(self.paths[i], "ring")
        if ring is None:
            raise DataError(f"{self.paths[i]}: this model's range-view rows are the laser rings (data.range.rows=ring) "
                            "and the file has no 'ring' field")
        return _as_rings(ring, len(ring), str(self.paths[i]))

    def scan_path(self, i: int) -> Path:
        return self.paths[i]


# what each output format holds, and for which dataset's models (pointfiles.write_outputs writes them)
FILE_FORMATS = {"label": "semantickitti", "lidarseg": "nuscenes", "npy": None}


def default_format(dataset: str) -> str:
    """The official prediction format of a dataset's models: .label (SemanticKITTI), _lidarseg.bin (nuScenes)."""
    return "label" if dataset == "semantickitti" else "lidarseg"


def output_format(fmt: str | None, dataset: str) -> str:
    """The checked output format of `balvit predict --input` for a model of `dataset` (default: official)."""
    fmt = fmt or default_format(dataset)
    if fmt not in FILE_FORMATS:
        raise ConfigError(f"--format {fmt!r}: expected one of {', '.join(FILE_FORMATS)}")
    if FILE_FORMATS[fmt] not in (None, dataset):
        raise ConfigError(f"--format {fmt}: {fmt} files hold {FILE_FORMATS[fmt]} ids, this is a {dataset} model "
                          f"(use --format {default_format(dataset)} or npy)")
    return fmt


def read_point_files(inputs: Sequence[str | Path], cfg, *, intensity: str = "auto", intensity_max: float | None = None,
                     echo: Callable[[str], None] | None = print, max_listed: int = 20) -> PointFileScans:
    """The point files of `inputs` (files, folders, globs: pointfiles.expand_inputs) as a reader for a
    model of config `cfg`, every file read and checked once now (a bad file fails in seconds, naming
    it, before any model is built); `echo` prints each description (the first `max_listed`, then a
    count); all of them are in the reader's `descriptions`."""
    from .data.pointfiles import expand_inputs, output_stems

    if cfg.model.name in CAMERA_MODELS:
        raise ConfigError(f"the {cfg.model.name} model segments camera images and cannot predict from point files: "
                          "use a LiDAR model (e.g. the ELiTe student)")
    paths = expand_inputs(inputs)
    data = cfg.data
    reader = PointFileScans(paths, output_stems(paths), labels_for(data.dataset), intensity=intensity,
                            intensity_max=intensity_max, nan_policy=data.nan_policy, rings=data.range.rows == "ring",
                            lidar_top=data.dataset == "nuscenes" and data.nuscenes_frame == "lidar_top")
    reader.descriptions = []
    for i in range(len(reader)):
        reader.descriptions.append(reader.describe_file(i))
        if echo is not None and i < max_listed:
            echo(reader.descriptions[-1])
    if echo is not None and len(reader) > max_listed:
        echo(f"... and {len(reader) - max_listed} more files")
    return reader


def predict_point_files(segmenter: Segmenter, reader: PointFileScans, out: str | Path, *, fmt: str | None = None,
                        ply: bool = False, viewer: int = 0, info: D.DistInfo | None = None, workers: int = 0,
                        progress: bool = False) -> dict:
    """`balvit predict --input`: the predictions of every file of `reader` (`read_point_files`) through
    `segmenter.run`, written atomically to `out`/<stem>.<ext> (pointfiles.write_outputs; `fmt` label |
    lidarseg | npy, default the dataset's official one, plus a coloured .ply with `ply`), the
    interactive page of the first `viewer` scans under `out`/viewer/ and `out`/predictions.json (the
    checkpoint, every input and how it was read). Under torchrun every rank predicts its share of the
    files; rank 0 writes the viewer pages of its share and the summary."""
    from .data.pointfiles import write_outputs
    from .io import ensure_writable, write_json
    from .viewer import ViewerPages

    info = info or segmenter.info
    cfg = segmenter.config
    segmenter.refuse_camera_model()
    formats = [output_format(fmt, cfg.data.dataset)] + (["ply"] if ply else [])
    out = Path(out)
    if info.is_main:
        ensure_writable(out, "--out")
    scale = cfg.data.intensity_scale

    def write(item: dict) -> None:
        points = item["points"].numpy().copy()
        points[:, 3] /= scale  # back to the stored convention for the .ply
        write_outputs(out, item["frame"], item["pred"].numpy(), segmenter.labels, formats=formats, points=points)

    consumers = [PerFrame(write, "written")]
    pages = None
    if viewer:  # every rank runs the same evaluators; rank 0 writes the pages of its frames
        pages = ViewerPages(out / "viewer", segmenter.labels, limit=viewer, with_gt=False) if info.is_main else None
        consumers.append(PerFrame(pages or (lambda item: None), "viewed"))
    result = segmenter.run(reader, consumers, info=info, workers=workers, progress=progress)
    inputs = [{"path": str(p), "output": stem, "read": d}
              for p, stem, d in zip(reader.paths, reader.frames, getattr(reader, "descriptions", None) or
                                    [reader.describe_file(i) for i in range(len(reader))])]
    summary = {"checkpoint": str(segmenter.checkpoint), "model": segmenter.name, "dataset": cfg.data.dataset,
               "files": int(result["written"]), "formats": formats, "viewer_pages": len(pages.written) if pages else 0,
               "inputs": inputs}
    if info.is_main:
        write_json(out / "predictions.json", summary)
    return summary


def load(checkpoint: str | Path, device: str | torch.device | None = None, batch_size: int | None = None) -> Segmenter:
    """Rebuild the model of `checkpoint` from the config stored in it (engine/pretrained.py): its
    trainable weights restored, the frozen backbone taken from the same weight sources as in training
    (the same CheckpointError / ConfigError when they are missing or differ). device: "cpu", "cuda",
    "cuda:1", or None / "auto" (cuda if available); batch_size: scans per forward pass (default the
    checkpoint's eval.batch_size)."""
    dev = _device(device)
    model, cfg = load_trained_model(checkpoint)
    return Segmenter(model, cfg, checkpoint, dev, batch_size=batch_size)


__all__ = ["load", "Segmenter", "ArrayScans", "PointFileScans", "read_point_files", "predict_point_files",
           "output_format", "CAMERA_MODELS"]
