"""Fan one ``log`` call out to the sinks: events (run folder and ``--events``), progress text on stderr (a
bar on a terminal, a line every 30 s in a log file; none with ``--events -``), and TensorBoard scalars.
Only rank 0 gets real sinks."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ..events import EventWriter
from ..progress import TextProgress

__all__ = ["RunLogger"]


class RunLogger:
    def __init__(self, run_dir: Path, events_target: str | None, enabled: bool, total: int, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.total = total
        self.writers = [EventWriter(run_dir / "events.jsonl", enabled)]
        if enabled and events_target:
            same = events_target != "-" and Path(events_target).resolve() == (run_dir / "events.jsonl").resolve()
            if not same:
                self.writers.append(EventWriter(events_target, enabled))
        self._text = TextProgress("train", total, "step", enabled=enabled and events_target != "-")
        self._tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard missing or broken: events still carry everything
                self._tb = None
        self._t0 = time.perf_counter()
        self._last = (self._t0, 0)

    def emit(self, event: str, **fields: Any) -> None:
        for writer in self.writers:
            writer.emit(event, **fields)
        if event == "log" and fields.get("level") == "warning":  # also the cache's skip warnings, emitted directly
            self._show(f"warning: {fields.get('message', '')}")

    def _show(self, line: str) -> None:
        """A line for a person at the terminal, above the progress bar when there is one."""
        if not self.enabled:
            return
        if self._text.enabled:
            self._text.write(line)
        else:
            print(line, file=sys.stderr)

    def progress(self, step: int, losses: dict[str, float], lr: float, samples: int, start_step: int) -> None:
        now = time.perf_counter()
        last_time, last_step = self._last
        rate = samples * (step - last_step) / max(now - last_time, 1e-9)
        steps_per_s = (step - start_step) / max(now - self._t0, 1e-9)
        eta = (self.total - step) / max(steps_per_s, 1e-9)
        self._last = (now, step)
        self.emit("progress", step=step, total=self.total, loss=losses, lr=lr, samples_per_s=round(rate, 3), eta_s=round(eta, 1))
        self._text.update(step, self.total, losses)
        if self._tb is not None:
            for name, value in losses.items():
                self._tb.add_scalar(f"loss/{name}", value, step)
            self._tb.add_scalar("lr", lr, step)

    def metric(self, step: int, name: str, value: float, per_class: dict | None = None) -> None:
        self.emit("metric", step=step, total=self.total, name=name, value=value, per_class=per_class or {})
        if self._tb is not None:
            self._tb.add_scalar(f"val/{name}", value, step)

    def log(self, message: str, level: str = "info", show: bool = False) -> None:
        """A ``log`` event; warnings, and info with ``show``, also reach the person at the terminal or log file."""
        self.emit("log", message=message, level=level)
        if show and level != "warning":  # emit() shows warnings already
            self._show(message)

    def text_progress(self, label: str, unit: str) -> TextProgress:
        """A progress display for another phase of the run (the cache build), shown where the steps are."""
        return TextProgress(label, None, unit, enabled=self._text.enabled)

    def fail(self, message: str) -> None:
        """The run died: an ``error`` event in the run folder's events.jsonl, for whoever follows that file
        (Slicer's "Open run folder"); the ``--events`` target gets its error from the command line."""
        try:
            self.writers[0].emit("error", message=" ".join(message.split()))
        except OSError:  # the disk that filled up may not take this line either
            pass

    def close(self) -> None:
        self._text.close()
        if self._tb is not None:
            self._tb.close()
        for writer in self.writers:
            writer.close()
