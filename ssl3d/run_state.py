"""What a run folder says about its job, for :mod:`ssl3d.jobs` (jobs this process started) and
:mod:`ssl3d.attached_job` (a live run re-attached after a module reload): the cancel file, the events file,
the live owner of the run lock, and what an exit code and the events make of a job's state.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import Iterable, Sequence

from .events import EventFollower

__all__ = ["CANCELLED_EXIT_CODE", "CANCEL_FILE", "EVENTS_FILE", "JOB_STATES", "follow_run", "job_state", "last_checkpoint",
           "live_job", "write_cancel_file"]

#: Exit code of an engine job that stopped because it was cancelled (after saving a checkpoint);
#: 128 + SIGINT, as shells report an interrupted program.
CANCELLED_EXIT_CODE = 130

CANCEL_FILE = "cancel"  # written into the run folder by Job.cancel; the training loop polls for it
EVENTS_FILE = "events.jsonl"  # every run folder's events, read by follow_run
#: What :attr:`Job.state` says: running; cancelling (asked to stop, some process still runs); done (the
#: engine finished its work); cancelled (it stopped itself after a cancel: checkpoint written, no partial
#: output); killed (a cancelled tree that had to be killed, or died of a signal); failed.
JOB_STATES = ("running", "cancelling", "done", "cancelled", "killed", "failed")
_ENGINE_CANCELLED = re.compile(r"^(cancelled: |interrupted$)")  # what the ssl3d CLI prints when it stops on a cancel
_log = logging.getLogger("ssl3d.jobs")  # the jobs' logger, as before this module existed


def follow_run(run_dir: str | os.PathLike) -> EventFollower:
    """Follow the events of a run started elsewhere (a terminal, a cluster) from ``run_dir/events.jsonl``.

    Call ``poll()`` on the result (e.g. from a QTimer) to get the new events; the file may not exist yet.
    """
    return EventFollower(Path(run_dir) / EVENTS_FILE)


def write_cancel_file(run_dir: Path | None, token: str | None = None) -> None:
    """``run_dir/cancel``, naming the job's token (see :mod:`ssl3d.cancel_watch`); a warning if it cannot be written."""
    if run_dir is None:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CANCEL_FILE).write_text(f"cancelled at {time.time():.3f} by job {token or '-'}\n", encoding="utf-8")
    except OSError as exc:
        _log.warning("cannot write the cancel file in %s: %s", run_dir, exc)


def job_state(code: int | None, cancelled: bool, events: Sequence[dict], stderr: Iterable[str] = ()) -> str:
    """The :data:`JOB_STATES` word for a job with this exit code (None: its tree still runs) and events."""
    if code is None:
        return "cancelling" if cancelled else "running"
    if any(e.get("event") == "done" for e in events):
        return "done"  # the engine finished its work (a cancel came too late, or a launcher hid its exit code)
    if code == CANCELLED_EXIT_CODE or (cancelled and any(_ENGINE_CANCELLED.match(line) for line in stderr)):
        return "cancelled"  # the engine stopped itself (its exit code, or its message when a launcher hid it)
    if cancelled:
        return "killed"
    if code == 0:
        return "done"
    return "killed" if code < 0 else "failed"


def last_checkpoint(events: Sequence[dict]) -> str | None:
    paths = [e.get("path") for e in events if e.get("event") == "checkpoint" and e.get("path")]
    return str(paths[-1]) if paths else None


def live_job(run_dir: str | os.PathLike) -> dict | None:
    """The live process that owns the run folder (its ``run.lock`` record: pid, host, started), or None.

    A module keeps ``role -> run_dir`` of its running jobs (e.g. in its parameter node); after a reload this
    says which of them still run, and :meth:`JobBoard.attach` follows one.
    """
    from .train.run_lock import live_owner

    return live_owner(run_dir)
