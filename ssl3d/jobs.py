"""Run an engine command as a subprocess: start it, stream its events, report how it ended, cancel it.

Slicer's modules never run training in the GUI process. They start ``python -m ssl3d ... --events -``
with :meth:`Job.engine` and receive the job's events (see :mod:`ssl3d.events`) through a callback::

    job = Job.engine(["pretrain", "--preset", "voco-v1-cpu", "--out", run_dir], run_dir=run_dir,
                     on_event=event_queue.put)
    ...                       # a QTimer on the main thread drains event_queue and calls job.poll()
    job.cancel()              # Cancel button: cancel file + SIGTERM, tree killed after the grace period
    job.wait()
    job.raise_for_status()    # JobError(message) on failure, Cancelled after a cancel

Threads. ``on_event`` is called from the job's stdout reader thread, never from the caller's thread.
GUI callers must not touch widgets or MRML there: hand the event to the main thread (append it to a
``queue.Queue`` and drain the queue from a ``QTimer``). Once :meth:`Job.poll` returns an exit code, every
event has been delivered to ``on_event`` and is in :attr:`Job.events`.

Cancel protocol (the engine's side is in ``ssl3d.train``). :meth:`Job.cancel` writes a file named
``cancel`` into the run folder (polled by the training loop; the dependable path on every OS) and sends
SIGTERM (POSIX) or CTRL_BREAK_EVENT (Windows; it reaches the job only when it shares the caller's console).
The job then saves a checkpoint and exits with :data:`CANCELLED_EXIT_CODE`. Whatever of the process tree
is still alive after the grace period is killed with psutil, children first.
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
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Sequence

from .errors import Cancelled, JobError
from .events import EventFollower, make_event, parse_event

__all__ = ["CANCELLED_EXIT_CODE", "CANCEL_FILE", "EVENTS_FILE", "Job", "JobBoard", "follow_run"]

#: Exit code of an engine job that stopped because it was cancelled (after saving a checkpoint);
#: 128 + SIGINT, as shells report an interrupted program.
CANCELLED_EXIT_CODE = 130

CANCEL_FILE = "cancel"  # written into the run folder by Job.cancel; the training loop polls for it
EVENTS_FILE = "events.jsonl"  # every run folder's events, read by follow_run
STDERR_LINES = 200  # stderr lines kept for error reports
_DRAIN_S = 5.0  # how long to wait for the output pipes after the process has exited
_ERROR_LINE = re.compile(r"^(?:.*?: )?error: (.+)$")  # "error: msg" (ssl3d CLI), "prog: error: msg" (argparse)

if TYPE_CHECKING:
    import psutil  # imported where used: a Slicer without it yet can still build a JobBoard

EventCallback = Callable[[dict], None]
_log = logging.getLogger(__name__)


class Job:
    """An engine job running as a subprocess in its own process group.

    Create it with :meth:`Job.start` or :meth:`Job.engine`, not with the constructor. Leaving a
    ``with Job.start(...) as job:`` block while the job runs cancels it and waits until its tree is gone.
    """

    def __init__(self, process: subprocess.Popen, command: Sequence[str], run_dir: Path | None,
                 on_event: EventCallback | None) -> None:
        self.command = list(command)
        self.run_dir = run_dir
        self.events: list[dict] = []
        self._process = process
        self._on_event = on_event
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._cancelled = False
        self._exited_at: float | None = None
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(process.stdout,), name=f"ssl3d-job-{process.pid}-out", daemon=True),
            threading.Thread(target=self._read_stderr, args=(process.stderr,), name=f"ssl3d-job-{process.pid}-err", daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    # ----------------------------------------------------------------------------------------- start
    @classmethod
    def start(cls, command: Sequence[str], run_dir: str | os.PathLike | None = None,
              on_event: EventCallback | None = None, env: dict[str, str] | None = None,
              cwd: str | os.PathLike | None = None) -> Job:
        """Start ``command`` in a new process group (session on POSIX) and follow its output.

        Args:
            command: program and arguments, e.g. ``[sys.executable, "-m", "ssl3d", "info", "--events", "-"]``.
            run_dir: the job's run folder; :meth:`cancel` writes its ``cancel`` file there.
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
        child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8", **(env or {})}
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=child_env, cwd=cwd, encoding="utf-8", errors="replace", bufsize=1, **_group_options())
        except OSError as exc:
            raise JobError(f"cannot start {command[0]}: {exc.strerror or exc}.") from exc
        return cls(process, command, Path(run_dir) if run_dir is not None else None, on_event)

    @classmethod
    def engine(cls, args: Sequence[str], run_dir: str | os.PathLike | None = None,
               on_event: EventCallback | None = None, python: str | os.PathLike | None = None,
               **kwargs: Any) -> Job:
        """Start ``python -m ssl3d ARGS --events -`` (``--events -`` unless ARGS has ``--events``); the rest
        as :meth:`start`.

        ``python`` defaults to :data:`sys.executable`. Inside Slicer pass the ``PythonSlicer`` executable
        (Slicer's own ``sys.executable`` is the application). The folder holding this ``ssl3d`` package is
        put first on the job's ``PYTHONPATH``, so the job runs this copy of the engine.
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
        """The exit code once the job has exited and its output is read, else ``None``. Never blocks."""
        code = self._process.poll()
        if code is None:
            return None
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        if self._reading() and time.monotonic() - self._exited_at < _DRAIN_S:
            return None
        return code

    def wait(self, timeout: float | None = None) -> int:
        """Block until the job has exited and its output is read; return the exit code.

        A failed job is not an error here (see :meth:`raise_for_status`).

        Raises:
            TimeoutError: the job still runs after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.name} still runs after {timeout} s.") from None
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        drain_until = self._exited_at + _DRAIN_S if deadline is None else min(deadline, self._exited_at + _DRAIN_S)
        for reader in self._readers:
            reader.join(max(0.0, drain_until - time.monotonic()))
        return code

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

        Writes ``run_dir/cancel`` (when the job has a run folder), sends SIGTERM (POSIX) or
        CTRL_BREAK_EVENT (Windows), and kills whatever of the tree is still alive ``grace_s`` seconds
        later (children first). Returns at once unless ``wait`` is true: then it returns when the job
        has exited and its tree is gone. A job that has already exited is left alone (and not marked
        cancelled). Calling it again with ``grace_s=0`` kills at once.
        """
        if self._process.poll() is not None:
            return
        self._cancelled = True
        tree = _descendants(self._process.pid)
        self._write_cancel_file()
        self._send_stop_signal()
        if wait:
            self._reap(grace_s, tree)
            self.wait()
        else:
            threading.Thread(target=self._reap, args=(grace_s, tree), name=f"ssl3d-job-{self.pid}-cancel",
                             daemon=True).start()

    def _write_cancel_file(self) -> None:
        if self.run_dir is None:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CANCEL_FILE).write_text(f"cancelled at {time.time():.3f}\n", encoding="utf-8")
        except OSError as exc:
            _log.warning("cannot write the cancel file in %s: %s", self.run_dir, exc)

    def _send_stop_signal(self) -> None:
        try:
            if os.name == "nt":
                os.kill(self._process.pid, signal.CTRL_BREAK_EVENT)  # to the job's process group
            else:
                self._process.send_signal(signal.SIGTERM)  # the job forwards it (torchrun does)
        except OSError as exc:  # already gone, or no shared console on Windows
            _log.debug("stop signal to %s not delivered: %s", self._process.pid, exc)

    def _reap(self, grace_s: float, tree: list[psutil.Process]) -> None:
        """Wait up to ``grace_s`` for the job and its descendants, then kill the survivors."""
        deadline = time.monotonic() + grace_s
        try:
            self._process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
        if self._process.poll() is None:
            tree = _merge(tree, _descendants(self._process.pid))
        _wait_gone(tree, deadline)
        self._kill_tree(tree)

    def _kill_tree(self, descendants: list[psutil.Process]) -> None:
        survivors = [p for p in descendants if _alive(p)]
        for process in survivors:
            _kill(process)
        if self._process.poll() is None:
            _log.info("killing %s (pid %d) after the cancel grace period", self.name, self._process.pid)
            try:
                if os.name == "nt":
                    self._process.kill()
                else:
                    os.killpg(self._process.pid, signal.SIGKILL)  # also members that left the tree
            except OSError:
                pass
        _wait_gone(survivors, time.monotonic() + 5.0)

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
        state = "cancelled" if self._cancelled else "running" if self._process.poll() is None else f"exit {self._process.returncode}"
        return f"<Job {self.name} pid={self._process.pid} {state}>"


class JobBoard:
    """Engine jobs by role ("pretrain", "segment", ...), one at a time per role, each with its events queued.

    What a GUI needs around :class:`Job`: its timer calls :meth:`take_events` and :meth:`finished` on the
    main thread while each job's reader thread fills that role's queue; scripts and tests call :meth:`run`.
    ``python`` runs the jobs (Slicer passes its PythonSlicer; default: this interpreter).
    """

    def __init__(self, python: str | None = None) -> None:
        self.python = python
        self._jobs: dict[str, Job] = {}
        self._queues: dict[str, queue.Queue] = {}

    def start(self, role: str, args: Sequence[str], run_dir: str | os.PathLike | None = None) -> Job:
        """Start ``ssl3d ARGS`` for ``role``; a RuntimeError when that role's job is still running."""
        if self.running(role):
            raise RuntimeError(f"a {role} job is already running.")
        self._queues[role] = queue.Queue()
        self._jobs[role] = Job.engine(args, run_dir=run_dir, on_event=self._queues[role].put, python=self.python)
        return self._jobs[role]

    def running(self, role: str) -> bool:
        job = self._jobs.get(role)
        return job is not None and job.running

    def take_events(self, role: str) -> list[dict]:
        """The events received since the last call."""
        events, pending = [], self._queues.get(role)
        while pending is not None and not pending.empty():
            events.append(pending.get_nowait())
        return events

    def finished(self, role: str) -> Job | None:
        """The job once it has ended and all its events were taken (then forgotten), else None."""
        job = self._jobs.get(role)
        if job is None or job.running or not self._queues[role].empty():
            return None
        del self._jobs[role]
        return job

    def cancel(self, role: str) -> None:
        """Cancel file + stop signal: the job saves a checkpoint and stops; its tree is killed after the grace period."""
        if self.running(role):
            self._jobs[role].cancel()

    def cancel_all(self) -> None:
        for role in list(self._jobs):
            self.cancel(role)

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


def follow_run(run_dir: str | os.PathLike) -> EventFollower:
    """Follow the events of a run started elsewhere (a terminal, a cluster) from ``run_dir/events.jsonl``.

    Call ``poll()`` on the result (e.g. from a QTimer) to get the new events; the file may not exist yet.
    """
    return EventFollower(Path(run_dir) / EVENTS_FILE)


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


def _descendants(pid: int) -> list[psutil.Process]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def _merge(first: Iterable[psutil.Process], second: Iterable[psutil.Process]) -> list[psutil.Process]:
    merged = {p.pid: p for p in first}
    merged.update((p.pid, p) for p in second)
    return list(merged.values())


def _alive(process: psutil.Process) -> bool:
    """Running and not a zombie (a killed grandchild stays a zombie until some parent reaps it)."""
    import psutil

    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kill(process: psutil.Process) -> None:
    import psutil

    try:
        process.kill()  # psutil checks that the pid still belongs to this process
    except psutil.Error:
        pass


def _wait_gone(processes: list[psutil.Process], deadline: float) -> None:
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
