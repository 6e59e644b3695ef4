"""One live owner per run folder: a lock file with the owner's pid, host and start time, kept fresh by a heartbeat.

A training run takes ``run_dir/run.lock`` before it writes anything (also on ``--resume``) and drops it when it
ends. A second ``pretrain``/``finetune`` on the same ``--out``, or Slicer's Start while an earlier job of that
folder still runs, gets one :class:`~ssl3d.errors.InputError` naming the owner. A lock is stale, and taken
over, when its process is gone (same host) or, for an owner on another host (a shared file system), when its
heartbeat (the file's mtime, refreshed every :data:`HEARTBEAT_S`) is older than :data:`STALE_S`.

Standard library only (psutil when present, for pid reuse): Slicer's process reads locks before a job starts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..errors import InputError

__all__ = ["LOCK_FILE", "HEARTBEAT_S", "STALE_S", "RunLock", "RunFolderBusy", "read_owner", "live_owner", "describe_owner"]

LOCK_FILE = "run.lock"
HEARTBEAT_S = 10.0  # how often the owner touches the lock file
STALE_S = 60.0  # a lock from another host whose heartbeat is this old belongs to a dead run


class RunFolderBusy(InputError):
    """The run folder has a live owner (another training process)."""


def read_owner(run_dir: str | os.PathLike) -> dict | None:
    """The lock's record (pid, host, started, token) plus ``heartbeat`` (the file's mtime), or None."""
    path = Path(run_dir) / LOCK_FILE
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        owner["heartbeat"] = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _pid_alive(pid: int, started: float) -> bool:
    """The process ``pid`` runs and is not a newer process that reuses the number."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return psutil.Process(pid).create_time() <= started + 2.0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:
        return False
    return True


def live_owner(run_dir: str | os.PathLike, now: float | None = None) -> dict | None:
    """The lock's owner when it is alive, else None (no lock, or a stale one)."""
    owner = read_owner(run_dir)
    if owner is None:
        return None
    if owner.get("host") == socket.gethostname():
        return owner if _pid_alive(int(owner.get("pid", -1)), float(owner.get("started", 0.0))) else None
    age = (time.time() if now is None else now) - owner["heartbeat"]
    return owner if age < STALE_S else None


def describe_owner(owner: dict) -> str:
    """``pid 123 on host since 2026-12-07 04:00:00 UTC``."""
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(owner.get("started", 0.0))))
    return f"pid {owner.get('pid')} on {owner.get('host')} since {since}"


class RunLock:
    """The lock of one run folder, held by this process; :meth:`acquire` it, :meth:`release` it at the end."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "token": uuid.uuid4().hex}
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @classmethod
    def acquire(cls, run_dir: str | os.PathLike) -> RunLock:
        """Take the folder's lock (creating the folder), taking over a stale one; start the heartbeat.

        Raises:
            RunFolderBusy: a live process owns the folder.
        """
        lock = cls(run_dir)
        lock.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            if lock._create():
                lock._start_heartbeat()
                return lock
            owner = live_owner(lock.path.parent)
            if owner is not None:
                raise RunFolderBusy(f"{lock.path.parent}: this run folder is in use by another training run "
                                    f"({describe_owner(owner)}); wait for it to end, cancel it, or choose another --out.")
            lock._remove_stale()
        raise RunFolderBusy(f"{lock.path}: cannot take the run folder's lock (another process keeps taking it).")

    def _create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(self.record, handle)
        return True

    def _remove_stale(self) -> None:
        """Move the stale lock aside and drop it; a lock that turns out fresh (a racer's) is put back."""
        aside = self.path.with_name(f"{LOCK_FILE}.{self.record['token']}")
        stale = read_owner(self.path.parent)
        try:
            os.replace(self.path, aside)
        except OSError:
            return
        moved = read_owner_file(aside)
        if stale is not None and moved is not None and moved.get("token") != stale.get("token"):
            try:
                os.link(aside, self.path)  # a racer's new lock: give it back (fails if yet another exists)
            except OSError:
                pass
        aside.unlink(missing_ok=True)

    def _start_heartbeat(self) -> None:
        self._beat = threading.Thread(target=self._heartbeat, name="ssl3d-run-lock", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file if it is still this process's."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=1.0)
        owner = read_owner(self.path.parent)
        if owner is not None and owner.get("token") == self.record["token"]:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner_file(path: Path) -> dict | None:
    """The JSON record of a lock file at any path, or None."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None
