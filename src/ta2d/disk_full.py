"""A full disk while a product is written: one :class:`DiskFullError` that names the file, the file system and its
free space, and says what to do (ta2d.atomic.atomic_path raises it).

The libraries often lose the errno (torch.save says only "iostream error" or "file write failed"; h5py puts
"errno = 28" in its text), so an error that states no errno is judged by the file system itself, before the
temp file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import sys
import tempfile
import threading
from pathlib import Path

DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# "Full" when no errno says so: the file system cannot take one more MiB (by statvfs or by a probe write).
FULL_MARGIN_BYTES = 1 << 20
# EIO says nothing by itself: network file systems report a full disk or quota as EIO at write-back.
_AMBIGUOUS_ERRNOS = (errno.EIO,)
_ERRNO_IN_TEXT = re.compile(r"errno\s*=\s*(\d+)|\[Errno (\d+)\]", re.IGNORECASE)
_STRERROR_IN_TEXT = {os.strerror(e).lower(): e for e in DISK_FULL_ERRNOS}


class DiskFullError(OSError):
    """A write failed because the disk (file system, quota or file-size limit) is full; errno is ENOSPC, EDQUOT or
    EFBIG. ``target``, ``mount_point``, ``free_bytes`` and ``total_bytes`` say where (None where unknown)."""

    target: Path | None = None
    mount_point: Path | None = None
    free_bytes: int | None = None
    total_bytes: int | None = None


def disk_full_errno(err: BaseException, written: Path | None = None) -> int | None:
    """ENOSPC, EDQUOT or EFBIG when `err`, raised while writing the file `written`, comes from a full disk, else None.

    An errno in the error (attribute or text, anywhere in its chain) decides. An OSError or RuntimeError that
    states none (torch.save's) is checked against the file system of `written`: its size against this process's
    file-size limit (ulimit -f), statvfs's free space, and a probe write of FULL_MARGIN_BYTES beside it.
    """
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: never a disk
        return None
    chain = _error_chain(err)
    stated = [n for e in chain for n in _stated_errnos(e)]
    for n in stated:
        if n in DISK_FULL_ERRNOS:
            return n
    if any(n not in _AMBIGUOUS_ERRNOS for n in stated) or written is None:
        return None
    if not any(isinstance(e, (OSError, RuntimeError)) for e in chain):
        return None  # a bug or bad data, however full the disk is
    return _measured_disk_full_errno(written)


def disk_full_error(err_no: int, target: str | Path, writer_error: BaseException | None = None,
                    n_more_reports: int = 0) -> DiskFullError:
    """The DiskFullError for writing `target`: the file, the file system and its free space, and what to do."""
    target = Path(os.path.abspath(target))  # rules pass relative paths; the message must say where
    folder = _existing_folder(target.parent)
    mount = _mount_point(folder)
    free, total, no_inodes = _free_space(folder)
    if free is None:
        space = "an unknown amount of free space (statvfs failed)"
    else:
        space = f"{_size(free)} free of {_size(total)} (statvfs of {folder})"
    if no_inodes:
        space += " and no free inodes (no new file can be made)"
    if err_no == errno.EDQUOT:
        why = "disk quota exceeded (see `quota -s`, or `lfs quota -u $USER` on Lustre)"
        todo = f"Free space within your quota on {mount} (or have the quota raised)"
    elif err_no == errno.EFBIG:
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        if limit != resource.RLIM_INFINITY:
            why = f"file too large: it reached this process's file-size limit of {_size(limit)} (ulimit -f)"
            todo = "Raise the file-size limit (ulimit -f, or the batch system's file-size limit)"
        else:
            why = "file too large for the file system"
            todo = "Write the results to a file system that takes larger files"
    else:
        why = "no space left on the device"
        todo = f"Free space on {mount} (or move the results to a bigger disk)"
    message = (f"disk full: cannot write {target}: {why}. The file system mounted at {mount} has {space}. "
               f"Nothing was written under that name (an older file there is left as it was). {todo}, then "
               "rerun: the next run completes.")
    if writer_error is not None:
        more = f"; {n_more_reports} more while it closed the file" if n_more_reports else ""
        message += f" (the writer reported: {_one_line(writer_error)}{more})"
    error = DiskFullError(err_no, message)
    error.target, error.mount_point, error.free_bytes, error.total_bytes = target, mount, free, total
    return error



# --- telling a full disk ----------------------------------------------------------------------------------

def disk_full_errno_or_none(err: BaseException, written: Path) -> int | None:
    try:
        return disk_full_errno(err, written)
    except Exception:  # noqa: BLE001 - telling a full disk must never hide the error it is about
        return None


def _error_chain(err: BaseException) -> list[BaseException]:
    """`err` and the errors it was raised from or while handling (h5py raises a second error on close)."""
    chain, todo = [], [err]
    while todo and len(chain) < 20:
        e = todo.pop()
        if e is None or any(e is seen for seen in chain):
            continue
        chain.append(e)
        todo += [e.__cause__, e.__context__]
    return chain


def _stated_errnos(err: BaseException) -> list[int]:
    found = [err.errno] if isinstance(err, OSError) and isinstance(err.errno, int) else []
    text = str(err)
    found += [int(a or b) for a, b in _ERRNO_IN_TEXT.findall(text)]
    lowered = text.lower()
    found += [n for words, n in _STRERROR_IN_TEXT.items() if words in lowered]
    return found


def _measured_disk_full_errno(written: Path) -> int | None:
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    with contextlib.suppress(OSError):
        if limit != resource.RLIM_INFINITY and written.stat().st_size >= limit:
            return errno.EFBIG
    folder = _existing_folder(written.parent)
    free, _, _ = _free_space(folder)
    if free is not None and free < FULL_MARGIN_BYTES:
        return errno.ENOSPC
    return _probe_write(folder)


def _probe_write(folder: Path) -> int | None:
    """The errno of writing FULL_MARGIN_BYTES more in `folder` when it is a full disk's, asked of the kernel:
    statvfs knows nothing of quotas, nor of file systems that fail with space left (btrfs metadata, network file
    systems at write-back). A file of its own, so no byte of the temp file (perhaps a hard link) changes."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".ta2d-space-probe.", suffix=".part", dir=folder)
    except OSError as err:
        return err.errno if err.errno in DISK_FULL_ERRNOS else None
    try:
        block = bytes(64 << 10)
        for _ in range(FULL_MARGIN_BYTES // len(block)):
            os.write(fd, block)
        os.fsync(fd)
    except OSError as err:
        return err.errno if err.errno in DISK_FULL_ERRNOS else None
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)
    return None


def _free_space(folder: Path) -> tuple[int | None, int | None, bool]:
    """(bytes free for this user, file system size, whether it has no free inodes), as statvfs reports them."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None, None, False
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use the reserved blocks
    return blocks * st.f_frsize, st.f_blocks * st.f_frsize, st.f_files > 0 and st.f_favail == 0


def _existing_folder(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.is_dir() and path != path.parent:
        path = path.parent
    return path


def _mount_point(path: Path) -> Path:
    path = Path(os.path.realpath(path))
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            return f"{value:.1f} {unit}"
    return f"{value / 1024:.1f} TiB"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 240 else text[:237] + "..."


# --- the writer's own reports of the same failure ---------------------------------------------------------
# h5py reports every cached chunk it cannot flush while a file on a full disk closes, from __dealloc__, twice
# (as a printed traceback through sys.excepthook, and as "Exception ignored" through sys.unraisablehook):
# hundreds of tracebacks on stderr around the one error that matters. While a temp file is written, reports
# that name a full disk are held, as text (keeping the objects would revive them), and dropped when the
# DiskFullError says it all; any other outcome prints them after all.

_held = threading.local()
_hook_lock = threading.Lock()
_hook_users = 0
_replaced_hooks: dict[str, object] = {}


@contextlib.contextmanager
def disk_full_reports_held(reports: list[str]):
    global _hook_users
    with _hook_lock:
        if _hook_users == 0:
            _replaced_hooks.update(unraisablehook=sys.unraisablehook, excepthook=sys.excepthook)
            sys.unraisablehook, sys.excepthook = _hold_unraisable, _hold_printed
        _hook_users += 1
    if not hasattr(_held, "stack"):
        _held.stack = []
    _held.stack.append(reports)
    try:
        yield
    finally:
        _held.stack.pop()
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0:
                if sys.unraisablehook is _hold_unraisable:  # unless someone replaced it since
                    sys.unraisablehook = _replaced_hooks["unraisablehook"]
                if sys.excepthook is _hold_printed:
                    sys.excepthook = _replaced_hooks["excepthook"]
                _replaced_hooks.clear()


def _held_as_disk_full(exc: BaseException | None) -> bool:
    stack = getattr(_held, "stack", None)
    if not stack or exc is None or not any(n in DISK_FULL_ERRNOS for n in _stated_errnos(exc)):
        return False
    stack[-1].append(_one_line(exc))
    return True


def _hold_unraisable(unraisable) -> None:
    if not _held_as_disk_full(unraisable.exc_value):
        _replaced_hooks.get("unraisablehook", sys.__unraisablehook__)(unraisable)


def _hold_printed(exc_type, exc, tb) -> None:
    if not _held_as_disk_full(exc):
        _replaced_hooks.get("excepthook", sys.__excepthook__)(exc_type, exc, tb)


def replay_reports(reports: list[str], target: Path) -> None:
    for text in reports:
        print(f"Exception ignored while writing {target}: {text}", file=sys.stderr)
