"""The one inference loop of the toolkit, the evaluators that read its outputs, and autocast.

The shape of detectron2's `inference_on_dataset` + `DatasetEvaluator`: an `Evaluation` is a dataset,
the module to put in eval mode, a `run(batch) -> outputs` function and the evaluators that consume
(batch, outputs). `run_evaluation` shards the frames (range(rank, n, world): every frame exactly once
over all ranks, no padding), switches the module to eval mode (and back), disables autograd, runs
under autocast on the device, feeds every evaluator, then sums every evaluator's state over the ranks
with `dist.all_reduce_sum` - the one cross-rank reduction of an evaluation - and returns the merged
results. Evaluators never talk to other ranks themselves.

Evaluators (each the only definition of its metric):
  - `PointSegmentation`: the point confusion matrix -> official mIoU (balvit/metrics.py summarize);
  - `CameraPixels`: the (C + 1) x (C + 1) camera-pixel confusion -> camera-pixel scores (metrics.py);
  - `Sums`: named sums (e.g. a loss summed over points and the point count) -> their ratios;
  - `PerFrame`: calls a function with every frame's predictions (pictures, prediction files) and counts.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.dataset import collate, ignore_stop_signals, to_device
from ..errors import ConfigError
from ..metrics import ConfusionMatrix, camera_pixel_scores, summarize
from . import dist as D


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for the `train.amp` setting, or None for full precision."""
    if amp == "off":
        return None
    if device.type == "cuda":
        if amp == "fp16":
            return torch.float16
        if amp in ("bf16", "auto"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else (torch.float16 if amp == "auto" else None)
    if amp == "fp16":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use bf16 or off on CPU")
    return torch.bfloat16 if amp == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class Evaluator(Protocol):
    def reset(self) -> None:
        """Forget everything processed so far."""

    def process(self, batch: dict, outputs: dict) -> None:
        """Accumulate one batch of this rank's frames (tensors on the evaluation device)."""

    def state(self) -> dict[str, torch.Tensor]:
        """This rank's accumulated sums (tensors the engine sums over ranks)."""

    def result(self, state: dict[str, torch.Tensor]) -> dict:
        """Metrics from the sums of every rank."""


@dataclass
class Evaluation:
    """One pass of the inference loop: `run(batch)` on every frame of `dataset`, read by `evaluators`."""

    name: str
    dataset: Dataset
    module: nn.Module  # in eval mode during the pass (its mode is restored after)
    run: Callable[[dict], dict]  # batch on the device -> outputs
    evaluators: list = field(default_factory=list)


def eval_loader(dataset: Dataset, info: D.DistInfo, batch_size: int, workers: int, limit: int = 0) -> DataLoader:
    """Frames of this rank (range(rank, n, world)): every scan exactly once, no padding."""
    n = len(dataset) if not limit else min(limit, len(dataset))
    indices = D.shard(n, info.rank, info.world_size)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                      worker_init_fn=ignore_stop_signals if workers else None)


def run_evaluation(evaluation: Evaluation, info: D.DistInfo, *, batch_size: int, workers: int, limit: int = 0,
                   dtype: torch.dtype | None = None, progress: bool = True) -> dict:
    """Run `evaluation` on this rank's frames and return the metrics of every evaluator over all ranks."""
    loader = eval_loader(evaluation.dataset, info, batch_size, workers, limit)
    for ev in evaluation.evaluators:
        ev.reset()
    module = evaluation.module
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc=evaluation.name, disable=not (progress and info.is_main), leave=False,
                              dynamic_ncols=True):
                batch = to_device(batch, info.device)
                with autocast(info.device, dtype):
                    outputs = evaluation.run(batch)
                for ev in evaluation.evaluators:
                    ev.process(batch, outputs)
    finally:
        module.train(was_training)
    metrics: dict = {}
    for ev in evaluation.evaluators:
        state = {k: D.all_reduce_sum(v) for k, v in ev.state().items()}
        metrics.update(ev.result(state))
    return metrics


# ---------------------------------------------------------------------------------- evaluators


class PointSegmentation:
    """Official point mIoU (balvit/metrics.py) of `outputs[key]` (N, C) logits against batch["labels"];
    with `mask_key`, only the points where outputs[mask_key] (N,) is true. Result: miou, iou, accuracy,
    points, gt_points, miou_mode, frames, confusion (prefixed with `prefix`)."""

    def __init__(self, labels, key: str = "logits", mask_key: str | None = None, prefix: str = ""):
        self.labels, self.key, self.mask_key, self.prefix = labels, key, mask_key, prefix
        self.reset()

    def reset(self) -> None:
        self.conf: ConfusionMatrix | None = None
        self.frames = 0

    def process(self, batch: dict, outputs: dict) -> None:
        pred = outputs[self.key].argmax(1)
        gt = batch["labels"]
        if self.mask_key is not None:
            keep = outputs[self.mask_key]
            pred, gt = pred[keep], gt[keep]
        if self.conf is None:
            self.conf = ConfusionMatrix(self.labels.num_classes, device=pred.device)
        self.conf.update(pred, gt)
        self.frames += len(batch["frame"])

    def state(self) -> dict[str, torch.Tensor]:
        c = self.labels.num_classes
        matrix = self.conf.matrix if self.conf is not None else torch.zeros(c, c, dtype=torch.int64)
        return {"confusion": matrix, "frames": torch.tensor(self.frames, dtype=torch.int64, device=matrix.device)}

    def result(self, state: dict[str, torch.Tensor]) -> dict:
        conf = state["confusion"].cpu().numpy()
        metrics = summarize(conf, self.labels.class_names, self.labels.miou)
        metrics["frames"] = int(state["frames"])
        metrics["confusion"] = conf.tolist()
        return {f"{self.prefix}{k}": v for k, v in metrics.items()}


