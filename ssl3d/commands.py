"""The status line the Slicer modules show of a running engine job.

Standard library only: Slicer's process imports it before the engine's packages are installed.

Example::

    progress_text({"event": "progress", "step": 120, "total": 1000, "loss": {"total": 0.532}})
    # "step 120/1000 · loss 0.532"
"""

from __future__ import annotations

import math
from typing import Any, Mapping

__all__ = ["progress_text", "number"]


def progress_text(event: Mapping[str, Any]) -> str:
    """One status line from a progress event: ``step 120/1000 · loss 0.532 · 3.1 samples/s · 4 min 10 s left``
    (a progress event with a ``message`` and no loss, as the cache build's, shows the message instead of the step)."""
    parts = []
    loss = event.get("loss")
    if event.get("message") and not loss:  # another phase of a run: the cache build ("cache: 3 of 12 volumes ...")
        parts.append(str(event["message"]))
    elif event.get("step") is not None:
        parts.append(f"step {event['step']}" + (f"/{event['total']}" if event.get("total") else ""))
    if isinstance(loss, Mapping) and loss:
        key = "total" if "total" in loss else next(iter(loss))
        value = number(loss[key])
        parts.append(("loss" if key == "total" or len(loss) == 1 else key) + f" {value:.4g}")
    if event.get("samples_per_s"):
        parts.append(f"{number(event['samples_per_s']):.3g} samples/s")
    if event.get("eta_s") is not None:
        parts.append(f"{_duration(number(event['eta_s']))} left")
    return " · ".join(parts)


def number(value: Any) -> float:
    """``value`` as a float; NaN for what is not a number (events from other tools may hold anything)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
