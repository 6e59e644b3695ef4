"""SSLPretrain's GUI state in a replay of Slicer (real Qt widgets, slicer-core scene, Slicer's parameter-node
wrapper replayed): a user's choices survive setup, re-entering the module and scene close/reload; path fields
stay empty when empty; one loss chart per run whatever the scene does; a job's end is handled anywhere."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("PySide6.QtUiTools", reason="PySide6 is not installed (pip install PySide6-Essentials)")
pytest.importorskip("slicer", reason="slicer-core is not installed")

from replay import SlicerReplay  # noqa: E402  (Testing/slicer_replay is on sys.path: conftest rootdir-relative import)


@pytest.fixture
def replay():
    with SlicerReplay() as slicer_replay:
        yield slicer_replay


def _saved_choices(replay, module, method, preset, network, device):
    """A scene that holds the module's parameter node with the user's choices (as loaded from a .mrml)."""
    p = module.SSLPretrainLogic().getParameterNode()
    p.method, p.preset, p.network, p.device, p.steps = method, preset, network, device, 1234
    return p


@pytest.mark.parametrize("method, preset, network", [("VOCO", "voco-v2", "swin-l"), ("VF", "vf-v2", "pctnet")])
def test_saved_preset_network_and_device_survive_setup_and_reentering(replay, method, preset, network):
    module = replay.load("SSLPretrain")
    _saved_choices(replay, module, module.Method[method], preset, network, module.Device.CUDA)
    widget = replay.widget("SSLPretrain", module)
    for step in ("setup", "enter", "exit+enter", "exit+enter again"):
        if "exit" in step:
            replay.exit(widget)
        if step != "setup":
            replay.enter(widget)
        p = widget._parameterNode
        assert (p.method.name, p.preset, p.network, p.device.name, p.steps) == (method, preset, network, "CUDA", 1234), step
        assert widget.ui.presetComboBox.currentText == preset, step
        assert widget.ui.networkComboBox.currentData == network, step
        assert widget.ui.methodComboBox.currentIndex == list(module.Method).index(module.Method[method]), step


def test_choices_survive_closing_and_reloading_the_scene(replay, tmp_path):
    module = replay.load("SSLPretrain")
    widget = replay.widget("SSLPretrain", module)
    replay.enter(widget)
    ui = widget.ui
    ui.methodComboBox.currentIndex = list(module.Method).index(module.Method.VF)  # the user picks Volume Fusion
    assert widget._parameterNode.method == module.Method.VF
    assert [ui.presetComboBox.itemText(i) for i in range(ui.presetComboBox.count)] == list(module.PRESETS["vf"])
    assert widget._parameterNode.preset in module.PRESETS["vf"]
    index = ui.presetComboBox.findText("vf-v2")
    ui.presetComboBox.setCurrentIndex(index)
    ui.presetComboBox.activated.emit(index)  # what a user's choice in the list emits
    assert widget._parameterNode.preset == "vf-v2"
    replay.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert replay.scene.Commit()
    replay.close_scene()
    assert widget._parameterNode.preset == module.SSLPretrainParameterNode.allParameters["preset"][1]  # a new scene: defaults
    replay.scene.SetURL(str(tmp_path / "scene.mrml"))
    assert replay.scene.Connect()  # File / Load scene
    replay.exit(widget)
    replay.enter(widget)
    p = widget._parameterNode
    assert (p.method, p.preset) == (module.Method.VF, "vf-v2")
    assert ui.presetComboBox.currentText == "vf-v2"


def test_empty_path_fields_stay_empty(replay, tmp_path):
    widget = replay.widget("SSLPretrain")
    replay.enter(widget)
    ui = widget.ui
    edits = (ui.dataFolderPathLineEdit, ui.outputFolderPathLineEdit, ui.inspectModelPathLineEdit)
    assert [edit.currentPath for edit in edits] == ["", "", ""]
    ui.outputFolderPathLineEdit.currentPath = str(tmp_path)
    assert str(widget._parameterNode.outputFolder) == str(tmp_path)
    ui.outputFolderPathLineEdit.currentPath = ""
    replay.exit(widget)
    replay.enter(widget)
    assert [edit.currentPath for edit in edits] == ["", "", ""]
    for edit in edits:  # folder fields pick folders
        edit.browse()
    from replay.widgets import DIALOGS

    assert [kind for kind, name in DIALOGS[-3:]] == ["directory"] * 3


def _charts(replay):
    return [replay.scene.GetNthNodeByClass(i, "vtkMRMLPlotChartNode")
            for i in range(replay.scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode"))]


def _following(replay, tmp_path):
    """SSLPretrain entered and following an empty run folder as 'Open run' does, without the folder dialog.
    Returns (widget, run folder)."""
    from ssl3d import jobs

    widget = replay.widget("SSLPretrain", replay.load("SSLPretrain"))
    replay.enter(widget)
    run = tmp_path / "run"
    run.mkdir()
    widget._resetRunDisplay(run.name)
    widget._follower = jobs.follow_run(run)
    widget._runFolder = run
    return widget, run


def _append_events(run, start, count):
    with open(run / "events.jsonl", "a", encoding="utf-8") as stream:
        for step in range(start, start + count):
            stream.write(json.dumps({"event": "progress", "time": 0.0, "step": step, "total": 100,
                                     "loss": {"total": 1.0 / step}}) + "\n")


def test_one_chart_per_run_whatever_the_scene_does(replay, tmp_path):
    widget, run = _following(replay, tmp_path)
    for tick in range(3):
        _append_events(run, 1 + 2 * tick, 2)
        widget.onTimer()
    assert len(_charts(replay)) == 1
    replay.close_scene()
    for tick in range(5):
        _append_events(run, 10 + 2 * tick, 2)
        widget.onTimer()
    charts = _charts(replay)
    assert len(charts) == 1, "a scene close must not make a new chart on every timer tick"
    assert replay.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 2
    assert charts[0].GetNumberOfPlotSeriesNodes() >= 1


class _FinishedJob:
    """What JobBoard.finished returns for a job that was cancelled and saved its checkpoint."""

    cancelled, returncode, error_message, stderr = True, 130, "ssl3d pretrain was cancelled.", ""
    state, last_checkpoint = "cancelled", "run/checkpoint.pt"


def test_a_job_ending_while_the_module_is_not_shown_after_a_scene_close(replay):
    module = replay.load("SSLPretrain")
    widget = replay.widget("SSLPretrain", module)
    replay.enter(widget)
    replay.exit(widget)  # the user works in another module
    replay.close_scene()
    widget.onPretrainFinished(_FinishedJob())  # must not raise AttributeError on a missing parameter node
    p = module.SSLPretrainLogic().getParameterNode()
    assert p.resume is True, "a cancelled run is resumed by the next Start"


def test_following_a_finished_run_stops_the_timer(replay, tmp_path):
    widget, run = _following(replay, tmp_path)
    widget.timer.start()
    _append_events(run, 1, 2)
    widget.onTimer()
    assert widget.timer.isActive()
    with open(run / "events.jsonl", "a", encoding="utf-8") as stream:
        stream.write(json.dumps({"event": "done", "time": 0.0, "outputs": {}}) + "\n")
    widget.onTimer()
    assert not widget.timer.isActive(), "a followed run that has ended needs no timer"


@pytest.mark.parametrize("name", ["SSLPretrain", "SSLSegment"])
def test_an_older_slicer_gets_one_message_and_disabled_buttons(name):
    with SlicerReplay(version=(5, 8, 1)) as old:
        widget = old.widget(name)
        from PySide6 import QtWidgets
        from replay.pythonqt import unwrap

        label = unwrap(widget.parent).findChild(QtWidgets.QLabel, "unsupportedSlicerLabel")
        assert label is not None and "5.10 or newer" in label.text() and "5.8.1" in label.text()
        button = widget.ui.startButton if name == "SSLPretrain" else widget.ui.segmentButton
        assert not unwrap(button).isEnabled()
        old.enter(widget)  # entering, leaving and a reload must not fail on the half-set-up module
        old.exit(widget)
        widget.cleanup()


def test_a_reload_keeps_a_running_pretraining_and_follows_it(replay, tmp_path):
    import sys
    import time
    from pathlib import Path

    from ssl3d.jobs import live_job

    helper = Path(__file__).resolve().parents[1] / "helpers" / "fake_job.py"
    run = tmp_path / "run"
    widget = replay.widget("SSLPretrain")
    replay.enter(widget)
    board = widget.logic.jobs  # a training stand-in that owns its run folder, as the module's Start makes one
    board._queues["pretrain"] = __import__("queue").Queue()
    from ssl3d.jobs import Job

    board._jobs["pretrain"] = Job.start([sys.executable, str(helper), "--steps", "100000", "--interval", "0.05",
                                         "--run-dir", str(run), "--lock"], run_dir=run, on_event=board._queues["pretrain"].put)
    deadline = time.monotonic() + 60
    while live_job(run) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    engine = live_job(run)["pid"]
    new = replay.reload("SSLPretrain")  # Reload: cleanup() of the old widget, then a new module and widget
    try:
        assert live_job(run) is not None and live_job(run)["pid"] == engine, "a reload must not cancel training"
        assert new.logic.jobs.running("pretrain") and new.timer.isActive()
        assert new.ui.startButton.text == "Cancel"
        seen = 0
        while seen < 3 and time.monotonic() < deadline:
            replay.process_events(0.1)
            seen = new.ui.progressBar.value
        assert seen >= 3, "the reloaded module shows the run's progress"
        new.onStartButton()  # Cancel reaches the re-attached run
        while new.logic.jobs.running("pretrain") and time.monotonic() < deadline:
            replay.process_events(0.1)
        replay.process_events(0.5)
        assert live_job(run) is None
        assert "Cancelled" in new.ui.statusLabel.text
    finally:
        import os
        import signal

        try:
            os.kill(engine, signal.SIGKILL)
        except OSError:
            pass
