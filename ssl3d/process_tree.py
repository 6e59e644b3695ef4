"""A job's processes as one tree: remember them while they run, signal them all, tell when all are gone.

A launcher such as Slicer's ``PythonSlicer`` (CTK's AppLauncher) runs the engine as its child and installs
no signal handler: SIGTERM kills the launcher alone, and its child, re-parented, runs on. So the tree is
remembered while it can still be walked (:meth:`ProcessTree.refresh`), and on POSIX the members of the
job's process group (a launcher's child stays in it) are looked up before the tree is declared gone.

psutil is imported where used (Slicer's Python may not have it before the first-use install); without it
only the root and, on POSIX, the process group are watched.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

__all__ = ["ProcessTree"]

_GONE_WAIT_S = 5.0  # how long a kill waits for the processes to disappear


class ProcessTree:
    """The process ``root`` and every descendant seen so far.

    Args:
        root: the pid the tree grows from (a job's started process, or a run's lock owner).
        group: also treat the members of ``root``'s process group as the tree (POSIX): right for a job
            started in a session of its own; wrong for a process started from a terminal (its group is
            the shell's job).
    """

    def __init__(self, root: int, group: bool = True) -> None:
        self.root = root
        self._group = group
        self._lock = threading.Lock()
        self._members: dict[int, psutil.Process] = {}
        self._pgid = _pgid(root) if group and os.name != "nt" else None
        self._root_started = 0.0
        root_process = _process(root)
        if root_process is not None:
            self._members[root] = root_process
            self._root_started = _create_time(root_process)

    # ----------------------------------------------------------------------------------- watching
    def refresh(self) -> None:
        """Remember the current descendants of every live member."""
        with self._lock:
            for process in [p for p in self._members.values() if _alive(p)]:
                for child in _children(process):
                    self._members.setdefault(child.pid, child)

    def alive(self) -> bool:
        """Some process of the tree still runs (zombies do not count: no one may ever reap them)."""
        self.refresh()
        with self._lock:
            if any(_alive(p) for p in self._members.values()):
                return True
            found = self._group_members()
            for process in found:
                self._members.setdefault(process.pid, process)
            return bool(found)

    def pids(self) -> list[int]:
        """The live processes' pids."""
        with self._lock:
            return sorted(pid for pid, p in self._members.items() if _alive(p))

    def _group_members(self) -> list[psutil.Process]:
        """Live members of the job's process group that the walk missed (re-parented before it saw them)."""
        if self._pgid is None:
            return []
        try:
            import psutil
        except ImportError:
            return [] if not _group_exists(self._pgid) else [_Placeholder(self._pgid)]  # type: ignore[list-item]
        found = []
        for process in psutil.process_iter():
            try:
                if os.getpgid(process.pid) == self._pgid and _create_time(process) >= self._root_started - 1.0 and _alive(process):
                    found.append(process)
            except (OSError, psutil.Error):
                continue
        return found

    # ---------------------------------------------------------------------------------- signalling
    def signal_stop(self) -> None:
        """SIGTERM to the process group and every live member outside it (POSIX); CTRL_BREAK_EVENT to
        the root's group on Windows (it reaches only a job that shares the caller's console)."""
        if os.name == "nt":
            if self._group:
                _send(self.root, signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined]
            return
        if self._pgid is not None:
            _killpg(self._pgid, signal.SIGTERM)
        with self._lock:
            outside = [p for p in self._members.values() if _alive(p) and (self._pgid is None or _pgid(p.pid) != self._pgid)]
        for process in outside:
            _signal(process, signal.SIGTERM)

    def kill(self) -> None:
        """Kill every live member and the process group; wait until they are gone (at most 5 s)."""
        self.refresh()
        with self._lock:
            survivors = [p for p in self._members.values() if _alive(p)]
        for process in survivors:
            _signal(process, signal.SIGKILL if os.name != "nt" else signal.SIGTERM)  # psutil: TerminateProcess on Windows
        if self._pgid is not None:
            _killpg(self._pgid, signal.SIGKILL)
        deadline = time.monotonic() + _GONE_WAIT_S
        while any(_alive(p) for p in survivors) and time.monotonic() < deadline:
            time.sleep(0.05)


class _Placeholder:
    """Stands for "some member of the group" when psutil is missing (only its liveness is asked)."""

    def __init__(self, pgid: int) -> None:
        self.pid = -pgid


# --------------------------------------------------------------------------------------------- helpers
def _process(pid: int) -> psutil.Process | None:
    try:
        import psutil
    except ImportError:
        return None
    try:
        return psutil.Process(pid)
    except psutil.Error:
        return None


def _create_time(process: psutil.Process) -> float:
    try:
        return process.create_time()
    except Exception:  # psutil.Error; gone
        return 0.0


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except Exception:  # psutil.Error: gone meanwhile
        return []


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed grandchild stays a zombie until some parent reaps it)."""
    if isinstance(process, _Placeholder):
        return _group_exists(-process.pid)
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)  # psutil checks that the pid still belongs to this process
    except Exception:  # psutil.Error, OSError: gone meanwhile
        pass


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _killpg(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except OSError:  # no member left
        pass


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True
