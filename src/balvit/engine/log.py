"""Run logging: console (rank 0), JSON-lines metrics and TensorBoard event files in the run dir."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(rank: int = 0, level: int = logging.INFO) -> None:
    """Rank 0 logs INFO to stderr, other ranks only warnings (tagged with their rank)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
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
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / "metrics.jsonl", "a")
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
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(f"{prefix}{k}", v, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()
