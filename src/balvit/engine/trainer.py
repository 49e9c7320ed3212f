"""The one training loop of the toolkit, and evaluation / prediction of a checkpoint on the original points.

Every model and task goes through `Trainer.fit`: the task (tasks/) returns {"loss", "logits"} for a
batch, declares its training set and its evaluations; the loop does autocast (bf16/fp16 on GPU),
gradient clipping, AdamW + warm-up/cosine, checkpoints (`last.pt` every `save_every` steps and on
SIGINT/SIGTERM, `best.pt` on a better validation score) and logging (tqdm on rank 0, metrics.jsonl,
TensorBoard). A run resumes from `<save_path>/last.pt` automatically - after its config was checked
against the checkpoint's (engine/run_folder.py) - and then sees exactly the batches, augmentations
and RNG states the uninterrupted run would have seen. Validation goes through the one inference loop
(engine/evaluate.py), and every cross-rank exchange through engine/dist.py.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..config import dump_yaml, to_dict
from ..data.dataset import SegmentationDataset, StreamSampler, build_reader, collate, ignore_stop_signals, \
    to_device, training_readers
from ..data.labels import labels_for
from ..data.preflight import check_or_raise
from ..errors import DataError
from ..io import check_writable, write_json, write_text
from ..metrics import format_table, markdown_table
from ..models import build_model, loader_geometry
from ..report import PictureWriter
from ..tasks import TASKS, TaskContext
from . import dist as D
from .checkpoint import check_compatible, init_model_from, load_checkpoint, restore_model, save_checkpoint
from .evaluate import Evaluation, PerFrame, autocast, autocast_dtype, point_evaluation, run_evaluation
from .log import RunLogger
from .optim import build_optimizer, build_scheduler
from .pretrained import load_trained_model
from .run_folder import RunFolder

log = logging.getLogger(__name__)


def set_threads(info: D.DistInfo) -> None:
    """On CPU, share the cores between the local processes of a torchrun job, unless the user chose a
    thread count (OMP_NUM_THREADS)."""
    if info.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


# -------------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, cfg, save_path: str | Path, info: D.DistInfo, progress: bool = True, restart: bool = False):
        self.cfg = cfg
        self.info = info
        self.save_path = Path(save_path)
        self.progress = progress and info.is_main
        self.restart = restart
        set_threads(info)
        D.seed_everything(cfg.train.seed + info.rank)
        if info.is_main:  # a --save_path under a file or on a read-only disk: said now, nothing created
            check_writable(self.save_path, "--save_path")
        needs_labels = TASKS[cfg.task].needs_labels
        if cfg.data.preflight:  # every file of the splits by size, before anything else: seconds, not hours in
            report = check_or_raise(cfg, labels=needs_labels)
            log.info("pre-flight check: %s", report.summary())

        readers = training_readers(cfg.data)
        self.train_reader = readers[0][0]
        self.frames_desc = readers[0][2]
        self.val_reader = build_reader(cfg.data, cfg.data.val_split)
        if needs_labels:  # found now, not as a loss of 0 at every step or after the last one
            for reader, _, _ in readers:
                reader.require_labels(f"training (task {cfg.task})")
            self.val_reader.require_labels(f"validation (data.val_split={cfg.data.val_split!r})")
        self.labels = self.train_reader.labels
        self.dtype = autocast_dtype(cfg.train.amp, info.device)
        self.ctx = TaskContext(cfg, self.labels, readers, self.val_reader, info.device, self.dtype,
                               load_model=load_trained_model, geometry=loader_geometry(cfg))

        self.model = build_model(cfg, self.labels.num_classes).to(info.device)
        self.init_report = init_model_from(self.model, cfg.train.init_from, cfg.train.init_exclude) \
            if cfg.train.init_from else None
        self.task = TASKS[cfg.task].from_config(cfg, self.model, self.ctx).to(info.device)
        self.train_set = self.task.train_dataset(self.ctx)
        self.evaluations = self.task.evaluations(self.ctx)
        self.optimizer = build_optimizer(self.task, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.step = 0
        self.best_score: float | None = None
        self.signals = 0

    # -- bookkeeping ------------------------------------------------------------------------

    def save(self, name: str) -> None:
        rng = D.all_gather_object(D.rng_state())
        if self.info.is_main:
            save_checkpoint(self.save_path / name, model=self.model, step=self.step, config=to_dict(self.cfg),
                            optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                            best_miou=self.best_score, rng=rng,
                            extra={"frames": self.frames_desc, "task_state": self.task.extra_state_dict()})
        D.barrier()

    def resume(self, state: dict | None) -> bool:
        if state is None:
            return False
        path = self.save_path / "last.pt"
        restore_model(self.model, state, path)
        self.task.load_extra_state_dict(state.get("extra", {}).get("task_state", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_score = state.get("best_miou")
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
            self.signals += 1
            if self.signals == 1:
                log.warning("signal %d: saving a checkpoint after this step, then stopping", signum)
            elif self.signals == 2:
                log.warning("signal %d: still stopping after this step (a third signal aborts without saving)", signum)
            else:
                raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except ValueError:  # not in the main thread
                pass
        return previous

    def _open_run_folder(self) -> dict | None:
        """Rank 0 locks and checks the run folder (nothing is written before); every rank then reads
        the state to resume from."""
        state = None
        self.folder = RunFolder(self.save_path)
        if self.info.is_main:
            state = self.folder.open(to_dict(self.cfg), dump_yaml(self.cfg), restart=self.restart)
        D.barrier()
        if not self.info.is_main and (self.save_path / "last.pt").is_file() and not self.restart:
            state = load_checkpoint(self.save_path / "last.pt")
        return state

    # -- the loop -----------------------------------------------------------------------------

    def fit(self, max_steps: int | None = None) -> dict:
        """Train until `train.steps` (or `max_steps` more steps, for tests); returns the last metrics."""
        state = self._open_run_folder()
        try:
            return self._fit(state, max_steps)
        finally:
            if self.info.is_main:
                self.folder.release()

    def _fit(self, state: dict | None, max_steps: int | None) -> dict:
        cfg, info = self.cfg, self.info
        self.resume(state)
        report = self.model.param_report()
        log.info("model %s: trainable %d, frozen %d, total %d parameters", cfg.model.name,
                 report["trainable"], report["frozen"], report["total"])
        log.info("training on %s; validating on %d %s frames", self.frames_desc, len(self.val_reader),
                 cfg.data.val_split)
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
                stop = D.any_rank(self.signals > 0)
                if stop or self.step % cfg.train.save_every == 0:
                    self.save("last.pt")
                if stop:
                    log.warning("stopped at step %d; last.pt saved in %s (run the same command to resume)", self.step,
                                self.save_path)
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
        """Every evaluation of the task through the one inference loop; best.pt follows task.score."""
        cfg = self.cfg
        metrics: dict = {}
        for evaluation in self.evaluations:
            metrics.update(run_evaluation(evaluation, self.info, batch_size=cfg.eval.batch_size,
                                          workers=cfg.data.num_workers, limit=cfg.data.max_val_frames,
                                          dtype=self.dtype, progress=self.progress))
        metrics["score"] = float(self.task.score(metrics))
        metrics["step"] = self.step
        improved = self.best_score is None or metrics["score"] > self.best_score
        if improved:
            self.best_score = metrics["score"]
        if logger is not None:
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
            for key, value in metrics.items():
                if key.endswith("iou") and isinstance(value, dict):
                    scalars.update({f"{key}/{k}": v for k, v in value.items() if v is not None})
            logger.log(self.step, scalars, prefix="val/")
        if self.info.is_main:
            log.info("step %d: validation score %.2f (best %.2f)", self.step, metrics["score"], self.best_score)
            write_json(self.save_path / "val_metrics.json", {k: v for k, v in metrics.items() if k != "confusion"})
        if improved:
            self.save("best.pt")
        return metrics


# ----------------------------------------------------------------------------- evaluation


def load_for_inference(cfg, checkpoint: str | Path, info: D.DistInfo):
    """Build the model of `cfg` and load a checkpoint's trainable weights into it (refused when the
    checkpoint's model or the data settings it saw differ: engine/checkpoint.check_compatible)."""
    state = load_checkpoint(checkpoint)
    check_compatible(state, to_dict(cfg), checkpoint)
    model = build_model(cfg, labels_for(cfg.data.dataset).num_classes).to(info.device)
    restore_model(model, state, checkpoint)
    return model, state