class CameraPixels:
    """Camera-pixel scores (balvit/metrics.py: the one definition) of per-view predictions
    outputs[key] (a list of (h, w) train-id maps, one per view of the batch, in order) against the
    views' `truth_key` images ("label": pseudo-labels, "truth": the renderer's classes; views without
    it are skipped). Result: <prefix>miou, <prefix>iou, <prefix>coverage, <prefix>precision,
    <prefix>pixels and <prefix>views; nothing when no view had the truth."""

    def __init__(self, labels, key: str, truth_key: str, prefix: str):
        self.labels, self.key, self.truth_key, self.prefix = labels, key, truth_key, prefix
        self.reset()

    def reset(self) -> None:
        self.conf = ConfusionMatrix(self.labels.num_classes + 1)
        self.views = 0

    def process(self, batch: dict, outputs: dict) -> None:
        views = [v for vs in batch["cameras"] for v in vs]
        for view, pred in zip(views, outputs[self.key]):
            if self.truth_key not in view:
                continue
            self.conf.update(pred.cpu(), view[self.truth_key].cpu())
            self.views += 1

    def state(self) -> dict[str, torch.Tensor]:
        return {"confusion": self.conf.matrix, "views": torch.tensor(self.views, dtype=torch.int64)}

    def result(self, state: dict[str, torch.Tensor]) -> dict:
        views = int(state["views"])
        if not views:
            return {}
        scores = camera_pixel_scores(state["confusion"].numpy(), self.labels.class_names)
        out = {f"{self.prefix}{k}": v for k, v in scores.items()}
        out[f"{self.prefix}views"] = views
        return out


class Sums:
    """Named float64 sums of outputs[name] (scalars) over the frames; result: every sum under its name,
    every ratio `ratios[name] = (numerator, denominator)`, and the frame count under `frames_key`."""

    def __init__(self, names: tuple[str, ...], ratios: dict[str, tuple[str, str]], frames_key: str = "frames"):
        self.names, self.ratios, self.frames_key = names, ratios, frames_key
        self.reset()

    def reset(self) -> None:
        self.sums = {n: 0.0 for n in self.names}
        self.frames = 0

    def process(self, batch: dict, outputs: dict) -> None:
        for n in self.names:
            self.sums[n] += float(outputs[n])
        self.frames += len(batch["frame"])

    def state(self) -> dict[str, torch.Tensor]:
        out = {n: torch.tensor(v, dtype=torch.float64) for n, v in self.sums.items()}
        out[self.frames_key] = torch.tensor(self.frames, dtype=torch.int64)
        return out

    def result(self, state: dict[str, torch.Tensor]) -> dict:
        out = {n: float(state[n]) for n in self.names}
        for name, (num, den) in self.ratios.items():
            out[name] = float(state[num]) / max(float(state[den]), 1.0)
        out[self.frames_key] = int(state[self.frames_key])
        return out


def frames_of(batch: dict, outputs: dict) -> Iterator[dict]:
    """Per frame of a batch: {"index", "frame", "pred" (N,), "labels" (N,), "points" (N, 4), "rv_rc"
    (N, 2), "bev_cell" (N, 2), "rv_shape", "logits" (N, C) float32}, all on the CPU."""
    logits = outputs["logits"].float()
    pred = logits.argmax(1).cpu()
    off = batch["offsets"].tolist()
    for k in range(len(off) - 1):
        s, e = off[k], off[k + 1]
        yield {
            "index": int(batch["index"][k]), "frame": batch["frame"][k], "pred": pred[s:e],
            "labels": batch["labels"][s:e].cpu(), "logits": logits[s:e].cpu(), "points": batch["points"][s:e].cpu(),
            "rv_rc": batch["rv_rc"][s:e].cpu(), "bev_cell": batch["bev_cell"][s:e].cpu(),
            "rv_shape": tuple(batch["rv"].shape[-2:]),
        }


class PerFrame:
    """Calls `fn(item)` with every frame's predictions (`frames_of`), e.g. to draw pictures or write
    prediction files; result: the number of frames under `count_key`."""

    def __init__(self, fn: Callable[[dict], None], count_key: str = "written"):
        self.fn, self.count_key = fn, count_key
        self.reset()

    def reset(self) -> None:
        self.count = 0

    def process(self, batch: dict, outputs: dict) -> None:
        for item in frames_of(batch, outputs):
            self.fn(item)
            self.count += 1

    def state(self) -> dict[str, torch.Tensor]:
        return {"count": torch.tensor(self.count, dtype=torch.int64)}

    def result(self, state: dict[str, torch.Tensor]) -> dict:
        return {self.count_key: int(state["count"])}


def point_evaluation(model: nn.Module, dataset: Dataset, labels, *extra, name: str = "eval") -> Evaluation:
    """The point mIoU of a segmentation model's logits on `dataset` (+ `extra` evaluators)."""
    return Evaluation(name, dataset, model, model, [PointSegmentation(labels), *extra])


__all__ = ["Evaluation", "Evaluator", "PointSegmentation", "CameraPixels", "Sums", "PerFrame", "frames_of",
           "run_evaluation", "eval_loader", "point_evaluation", "autocast", "autocast_dtype"]
