"""Atomic file output: everything is written to a temporary file in the target folder, then renamed.

A crash or Ctrl-C therefore never leaves a half-written prediction, checkpoint or report behind.
Files get the permissions of a normal write (0666 minus the user's umask), not mkstemp's 0600. An
output folder that cannot be written (a path under a file, a read-only file system, a full disk) is
a `DataError` naming it; `ensure_writable` (creating the folder) or `check_writable` (creating
nothing) checks one before long work starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .errors import DataError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def ensure_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Create `folder` (and parents) and check that a file can be written in it; DataError otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise DataError(f"{what} {folder} is not writable: {e.strerror or e}") from None
    return folder


def check_writable(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """Like `ensure_writable`, without leaving anything behind: an existing `folder` must take a file;
    a missing one needs its nearest existing parent to take a folder. DataError otherwise."""
    folder = Path(folder)
    if folder.is_dir():
        return ensure_writable(folder, what)
    parent = folder
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"{what} {folder} is not writable: {parent} is a file, not a folder")
    try:  # a folder made and removed at once: the only test that a read-only or special file system passes honestly
        os.rmdir(tempfile.mkdtemp(prefix=".balvit-write-test.", dir=parent))
    except OSError as e:
        raise DataError(f"{what} {folder} is not writable: cannot create folders in {parent} ({e.strerror or e})") from None
    return folder


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, else removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise DataError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch reports a short write (e.g. a full disk) as a RuntimeError
            kept = f"; the previous {path.name} is unchanged" if path.exists() else ""
            raise DataError(f"cannot write {path}: the write stopped short (is the disk full?){kept} "
                            f"[torch: {str(e).splitlines()[0].strip()}]") from None
    return Path(path)


def save_figure(path: str | os.PathLike, fig, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def save_image(path: str | os.PathLike, image) -> Path:
    """Save a PIL image atomically (format from the target suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG"))
    return path
