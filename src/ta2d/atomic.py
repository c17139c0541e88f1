"""Atomic file writes: a killed job never leaves a file that looks complete.

Everything is written to a temporary file in the target's folder and renamed over the target
(os.replace is atomic on POSIX within one file system).

A write that fails because the disk is full (ENOSPC, EDQUOT, EFBIG) raises one DiskFullError that names the
file, the file system and its free space, and says what to do (ta2d.disk_full).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from ta2d.disk_full import (  # DiskFullError is raised from here: importable from either
    DISK_FULL_ERRNOS,
    DiskFullError,
    disk_full_errno_or_none,
    disk_full_error,
    disk_full_reports_held,
    replay_reports,
)


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temp path beside `target`; on success rename it to `target`, on error remove it.

    An error caused by a full disk is raised as one DiskFullError (see the module docstring).
    """
    target = Path(target)
    ensure_dir(target.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:  # no inode left, or the folder cannot grow
            raise disk_full_error(err.errno, target, writer_error=err) from None
        raise type(err)(err.errno, f"cannot write {target}: {err.strerror}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results must be readable like any file
    held_reports: list[str] = []
    try:
        with disk_full_reports_held(held_reports):
            yield Path(tmp)
        os.replace(tmp, target)
    except BaseException as err:
        # judged before the temp file goes: removing it frees the space that shows the disk was full
        full = None if isinstance(err, DiskFullError) else disk_full_errno_or_none(err, Path(tmp))
        error = None if full is None else disk_full_error(full, target, err, len(held_reports))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if error is None:
            replay_reports(held_reports, target)
            raise
        # from None: the log shows this message, not the library's traceback. The original stays as
        # __context__, so a library's half-closed file object lives (and dies) with this error.
        raise error from None
    replay_reports(held_reports, target)


def ensure_dir(path: str | Path) -> Path:
    """mkdir -p, with an error that names the folder and what is in the way (not a bare "File exists")."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if err.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(err.errno, path, writer_error=err) from None
        blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else err.strerror
        raise type(err)(err.errno, f"cannot create the output folder {path}: {why}") from None
    return path


def write_text_if_changed(target: str | Path, text: str) -> bool:
    """Write `text` atomically, but only when the bytes differ; returns whether it wrote.

    Leaving an unchanged file untouched keeps its mtime, so Snakemake sees no change at all.
    """
    target = Path(target)
    data = text.encode()
    if target.is_file() and target.stat().st_size == len(data) and target.read_bytes() == data:
        return False
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return True


def atomic_torch_save(obj, target: str | Path) -> None:
    import torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
