"""A study's cancel reaches the run that is running, without an exception thrown into the study's own code.

The study watches its folder's ``cancel`` file and the stop signals with a recording-only
:class:`~ssl3d.cancel_watch.CancelWatch`. A run inside the study's process (a cell, a pretraining) has the
training loop's own watch on its run folder, which owns the signals while it runs; the study's cancel file
reaches it through this relay, which writes a ``cancel`` file into that run folder (again after the run's
start has cleared an old one). The loop then checkpoints and raises
:class:`~ssl3d.errors.Cancelled`. Between runs the study checks the watch itself.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

from ..cancel_watch import POLL_S, CancelWatch

__all__ = ["CancelRelay"]


class CancelRelay:
    def __init__(self, watch: CancelWatch, token: str | None = None) -> None:
        self.watch, self.token = watch, token
        self._run: Path | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ssl3d-study-cancel-relay", daemon=True)

    @property
    def requested(self) -> bool:
        return self.watch.poll()

    def check(self) -> None:
        """Raise :class:`~ssl3d.errors.Cancelled` when the study was cancelled (between runs)."""
        self.watch.poll()
        self.watch.check()

    @contextlib.contextmanager
    def running(self, run_dir: Path) -> Iterator[None]:
        """A run in this process uses ``run_dir`` while the block runs: a cancel is passed on to it."""
        self.check()
        self._run = run_dir
        try:
            yield
        finally:
            self._run = None

    def _loop(self) -> None:
        while not self._stop.wait(POLL_S):
            run = self._run
            if run is not None and self.watch.poll() and not (run / "cancel").exists():
                try:
                    (run / "cancel").write_text(f"cancelled with the study {self.token or '-'}\n", encoding="utf-8")
                except OSError:  # the folder is not made yet, or going: the next poll tries again
                    pass

    def __enter__(self) -> CancelRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * POLL_S)
