"""SSLSegment's GUI in a replay of Slicer (real Qt widgets, slicer-core scene, Slicer's parameter-node wrapper
replayed): folder fields, persistent point placement, one Segment Editor undo step per click, a failed write
that keeps the other results, keyboard shortcuts, and what a scene close leaves."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

pytest.importorskip("PySide6.QtUiTools", reason="PySide6 is not installed (pip install PySide6-Essentials)")
pytest.importorskip("slicer", reason="slicer-core is not installed")

from replay import SlicerReplay  # noqa: E402
from replay.widgets import DIALOGS  # noqa: E402

from ssl3d.infer.click_worker import ClickWorker  # noqa: E402
from ssl3d.io import Volume  # noqa: E402


class CubeSession:
    """A stand-in click session (no model): a click sets a 3-voxel cube around the clicked voxel to the click's sign."""

    def __init__(self, bundle, device):
        self.clicks, self.last_changed, self.label_name, self.history = [], None, None, []

    def set_volume(self, volume):
        self._mask = Volume(np.zeros(volume.shape, np.uint8), volume.ijk_to_ras)
        self._inverse = np.linalg.inv(volume.ijk_to_ras)

    @property
    def mask(self):
        return self._mask

    def add_point(self, ras, positive=True):
        i, j, k = np.rint(self._inverse @ np.array([*ras, 1.0]))[:3].astype(int)
        self.history.append(self._mask.array.copy())
        box = (max(k - 1, 0), k + 2, max(j - 1, 0), j + 2, max(i - 1, 0), i + 2)
        self._mask.array[box[0]:box[1], box[2]:box[3], box[4]:box[5]] = 1 if positive else 0
        self.clicks.append((ras, positive))
        self.last_changed = box

    def undo(self):
        self._mask.array[...] = self.history.pop()
        self.clicks.pop()
        self.last_changed = (0, *self._mask.array.shape[:1], 0, self._mask.array.shape[1], 0, self._mask.array.shape[2])

    def reset(self):
        self._mask.array[...] = 0
        self.clicks, self.history = [], []
        self.last_changed = (0, self._mask.array.shape[0], 0, self._mask.array.shape[1], 0, self._mask.array.shape[2])


@pytest.fixture
def replay():
    with SlicerReplay() as slicer_replay:
        yield slicer_replay


def _click_module(replay, tmp_path, session):
    """SSLSegment entered with a click bundle and a 16^3 volume chosen, the click section still collapsed;
    clicks run on ``session``. Returns (widget, volume node, bundle folder)."""
    from ssl3d import mrml

    bundle = tmp_path / "clicks"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"task": "interactive", "network": {"name": "unet"}}))
    volumeNode = mrml.volume_to_node(Volume(np.zeros((16, 16, 16), np.int16), np.eye(4)), replay.scene, "ct")
    widget = replay.widget("SSLSegment")
    widget._clicker = ClickWorker(session)
    replay.enter(widget)
    widget.ui.modelPathLineEdit.currentPath = str(bundle)
    widget._parameterNode.inputVolume = volumeNode
    return widget, volumeNode, bundle


@pytest.fixture
def clicking(replay, tmp_path):
    """The module entered with a click bundle, a 16^3 volume and the click section open; clicks run on CubeSession."""
    widget, volumeNode, _ = _click_module(replay, tmp_path, CubeSession)
    widget.ui.clickCollapsibleButton.collapsed = True
    widget.ui.clickCollapsibleButton.collapsed = False
    return types.SimpleNamespace(widget=widget, volume=volumeNode, positive=widget.logic.pointList("positive"),
                                 negative=widget.logic.pointList("negative"))