def _viewer_pages(out_dir: Path | None, reader, n: int, info: D.DistInfo, flag: str) -> PerFrame:
    """The `--viewer N` consumer: every rank runs it (the same evaluators everywhere), rank 0 writes the
    pages of its first N frames under out_dir/viewer/."""
    from ..viewer import ViewerPages

    if out_dir is None:
        raise ConfigError(f"--viewer needs {flag} (the pages go to its viewer/ folder)")
    pages = ViewerPages(out_dir / "viewer", reader.labels, limit=n, with_gt=reader.has_labels) if info.is_main else None
    return PerFrame(pages or (lambda item: None), "viewed")


def _frames_line(done: int, listed: int, split: str) -> str:
    return f"evaluated {done} of {listed} {split} frames"


def run_eval(cfg, checkpoint: str | Path, info: D.DistInfo, save_path: str | Path | None = None,
             split: str | None = None, pictures: int | None = None, progress: bool = True, viewer: int = 0) -> dict:
    """`balvit eval`: per-class IoU + mIoU on the original points of a split (default data.val_split);
    `viewer`: interactive pages (viewer.py) of that many frames under save_path/viewer/."""
    set_threads(info)
    split = split or cfg.data.val_split
    out_dir = Path(save_path) if save_path else None
    if out_dir is not None and info.is_main:  # checked now, created when the first file is written
        check_writable(out_dir, "--save_path")
    reader = build_reader(cfg.data, split)
    reader.require_labels(f"balvit eval (split {split!r})")
    if cfg.data.preflight:  # every listed frame's files by size, before the first one is evaluated
        check_or_raise(cfg, [split])
    model, state = load_for_inference(cfg, checkpoint, info)
    dataset = SegmentationDataset(reader, cfg.data, train=False, geometry=loader_geometry(cfg))
    n_pictures = cfg.eval.pictures if pictures is None else pictures
    extra = []
    if out_dir is not None and n_pictures:  # every rank runs the same evaluators; rank 0 draws its frames
        draw = PictureWriter(out_dir / "pictures", reader.labels, cfg.data, limit=n_pictures) if info.is_main else None
        extra.append(PerFrame(draw or (lambda item: None), "drawn"))
    if viewer:
        extra.append(_viewer_pages(out_dir, reader, viewer, info, "--save_path"))
    t0 = time.time()
    evaluation = point_evaluation(model, dataset, reader.labels, *extra, name="eval")
    metrics = run_evaluation(evaluation, info, batch_size=cfg.eval.batch_size, workers=cfg.data.num_workers,
                             limit=cfg.data.max_val_frames, dtype=autocast_dtype(cfg.train.amp, info.device),
                             progress=progress)
    metrics.pop("drawn", None)
    metrics.pop("viewed", None)
    listed = min(len(dataset), cfg.data.max_val_frames) if cfg.data.max_val_frames else len(dataset)
    if metrics["frames"] != listed:  # every listed frame is evaluated, or the score is refused
        raise DataError(f"{reader.describe()}: evaluated {metrics['frames']} of {listed} listed frames")
    metrics["seconds"] = time.time() - t0
    metrics["frames_listed"] = listed
    metrics["checkpoint"] = str(checkpoint)
    metrics["checkpoint_step"] = state.get("step")
    metrics["params"] = model.param_report()
    metrics["backbone"] = model.frozen_identities()
    if info.is_main and out_dir is not None:
        write_json(out_dir / "metrics.json", {k: v for k, v in metrics.items() if k != "confusion"})
        write_json(out_dir / "confusion.json", {"classes": list(reader.labels.class_names), "rows_gt_cols_pred": metrics["confusion"]})
        write_text(out_dir / "metrics.md", markdown_table(metrics))
    if info.is_main:
        print(_frames_line(metrics["frames"], listed, split), flush=True)
        print(format_table(metrics), flush=True)
    return metrics


