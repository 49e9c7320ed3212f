"""The one training loop of the toolkit, plus evaluation and prediction on the original points.

Every model and task goes through `Trainer.fit`: a task module returns {"loss", "logits"} for a
batch; the loop does autocast (bf16/fp16 on GPU), gradient clipping, AdamW + warm-up/cosine,
checkpoints (`last.pt` every `save_every` steps and on SIGINT/SIGTERM, `best.pt` on a better
validation mIoU) and logging (tqdm on rank 0, metrics.jsonl, TensorBoard). A run resumes from
`<save_path>/last.pt` automatically and then sees exactly the batches, augmentations and RNG
states the uninterrupted run would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import Config, ConfigError, dump_yaml, to_dict
from ..data.dataset import (SegmentationDataset, StreamSampler, build_reader, collate, ignore_stop_signals, to_device,
                            training_frames)
from ..data.labels import LabelSpec
from ..io import write_json, write_text
from ..models import build_model, loader_geometry
from ..tasks import TASKS
from . import dist as D
from .checkpoint import init_model_from, load_checkpoint, restore_model, save_checkpoint
from .log import RunLogger
from .metrics import ConfusionMatrix, format_table, markdown_table, summarize
from .optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


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


def set_threads(info: D.DistInfo) -> None:
    """On CPU, share the cores between the local processes of a torchrun job."""
    if info.device.type == "cpu":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


# ----------------------------------------------------------------------------- inference


def eval_loader(dataset: SegmentationDataset, info: D.DistInfo, batch_size: int, workers: int,
                limit: int = 0) -> DataLoader:
    """Frames of this rank (range(rank, n, world)): every scan exactly once, no padding."""
    n = len(dataset) if not limit else min(limit, len(dataset))
    indices = D.shard(n, info.rank, info.world_size)
    batches = [indices[i:i + batch_size] for i in range(0, len(indices), batch_size)]
    return DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
                      worker_init_fn=ignore_stop_signals if workers else None)


@torch.no_grad()
def iterate_predictions(model, loader: DataLoader, device: torch.device, dtype: torch.dtype | None,
                        desc: str = "eval", progress: bool = True) -> Iterator[dict]:
    """Per frame: {"index", "frame", "pred" (N,), "labels" (N,), "points" (N, 4), "rv_rc" (N, 2),
    "bev_cell" (N, 2), "logits" (N, C) float32} as numpy / tensors on the CPU."""
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
            dev_batch = to_device(batch, device)
            with autocast(device, dtype):
                logits = model(dev_batch)["logits"].float()
            pred = logits.argmax(1).cpu()
            off = batch["offsets"].tolist()
            for k in range(len(off) - 1):
                s, e = off[k], off[k + 1]
                yield {
                    "index": int(batch["index"][k]), "frame": batch["frame"][k],
                    "pred": pred[s:e], "labels": batch["labels"][s:e], "logits": logits[s:e].cpu(),
                    "points": batch["points"][s:e], "rv_rc": batch["rv_rc"][s:e], "bev_cell": batch["bev_cell"][s:e],
                    "rv_shape": tuple(batch["rv"].shape[-2:]),
                }
    finally:
        model.train(was_training)


def evaluate(model, loader: DataLoader, labels: LabelSpec, info: D.DistInfo, dtype: torch.dtype | None,
             on_frame=None, progress: bool = True) -> dict:
    """Confusion matrix over this rank's frames, all-reduced, -> metrics dict (official mIoU)."""
    conf = ConfusionMatrix(labels.num_classes, device=info.device if info.device.type == "cuda" else "cpu")
    frames = 0
    for item in iterate_predictions(model, loader, info.device, dtype, progress=progress and info.is_main):
        conf.update(item["pred"], item["labels"])
        frames += 1
        if on_frame is not None:
            on_frame(item)
    conf.all_reduce()
    total_frames = sum(D.all_gather_object(frames))
    metrics = summarize(conf.numpy(), labels.class_names, labels.miou)
    metrics["frames"] = total_frames
    metrics["confusion"] = conf.numpy().tolist()
    return metrics


