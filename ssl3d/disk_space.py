"""Free disk space: refuse work before it starts when its files will not fit, and name a full disk.

A training run writes its cache, two checkpoints (``last.pt``, ``best.pt``) and a bundle; a full disk in
the middle of a checkpoint write surfaces from torch as a ``RuntimeError`` ("file write failed") rather than
an ``OSError``. :func:`require` checks before the work, :func:`full_disk_error` turns a failed write into
one user error that names the file system, what was needed and what is free.

Standard library only.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import InputError

__all__ = ["DiskSpaceError", "free_bytes", "human_bytes", "is_disk_full", "full_disk_error", "require"]

_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_FULL_TEXT = ("No space left", "file write failed", "Disk quota exceeded", "not enough space")


class DiskSpaceError(InputError):
    """Not enough free space where a job writes (a user's location, so a user error: exit 2)."""


def _existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def mount_point(path: str | os.PathLike) -> Path:
    """The mount point of the file system that holds ``path`` (or would hold it)."""
    path = _existing(Path(path))
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes for an unprivileged writer on the file system of ``path`` (or of its nearest existing folder)."""
    return shutil.disk_usage(_existing(Path(path))).free


def human_bytes(count: float) -> str:
    """``1536`` -> ``"1.5 KB"`` (powers of 1000, as ``df -H``)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def require(path: str | os.PathLike, needed: int, what: str) -> None:
    """DiskSpaceError when the file system of ``path`` has less than ``needed`` bytes free for ``what``."""
    free = free_bytes(path)
    if needed > free:
        raise DiskSpaceError(
            f"{path}: {what} needs about {human_bytes(needed)}, but the file system at {mount_point(path)} has "
            f"{human_bytes(free)} free; free some space or choose another location.")


def is_disk_full(exc: BaseException) -> bool:
    """An OSError with ENOSPC/EDQUOT, or torch's RuntimeError over one (its text is all that is left)."""
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return isinstance(exc, (OSError, RuntimeError)) and any(text in str(exc) for text in _FULL_TEXT)


def full_disk_error(path: str | os.PathLike, needed: int | None = None) -> DiskSpaceError:
    """The user error for a write into ``path`` that found the disk full."""
    wanted = f"; it needed about {human_bytes(needed)}" if needed else ""
    return DiskSpaceError(
        f"{path}: the file system at {mount_point(path)} is full ({human_bytes(free_bytes(path))} free{wanted}); "
        "free some space or choose another location, then run again (with --resume for a training run).")
