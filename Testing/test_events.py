import json
import math
import re

import numpy as np
import pytest
import torch

from ssl3d.errors import InputError
from ssl3d.events import EventFollower, EventSchemaError, EventWriter, read_events, write_run_json


def test_round_trip(tmp_path):
    path = tmp_path / "events.jsonl"
    with EventWriter(path) as events:
        events.emit("start", step=0, total=3)
        events.emit("progress", step=1, total=3, loss={"total": torch.tensor(0.5), "reg": np.float32(0.25)}, lr=1e-4)
        events.emit("metric", step=2, name="dice", value=0.8, per_class={"liver": 0.9})
        events.emit("error", message="bad\nthing  happened")
        events.emit("done", step=3, total=3, outputs={"bundle": tmp_path / "b"})
    records = read_events(path)
    assert [r["event"] for r in records] == ["start", "progress", "metric", "error", "done"]
    assert records[1]["loss"] == {"total": 0.5, "reg": 0.25}
    assert records[3]["message"] == "bad thing happened"
    assert records[4]["outputs"]["bundle"] == str(tmp_path / "b")
    assert all(isinstance(r["time"], float) for r in records)


def test_non_finite_values_become_null(tmp_path):
    with EventWriter(tmp_path / "e.jsonl") as events:
        events.emit("progress", loss={"total": math.nan})
    assert read_events(tmp_path / "e.jsonl")[0]["loss"]["total"] is None


def test_unknown_event_is_refused():
    # ssl3d emitting a bad event is a bug (a traceback), not a user error (exit 2)
    with pytest.raises(EventSchemaError, match="event must be one of") as caught:
        EventWriter(None).emit("finish")
    assert not isinstance(caught.value, InputError)


def test_follower_keeps_partial_lines(tmp_path):
    path = tmp_path / "e.jsonl"
    follower = EventFollower(path)
    assert follower.poll() == []
    path.write_text('{"event": "start", "time": 1}\n{"event": "prog')
    assert [r["event"] for r in follower.poll()] == ["start"]
    with open(path, "a") as handle:
        handle.write('ress", "time": 2}\nnot json\n')
    assert [r["event"] for r in follower.poll()] == ["progress"]


def test_run_json(tmp_path):
    write_run_json(tmp_path, {"a": (1, 2)}, ["ssl3d", "demo"], cache={"dir": "x"})
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["command"] == "ssl3d demo" and data["config"] == {"a": [1, 2]} and data["cache"] == {"dir": "x"}


@pytest.mark.parametrize("event, fields, field", [
    ("progress", {"step": "3"}, "step"),  # a string where the schema wants an integer
    ("progress", {"total": 2.5}, "total"),
    ("progress", {"step": True}, "step"),  # bool is an int to Python, not to the schema
    ("progress", {"lr": "1e-4"}, "lr"),
    ("progress", {"samples_per_s": [1.0]}, "samples_per_s"),
    ("progress", {"eta_s": {}}, "eta_s"),
    ("metric", {"name": "dice", "value": "0.8"}, "value"),
    ("progress", {"loss": {"total": "0.5"}}, "loss"),
    ("metric", {"name": "dice", "value": 0.8, "per_class": [0.9]}, "per_class"),
])
def test_ill_typed_fields_are_refused(event, fields, field):
    with pytest.raises(EventSchemaError, match=f"field '{field}' must .*got {re.escape(repr(fields[field]))}"):
        EventWriter(None).emit(event, **fields)


def test_numbers_may_be_numpy_torch_or_null(tmp_path):
    with EventWriter(tmp_path / "e.jsonl") as events:
        events.emit("metric", step=np.int64(2), total=torch.tensor(4), name="dice", value=None, per_class={"liver": np.nan})
    record = read_events(tmp_path / "e.jsonl")[0]
    assert (record["step"], record["total"], record["value"], record["per_class"]) == (2, 4, None, {"liver": None})


def test_reader_refuses_ill_typed_events_and_follower_skips_them(tmp_path):
    path = tmp_path / "e.jsonl"
    path.write_text('{"event": "start", "time": 1, "step": 0}\nlibrary output\n{"event": "progress", "time": 2, "step": "one"}\n')
    with pytest.raises(InputError, match=r"e\.jsonl line 3: progress event: field 'step' must be an integer, got 'one'"):
        read_events(path)
    assert [r["event"] for r in EventFollower(path).poll()] == ["start"]


def test_writer_that_cannot_open_its_file_names_it(tmp_path):
    (tmp_path / "afile").write_text("x")
    target = tmp_path / "afile" / "e.jsonl"
    with pytest.raises(InputError, match=f"{re.escape(str(target))}: cannot open the events file for writing: "):
        EventWriter(target)


def test_events_into_a_closed_pipe_stop_without_a_traceback(monkeypatch, capsys):
    """``--events - | head``: the reader goes away; the job keeps running and writes no more events."""
    import os

    from ssl3d.events import EventWriter

    read_end, write_end = os.pipe()
    os.close(read_end)
    monkeypatch.setattr("sys.stdout", os.fdopen(write_end, "w"))
    writer = EventWriter("-")
    writer.emit("start", command="segment")  # old code: BrokenPipeError
    writer.emit("done", command="segment")
    writer.close()
    assert "no more events" in capsys.readouterr().err