# -------------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, cfg: Config, save_path: str | Path, info: D.DistInfo, progress: bool = True):
        self.cfg = cfg
        self.info = info
        self.save_path = Path(save_path)
        self.progress = progress and info.is_main
        set_threads(info)
        D.seed_everything(cfg.train.seed + info.rank)

        frames, frames_desc = training_frames(cfg.data)
        self.train_reader = build_reader(cfg.data, cfg.data.train_split, frames=frames)
        self.val_reader = build_reader(cfg.data, cfg.data.val_split)
        self.labels = self.train_reader.labels
        self.frames_desc = frames_desc

        self.model = build_model(cfg, self.labels.num_classes).to(info.device)
        self.init_report = init_model_from(self.model, cfg.train.init_from, cfg.train.init_exclude) \
            if cfg.train.init_from else None
        self.task = TASKS[cfg.task].from_config(cfg, self.model, self).to(info.device)
        self.train_set = self.task.train_dataset(self) or SegmentationDataset(
            self.train_reader, cfg.data, train=True, seed=cfg.train.seed, geometry=loader_geometry(cfg))
        self.val_set = SegmentationDataset(self.val_reader, cfg.data, train=False, geometry=loader_geometry(cfg))
        self.optimizer = build_optimizer(self.task, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.dtype = autocast_dtype(cfg.train.amp, info.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.step = 0
        self.best_miou: float | None = None
        self.stop_requested = False
        self.history: list[dict] = []

    # -- bookkeeping ------------------------------------------------------------------------

    def class_counts(self) -> np.ndarray:
        """Labelled points per class over the training frames (for class weights)."""
        counts = np.zeros(self.labels.num_classes, dtype=np.int64)
        for i in range(len(self.train_reader)):
            lab = self.train_reader.load_labels(i)
            counts += np.bincount(lab[lab != 255], minlength=self.labels.num_classes)
        return counts

    def config_dict(self) -> dict:
        return to_dict(self.cfg)

    def save(self, name: str) -> None:
        rng = D.all_gather_object(D.rng_state())
        if self.info.is_main:
            save_checkpoint(self.save_path / name, model=self.model, step=self.step, config=self.config_dict(),
                            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                            best_miou=self.best_miou, rng=rng,
                            extra={"frames": self.frames_desc, "task_state": self.task.extra_state_dict()})
        D.barrier()

    def resume(self) -> bool:
        path = self.save_path / "last.pt"
        if not path.is_file():
            return False
        state = load_checkpoint(path)
        restore_model(self.model, state, path)
        self.task.load_extra_state_dict(state.get("extra", {}).get("task_state", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_miou = state.get("best_miou")
        rng = state.get("rng") or []
        if len(rng) == self.info.world_size:
            D.set_rng_state(rng[self.info.rank])
        else:
            log.warning("%s was written by %d processes, this run has %d: RNG states not restored",
                        path, len(rng), self.info.world_size)
        log.info("resumed from %s at step %d", path, self.step)
        return True

    def _install_signal_handlers(self):
        previous = {}

        def handler(signum, frame):
            if self.stop_requested:  # second signal: give up immediately
                raise KeyboardInterrupt
            self.stop_requested = True
            log.warning("signal %d: saving a checkpoint after this step, then stopping", signum)

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        return previous

    def _should_stop(self) -> bool:
        flag = self.stop_requested
        if self.info.distributed:
            t = torch.tensor([1 if flag else 0], device=self.info.device)
            dist.all_reduce(t)
            flag = bool(t.item())
        return flag

    # -- the loop -----------------------------------------------------------------------------

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until `train.steps` (or `max_steps` more steps, for tests); returns the last metrics."""
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.save_path.mkdir(parents=True, exist_ok=True)
            write_text(self.save_path / "config.yaml", dump_yaml(cfg))
        D.barrier()
        self.resume()
        report = self.model.param_report()
        log.info("model %s: trainable %d, frozen %d, total %d parameters", cfg.model.name,
                 report["trainable"], report["frozen"], report["total"])
        log.info("training on %s; validating on %d %s frames", self.frames_desc, len(self.val_set), cfg.data.val_split)
        logger = RunLogger(self.save_path, enabled=info.is_main)

        sampler = StreamSampler(len(self.train_set), cfg.train.batch_size, seed=cfg.train.seed,
                                rank=info.rank, world_size=info.world_size, start_step=self.step)
        loader = DataLoader(self.train_set, batch_sampler=sampler, collate_fn=collate,
                            num_workers=cfg.data.num_workers, persistent_workers=cfg.data.num_workers > 0,
                            worker_init_fn=ignore_stop_signals if cfg.data.num_workers else None)
        task = self.task
        if info.distributed:
            task = DistributedDataParallel(self.task, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
        end = cfg.train.steps if max_steps is None else min(cfg.train.steps, self.step + max_steps)
        previous = self._install_signal_handlers()
        metrics: dict = {}
        bar = tqdm(total=cfg.train.steps, initial=self.step, desc="train", disable=not self.progress, dynamic_ncols=True)
        it = iter(loader)
        t_last, n_last = time.time(), 0
        try:
            task.train()
            while self.step < end:
                batch = to_device(next(it), info.device)
                out_losses = self._train_step(task, batch)
                self.step += 1
                n_last += len(batch["frame"]) * info.world_size
                bar.update(1)
                if self.step % cfg.train.log_every == 0 or self.step == end:
                    now = time.time()
                    rate = n_last / max(now - t_last, 1e-9)
                    record = {**out_losses, "lr": self.optimizer.param_groups[0]["lr"], "scans_per_s": rate}
                    bar.set_postfix(loss=f"{out_losses['loss']:.3f}", lr=f"{record['lr']:.2e}", scans_s=f"{rate:.2f}")
                    logger.log(self.step, record, prefix="train/")
                    t_last, n_last = now, 0
                stop = self._should_stop()
                if stop or self.step % cfg.train.save_every == 0:
                    self.save("last.pt")
                if stop:
                    log.warning("stopped at step %d; last.pt saved in %s (run the same command to resume)", self.step, self.save_path)
                    raise SystemExit(130)
                if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < end:
                    metrics = self.validate(logger)
            if self.step >= cfg.train.steps or max_steps is None:
                metrics = self.validate(logger)
            self.save("last.pt")
        finally:
            bar.close()
            logger.close()
            for sig, h in previous.items():
                signal.signal(sig, h)
        return metrics

    def _train_step(self, task, batch: dict) -> dict:
        cfg = self.cfg.train
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(self.info.device, self.dtype):
            out = task(batch)
        loss = out["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {self.step} (frames {batch['frame']})")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.task.after_step(self.step + 1)  # a task hook (e.g. AdaLoRA's rank allocation), no-op by default
        values = {"loss": float(loss.detach()), "grad_norm": float(grad_norm)}
        values.update({k: float(v.detach()) for k, v in out.get("losses", {}).items()})
        return values

    def validate(self, logger: RunLogger | None = None) -> dict:
        """The task's validation (default: mIoU of the model on the validation split); best.pt
        follows its "score" (the mIoU by default)."""
        metrics = self.task.validate(self)
        if metrics is None:
            if not self.val_reader.has_labels:
                raise ConfigError(f"data.val_split={self.cfg.data.val_split!r} has no labels to evaluate against")
            loader = eval_loader(self.val_set, self.info, self.cfg.eval.batch_size, self.cfg.data.num_workers,
                                 self.cfg.data.max_val_frames)
            metrics = evaluate(self.model, loader, self.labels, self.info, self.dtype, progress=self.progress)
            metrics["score"] = metrics["miou"]
        metrics["step"] = self.step
        improved = self.best_miou is None or metrics["score"] > self.best_miou
        if improved:
            self.best_miou = metrics["score"]
        if logger is not None:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
            scalars.update({f"iou/{k}": v for k, v in metrics.get("iou", {}).items() if v is not None})
            logger.log(self.step, scalars, prefix="val/")
        if self.info.is_main:
            log.info("step %d: validation score %.2f (best %.2f)", self.step, metrics["score"], self.best_miou)
            write_json(self.save_path / "val_metrics.json", {k: v for k, v in metrics.items() if k != "confusion"})
        if improved:
            self.save("best.pt")
        return metrics


# ----------------------------------------------------------------------------- evaluation


def load_for_inference(cfg: Config, checkpoint: str | Path, info: D.DistInfo):
    """Build the model of `cfg` and load a checkpoint's trainable weights into it."""
    state = load_checkpoint(checkpoint)
    saved_model_cfg = state.get("config", {}).get("model")
    if saved_model_cfg is not None and saved_model_cfg != to_dict(cfg.model):
        diffs = _dict_diff(saved_model_cfg, to_dict(cfg.model), "model.")
        raise ConfigError(f"{checkpoint} was trained with a different model config: {'; '.join(diffs[:6])}")
    from ..data.labels import labels_for

    model = build_model(cfg, labels_for(cfg.data.dataset).num_classes).to(info.device)
    restore_model(model, state, checkpoint)
    return model, state


def _dict_diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append(f"{prefix}{k}: checkpoint {va!r}, config {vb!r}")
    return out


def run_eval(cfg: Config, checkpoint: str | Path, info: D.DistInfo, save_path: str | Path | None = None,
             split: str | None = None, pictures: int | None = None, progress: bool = True) -> dict:
    """`balvit eval`: per-class IoU + mIoU on the original points of a split (default data.val_split)."""
    set_threads(info)
    model, state = load_for_inference(cfg, checkpoint, info)
    reader = build_reader(cfg.data, split or cfg.data.val_split)
    if not reader.has_labels:
        raise ConfigError(f"split {split or cfg.data.val_split!r} has no labels to evaluate against")
    dataset = SegmentationDataset(reader, cfg.data, train=False, geometry=loader_geometry(cfg))
    loader = eval_loader(dataset, info, cfg.eval.batch_size, cfg.data.num_workers, cfg.data.max_val_frames)
    n_pictures = cfg.eval.pictures if pictures is None else pictures
    out_dir = Path(save_path) if save_path else None
    drawer = None
    if out_dir is not None and info.is_main and n_pictures:
        from ..report import PictureWriter

        drawer = PictureWriter(out_dir / "pictures", reader.labels, cfg.data, limit=n_pictures)
    t0 = time.time()
    metrics = evaluate(model, loader, reader.labels, info, autocast_dtype(cfg.train.amp, info.device),
                       on_frame=drawer, progress=progress)
    metrics["seconds"] = time.time() - t0
    metrics["checkpoint"] = str(checkpoint)
    metrics["checkpoint_step"] = state.get("step")
    metrics["params"] = model.param_report()
    metrics["backbone"] = model.frozen_identities()
    if info.is_main and out_dir is not None:
        write_json(out_dir / "metrics.json", {k: v for k, v in metrics.items() if k != "confusion"})
        write_json(out_dir / "confusion.json", {"classes": list(reader.labels.class_names), "rows_gt_cols_pred": metrics["confusion"]})
        write_text(out_dir / "metrics.md", markdown_table(metrics))
    if info.is_main:
        print(format_table(metrics), flush=True)
    return metrics


def run_predict(cfg: Config, checkpoint: str | Path, info: D.DistInfo, out: str | Path, split: str = "valid",
                pictures: int | None = None, progress: bool = True) -> int:
    """`balvit predict`: official-format prediction files (atomic) for every frame of a split."""
    set_threads(info)
    model, _ = load_for_inference(cfg, checkpoint, info)
    reader = build_reader(cfg.data, split)
    dataset = SegmentationDataset(reader, cfg.data, train=False, geometry=loader_geometry(cfg))
    loader = eval_loader(dataset, info, cfg.eval.batch_size, cfg.data.num_workers)
    out = Path(out)
    n_pictures = cfg.eval.pictures if pictures is None else pictures
    drawer = None
    if info.is_main and n_pictures:
        from ..report import PictureWriter

        drawer = PictureWriter(out / "pictures", reader.labels, cfg.data, limit=n_pictures,
                               with_gt=reader.has_labels)
    written = 0
    for item in iterate_predictions(model, loader, info.device, autocast_dtype(cfg.train.amp, info.device),
                                    desc="predict", progress=progress and info.is_main):
        reader.write_prediction(out, item["index"], item["pred"].numpy())
        written += 1
        if drawer is not None:
            drawer(item)
    total = sum(D.all_gather_object(written))
    if info.is_main:
        log.info("wrote %d prediction files under %s", total, out)
        write_json(out / "predictions.json", {"checkpoint": str(checkpoint), "split": split, "frames": total,
                                             "dataset": cfg.data.dataset})
    return total
