"""A run that another process started, followed from its run folder: after a module reload or a new Slicer.

A training run writes ``run_dir/events.jsonl`` and holds ``run_dir/run.lock`` (its pid, host and start;
see :mod:`ssl3d.train.run_lock`) while it lives. That is all a GUI needs to pick the run up again: the
events give progress and the end, the lock's pid gives the process tree to watch and to signal. An
:class:`AttachedJob` offers what a :class:`ssl3d.jobs.JobBoard` uses of a :class:`ssl3d.jobs.Job`
(events through a callback from a background thread, ``poll``, ``state``, ``cancel``), so the module's
timer code does not care which one it holds.

Its exit code is not known (another process reaped it); :meth:`AttachedJob.poll` reports the one the events
imply: 0 after ``done``, 130 after the engine's cancel message, 1 otherwise.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from .errors import Cancelled, JobError
from .process_tree import ProcessTree

__all__ = ["AttachedJob"]

_FOLLOW_S = 0.2  # how often the events file and the owner are looked at
# the training loop's log lines when it stops on a cancel (in a step, or while it prepares the data)
_CANCELLED_MESSAGES = ("cancelled at step", "cancelled before training started")


class AttachedJob:
    """Follow the live run in ``run_dir`` (its lock's owner ``owner``, from :func:`ssl3d.jobs.live_job`).

    The events already in ``events.jsonl`` are delivered first (the loss curve so far), then the new ones.
    """

    def __init__(self, run_dir: str | os.PathLike, owner: dict, on_event: Callable[[dict], None] | None = None) -> None:
        from .run_state import follow_run

        self.run_dir = Path(run_dir)
        self.owner = dict(owner)
        self.command = ["ssl3d", f"run in {self.run_dir.name}"]
        self.events: list[dict] = []
        self._on_event = on_event
        self._follower = follow_run(self.run_dir)
        self._local = owner.get("host") == socket.gethostname()
        self._tree = ProcessTree(int(owner["pid"]), group=False) if self._local else None
        self._cancelled = False
        self._ended = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"ssl3d-attached-{owner.get('pid')}", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------- follow
    def _owner_alive(self) -> bool:
        if self._tree is not None:
            return self._tree.alive()
        from .run_state import live_job

        return live_job(self.run_dir) is not None  # another host: its heartbeat

    def _deliver(self) -> None:
        for event in self._follower.poll():
            self.events.append(event)
            if self._on_event is not None:
                try:
                    self._on_event(event)
                except Exception:  # as Job's reader: a broken callback must not stop the following
                    pass

    def _follow(self) -> None:
        while self._owner_alive():
            self._deliver()
            time.sleep(_FOLLOW_S)
        self._deliver()  # what the run wrote before it exited
        self._ended.set()

    # ----------------------------------------------------------------------------------- status
    @property
    def pid(self) -> int:
        return int(self.owner["pid"])

    @property
    def name(self) -> str:
        return f"the run in {self.run_dir}"

    def poll(self) -> int | None:
        """None while the run's process tree lives; then the exit code its events imply (module docstring)."""
        if not self._ended.is_set():
            return None
        kinds = [e.get("event") for e in self.events]
        if "done" in kinds:
            return 0
        if self._stopped_on_cancel():
            from .run_state import CANCELLED_EXIT_CODE

            return CANCELLED_EXIT_CODE
        return 1

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise TimeoutError(f"{self.name} still runs after {timeout} s.")
        return self.poll()  # type: ignore[return-value]

    @property
    def running(self) -> bool:
        return self.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.poll()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def state(self) -> str:
        from .run_state import job_state

        return job_state(self.poll(), self._cancelled or self._stopped_on_cancel(), self.events)

    @property
    def last_checkpoint(self) -> str | None:
        from .run_state import last_checkpoint

        return last_checkpoint(self.events)

    @property
    def error_message(self) -> str | None:
        code = self.poll()
        if code is None or code == 0:
            return None
        errors = [str(e["message"]) for e in self.events if e.get("event") == "error" and e.get("message")]
        if code != 1 or self._cancelled:
            return f"{self.name} was cancelled" + (f" ({errors[-1]})" if errors else ".")
        return errors[-1] if errors else f"{self.name} ended without finishing (no 'done' event)."

    def raise_for_status(self) -> AttachedJob:
        code = self.poll()
        if code is None:
            raise JobError(f"{self.name} is still running; call wait() before raise_for_status().")
        if self._cancelled or code == 130:
            raise Cancelled(self.error_message)
        if code != 0:
            raise JobError(self.error_message)
        return self

    def _stopped_on_cancel(self) -> bool:
        return any(e.get("event") == "log" and str(e.get("message", "")).startswith(_CANCELLED_MESSAGES) for e in self.events)

    # ----------------------------------------------------------------------------------- cancel
    def cancel(self, grace_s: float = 30.0, wait: bool = False) -> None:
        """Cancel file + SIGTERM to the owner's tree (this host); killed after ``grace_s``, as :meth:`Job.cancel`.

        A run on another host gets the cancel file only (its loop polls it over the shared folder).
        """
        from .run_state import write_cancel_file

        if self.poll() is not None:
            return
        self._cancelled = True
        write_cancel_file(self.run_dir)
        if self._tree is not None:
            self._tree.signal_stop()
            reaper = threading.Thread(target=self._reap, args=(grace_s,), name=f"ssl3d-attached-{self.pid}-cancel", daemon=True)
            reaper.start()
            if wait:
                reaper.join()
        if wait:
            self._ended.wait()

    def _reap(self, grace_s: float) -> None:
        if not self._ended.wait(grace_s) and self._tree is not None:
            self._tree.kill()

    def __repr__(self) -> str:
        return f"<AttachedJob {self.run_dir} pid={self.owner.get('pid')} {self.state}>"