def run_predict(cfg, checkpoint: str | Path, info: D.DistInfo, out: str | Path, split: str = "valid",
                pictures: int | None = None, progress: bool = True, viewer: int = 0) -> int:
    """`balvit predict`: official-format prediction files (atomic) for every frame of a split;
    `viewer`: interactive pages (viewer.py) of that many frames under out/viewer/."""
    set_threads(info)
    out = Path(out)
    if info.is_main:  # checked now, created when the first file is written
        check_writable(out, "--out")
    reader = build_reader(cfg.data, split)
    if cfg.data.preflight:  # every scan by size before the first prediction (labels are not needed)
        check_or_raise(cfg, [split], labels=False)
    model, _ = load_for_inference(cfg, checkpoint, info)
    dataset = SegmentationDataset(reader, cfg.data, train=False, geometry=loader_geometry(cfg))
    n_pictures = cfg.eval.pictures if pictures is None else pictures
    consumers = [PerFrame(lambda item: reader.write_prediction(out, item["index"], item["pred"].numpy()), "written")]
    if n_pictures:  # every rank runs the same evaluators; rank 0 draws its frames
        draw = PictureWriter(out / "pictures", reader.labels, cfg.data, limit=n_pictures,
                             with_gt=reader.has_labels) if info.is_main else None
        consumers.append(PerFrame(draw or (lambda item: None), "drawn"))
    if viewer:
        consumers.append(_viewer_pages(out, reader, viewer, info, "--out"))
    evaluation = Evaluation("predict", dataset, model, model, consumers)  # no metrics: frames may lack labels
    result = run_evaluation(evaluation, info, batch_size=cfg.eval.batch_size, workers=cfg.data.num_workers,
                            dtype=autocast_dtype(cfg.train.amp, info.device), progress=progress)
    total = result["written"]
    if info.is_main:
        log.info("wrote %d prediction files under %s", total, out)
        print(f"predicted {total} of {len(dataset)} {split} frames", flush=True)
        write_json(out / "predictions.json", {"checkpoint": str(checkpoint), "split": split, "frames": total,
                                             "dataset": cfg.data.dataset})
    return total