def _drain(replay, widget, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while (widget._clicker.pending() or widget.timer.isActive()) and time.monotonic() < deadline:
        replay.process_events(0.05)
    assert not widget._clicker.pending(), "the clicks did not finish"


def _segment_voxels(widget):
    from ssl3d import mrml

    editor = widget.ui.segmentEditorWidget
    labelmap = mrml.segment_to_labelmap(editor.segmentationNode(), editor.currentSegmentID(), widget._parameterNode.inputVolume)
    return int(labelmap.array.sum())


def test_folder_fields_are_empty_and_pick_folders(replay, tmp_path):
    widget = replay.widget("SSLSegment")
    replay.enter(widget)
    ui = widget.ui
    edits = (ui.modelPathLineEdit, ui.datasetPathLineEdit, ui.initBundlePathLineEdit, ui.fineTuneOutputPathLineEdit)
    assert [edit.currentPath for edit in edits] == [""] * 4
    ui.datasetPathLineEdit.currentPath = str(tmp_path)
    assert str(widget._parameterNode.datasetFolder) == str(tmp_path)
    for edit in edits:
        edit.browse()
    assert [kind for kind, name in DIALOGS[-4:]] == ["directory"] * 4, "a dataset folder must be chosen with a folder dialog"


def test_clicks_stay_in_place_mode_and_leaving_the_module_ends_it(replay, clicking):
    widget = clicking.widget
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    assert replay.click(clicking.positive, (5, 5, 5))
    assert replay.click(clicking.positive, (10, 10, 10)), "the second click must still place a point"
    _drain(replay, widget)
    assert clicking.positive.GetNumberOfControlPoints() == 2
    replay.exit(widget)
    assert not replay.click(clicking.positive, (3, 3, 3)), "place mode must end when the module is left"


def test_each_click_is_one_segment_editor_undo_step(replay, clicking):
    widget = clicking.widget
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    replay.click(clicking.positive, (5, 5, 5))
    _drain(replay, widget)
    after_first = _segment_voxels(widget)
    replay.click(clicking.positive, (10, 10, 10))
    _drain(replay, widget)
    assert _segment_voxels(widget) == 2 * after_first == 54
    editor = widget.ui.segmentEditorWidget
    assert len(editor.undoStates) == 2
    editor.undo()  # Ctrl+Z in the Segment Editor takes back the second click
    assert _segment_voxels(widget) == after_first


def test_a_failed_write_keeps_the_other_results_and_the_undo_button_right(replay, clicking, monkeypatch):
    from ssl3d import mrml

    widget = clicking.widget
    real, calls = mrml.write_mask_region, []

    def failing_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(mrml, "write_mask_region", failing_once)
    widget._showClickResults = lambda original=widget._showClickResults: None  # hold results back until both are done
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    replay.click(clicking.positive, (5, 5, 5))
    replay.click(clicking.positive, (10, 10, 10))
    while widget._clicker.pending() and len(widget._clicker._results.queue) < 2:
        replay.process_events(0.05)
    del widget._showClickResults
    widget._showClickResults()  # both results in one timer tick; the first write fails
    assert len(calls) == 2, "the second result must still be written"
    assert _segment_voxels(widget) == 27
    assert [m for m in replay.messages if m[0] == "error"] == [("error", "Failed to update the segment. disk full")]
    assert [tag for tag, _ in widget._clicks.points] == [2]
    assert widget.ui.undoClickButton.enabled


def test_keyboard_shortcuts_while_the_click_section_is_open(replay, clicking):
    widget = clicking.widget
    shortcuts = {s.key.toString(): s for s in widget._shortcuts}
    assert set(shortcuts) == {"T", "U", "Shift+R", "N"}
    assert all(s.enabled for s in shortcuts.values())
    help_text = types.SimpleNamespace()
    replay.load("SSLSegment").SSLSegment(help_text)
    for key in ("T", "U", "Shift+R", "N"):
        assert f"<b>{key}</b>" in help_text.helpText, f"the help text lists {key}"
    shortcuts["T"].activated.emit()
    assert widget.ui.positivePlaceWidget.placeModeEnabled
    shortcuts["T"].activated.emit()
    assert widget.ui.negativePlaceWidget.placeModeEnabled and not widget.ui.positivePlaceWidget.placeModeEnabled
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    replay.click(clicking.positive, (5, 5, 5))
    _drain(replay, widget)
    shortcuts["U"].activated.emit()
    _drain(replay, widget)
    assert clicking.positive.GetNumberOfControlPoints() == 0 and _segment_voxels(widget) == 0
    first = widget.ui.segmentEditorWidget.currentSegmentID()
    shortcuts["N"].activated.emit()
    assert widget.ui.segmentEditorWidget.currentSegmentID() not in ("", first)
    widget.ui.clickCollapsibleButton.collapsed = True
    assert not any(s.enabled for s in shortcuts.values())


def test_scene_close_clears_the_pairs_list_and_point_observers(replay, clicking):
    widget = clicking.widget
    segmentation = replay.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "seg")
    widget.ui.pairVolumeSelector.setCurrentNode(clicking.volume)
    widget.ui.pairSegmentationSelector.setCurrentNode(segmentation)
    widget.onAddPair()
    assert widget.ui.pairsListWidget.count == 1
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    replay.close_scene()
    assert widget.ui.pairsListWidget.count == 0 and widget._pairs.ids == []
    old_lists = (clicking.positive, clicking.negative)
    assert not any(widget.hasObserver(node, node.PointPositionDefinedEvent, widget.onPointPlaced) for node in old_lists)
    assert all(node not in widget._observedPointLists for node in old_lists)
    assert all(replay.scene.IsNodePresent(node) for node in widget._observedPointLists)  # the new scene's lists
    interaction = replay.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
    assert interaction.GetCurrentInteractionMode() != interaction.Place


