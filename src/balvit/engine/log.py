"""Run logging: console (rank 0), JSON-lines metrics and TensorBoard event files in the run dir."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from ..errors import DataError

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _CurrentStderr(logging.StreamHandler):
    """A handler writing to whatever `sys.stderr` is when a record is emitted (not the stream at setup:
    a caller that redirects or replaces stderr later, e.g. contextlib.redirect_stderr, gets the log)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(rank: int = 0, level: int = logging.INFO) -> None:
    """Rank 0 logs INFO to stderr, other ranks only warnings (tagged with their rank)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _CurrentStderr()
    fmt = LOG_FORMAT if rank == 0 else f"[rank {rank}] " + LOG_FORMAT
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.WARNING)


class RunLogger:
    """Appends {"step", "time", ...} records to metrics.jsonl and scalars to TensorBoard (rank 0 only)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.tb = None
        self.t0 = time.time()
        if not enabled:
            return
        self.path = self.run_dir / "metrics.jsonl"
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(self.path, "a")
        except OSError as e:
            raise DataError(f"cannot write {self.path}: {e.strerror or e}") from None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except Exception as e:  # tensorboard missing: keep the JSON log
                logging.getLogger(__name__).warning("TensorBoard logging disabled: %s", e)

    def log(self, step: int, values: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time() - self.t0, 3)}
        record.update({f"{prefix}{k}": v for k, v in values.items()})
        try:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()
        except OSError as e:  # e.g. a full disk: one line naming the file, not a traceback
            raise DataError(f"cannot write {self.path}: {e.strerror or e}") from None
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            try:
                self.jsonl.close()
            except OSError:  # a write that failed already raised DataError; do not mask it
                pass
            if self.tb is not None:
                self.tb.close()
