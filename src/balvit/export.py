"""ONNX export of a trained model's network: the graph from the loader's tensors of one scan to logits.

`balvit export --checkpoint CK --format onnx --out model.onnx` traces the model with torch.onnx's
TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`: the dynamo exporter needs the
`onnxscript` package, which this toolkit does not install), opset 18 (ONNX operator specs:
ScatterElements / ScatterND reductions, GridSample), on a generated scan, and checks the graph with
onnxruntime against PyTorch on that scan and on a second one of another size.

What stays outside the graph: the projection and every index tensor of the loader (data/dataset.py),
computed by `balvit.api.Segmenter.onnx_inputs(points)` - the same code the PyTorch path runs. The graph
takes ONE scan (batch of 1; the range image keeps its leading batch axis) with a dynamic point count
N (and M, the points WaffleIron runs on). Its inputs (`graph_inputs(name, cfg)`; named as in the sample):

    elite_student      rv, points, rv_rc
    balvit             rv, points, rv_rc, bev_cell
    rangevit, multivit rv, points, rv_coord (rv_rc with point_sampling nearest), sub_index, knn (KPConv)
    waffleiron         points, sub_index, up_index, knn, plane_cells

    rv          float32 (1, 6, H, W)  range image: range, x, y, z, intensity (normalised by data.range.mean
                                      / std), mask; H x W = data.range.height x width (fixed in the graph)
    points      float32 (N, 4)        x, y, z, intensity * data.intensity_scale
    rv_rc       int64   (N, 2)        (row, col) of every point in rv
    rv_coord    float32 (N, 2)        continuous (row, col) of every point in rv
    bev_cell    int64   (N, 2)        (radius bin, azimuth bin) of every point in the polar BEV grid
    sub_index   int64   (M,)          the points the model runs on (WaffleIron: one per voxel; RangeViT: all)
    up_index    int64   (N,)          for every point, its nearest point among sub_index (position in it)
    knn         int64   (M, 1 + k)    each sub_index point, then its k nearest sub_index points
    plane_cells int64   (M, P)        WaffleIron: cell of each sub_index point in each of its P planes
  -> logits     float32 (N, C)        per-point class scores (argmax: train ids; softmax: probabilities)

The neighbour search (scipy kd-tree) cannot be part of a graph: WaffleIron and RangeViT's KPConv are
exported only when their neighbours come from the loader (data.sampling.neighbors, as their configs
set it). MultiViT exports its LiDAR branch (RangeViT's network); the ELiTe teacher, a camera-image
model, is refused (`NOT_EXPORTABLE`).

Ops without a mapping in the TorchScript exporter are given one here (`register_symbolics`), each an
exact equivalent: `aten::hypot` -> Sqrt(x^2 + y^2); `aten::scatter_reduce(amax, include_self=False)`
-> ScatterElements(reduction=max) onto -inf, cells left at -inf take the input's value (empty cells);
`aten::index_add` (dim 0, repeated indices) -> ScatterElements(reduction=add) on the index broadcast to
the source (onnxruntime 1.32's ScatterND(reduction=add) loses updates on more than one thread). Python loops over the scans of
a batch or over chunks of points would freeze the traced point count: the models take one slice for
a batch of one scan, and KPConv runs in one block while exporting (`torch.onnx.is_in_onnx_export`).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .errors import ConfigError

log = logging.getLogger(__name__)

OPSET = 18  # ScatterElements reduction "max" needs 18
EXPORTER = "torch.onnx TorchScript exporter (dynamo=False)"
EXPORTABLE = ("balvit", "elite_student", "multivit", "rangevit", "waffleiron")
INPUT_DOCS = {
    "rv": "float32 (1, 6, H, W) range image: range, x, y, z, intensity normalised by data.range.mean/std, mask",
    "points": "float32 (N, 4) x, y, z, intensity * data.intensity_scale",
    "rv_rc": "int64 (N, 2) (row, col) of every point in rv",
    "rv_coord": "float32 (N, 2) continuous (row, col) of every point in rv",
    "bev_cell": "int64 (N, 2) (radius bin, azimuth bin) of every point in the polar BEV grid",
    "sub_index": "int64 (M,) the points the model runs on (one per voxel)",
    "up_index": "int64 (N,) nearest sub_index point of every point (position in sub_index)",
    "knn": "int64 (M, 1 + k) each sub_index point, then its k nearest sub_index points",
    "plane_cells": "int64 (M, P) cell of each sub_index point in each plane",
}
DYNAMIC_AXES = {"points": {0: "N"}, "rv_rc": {0: "N"}, "rv_coord": {0: "N"}, "bev_cell": {0: "N"}, "up_index": {0: "N"},
                "sub_index": {0: "M"}, "knn": {0: "M"}, "plane_cells": {0: "M"}, "logits": {0: "N"}}
NOT_EXPORTABLE = {
    "elite_teacher": ("it segments camera images (a ViT with LoRA adapters run on the images, read out at each "
                      "point's pixel in Python loops over the camera views), not range images: export the ELiTe "
                      "student, the model that runs on the LiDAR"),
}
NEEDS_LOADER_NEIGHBOURS = ("the graph cannot search neighbours (a scipy kd-tree, or chunked cdist in Python loops "
                           "over the scans): they must come from the loader")


# ------------------------------------------------------------------------------- op mappings


def _hypot(g, a, b):
    return g.op("Sqrt", g.op("Add", g.op("Mul", a, a), g.op("Mul", b, b)))


def _scatter_reduce(g, self, dim, index, src, reduce, include_self):
    from torch.onnx import symbolic_helper as sh

    dim = sh._get_const(dim, "i", "dim")
    reduce = sh._get_const(reduce, "s", "reduce")
    include_self = sh._get_const(include_self, "b", "include_self")
    kinds = {"amax": "max", "amin": "min", "sum": "add", "prod": "mul"}
    if reduce not in kinds:
        raise ConfigError(f"scatter_reduce(reduce={reduce!r}) has no ONNX ScatterElements reduction")
    if include_self:
        return g.op("ScatterElements", self, index, src, axis_i=dim, reduction_s=kinds[reduce])
    if reduce not in ("amax", "amin"):
        raise ConfigError(f"scatter_reduce(reduce={reduce!r}, include_self=False) has no exact ONNX form here")
    # onto -inf (+inf), then cells that no index reached keep the input's value
    fill = float("-inf") if reduce == "amax" else float("inf")
    init = g.op("ConstantOfShape", g.op("Shape", self), value_t=torch.tensor([fill]))
    out = g.op("ScatterElements", init, index, src, axis_i=dim, reduction_s=kinds[reduce])
    return g.op("Where", g.op("Equal", out, init), self, out)


def _index_add(g, self, dim, index, source, alpha=None):
    """index_add along dim 0 -> ScatterElements(reduction=add) with the index broadcast to the source's
    shape. (Not ScatterND(reduction=add): onnxruntime 1.32's CPU kernel of it loses updates to repeated
    indices when it runs on more than one thread - tests/test_export.py shows the race.)"""
    from torch.onnx import symbolic_helper as sh

    dim = sh._get_const(dim, "i", "dim")
    if dim != 0:
        raise ConfigError(f"index_add along dim {dim}: only dim 0 has an ONNX form here")
    if alpha is not None and not sh._is_none(alpha) and sh._maybe_get_const(alpha, "f") != 1:
        source = g.op("Mul", source, alpha)
    rank = sh._get_tensor_rank(source)
    if rank is None:
        raise ConfigError("index_add of a source of unknown rank has no ONNX form here")
    idx = index
    if rank > 1:  # (N,) -> (N, 1, ...) -> the source's shape
        axes = g.op("Constant", value_t=torch.arange(1, rank, dtype=torch.long))
        idx = g.op("Expand", g.op("Unsqueeze", index, axes), g.op("Shape", source))
    return g.op("ScatterElements", self, idx, source, axis_i=0, reduction_s="add")


def register_symbolics(opset: int = OPSET) -> None:
    """Give the TorchScript exporter the op mappings of the module docstring (idempotent)."""
    from torch.onnx import register_custom_op_symbolic

    register_custom_op_symbolic("aten::hypot", _hypot, opset)
    register_custom_op_symbolic("aten::scatter_reduce", _scatter_reduce, opset)
    register_custom_op_symbolic("aten::index_add", _index_add, opset)


# ------------------------------------------------------------------------------- the graph


def graph_inputs(name: str, cfg) -> tuple[str, ...]:
    """The input names of the exported graph of model `name` with config `cfg` (module docstring), or a
    ConfigError saying why it cannot be exported."""
    if name in NOT_EXPORTABLE or name not in EXPORTABLE:
        reason = NOT_EXPORTABLE.get(name, "no export is defined for it")
        raise ConfigError(f"a {name!r} model cannot be exported to ONNX: {reason} (exportable: "
                          f"{', '.join(EXPORTABLE)})")
    sp = cfg.data.sampling
    if name == "elite_student":
        return ("rv", "points", "rv_rc")
    if name == "balvit":
        return ("rv", "points", "rv_rc", "bev_cell")
    if name == "waffleiron":
        if sp.neighbors <= 0:
            raise ConfigError(f"this WaffleIron model searches its embedding's neighbours itself (data.sampling."
                              f"neighbors=0): {NEEDS_LOADER_NEIGHBOURS} (data.sampling.neighbors > 0)")
        return ("points", "sub_index", "up_index", "knn", "plane_cells")
    r = cfg.model.rangevit  # rangevit, and multivit's LiDAR branch
    names = ["rv", "points", "rv_coord" if r.point_sampling == "bilinear" else "rv_rc"]
    if r.refiner == "kpconv":
        if sp.voxel_size > 0 or sp.neighbors < r.knn - 1:
            raise ConfigError(f"this {name} model's KPConv refiner searches its {r.knn} neighbours itself: "
                              f"{NEEDS_LOADER_NEIGHBOURS} (data.sampling.neighbors >= {r.knn - 1}, voxel_size 0)")
        names += ["sub_index", "knn"]
    return tuple(names)


class OneScanGraph(nn.Module):
    """model(batch of one scan) -> logits (N, C), with the batch's tensors as positional inputs in the
    order of `names`; `batch` (zeros), `offsets` ([0, N]) and `rv_col0` (0) are made inside."""

    def __init__(self, model: nn.Module, names: tuple[str, ...]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        batch = dict(zip(self.names, tensors))
        ones = torch.ones_like(batch["points"][:, 0], dtype=torch.long)  # (N,): keeps N dynamic in the graph
        n = ones.sum()
        batch["batch"] = ones * 0
        batch["offsets"] = torch.stack([n * 0, n])
        batch["rv_col0"] = torch.zeros(1, dtype=torch.long, device=ones.device)
        return self.model(batch)["logits"]


def example_scan(cfg, n: int = 6000, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """A generated scan for tracing and checking: `n` points on the sensor's rays (elevations inside
    data.range's field of view, ranges 2..45 m, 2 % ego returns at 0.5 m), intensity on the dataset's
    stored scale; with the laser ring of every point (from its elevation) where the rows are rings."""
    rng = np.random.default_rng(seed)
    rv = cfg.data.range
    rows = rng.integers(0, rv.height, n)
    pitch = np.radians(rv.fov_up - (rows + rng.uniform(0.1, 0.9, n)) * (rv.fov_up - rv.fov_down) / rv.height)
    yaw = rng.uniform(-math.pi, math.pi, n)
    r = np.where(rng.uniform(size=n) < 0.02, 0.5, rng.uniform(2.0, 45.0, n))
    full = 255.0 if cfg.data.dataset == "nuscenes" else 1.0
    points = np.stack([r * np.cos(pitch) * np.cos(yaw), r * np.cos(pitch) * np.sin(yaw), r * np.sin(pitch),
                       rng.uniform(0, full, n)], axis=1).astype(np.float32)
    rings = (rv.height - 1 - rows) if rv.rows == "ring" else None
    return points, rings


def export_onnx(segmenter, out: str | Path, *, opset: int = OPSET, check: bool = True, example_points: int = 6000) -> dict:
    """Write the ONNX graph of `segmenter` (balvit.api.Segmenter, on the CPU) to `out` (atomically) and
    return a report: model, inputs, classes, exporter, opset and, with `check` and onnxruntime
    installed, the max |onnxruntime - PyTorch| over two generated scans of different sizes. The class
    names, inputs and data settings go into the model's metadata_props."""
    import onnx

    from .config import to_dict
    from .io import atomic_path

    if opset < OPSET:
        raise ConfigError(f"--opset {opset}: the graph needs opset >= {OPSET} (ScatterElements max)")
    names = graph_inputs(segmenter.name, segmenter.config)
    if segmenter.device.type != "cpu":
        raise ConfigError("export from a model on the CPU (balvit.load(..., device='cpu'))")
    model = segmenter.model.eval()
    graph = OneScanGraph(model, names).eval()
    points, rings = example_scan(segmenter.config, example_points)
    batch = segmenter.sample(points, rings)
    args = tuple(batch[k] for k in names)
    register_symbolics(opset)
    out = Path(out)
    with atomic_path(out) as tmp, torch.no_grad():
        torch.onnx.export(graph, args, str(tmp), dynamo=False, opset_version=opset, input_names=list(names),
                          output_names=["logits"], do_constant_folding=True,
                          dynamic_axes={k: v for k, v in DYNAMIC_AXES.items() if k in names or k == "logits"})
        proto = onnx.load(str(tmp))
        graph_names = [i.name for i in proto.graph.input]
        if graph_names != list(names):
            raise ConfigError(f"the exported {segmenter.name} graph takes {graph_names}, expected {list(names)}")
        data = segmenter.config.data
        meta = {
            "balvit.model": segmenter.name,
            "balvit.dataset": data.dataset,
            "balvit.class_names": json.dumps(list(segmenter.class_names)),
            "balvit.inputs": json.dumps({k: INPUT_DOCS[k] for k in names}),
            "balvit.output": "logits float32 (N, C): one row per input point",
            "balvit.data": json.dumps({k: v for k, v in to_dict(data).items()
                                       if k in ("dataset", "intensity_scale", "range", "bev", "sampling",
                                                "nuscenes_frame")}),
            "balvit.checkpoint": str(segmenter.checkpoint),
            "balvit.prepare": "balvit.load(checkpoint).onnx_inputs(points) computes the inputs of one scan",
        }
        for k, v in meta.items():
            proto.metadata_props.add(key=k, value=v)
        onnx.save(proto, str(tmp))
    report = {"out": str(out), "model": segmenter.name, "inputs": list(names), "classes": segmenter.num_classes,
              "exporter": EXPORTER, "opset": opset,
              "torch": torch.__version__}
    if check:
        report.update(check_onnx(segmenter, out, sizes=(example_points, example_points // 2 + 777)))
    return report


def check_onnx(segmenter, path: str | Path, sizes=(6000, 3777), seed: int = 1) -> dict:
    """max |onnxruntime - PyTorch| of the logits over generated scans of `sizes` points (one session);
    {} without onnxruntime (a warning says so)."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime is not installed: the exported graph was not checked (pip install onnxruntime)")
        return {}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = graph_inputs(segmenter.name, segmenter.config)
    worst = 0.0
    for k, n in enumerate(sizes):
        points, rings = example_scan(segmenter.config, n, seed=seed + k)
        batch = segmenter.sample(points, rings)
        with torch.no_grad():
            ref = OneScanGraph(segmenter.model, names)(*(batch[name] for name in names)).float().numpy()
        got = session.run(None, {name: batch[name].numpy() for name in names})[0]
        if got.shape != ref.shape:
            raise ConfigError(f"{path}: the graph gives logits {got.shape} for a scan of {n} points, expected {ref.shape}")
        worst = max(worst, float(np.abs(got - ref).max()))
    return {"max_abs_diff": worst, "check_points": list(sizes), "onnxruntime": ort.__version__}


__all__ = ["EXPORTER", "EXPORTABLE", "NOT_EXPORTABLE", "OPSET", "OneScanGraph", "export_onnx",
           "check_onnx", "example_scan", "graph_inputs", "register_symbolics"]