def test_a_fine_tuning_ending_while_the_module_is_not_shown(replay, tmp_path):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({"task": "segmentation"}))
    widget = replay.widget("SSLSegment")
    replay.enter(widget)
    widget._chart.reset("Fine-tuning")
    replay.exit(widget)
    replay.close_scene()
    widget._showFineTuneEvents([{"event": "done", "outputs": {"bundle": str(bundle)}}])  # no parameter node is connected
    p = widget.logic.getParameterNode()
    assert str(p.modelPath) == str(bundle), "the new model is selected whichever module is shown"
    replay.enter(widget)
    assert widget.ui.modelPathLineEdit.currentPath == str(bundle)


def test_the_segmentation_input_is_written_uncompressed(replay, clicking):
    """The job's temporary input is written on the main thread: raw, not gzip (seconds for a large CT)."""
    widget, started = clicking.widget, []
    widget.logic.jobs.start = lambda role, args, run_dir: started.append(args)
    widget._startSegmentation("cpu")
    widget.timer.stop()
    args = started[0]
    inputFile = args[args.index("--input") + 1]
    assert inputFile.endswith(".nrrd")
    with open(inputFile, "rb") as stream:
        header = stream.read(1024).split(b"\n\n")[0].decode()
    assert "encoding: raw" in header


def test_opening_the_click_section_loads_the_model_before_the_first_click(replay, tmp_path):
    made = []

    class Counted(CubeSession):
        def __init__(self, bundle, device):
            super().__init__(bundle, device)
            made.append((bundle, device))

    widget, _, bundle = _click_module(replay, tmp_path, Counted)
    assert made == [], "a collapsed click section starts nothing"
    widget.ui.clickCollapsibleButton.collapsed = False
    _drain(replay, widget)
    assert made == [(str(bundle), widget._parameterNode.device.value)], "opening the section must load the model"
    widget.ui.positivePlaceWidget.setPlaceModeEnabled(True)
    replay.click(widget.logic.pointList("positive"), (5, 5, 5))
    _drain(replay, widget)
    assert len(made) == 1 and _segment_voxels(widget) == 27, "the first click must use the warm session"
