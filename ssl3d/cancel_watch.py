"""Stop a short engine command (segment, inspect) within a fraction of a second of a cancel.

A command that is not the training loop has no step boundary it visits every second: MONAI's forward
passes, a dense VoCo scan or a long file write run for seconds. :class:`CancelWatch` turns the two ways a
job is cancelled into :class:`~ssl3d.errors.Cancelled` in the main thread:

* SIGTERM (POSIX) / CTRL_BREAK (Windows), sent by :meth:`ssl3d.jobs.Job.cancel` to the job's whole
  process tree (Slicer's ``PythonSlicer`` launcher forwards no signal, so the engine is signalled itself);
* the ``cancel`` file that :meth:`~ssl3d.jobs.Job.cancel` writes into the job's run folder, polled by a
  thread every :data:`POLL_S` (the dependable path on Windows, where CTRL_BREAK needs a shared console).

The exception is raised where the main thread is (Python runs signal handlers between bytecodes, so
within one forward pass), not only at :meth:`check`. Code that must not be cut halfway, such as moving a
finished result into place, runs inside :meth:`CancelWatch.final`: a cancel that comes then is too late
and changes nothing (:meth:`CancelWatch.shielded` only defers it to the end of its block).

Which file to watch: :class:`~ssl3d.jobs.Job` tells its child through :data:`ENV_CANCEL_FILE` and
:data:`ENV_JOB_TOKEN`. A cancel file counts only when it names this job's token, so a ``cancel`` left in a
reused folder by an earlier job never stops a new one (and no one has to delete it)::

    with CancelWatch.from_environment() as watch:
        for batch in batches:
            watch.check()          # also raised asynchronously between checks
            ...
        watch.check()
        with watch.final():
            write_result()

Standard library only: the CLI imports it before torch.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

from .errors import Cancelled

__all__ = ["CancelWatch", "ENV_CANCEL_FILE", "ENV_JOB_TOKEN", "POLL_S", "cancel_file_names_token"]

ENV_CANCEL_FILE = "SSL3D_CANCEL_FILE"  # set by ssl3d.jobs.Job for a job with a run folder
ENV_JOB_TOKEN = "SSL3D_JOB_TOKEN"  # the job's token; Job.cancel writes it into the cancel file
POLL_S = 0.2  # how often the cancel file is looked at
_STOP_SIGNALS = ("SIGTERM", "SIGBREAK")


def cancel_file_names_token(path: Path, token: str | None) -> bool:
    """The cancel file exists and, when ``token`` is given, its text names that token."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return token is None or token in text


class CancelWatch:
    """Signals and a cancel file become :class:`Cancelled` in the main thread (see the module docstring).

    Args:
        cancel_file: the file to poll; None watches the signals only.
        token: the cancel file counts only when its text contains it (None: any cancel file counts).
        interrupt: raise in the main thread as soon as a cancel arrives; False only records it for
            :meth:`check` (also what happens when the watch is entered outside the main thread).
        ctrl_c: also watch SIGINT (the training loop): the first Ctrl-C is a cancel, a second one raises
            KeyboardInterrupt at once, even inside :meth:`shielded` or :meth:`final`.

    Until the watched block ends, a requested cancel is raised again every :data:`POLL_S`: Python drops an
    exception raised while a finalizer (``__del__``, a weakref callback) happens to run.
    """

    def __init__(self, cancel_file: str | os.PathLike | None = None, token: str | None = None, interrupt: bool = True,
                 ctrl_c: bool = False) -> None:
        self.cancel_file = Path(cancel_file) if cancel_file is not None else None
        self.token = token
        self.reason: str | None = None
        self._interrupt = interrupt
        self._signals = (*_STOP_SIGNALS, "SIGINT") if ctrl_c else _STOP_SIGNALS
        self._ctrl_c_seen = False
        self._shield_depth = 0
        self._done = False  # final() entered, or the block has ended: nothing is raised any more
        self._signum: int | None = None  # the signal whose handler interrupts the main thread
        self._previous: dict[int, Any] = {}
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def from_environment(cls, interrupt: bool = True) -> CancelWatch:
        """The watch a job started by :class:`ssl3d.jobs.Job` needs: its cancel file and token, if any."""
        path = os.environ.get(ENV_CANCEL_FILE) or None
        return cls(path, os.environ.get(ENV_JOB_TOKEN) or None, interrupt)

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def poll(self) -> bool:
        """Whether a cancel has arrived, looking at the cancel file now (not only every :data:`POLL_S`)."""
        if self.reason is None and self.cancel_file is not None and cancel_file_names_token(self.cancel_file, self.token):
            self.reason = f"cancel file {self.cancel_file}"
        return self.requested

    def check(self) -> None:
        """Raise :class:`Cancelled` if a cancel has arrived (a safe point, also inside :meth:`shielded`)."""
        if self.reason is not None and not self._done:
            raise Cancelled(self.reason)

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """A block that a cancel does not cut: it is recorded and raised after the block (or by :meth:`check`)."""
        self._shield_depth += 1
        try:
            yield
        finally:
            self._shield_depth -= 1

    @contextlib.contextmanager
    def final(self) -> Iterator[None]:
        """The last step (writing the finished result): not cut, and a cancel from now on changes nothing."""
        self._done = True
        yield

    # ----------------------------------------------------------------------------------- arrival
    def _may_raise(self) -> bool:
        return self.reason is not None and self._interrupt and self._shield_depth == 0 and not self._done

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT:
            if self._ctrl_c_seen:
                raise KeyboardInterrupt
            self._ctrl_c_seen = True
        if self.reason is None:
            self.reason = f"stopped by {signal.Signals(signum).name}"
        if self._may_raise():
            raise Cancelled(self.reason)

    def _poll(self, path: Path | None) -> None:
        while not self._stop.wait(POLL_S):
            if self.reason is None and path is not None and cancel_file_names_token(path, self.token):
                self.reason = f"cancel file {path}"
            if self._may_raise() and self._signum is not None:
                _thread.interrupt_main(self._signum)  # runs _on_signal in the main thread

    # ------------------------------------------------------------------------- context manager
    def __enter__(self) -> CancelWatch:
        for name in self._signals:
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            try:
                self._previous[signum] = signal.signal(signum, self._on_signal)
            except ValueError:  # not the main thread: check() only
                break
            self._signum = self._signum or signum
        if self.cancel_file is not None or self._signum is not None:
            self._poller = threading.Thread(target=self._poll, args=(self.cancel_file,), name="ssl3d-cancel-watch", daemon=True)
            self._poller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done = True  # nothing is raised once the watched block has ended
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=2 * POLL_S)
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
