"""The quick demo runs in `make test` (DESIGN.md budgets: <= 60 s)."""

import json

from ssl3d.cli import main


def test_quick_demo(tmp_path):
    out = tmp_path / "demo_out"
    assert main(["demo", "--quick", "--out", str(out), "--events", str(tmp_path / "e.jsonl")]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert "phantoms" in summary["stages"]
    assert (out / "phantoms.png").stat().st_size > 1000
    assert (out / "run.json").is_file()
    events = [json.loads(line)["event"] for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert events[0] == "start" and events[-1] == "done"
