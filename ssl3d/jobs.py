"""Run an engine command as a subprocess: start it, stream its events, report how it ended, cancel it.

Slicer's modules never run training in the GUI process. They start ``python -m ssl3d ... --events -``
with :meth:`Job.engine` and receive the job's events (see :mod:`ssl3d.events`) through a callback::

    job = Job.engine(["pretrain", "--preset", "voco-v1-cpu", "--out", run_dir], run_dir=run_dir,
                     on_event=event_queue.put)
    ...                       # a QTimer on the main thread drains event_queue and calls job.poll()
    job.cancel()              # Cancel button: cancel file + SIGTERM to the tree, tree killed after the grace period
    job.wait()
    job.state                 # "cancelled" once every process is gone and the engine stopped itself
    job.raise_for_status()    # JobError(message) on failure, Cancelled after a cancel

Threads. ``on_event`` is called from the job's stdout reader thread, never from the caller's thread.
GUI callers must not touch widgets or MRML there: hand the event to the main thread (append it to a
``queue.Queue`` and drain the queue from a ``QTimer``). Once :meth:`Job.poll` returns an exit code, every
event has been delivered to ``on_event`` and is in :attr:`Job.events`.

The process tree. Inside Slicer the program is ``PythonSlicer``, a launcher (CTK's AppLauncher) that runs
``python-real`` as a child with the same stdout and stderr and installs no signal handler: SIGTERM kills
the launcher and the engine runs on, re-parented. So a job is the whole tree: :meth:`Job.poll` reports an
exit only when every process of it has exited (descendants are remembered while they run, by a tracking
thread and at each poll; on POSIX the members of the job's process group are looked up before the end is
reported), and :meth:`Job.cancel` signals every process of the tree, not only the one it started.

Cancel protocol (the engine's side is in ``ssl3d.train`` and :mod:`ssl3d.cancel_watch`). :meth:`Job.cancel`
writes a file named ``cancel`` into the run folder, naming the job's token (polled by the engine; the
dependable path on every OS) and sends SIGTERM to the job's process group and every remembered descendant
(POSIX) or CTRL_BREAK_EVENT (Windows; it reaches the job only when it shares the caller's console). The
engine then saves a checkpoint (training) or drops its partial result (segment, inspect) and exits with
:data:`CANCELLED_EXIT_CODE`. Whatever of the process tree is still alive after the grace period is killed.
A job started elsewhere (before a module reload, by an earlier Slicer) is re-attached from its run folder
with :meth:`JobBoard.attach` (see :mod:`ssl3d.attached_job`).
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Sequence

from .cancel_watch import ENV_CANCEL_FILE, ENV_JOB_TOKEN
from .errors import Cancelled, JobError
from .events import make_event, parse_event
from .process_tree import ProcessTree
from .run_state import (CANCEL_FILE, CANCELLED_EXIT_CODE, EVENTS_FILE, JOB_STATES, follow_run, job_state, last_checkpoint,
                        live_job, write_cancel_file)

__all__ = ["CANCELLED_EXIT_CODE", "CANCEL_FILE", "EVENTS_FILE", "JOB_STATES", "Job", "JobBoard", "follow_run", "live_job"]

STDERR_LINES = 200  # stderr lines kept for error reports
_DRAIN_S = 5.0  # how long to wait for the output pipes after the process tree has exited
_TRACK_S = 0.5  # how often the tracking thread remembers the tree's new processes
_ERROR_LINE = re.compile(r"^(?:.*?: )?error: (.+)$")  # "error: msg" (ssl3d CLI), "prog: error: msg" (argparse)

if TYPE_CHECKING:
    from .attached_job import AttachedJob

EventCallback = Callable[[dict], None]
_log = logging.getLogger(__name__)


class Job:
    """An engine job running as a subprocess in its own process group.

    Create it with :meth:`Job.start` or :meth:`Job.engine`, not with the constructor. Leaving a
    ``with Job.start(...) as job:`` block while the job runs cancels it and waits until its tree is gone.
    """

    def __init__(self, process: subprocess.Popen, command: Sequence[str], run_dir: Path | None,
                 on_event: EventCallback | None, token: str | None = None) -> None:
        self.command = list(command)
        self.run_dir = run_dir
        self.token = token or uuid.uuid4().hex
        self.events: list[dict] = []
        self._process = process
        self._on_event = on_event
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._cancelled = False
        self._tree = ProcessTree(process.pid)
        self._gone_at: float | None = None  # when the last process of the tree was seen gone
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(process.stdout,), name=f"ssl3d-job-{process.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr,), name=f"ssl3d-job-{process.pid}-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        threading.Thread(target=self._track, name=f"ssl3d-job-{process.pid}-tree", daemon=True).start()

    # ----------------------------------------------------------------------------------------- start
    @classmethod
    def start(cls, command: Sequence[str], run_dir: str | os.PathLike | None = None,
              on_event: EventCallback | None = None, env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> Job:
        """Start ``command`` in a new process group (session on POSIX) and follow its output.

        Args:
            command: program and arguments, e.g. ``[sys.executable, "-m", "ssl3d", "info", "--events", "-"]``.
            run_dir: the job's run folder; :meth:`cancel` writes its ``cancel`` file there. The job learns
                the file and its token from :data:`~ssl3d.cancel_watch.ENV_CANCEL_FILE` and
                :data:`~ssl3d.cancel_watch.ENV_JOB_TOKEN` (short commands watch it with
                :class:`~ssl3d.cancel_watch.CancelWatch`; the training loop polls ``run_dir/cancel``).
            on_event: called with each event, from the reader thread (see the module docstring).
                Stdout lines that are not events arrive as ``log`` events.
            env: variables added to (or replacing those of) the current environment. The job also gets
                ``PYTHONUNBUFFERED=1`` and ``PYTHONIOENCODING=utf-8`` unless ``env`` sets them.
            cwd: working directory of the job.

        Raises:
            JobError: the program cannot be started (not found, not executable).
        """
        command = [os.fspath(part) for part in command]
        if not command:
            raise JobError("Job.start: command must name a program, got an empty list.")
        token = uuid.uuid4().hex
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
        child_env.pop(ENV_CANCEL_FILE, None)  # never a cancel file inherited from a job that started this one
        child_env[ENV_JOB_TOKEN] = token
        if run_dir is not None:
            child_env[ENV_CANCEL_FILE] = os.fspath(Path(run_dir) / CANCEL_FILE)
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_env, cwd=cwd, encoding="utf-8", errors="replace", bufsize=1, **_group_options())
        except OSError as exc:
            raise JobError(f"cannot start {command[0]}: {exc.strerror or exc}.") from exc
        return cls(process, command, Path(run_dir) if run_dir is not None else None, on_event, token)

    @classmethod
    def engine(cls, args: Sequence[str], run_dir: str | os.PathLike | None = None,
               on_event: EventCallback | None = None, python: str | os.PathLike | None = None,
               **kwargs: Any) -> Job:
        """Start ``python -m ssl3d ARGS --events -`` (``--events -`` unless ARGS has ``--events``); the rest
        as :meth:`start`.

        ``python`` defaults to :data:`sys.executable`. Inside Slicer pass the ``PythonSlicer`` launcher
        (Slicer sets ``sys.executable`` to it too; the tree it starts is followed and cancelled as one).
        The folder holding this ``ssl3d`` package is put first on the job's ``PYTHONPATH``, so the job runs
        this copy of the engine.
        """
        args = [os.fspath(arg) for arg in args]
        events = [] if "--events" in args else ["--events", "-"]
        command = [os.fspath(python or sys.executable), "-m", "ssl3d", *args, *events]
        env = dict(kwargs.pop("env", None) or {})
        package_root = str(Path(__file__).resolve().parent.parent)
        path = env.get("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, path) if p)
        return cls.start(command, run_dir=run_dir, on_event=on_event, env=env, **kwargs)

    # ---------------------------------------------------------------------------------------- status
    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> int | None:
        """The exit code once every process of the job's tree has exited and its output is read, else
        ``None``. Never blocks (at most one look at the process table)."""
        code = self._process.poll()
        if code is None or not self._tree_gone():
            return None
        if self._reading() and time.monotonic() - self._gone_at < _DRAIN_S:  # type: ignore[operator]
            return None
        return code

    def wait(self, timeout: float | None = None) -> int:
        """Block until every process of the job has exited and its output is read; return the exit code.

        A failed job is not an error here (see :meth:`raise_for_status`).

        Raises:
            TimeoutError: the job (or a process it started) still runs after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still runs after {timeout} s.") from None
        while not self._tree_gone():
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} exited, but a process it started still runs after {timeout} s.")
            time.sleep(0.05)
        drain_until = self._gone_at + _DRAIN_S  # type: ignore[operator]
        if deadline is not None:
            drain_until = min(deadline, drain_until)
        for reader in self._readers:
            reader.join(max(0.0, drain_until - time.monotonic()))
        return code

    def _tree_gone(self) -> bool:
        """True once the started process and every process of its tree have exited (remembered)."""
        if self._gone_at is None and self._process.poll() is not None and not self._tree.alive():
            self._gone_at = time.monotonic()
        return self._gone_at is not None

    def _track(self) -> None:
        """Remember the tree's processes while it runs: a launcher's child outlives it, re-parented."""
        while not self._tree_gone():
            self._tree.refresh()
            time.sleep(_TRACK_S)

    @property
    def running(self) -> bool:
        return self.poll() is None

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal on POSIX), ``None`` while running."""
        return self.poll()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called on the running job, whatever exit code followed."""
        return self._cancelled

    @property
    def state(self) -> str:
        """One of :data:`JOB_STATES`. ``cancelled`` shows only once the whole tree is gone and the engine
        stopped itself (exit 130, or the CLI's ``cancelled:`` line when a launcher's exit code hides it):
        by then a training run has written its checkpoint (:attr:`last_checkpoint`)."""
        return job_state(self.poll(), self._cancelled, self.events, self._stderr)

    @property
    def last_checkpoint(self) -> str | None:
        """The path of the last ``checkpoint`` event (what a resume starts from), or None."""
        return last_checkpoint(self.events)

    @property
    def name(self) -> str:
        """A short name for messages, e.g. ``ssl3d pretrain``."""
        return _describe(self.command)

    @property
    def stderr(self) -> str:
        """The last :data:`STDERR_LINES` lines of the job's stderr (details for an error dialog)."""
        return "\n".join(self._stderr)

    @property
    def error_message(self) -> str | None:
        """One line on why the job failed; ``None`` while it runs or after a success.

        The ``error`` event's message, else the last ``error: ...`` line of stderr, else a summary
        with the exit code and the last stderr line (a traceback's exception).
        """
        code = self.poll()
        if code is None or (code == 0 and not self._cancelled):
            return None
        errors = [e.get("message") for e in self.events if e.get("event") == "error" and e.get("message")]
        if self._cancelled:
            return f"{self.name} was cancelled" + (f" ({errors[-1]})" if errors else ".")
        if errors:
            return str(errors[-1])
        lines = [line.strip() for line in self._stderr if line.strip()]
        for line in reversed(lines):
            match = _ERROR_LINE.match(line)
            if match:
                return match.group(1)
        return _exit_summary(self.name, code) + (f": {lines[-1]}" if lines else ".")

    def raise_for_status(self) -> Job:
        """Raise if the job failed or was cancelled; return the job otherwise.

        Raises:
            Cancelled: the job was cancelled (:attr:`cancelled`).
            JobError: the job exited with a nonzero code (:attr:`error_message`), or still runs.
        """
        code = self.poll()
        if code is None:
            raise JobError(f"{self.name} is still running; call wait() before raise_for_status().")
        if self._cancelled:
            raise Cancelled(self.error_message)
        if code != 0:
            raise JobError(self.error_message)
        return self

    # ---------------------------------------------------------------------------------------- cancel
    def cancel(self, grace_s: float = 30.0, wait: bool = False) -> None:
        """Ask the job to save a checkpoint and stop; kill its whole process tree after ``grace_s``.

        Writes ``run_dir/cancel`` (when the job has a run folder) naming the job's token, sends SIGTERM to
        the job's process group and every process of its tree (POSIX) or CTRL_BREAK_EVENT (Windows), and
        kills whatever of the tree is still alive ``grace_s`` seconds later. Returns at once unless
        ``wait`` is true: then it returns when every process of the tree is gone. A job whose tree has
        already exited is left alone (and not marked cancelled). Calling it again with ``grace_s=0``
        kills at once.
        """
        if self.poll() is not None:
            return
        self._cancelled = True
        self._tree.refresh()
        write_cancel_file(self.run_dir, self.token)
        self._tree.signal_stop()
        if wait:
            self._reap(grace_s)
            self.wait()
        else:
            threading.Thread(target=self._reap, args=(grace_s,), name=f"ssl3d-job-{self.pid}-cancel", daemon=True).start()

    def _reap(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the whole tree, then kill the survivors."""
        deadline = time.monotonic() + grace_s
        while not self._tree_gone() and time.monotonic() < deadline:
            self._tree.refresh()
            time.sleep(0.05)
        if not self._tree_gone():
            _log.info("killing %s (pid %d) after the cancel grace period", self.name, self.pid)
            self._tree.kill()
            try:
                self._process.wait(5.0)  # reap the started process; the others are re-parented
            except subprocess.TimeoutExpired:
                pass

    # ------------------------------------------------------------------------------------------ I/O
    def _reading(self) -> bool:
        return any(reader.is_alive() for reader in self._readers)

    def _read_stdout(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                event = parse_event(line)
                if event is None:
                    text = line.rstrip()
                    if not text:
                        continue
                    event = make_event("log", message=text, level="info")
                self.events.append(event)
                if self._on_event is not None:
                    try:
                        self._on_event(event)
                    except Exception:  # a broken callback must not stop the reader (the pipe would fill up)
                        _log.exception("on_event callback of %s failed", self.name)

    def _read_stderr(self, stream: IO[str]) -> None:
        with stream:
            for line in stream:
                self._stderr.append(line.rstrip("\r\n"))

    # ------------------------------------------------------------------------------ context manager
    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self.cancel(wait=True)
        else:
            self.wait()

    def __repr__(self) -> str:
        return f"<Job {self.name} pid={self._process.pid} {self.state}>"


class JobBoard:
    """Engine jobs by role ("pretrain", "segment", ...), one at a time per role, each with its events queued.

    What a GUI needs around :class:`Job`: its timer calls :meth:`take_events` and :meth:`finished` on the
    main thread while each job's reader thread fills that role's queue; scripts and tests call :meth:`run`.
    ``python`` runs the jobs (Slicer passes its PythonSlicer; default: this interpreter).

    Module reload: :meth:`detach_all` forgets the jobs without stopping them and returns ``role -> run_dir``
    for the module to keep; the new module's board calls :meth:`attach` for each run that :func:`live_job`
    still finds alive, and shows its progress, its end and its Cancel as before.
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python
        self._jobs: dict[str, Job | AttachedJob] = {}
        self._queues: dict[str, queue.Queue] = {}

    def start(self, role: str, args: Sequence[str], run_dir: str | os.PathLike | None = None) -> Job:
        """Start ``ssl3d ARGS`` for ``role``.

        Raises:
            RuntimeError: that role's job is still running.
            RunFolderBusy: a live process (an earlier job of this folder that has not stopped yet, or a run
                started elsewhere) owns ``run_dir``; its ``cancel`` file is left as it is.
        """
        if self.running(role):
            raise RuntimeError(f"a {role} job is already running.")
        if run_dir is not None:
            _refuse_busy(Path(run_dir))
        self._queues[role] = queue.Queue()
        job = Job.engine(args, run_dir=run_dir, on_event=self._queues[role].put, python=self.python)
        self._jobs[role] = job
        return job

    def attach(self, role: str, run_dir: str | os.PathLike) -> AttachedJob:
        """Follow the live run in ``run_dir`` as ``role``'s job (after a module reload or a Slicer restart).

        Raises:
            RuntimeError: that role's job is still running.
            JobError: no live process owns ``run_dir`` (the run has ended; its events are in events.jsonl).
        """
        from .attached_job import AttachedJob

        if self.running(role):
            raise RuntimeError(f"a {role} job is already running.")
        owner = live_job(run_dir)
        if owner is None:
            raise JobError(f"{run_dir}: no running job owns this run folder (it has ended, or never started).")
        self._queues[role] = queue.Queue()
        job = AttachedJob(run_dir, owner, on_event=self._queues[role].put)
        self._jobs[role] = job
        return job

    def reattach(self, kept: dict[str, str]) -> dict[str, AttachedJob]:
        """:meth:`attach` every ``role -> run_dir`` of ``kept`` (what :meth:`detach_all` returned before a
        reload) whose run still lives; the ended ones are skipped (their events are in their folder)."""
        attached = {}
        for role, run_dir in kept.items():
            if not self.running(role) and live_job(run_dir) is not None:
                try:
                    attached[role] = self.attach(role, run_dir)
                except JobError:  # ended between the two looks
                    continue
        return attached

    def running(self, role: str) -> bool:
        job = self._jobs.get(role)
        return job is not None and job.running

    def job(self, role: str) -> Job | AttachedJob | None:
        """The role's current job (running, or ended but not yet handed over by :meth:`finished`), or None."""
        return self._jobs.get(role)

    def take_events(self, role: str) -> list[dict]:
        """The events received since the last call."""
        events, pending = [], self._queues.get(role)
        while pending is not None and not pending.empty():
            events.append(pending.get_nowait())
        return events

    def finished(self, role: str) -> Job | AttachedJob | None:
        """The job once its whole tree has ended and all its events were taken (then forgotten), else None."""
        job = self._jobs.get(role)
        if job is None or job.running or not self._queues[role].empty():
            return None
        del self._jobs[role]
        return job

    def cancel(self, role: str) -> None:
        """Cancel file + stop signal to the tree: the job saves a checkpoint and stops; killed after the grace period."""
        if self.running(role):
            self._jobs[role].cancel()

    def cancel_all(self) -> None:
        for role in list(self._jobs):
            self.cancel(role)

    def detach(self, role: str) -> Path | None:
        """Forget ``role``'s job without stopping it; its run folder if it still runs and has one."""
        job = self._jobs.pop(role, None)
        self._queues.pop(role, None)
        if job is None or job.run_dir is None or not job.running:
            return None
        return job.run_dir

    def detach_all(self) -> dict[str, str]:
        """Forget every job without stopping any; ``role -> run_dir`` of those still running, for the module
        to keep and, after a reload, to :meth:`attach` where :func:`live_job` finds a live owner (training
        runs hold a lock; segment and inspect jobs do not and cannot be attached: cancel those first)."""
        kept = {role: self.detach(role) for role in list(self._jobs)}
        return {role: str(run_dir) for role, run_dir in kept.items() if run_dir is not None}

    def run(self, args: Sequence[str], run_dir: str | os.PathLike | None = None, timeout: float | None = None) -> list[dict]:
        """Run a job to its end and return its events.

        Raises:
            JobError: the job failed (its one-line message); Cancelled after a cancel.
        """
        job = self.start("run", args, run_dir)
        job.wait(timeout)
        events = self.take_events("run")
        del self._jobs["run"]
        job.raise_for_status()
        return events


def _refuse_busy(run_dir: Path) -> None:
    from .train.run_lock import RunFolderBusy, describe_owner

    owner = live_job(run_dir)
    if owner is not None:
        raise RunFolderBusy(f"{run_dir}: this run folder is in use by a running job ({describe_owner(owner)}); "
                            "wait for it to end, cancel it, or choose another output folder.")


# --------------------------------------------------------------------------------------------- helpers
def _group_options() -> dict[str, Any]:
    """Popen options that put the job in its own process group, so the tree can be signalled as one."""
    if os.name != "nt":
        return {"start_new_session": True}
    startup = subprocess.STARTUPINFO()  # no console window flashing up over Slicer
    startup.dwFlags |= subprocess.STARTF_USESHOWWINDOW
    startup.wShowWindow = 0  # SW_HIDE
    return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP, "startupinfo": startup}


def _describe(command: Sequence[str]) -> str:
    """``[python, -m, ssl3d, pretrain, ...]`` -> ``ssl3d pretrain``; ``[python, x.py, ...]`` -> ``x.py``."""
    rest = list(command)
    if len(rest) > 1 and Path(rest[0]).name.lower().startswith("python"):
        rest = rest[2:] if rest[1] == "-m" else rest[1:]
        name = Path(rest[0]).name if rest else Path(command[0]).name
    else:
        name = Path(rest[0]).name
    if len(rest) > 1 and not rest[1].startswith("-"):
        name += f" {rest[1]}"
    return name


def _exit_summary(name: str, code: int) -> str:
    if code < 0 and os.name != "nt":
        try:
            return f"{name} was killed by {signal.Signals(-code).name}"
        except ValueError:
            pass
    if code > 0xFFFF:  # Windows NTSTATUS, e.g. 0xC0000005 access violation
        return f"{name} failed with exit code {code:#x}"
    return f"{name} failed with exit code {code}"
