"""The events schema: one JSON object per line, written by every engine job, read by Slicer and tests.

Schema (version :data:`SCHEMA`)::

    {"event": "start"|"progress"|"metric"|"checkpoint"|"log"|"done"|"error",
     "time": <unix seconds>, "step": int, "total": int,
     "loss": {term: float}, "lr": float, "samples_per_s": float, "eta_s": float,
     # metric:     "name": str, "value": float, "per_class": {name: float}
     # checkpoint: "path": str
     # log:        "message": str, "level": "info"|"warning"
     # done:       "outputs": {name: path}
     # error:      "message": one line
     # start:      "schema": int, "command": str, "config": {...}
    }

Example::

    with EventWriter("run/events.jsonl") as events:
        events.emit("progress", step=10, total=100, loss={"total": 0.5})
    [e["step"] for e in read_events("run/events.jsonl")]   # [10]
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import IO, Any, Iterator

from .errors import InputError

__all__ = ["SCHEMA", "EVENT_TYPES", "EventWriter", "read_events", "parse_event", "EventFollower", "write_run_json"]

SCHEMA = 1
EVENT_TYPES = ("start", "progress", "metric", "checkpoint", "log", "done", "error")
_NUMBER_FIELDS = ("lr", "samples_per_s", "eta_s", "value")
_INT_FIELDS = ("step", "total")


def _clean(value: Any) -> Any:
    """JSON-safe copy: tensors and numpy scalars become floats; NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def make_event(event: str, **fields: Any) -> dict:
    """Validate and build one event record (adds ``time``)."""
    if event not in EVENT_TYPES:
        raise InputError(f"event must be one of {EVENT_TYPES}, got {event!r}.")
    record = {"event": event, "time": round(time.time(), 3)}
    record.update(_clean(fields))
    if event == "error":
        record["message"] = " ".join(str(record.get("message", "")).split())
    return record


class EventWriter:
    """Writes events as JSON lines to a file, to stdout (``"-"``), or nowhere (``None``).

    Only rank 0 of a distributed job should write; pass ``enabled=False`` elsewhere.
    """

    def __init__(self, target: str | os.PathLike | None, enabled: bool = True) -> None:
        self._stream: IO[str] | None = None
        self._owned = False
        if not enabled or target is None:
            return
        if str(target) == "-":
            self._stream = sys.stdout
        else:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8")
            self._owned = True

    def emit(self, event: str, **fields: Any) -> dict:
        """Write one event and flush, so readers see it at once; returns the record."""
        record = make_event(event, **fields)
        if self._stream is not None:
            self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
            self._stream.flush()
        return record

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_event(line: str) -> dict | None:
    """Parse one line; ``None`` for blank lines or lines that are not an event (e.g. library output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("event") not in EVENT_TYPES:
        return None
    return record


def read_events(path: str | os.PathLike) -> list[dict]:
    """All events of a file, in order; a torn last line (a writer still running) is ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no events file.")
    with open(path, encoding="utf-8") as handle:
        return [record for line in handle if (record := parse_event(line)) is not None]


class EventFollower:
    """Follows an events file that another process is still writing (``tail -f`` for events).

    ``poll()`` returns the complete new events since the last call; a partial last line is kept for later.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._offset = 0
        self._pending = ""

    def poll(self) -> list[dict]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
            self._offset = handle.tell()
        text = self._pending + chunk
        lines = text.split("\n")
        self._pending = lines.pop()
        return [record for line in lines if (record := parse_event(line)) is not None]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.poll())


def write_run_json(folder: str | os.PathLike, config: dict, command: list[str] | str | None = None, **extra: Any) -> Path:
    """Write ``run.json`` (the resolved config and the command) into an output folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if command is None:
        command = [Path(sys.argv[0]).name, *sys.argv[1:]]
    record = {"schema": SCHEMA, "command": command if isinstance(command, str) else " ".join(command), "config": _clean(config)}
    record.update(_clean(extra))
    path = folder / "run.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
