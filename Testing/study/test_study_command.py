"""``ssl3d study`` end to end on phantoms: files, a rerun that skips, a cancel that resumes, errors, devices."""

from __future__ import annotations

import csv
import json
import os
import time

import pytest

from ssl3d.cli import main
from ssl3d.data.phantoms import write_phantom_dataset
from ssl3d.events import read_events
from ssl3d.jobs import CANCELLED_EXIT_CODE, Job

pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py
LABELS = 6  # the phantoms' organs


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return write_phantom_dataset(tmp_path_factory.mktemp("study_data"), range(400, 406), shape=(32, 48, 48))


def _study(data, out, *extra) -> list[str]:
    return ["study", "--data", str(data), "--out", str(out), "--devices", "cpu", "--held-out", "2", *extra]


def _csv(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_small_study_runs_end_to_end_and_a_rerun_skips(tmp_path, labelled, voco_cpu_bundle, capsys):
    out = tmp_path / "study"
    args = _study(labelled, out, "--init", "random", "--init", f"voco={voco_cpu_bundle}", "--init", f"vf=vf-v2-cpu:{labelled / 'imagesTr'}",
                  "--pretrain-steps", "2", "--cases", "1,all", "--seeds", "2", "--steps", "2")
    assert main(args) == 0
    cells = sorted(p.name for p in (out / "cells").iterdir())
    assert cells == sorted(f"{init}-{n}-s{s}" for init in ("random", "voco", "vf") for n in (1, 4) for s in (0, 1))
    cell = out / "cells" / "voco-4-s1"
    assert (cell / "bundle" / "bundle.json").is_file() and (cell / "checkpoints" / "last.pt").is_file()
    assert json.loads((cell / "run.json").read_text())["study_cell"] == {"init": "voco", "cases": 4, "seed": 1, "process": os.getpid()}
    assert (out / "pretrain" / "vf" / "bundle" / "bundle.json").is_file()

    # the subsets: nested, shared by every init, disjoint from the held-out split
    held = {e["label"] for e in json.loads((out / "splits" / "held_out.json").read_text())["test"]}
    for seed in (0, 1):
        one, four = ([e["label"] for e in json.loads((out / "splits" / f"s{seed}-{n}.json").read_text())["training"]] for n in (1, 4))
        assert one == four[:1] and not held & set(four) and len(held) == 2
    bundle_data = json.loads((out / "cells" / "random-1-s0" / "bundle" / "bundle.json").read_text())["provenance"]["data"]
    assert bundle_data.endswith("s0-1.json")

    results = _csv(out / "results.csv")
    assert len(results) == 12 * 2 * LABELS  # cells x held-out cases x labels
    assert {r["case"] for r in results} == {h.split("/")[-1].split(".")[0] for h in held}
    summary = _csv(out / "summary.csv")
    compared = [r for r in summary if r["statement"]]
    assert {(r["init"], r["cases"]) for r in compared if r["label"] == "all labels"} == {(i, n) for i in ("voco", "vf") for n in ("1", "4")}
    assert all(r["pairs"] == "4" and r["metric"] == "dice" for r in compared)  # 2 seeds x 2 held-out cases
    assert all(("better" in r["statement"]) + ("worse" in r["statement"]) + ("no difference shown" in r["statement"]) == 1 for r in compared)
    report = (out / "report.html").read_text()
    assert "<img src='dice_vs_cases.png'" in report and (out / "dice_vs_cases.png").stat().st_size > 5000
    assert compared[0]["statement"].replace("–", "&ndash;")[:20] in report.replace("–", "&ndash;")

    events = read_events(out / "events.jsonl")
    assert events[0]["event"] == "start" and events[0]["total"] == 12
    assert any(e["event"] == "log" and e["message"].startswith("pretraining vf: vf-v2-cpu") for e in events)
    assert [e["step"] for e in events if e["event"] == "progress"] == list(range(1, 13))
    assert events[-1]["event"] == "done" and set(events[-1]["outputs"]) == {"results", "summary", "plot", "report"}

    finished = {c: (out / "cells" / c / "evaluation.json").stat().st_mtime_ns for c in cells}
    capsys.readouterr()
    assert main(args) == 0  # a rerun: every cell is skipped, the analysis is written again
    assert "12 of 12 cells already finished: skipped" in capsys.readouterr().err
    assert finished == {c: (out / "cells" / c / "evaluation.json").stat().st_mtime_ns for c in cells}
    assert main([*args[:-2], "--steps", "3"]) == 2  # other settings in the same folder: refused
    assert "holds a study with other settings (preset differ)" in capsys.readouterr().err


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _progress_steps(path) -> list[int]:
    try:
        return [e["step"] for e in read_events(path) if e["event"] == "progress" and "loss" in e]
    except Exception:  # not written yet
        return []


def test_a_cancelled_study_resumes_its_running_cell(tmp_path, labelled):
    out = tmp_path / "study"
    args = _study(labelled, out, "--cases", "1", "--seeds", "1", "--steps", "30")
    job = Job.engine(args, run_dir=out)
    cell_events = out / "cells" / "random-1-s0" / "events.jsonl"
    _wait_for(lambda: len(_progress_steps(cell_events)) >= 2 or job.poll() is not None)
    job.cancel(wait=True)
    assert job.wait() == CANCELLED_EXIT_CODE, job.stderr
    stopped = [e for e in read_events(cell_events) if e["event"] == "checkpoint"][-1]["step"]
    assert 2 <= stopped < 30 and not (out / "cells" / "random-1-s0" / "evaluation.json").exists()
    assert not (out / "results.csv").exists()

    assert main(args) == 0  # the same command continues the study
    logs = [e["message"] for e in read_events(cell_events) if e["event"] == "log"]
    assert f"resumed from step {stopped}" in logs
    assert (out / "report.html").is_file() and len(_csv(out / "results.csv")) == 2 * LABELS


def test_errors_come_before_any_training(tmp_path, labelled, capsys):
    seg_bundle = tmp_path / "seg"
    assert main(["finetune", "--data", str(labelled), "--out", str(seg_bundle), "--steps", "1", "--device", "cpu"]) == 0
    single = write_phantom_dataset(tmp_path / "single", [500], shape=(32, 48, 48))
    capsys.readouterr()
    cases = {
        "encoder": _study(labelled, tmp_path / "a", "--init", f"seg={seg_bundle / 'bundle'}"),  # not a pretext bundle
        "cases": _study(labelled, tmp_path / "b", "--cases", "1,5"),  # 6 cases - 2 held out = 4
        "held-out": _study(single, tmp_path / "c", "--cases", "1"),
        "no held-out": _study(labelled, tmp_path / "d", "--held-out", "0"),
        "init": _study(labelled, tmp_path / "e", "--init", "voco=/no/such/bundle"),
        "names": _study(labelled, tmp_path / "f", "--init", "random", "--init", "random"),
        "preset": _study(labelled, tmp_path / "g", "--preset", "voco-v1-cpu"),
    }
    expected = {"encoder": "--init seg:", "cases": "asks for 5 labelled cases, but only 4 remain", "held-out": "held-out split would be empty",
                "no held-out": "held-out split would be empty", "init": "no such bundle", "names": "given more than once: random",
                "preset": "is a 'voco' preset"}
    for name, args in cases.items():
        assert main([*args[:1], "--cases", "1", *args[1:]]) == 2, name  # a later --cases wins
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected[name] in lines[0], (name, lines)
    assert not any((tmp_path / x).exists() for x in "abcdefg")  # no partial output


def test_cells_spread_over_devices(tmp_path, labelled):
    out = tmp_path / "study"
    assert main(_study(labelled, out, "--cases", "1,2", "--seeds", "1", "--steps", "2", "--devices", "cpu,cpu")) == 0
    assert all((out / "cells" / c / "evaluation.json").is_file() for c in ("random-1-s0", "random-2-s0"))
    processes = {json.loads((out / "cells" / c / "run.json").read_text())["study_cell"]["process"] for c in ("random-1-s0", "random-2-s0")}
    assert os.getpid() not in processes and len(processes) <= 2  # run by the workers (which one takes which cell varies)
