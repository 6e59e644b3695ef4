"""The quick demo runs in `make test` (DESIGN.md budgets: <= 60 s): one run, every stage's outputs checked."""

import html
import json
import re
from pathlib import Path

from ssl3d.cli import main
from ssl3d.demo import STAGES
from ssl3d.events import read_events


def _bundle(folder: Path) -> None:
    assert json.loads((folder / "bundle.json").read_text())["schema"], folder
    assert (folder / "model.safetensors").stat().st_size > 1000, folder


def _metric(messages: list[str], pattern: str) -> float:
    """The number a stage reported in its log line (``pattern`` with one group)."""
    found = [float(m.group(1)) for message in messages if (m := re.search(pattern, message))]
    assert len(found) == 1, (pattern, messages)
    return found[0]


def test_quick_demo(tmp_path):
    out = tmp_path / "demo_out"
    assert main(["demo", "--quick", "--out", str(out), "--events", str(tmp_path / "e.jsonl")]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert list(summary["stages"]) == [stage.name for stage in STAGES]
    assert all(Path(path).exists() for path in summary["outputs"].values()), summary["outputs"]
    assert (out / "run.json").is_file()
    events = read_events(tmp_path / "e.jsonl")
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert events[-1]["outputs"] == summary["outputs"]
    messages = [e["message"] for e in events if e["event"] == "log"]

    # phantoms: the montage, and the exact round trip of both phantoms
    assert (out / "phantoms.png").stat().st_size > 1000
    assert sum("round trip exact: True" in m for m in messages) == 2
    # voco: a bundle and the held-out top-1 position accuracy
    _bundle(out / "voco" / "bundle")
    assert 0 <= _metric(messages, r"held-out top-1 position accuracy (\d\.\d+)") <= 1
    # vf: a bundle and the balanced fusion-class accuracy
    _bundle(out / "vf" / "bundle")
    assert 0 <= _metric(messages, r"VolF .*balanced accuracy (\d\.\d+)") <= 1
    # finetune: a small study (quick: random and VoCo init, 1 labelled case, 2 seeds); interactive: a run folder
    study = out / "finetune_study"
    assert sorted(p.name for p in (study / "cells").iterdir()) == ["random-1-s0", "random-1-s1", "voco-1-s0", "voco-1-s1"]
    statements = [m for m in messages if m.startswith("voco init")]
    assert len(statements) == 1 and ("than random init by" in statements[0] or "no difference shown" in statements[0])
    assert (study / "results.csv").is_file() and (study / "dice_vs_cases.png").stat().st_size > 5000
    for run in ("finetune_study/cells/voco-1-s1", "interactive"):
        assert (out / run / "checkpoints" / "last.pt").is_file()
        assert [e["event"] for e in read_events(out / run / "events.jsonl")][-1] == "done"
        _bundle(out / run / "bundle")
    assert (out / "segmentation_phantom.png").stat().st_size > 1000
    assert (out / "interactive.png").stat().st_size > 1000
    # inspect: both pictures
    pictures = {"voco": out / "inspect" / "voco" / "voco.png", "fusion": out / "inspect" / "vf" / "fusion.png"}
    assert all(p.stat().st_size > 1000 for p in pictures.values())
    # report: embeds both inspection pictures (paths relative to the report), each under its own heading
    report = (out / "report.html").read_text()
    for picture in pictures.values():
        assert f"<img src='{picture.relative_to(out).as_posix()}'" in report
    assert "<h2>VoCo inspection" in report and "<h2>Volume Fusion inspection" in report
    # the study's table: means with intervals, the sentences, the plot
    assert re.search(r"<td>random init</td><td>0\.\d\d \((\d\.\d\d–|-\d\.\d\d to )\d\.\d\d\)</td>", report), report
    assert all(html.escape(m) in report for m in statements)
    assert "<img src='finetune_study/dice_vs_cases.png'" in report
