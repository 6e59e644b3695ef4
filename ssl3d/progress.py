"""What a person sees of a long command on stderr: a progress bar on a terminal, otherwise (a cluster log,
``nohup``, a file) one plain line every :data:`LINE_EVERY_S` and at the end.

Programs follow the JSON ``progress`` events instead; with ``--events -`` the commands show nothing here.

Example::

    with TextProgress("segment", total=120, unit="window") as shown:
        for done in range(1, 121):
            shown.update(done)
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Callable

__all__ = ["Progress", "TextProgress", "LINE_EVERY_S"]

Progress = Callable[[int, int], None]
"""A long function's progress callback: (units done, units in all)."""

LINE_EVERY_S = 30.0  # off a terminal: at most one line this often


class TextProgress:
    """A tqdm bar when ``stream`` is a terminal, else a line per :data:`LINE_EVERY_S`; silent when disabled.

    Args:
        label: what runs ("segment", "inspect vf", "train").
        total: how many units the work has (None: unknown until :meth:`update` says).
        unit: the unit's name ("step", "window", "tile").
        enabled: False shows nothing (another rank, ``--events -``).
        stream: where to write (stderr).
    """

    def __init__(self, label: str, total: int | None, unit: str = "step", enabled: bool = True, stream: IO[str] | None = None) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._started = time.monotonic()
        self._last_line = float("-inf")
        self._done = 0
        if enabled and _is_terminal(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit=unit, desc=label, dynamic_ncols=True, file=self.stream)

    def update(self, done: int, total: int | None = None, values: dict[str, float] | None = None) -> None:
        """``done`` units of ``total`` are finished; ``values`` (e.g. losses) are shown beside them."""
        if not self.enabled:
            return
        self.total, self._done = total or self.total, done
        if self._bar is not None:
            self._bar.total, self._bar.n = self.total, done
            if values:
                self._bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()}, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= LINE_EVERY_S or (self.total is not None and done >= self.total):
            self._last_line = now
            self.stream.write(self._line(done, values) + "\n")
            self.stream.flush()

    def _line(self, done: int, values: dict[str, float] | None) -> str:
        elapsed = time.monotonic() - self._started
        of = f"/{self.total}" if self.total else ""
        line = f"{self.label}: {done}{of} {self.unit}s, {_duration(elapsed)}"
        if self.total and 0 < done < self.total:
            line += f", about {_duration(elapsed / done * (self.total - done))} left"
        if values:
            line += ", " + ", ".join(f"{k} {v:.4f}" for k, v in values.items())
        return line

    def write(self, line: str) -> None:
        """A message for the person (above the bar when there is one)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TextProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
