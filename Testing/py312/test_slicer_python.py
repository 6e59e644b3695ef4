"""The engine code that Slicer's own Python runs, under Python 3.12 (Slicer 5.10 and 5.12) without torch.

Slicer's process imports ``ssl3d.requirements`` before anything is installed, and ``ssl3d.jobs``,
``ssl3d.events``, ``ssl3d.bundle``, ``ssl3d.config`` and the click client around every job; torch only ever
runs in the job's own process. So these run here in pyenv's ``python3.12`` with a clean environment: no
virtual environment, no user site, nothing on ``PYTHONPATH`` but this worktree and, for the tests that need
it, numpy (which Slicer ships) installed once per session into a temporary folder.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from bare_python import ROOT, run_code

#: Modules Slicer's process imports before the engine's packages exist: standard library only.
STDLIB_ONLY = ["ssl3d", "ssl3d.errors", "ssl3d.requirements", "ssl3d.slicer_support", "ssl3d.events",
               "ssl3d.jobs", "ssl3d.job_arguments", "ssl3d.bundle_info", "ssl3d.infer.click_worker", "ssl3d.serve.client"]

#: What must never be importable in the 3.12 tier (the point of it: Slicer's side runs without them).
ABSENT = ("torch", "monai", "yaml", "scipy", "SimpleITK")


@pytest.fixture(scope="session")
def numpy312(python312, tmp_path_factory) -> str:
    """A folder with numpy for Python 3.12 (as in Slicer), installed once per test session."""
    folder = tmp_path_factory.mktemp("numpy312")
    done = subprocess.run([python312, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
                           "--no-deps", "--only-binary=:all:", "--target", str(folder), "numpy>=1.24,<3"],
                          capture_output=True, text=True, timeout=180)
    if done.returncode != 0:
        pytest.skip(f"cannot install numpy for Python 3.12: {done.stderr.strip().splitlines()[-1:]}")
    return str(folder)


def run312(python: str, code: str, *paths: str) -> dict:
    """Run ``code`` in a clean Python 3.12 (see ``bare_python.py``); its last stdout line is JSON."""
    prelude = textwrap.dedent(f"""\
        import importlib.util, json, sys
        assert sys.version_info[:2] == (3, 12), sys.version
        assert [m for m in {ABSENT!r} if importlib.util.find_spec(m)] == [], "not a clean Python"
    """)
    done = run_code(python, prelude + textwrap.dedent(code), *paths)
    assert done.returncode == 0, f"Python 3.12 failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _present(module: str) -> bool:
    return (ROOT / (module.replace(".", "/") + ".py")).is_file() or (ROOT / module.replace(".", "/")).is_dir()


@pytest.mark.parametrize("module", STDLIB_ONLY)
def test_imports_with_the_standard_library_only(python312, module):
    if not _present(module):
        pytest.skip(f"{module} is not on this branch yet")
    foreign = run312(python312, f"""
        import {module}
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} - set(sys.stdlib_module_names) - {{"ssl3d", "__main__"}})))
    """)
    assert foreign == [], f"{module} imports {foreign} at import time; Slicer imports it before they are installed"


def test_requirements_report_and_plan_in_a_bare_python(python312):
    result = run312(python312, """
        from ssl3d import requirements as r
        wanted = r.missing()
        again = r.missing()
        scans = r.SESSION.scans
        plan = r.install_steps(wanted)
        outcome = r.ensure(lambda text: 1 / 0, lambda req: 1 / 0, lambda args: 1 / 0, testing=True)
        print(json.dumps({"first": wanted[0].pip_arg, "names": sorted(x.name for x in wanted), "scans": scans,
                          "same": wanted == again, "plan": [s.via_pytorch for s in plan],
                          "pip": plan[1].pip_arguments()[:1], "outcome": [outcome.ready, outcome.testing],
                          "skip": r.skip_reason()}))
    """)
    assert result["first"] == "torch>=2.8"  # torch first: the PyTorch extension installs it
    assert "monai" in result["names"] and "numpy" in result["names"]
    assert result["scans"] == 2 and result["same"]  # something missing: looked for again at each call
    assert result["plan"] == [True, False] and result["pip"] == ["monai>=1.4"]
    assert result["outcome"] == [False, True]  # testing mode: no dialog, no install (the callbacks would raise)
    assert result["skip"].startswith("SSL3D's Python packages are missing: torch >=2.8 (not installed)")


def test_slicer_support_accepts_this_python_and_refuses_slicer_5_8(python312):
    result = run312(python312, """
        import sys
        from ssl3d.slicer_support import unsupported
        print(json.dumps([unsupported("5.10.0"), unsupported((5, 12)), unsupported("5.8.1", (3, 9, 10)),
                          unsupported("5.12.3", sys.version_info)]))
    """)
    assert result[0] is None and result[1] is None and result[3] is None
    assert "5.10 or newer" in result[2] and "5.8.1" in result[2] and "3.9.10" in result[2]


def test_events_round_trip(python312, tmp_path):
    result = run312(python312, f"""
        from ssl3d.events import EventFollower, EventWriter, parse_event
        path = {str(tmp_path / "events.jsonl")!r}
        follower = EventFollower(path)
        with EventWriter(path) as writer:
            writer.emit("progress", step=3, total=10, loss={{"total": float("nan")}}, lr=float("inf"))
        got = follower.poll()
        print(json.dumps({{"events": [e["event"] for e in got], "loss": got[-1].get("loss"), "lr": got[-1].get("lr"),
                          "line": parse_event("not an event")}}))
    """)
    assert result["events"][-1] == "progress"
    assert result["loss"] == {"total": None} and result["lr"] is None  # NaN/inf as null: valid JSON for Slicer
    assert result["line"] is None


def test_job_runs_and_streams_events_with_slicers_python(python312, numpy312, tmp_path):
    result = run312(python312, f"""
        import sys
        from ssl3d.jobs import Job
        from ssl3d.events import make_event
        code = "import json; print(json.dumps(" + repr(make_event("progress", step=1, total=2)) + "))"
        job = Job.start([sys.executable, "-c", code])
        job.wait(60)
        engine = Job.engine(["info", "--presets"], python=sys.executable)
        engine.wait(120)
        print(json.dumps({{"code": job.returncode, "events": [e["event"] for e in job.events],
                          "engine": engine.returncode, "stderr": engine.stderr,
                          "text": " ".join(str(e.get("message", "")) for e in engine.events)}}))
    """, numpy312)
    assert result["code"] == 0 and "progress" in result["events"]
    assert result["engine"] == 0, result["stderr"]
    assert "voco-v2" in result["text"] and "vf-v2" in result["text"]


def test_config_resolves_presets(python312, numpy312, tmp_path):
    result = run312(python312, f"""
        from ssl3d import config
        from ssl3d.errors import ConfigError
        preset = config.get_preset("voco-v2")
        changed = config.apply_overrides(preset, {{"train.steps": 7}})
        path = config.save_config(changed, {str(tmp_path / "run.json")!r})
        again = config.load_config(path)
        try:
            config.get_preset("voco-v3")
            hint = None
        except ConfigError as error:
            hint = str(error)
        print(json.dumps({{"voco": config.preset_names("voco"), "vf": config.preset_names("vf"),
                          "steps": again.train.steps, "same": again == changed, "hint": hint}}))
    """, numpy312)
    assert {"voco-v1", "voco-v2", "voco-v1-cpu", "voco-v2-cpu"} <= set(result["voco"])
    assert {"vf-v1", "vf-v2"} <= set(result["vf"])
    assert result["steps"] == 7 and result["same"]
    assert "Did you mean" in result["hint"]


def test_bundle_metadata_reads_without_torch(python312, numpy312, tmp_path):
    torch = pytest.importorskip("torch")
    from ssl3d.bundle import write_bundle

    meta = {"network": {"name": "unet-small", "kwargs": {}}, "task": "segmentation",
            "preprocessing": {"orientation": "RAS"}, "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}],
            "provenance": {"data": "phantoms", "steps": 3}}
    write_bundle(tmp_path / "model", {"w": torch.zeros(2)}, meta)  # written by the engine's Python, read by Slicer's
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bundle.json").write_text(json.dumps({**meta, "extra": 1}), encoding="utf-8")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"")
    result = run312(python312, f"""
        from ssl3d.bundle import read_bundle
        from ssl3d.errors import BundleError
        bundle = read_bundle({str(tmp_path / "model")!r})
        try:
            read_bundle({str(tmp_path / "bad")!r})
            error = None
        except BundleError as caught:
            error = str(caught)
        print(json.dumps({{"task": bundle.task, "labels": {{str(k): v for k, v in bundle.labels.items()}},
                          "error": error}}))
    """, numpy312)
    assert result["task"] == "segmentation" and result["labels"] == {"1": ["liver", [221, 130, 101]]}
    assert "unknown section 'extra'" in result["error"]


def test_click_worker_runs_clicks_on_its_thread(python312, numpy312):
    result = run312(python312, """
        import time
        import numpy as np
        from ssl3d.infer.click_worker import ClickWorker

        class Mask:
            def __init__(self):
                self.array, self.ijk_to_ras = np.zeros((4, 4, 4), np.uint8), np.eye(4).tolist()

        class Session:  # stands in for ssl3d.infer.InteractiveSession (torch), same surface
            def __init__(self, bundle, device):
                self.mask, self.clicks, self.last_changed = Mask(), [], None
            def set_volume(self, volume):
                self.mask.array[:] = 0
            def add_point(self, ras, positive=True):
                self.clicks.append(ras)
                self.mask.array[1:3, 1:3, 1:3] = 1 if positive else 0
                self.last_changed = (1, 3, 1, 3, 1, 3)
            def undo(self):
                self.clicks.pop()
                self.mask.array[:] = 0
            def reset(self):
                self.clicks.clear()

        worker = ClickWorker(Session)
        worker.submit("point", bundle="b", volume="v", volumeKey="v1", ras=(0, 0, 0), target="liver", tag=7)
        worker.submit("undo", target="liver")
        results, deadline = [], time.monotonic() + 30
        while len(results) < 2 and time.monotonic() < deadline:
            results += worker.take()
            time.sleep(0.01)
        worker.stop()
        print(json.dumps([{"kind": r["kind"], "clicks": r["clicks"], "changed": int(r["changed"].sum()) if "changed" in r else None,
                           "tag": r["tag"], "error": r.get("error")} for r in results]))
    """, numpy312)
    assert result == [{"kind": "point", "clicks": 1, "changed": 8, "tag": 7, "error": None},
                      {"kind": "undo", "clicks": 0, "changed": 8, "tag": None, "error": None}]


def test_click_client_imports_when_present(python312):
    module = "ssl3d.serve.client"
    if not _present(module):
        pytest.skip(f"{module} is not on this branch yet (the click server, issue 13)")
    result = run312(python312, f"""
        import {module} as client
        print(json.dumps(sorted(getattr(client, "__all__", []))))
    """)
    assert result, f"{module} exports nothing"
