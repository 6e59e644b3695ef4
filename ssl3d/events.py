"""The events schema: one JSON object per line, written by every engine job, read by Slicer and tests.

Schema (version :data:`SCHEMA`)::

    {"event": "start"|"progress"|"metric"|"checkpoint"|"log"|"done"|"error",
     "time": <unix seconds>, "step": int, "total": int,
     "loss": {term: float}, "lr": float, "samples_per_s": float, "eta_s": float,
     # progress of the cache build (before step 1): "phase": "cache", "message": str, no "loss"
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

__all__ = ["SCHEMA", "EVENT_TYPES", "EventSchemaError", "EventWriter", "read_events", "parse_event", "validate_event", "check_events_target",
           "EventFollower", "write_run_json"]

SCHEMA = 1
EVENT_TYPES = ("start", "progress", "metric", "checkpoint", "log", "done", "error")
_NUMBER_FIELDS = ("time", "lr", "samples_per_s", "eta_s", "value")  # a number, or null (NaN/inf are written as null)
_INT_FIELDS = ("step", "total")
_NUMBER_MAPS = ("loss", "per_class")  # {name: number or null}


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


class EventSchemaError(ValueError):
    """An event that breaks the schema: a bug when ssl3d emits it, a bad file when it is read back
    (:func:`read_events` turns it into an :class:`InputError` naming the line)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_event(record: dict) -> dict:
    """Check an event record against the schema; returns it unchanged.

    Raises:
        EventSchemaError: ``event`` is not one of :data:`EVENT_TYPES`, or a field has the wrong type
            (``step``/``total``: integer; ``time``, ``lr``, ``samples_per_s``, ``eta_s``, ``value``: number
            or null; ``loss``, ``per_class``: an object of numbers or nulls).
    """
    event = record.get("event")
    if event not in EVENT_TYPES:
        raise EventSchemaError(f"event must be one of {EVENT_TYPES}, got {event!r}.")
    for name in _INT_FIELDS:
        if name in record and not (isinstance(record[name], int) and not isinstance(record[name], bool)):
            raise EventSchemaError(f"{event} event: field {name!r} must be an integer, got {record[name]!r}.")
    for name in _NUMBER_FIELDS:
        if record.get(name) is not None and not _is_number(record[name]):
            raise EventSchemaError(f"{event} event: field {name!r} must be a number or null, got {record[name]!r}.")
    for name in _NUMBER_MAPS:
        if name not in record:
            continue
        values = record[name]
        if not isinstance(values, dict) or not all(v is None or _is_number(v) for v in values.values()):
            raise EventSchemaError(f"{event} event: field {name!r} must map names to numbers, got {values!r}.")
    return record


def make_event(event: str, **fields: Any) -> dict:
    """Validate and build one event record (adds ``time``).

    Raises:
        EventSchemaError: an unknown event or a field of the wrong type (see :func:`validate_event`).
    """
    record = {"event": event, "time": round(time.time(), 3)}
    record.update(_clean(fields))
    if event == "error":
        record["message"] = " ".join(str(record.get("message", "")).split())
    return validate_event(record)


def check_events_target(target: str | os.PathLike | None) -> None:
    """Refuse an events target that cannot be a file, before a job writes anything (no side effects).

    Catches a folder, a parent that is a file, and a folder without write permission; what only opening
    tells (e.g. a read-only mount) is caught by :class:`EventWriter`.

    Raises:
        InputError: naming the target and why.
    """
    if target is None or str(target) == "-":
        return
    path = Path(target)
    if path.is_dir():
        raise InputError(f"--events {target}: is a folder; give a file name, or '-' for stdout.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--events {target}: {parent} is not a folder.")
    writable = path if path.exists() else parent
    if not os.access(writable, os.W_OK):
        raise InputError(f"--events {target}: {writable} is not writable.")


class EventWriter:
    """Writes events as JSON lines to a file, to stdout (``"-"``), or nowhere (``None``).

    Only rank 0 of a distributed job should write; pass ``enabled=False`` elsewhere.

    Raises:
        InputError: the file (or its folder) cannot be created or opened, naming the file and the OS reason;
            :meth:`emit`: an event that breaks the schema.
    """

    def __init__(self, target: str | os.PathLike | None, enabled: bool = True) -> None:
        self._stream: IO[str] | None = None
        self._owned = False
        if not enabled or target is None:
            return
        if str(target) == "-":
            self._stream = sys.stdout
            return
        path = Path(target)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8")
        except OSError as exc:
            # mkdir says "File exists" when a file stands where a folder is needed
            reason = "Not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc)
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
            raise InputError(f"{path}: cannot open the events file for writing: {reason}{where}.") from None
        self._owned = True

    def emit(self, event: str, **fields: Any) -> dict:
        """Write one event and flush, so readers see it at once; returns the record."""
        record = make_event(event, **fields)
        if self._stream is not None:
            try:
                self._stream.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._stream.flush()
            except BrokenPipeError:
                self._reader_gone()
        return record

    def _reader_gone(self) -> None:
        """The reader of the pipe went away (``| head``): the job goes on without events, as ``cat`` would
        stop on SIGPIPE but without losing the job's result; said once on stderr."""
        stream, self._stream = self._stream, None
        try:  # the interpreter's own flush of the dead pipe at exit must not print a traceback either
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass
        sys.stderr.write("warning: the events reader closed its pipe; no more events are written\n")

    def close(self) -> None:
        if self._owned and self._stream is not None:
            self._stream.close()
        self._stream = None

    def __enter__(self) -> "EventWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(line: str) -> dict | None:
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


def parse_event(line: str) -> dict | None:
    """Parse one line of a stream; ``None`` for blank lines, lines that are not an event (e.g. library
    output) and events that break the schema (a follower of a live stream skips them, never stops)."""
    record = _parse(line)
    if record is None:
        return None
    try:
        return validate_event(record)
    except EventSchemaError:
        return None


def read_events(path: str | os.PathLike) -> list[dict]:
    """All events of a file, in order; lines that are not events and a torn last line (a writer still
    running) are ignored.

    Raises:
        InputError: no such file, or an event that breaks the schema (naming the line, field and value).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no events file.")
    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            record = _parse(line)
            if record is None:
                continue
            try:
                records.append(validate_event(record))
            except EventSchemaError as exc:
                raise InputError(f"{path} line {number}: {exc}") from None
    return records


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
