"""A training run's folder: one writer at a time, and nothing written before the config is checked.

`RunFolder.open(config)` (rank 0, before anything is written):
  1. takes `<save_path>/.lock` (pid and host inside): a second training into the same folder is
     refused naming the holder; a lock left by a process that no longer runs on this host is taken
     over (and said so);
  2. removes the `.<name>.*.tmp` files a killed process left behind (balvit.io writes atomically);
  3. when the folder holds a `last.pt`, compares its config with this run's: every difference outside
     `config.RESUME_SAFE` (steps, cadences, data root, workers, memory savers) is refused with the
     fields named, before config.yaml or anything else is touched. `restart=True` instead moves the
     old run's files into `<save_path>/replaced-<UTC time>/` and starts at step 0.
  4. after a resume at step s, drops the metrics.jsonl records of steps > s (written after the last
     checkpoint by the interrupted process), so the log holds every step once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from ..config import RESUME_SAFE, describe_differences, differences
from ..errors import ConfigError
from ..io import ensure_writable, write_text
from .checkpoint import load_checkpoint

log = logging.getLogger(__name__)

RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.jsonl", "val_metrics.json", "tensorboard")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunFolder:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock = self.path / ".lock"
        self.held = False

    # -- the lock ---------------------------------------------------------------------------------

    def acquire(self) -> None:
        ensure_writable(self.path, "--save_path")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                same_host = holder.get("host") == me["host"]
                pid = int(holder.get("pid", -1))
                if same_host and pid > 0 and not _alive(pid):
                    log.warning("%s: taking over the lock of process %d, which no longer runs (its run stopped "
                                "without releasing it)", self.path, pid)
                    self.lock.unlink(missing_ok=True)
                    continue
                where = f"process {pid} on {holder.get('host')}" if pid > 0 else "another process"
                raise ConfigError(f"{self.path} is in use by {where} (since {holder.get('since', '?')}): one training "
                                  f"per run folder; wait for it, or choose another --save_path (a stale lock of a "
                                  f"crashed machine: delete {self.lock})")
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise ConfigError(f"{self.lock}: could not take the run folder's lock")

    def _holder(self) -> dict:
        try:
            return json.loads(self.lock.read_text())
        except (OSError, ValueError):
            return {}

    def release(self) -> None:
        if self.held:
            self.lock.unlink(missing_ok=True)
            self.held = False

    # -- opening ----------------------------------------------------------------------------------

    def remove_stale_temporaries(self) -> int:
        stale = [p for p in self.path.glob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        if stale:
            log.info("%s: removed %d temporary files of an interrupted write", self.path, len(stale))
        return len(stale)

    def check_resume(self, config: dict) -> dict | None:
        """The last.pt state when the run resumes (its config fits `config`), None for a new run."""
        last = self.path / "last.pt"
        if not last.is_file():
            return None
        state = load_checkpoint(last)
        diffs = differences(state["config"], config, ignore=RESUME_SAFE)
        if diffs:
            raise ConfigError(f"{last}: this run folder was trained with another config; resuming it with "
                              f"{describe_differences(diffs, 'checkpoint', 'now')} is refused (only "
                              f"{', '.join(RESUME_SAFE)} may change on resume). Use another --save_path, or "
                              "--restart to start over here (the old run is moved aside)")
        return state

    def archive(self) -> Path | None:
        """Move the files of an earlier run into replaced-<UTC time>/ (for --restart)."""
        present = [self.path / n for n in RUN_FILES if (self.path / n).exists()]
        if not present:
            return None
        dest = self.path / time.strftime("replaced-%Y%m%d-%H%M%S", time.gmtime())
        dest.mkdir()
        for p in present:
            p.rename(dest / p.name)
        log.warning("--restart: the earlier run's files moved to %s", dest)
        return dest

    def truncate_log(self, step: int) -> None:
        """Drop the metrics.jsonl records after `step` (the resumed run writes them again)."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return
        lines = path.read_text().splitlines()
        kept = []
        for line in lines:
            try:
                if json.loads(line).get("step", 0) > step:
                    continue
            except ValueError:
                continue  # a line cut by a kill: dropped
            kept.append(line)
        if len(kept) != len(lines):
            write_text(path, "".join(k + "\n" for k in kept))
            log.info("%s: dropped %d records after step %d (written after the last checkpoint)", path,
                     len(lines) - len(kept), step)

    def open(self, config: dict, config_yaml: str, restart: bool = False) -> dict | None:
        """Lock, clean, check; then write config.yaml. Returns the state to resume from (or None)."""
        self.acquire()
        try:
            self.remove_stale_temporaries()
            if restart:
                self.archive()
                state = None
            else:
                state = self.check_resume(config)
            if state is not None:
                self.truncate_log(int(state["step"]))
            write_text(self.path / "config.yaml", config_yaml)
        except BaseException:
            self.release()
            raise
        return state


__all__ = ["RunFolder", "RUN_FILES"]
