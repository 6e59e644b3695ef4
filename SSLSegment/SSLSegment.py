"""SSLSegment: segment volumes with SSL3D model bundles, fine-tune them from the scene, click to segment.

Widget wiring only. Segmentation and fine-tuning run as ``ssl3d segment`` / ``ssl3d finetune`` jobs in a
background process (:class:`ssl3d.jobs.JobBoard`); the ``.seg.nrrd`` result becomes
a segmentation node with the bundle's names and colours through :mod:`ssl3d.mrml`.

Click to segment runs in a click server (``ssl3d serve``, :mod:`ssl3d.serve`): a process of its own, started with
PythonSlicer on the first click (or a remote GPU machine named in the Server field), that keeps a warm
``ssl3d.infer.InteractiveSession`` per volume, bundle and device. Slicer's process computes nothing: inside Slicer a
Python thread barely runs, as PythonQt keeps the GIL while the event loop waits. The main thread converts the
volume node to a ``Volume`` once; the client sends it and the clicks on non-blocking sockets advanced by the
module's QTimer, and writes only the voxels a click changed into the selected segment.
"""

import enum
import time
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *  # noqa: F403
from slicer.util import VTKObservationMixin
from SSLPretrain import Device
from SSLPretrainLib.engineSetup import (ensureEngineRequirements, keepJobs, pythonSlicer, reattachJobs,
                                        showUnsupportedSlicer)
from SSLPretrainLib.sampleData import PHANTOM_SAMPLE, writePhantomSample
from SSLPretrainLib.widgets import PathFields, RunChart, pathOrNone
from SSLSegmentLib.clickSection import CLICK_SERVER_SETTING, ClickSection

MODEL_SETTING = "SSL3D/SSLSegment/modelPath"
JOBS_SETTING = "SSL3D/SSLSegment/runningJobs"  # role -> run folder of the jobs a module reload left running
SEGMENT_OUTPUT = "segmentation.seg.nrrd"  # ssl3d segment writes names and colours into it
#: Keys while the click section is open (listed in the help text): include/exclude toggle, undo, reset, next segment.
CLICK_SHORTCUTS = (("T", "onToggleClickKind"), ("U", "onUndoClick"), ("Shift+R", "onResetClicks"), ("N", "onNextSegment"))


#
# SSLSegment
#
class SSLSegment(ScriptedLoadableModule):  # noqa: F405
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)  # noqa: F405
        self.parent.title = _("SSL Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["SSLPretrain"]
        self.parent.contributors = ["SSL3D developers"]
        self.parent.helpText = _(
            "Segment a volume with an SSL3D model bundle (all organs at once), refine one structure with positive "
            "and negative clicks, and fine-tune a model on segmentations made in Slicer, starting from a VoCo or "
            "Volume Fusion pretext bundle.<br><br>Keys while 'Click to segment' is open: <b>T</b> switches between "
            "include and exclude points, <b>U</b> undoes the last click, <b>Shift+R</b> removes all clicks, <b>N</b> "
            "starts a new segment. Needs Slicer 5.10 or newer."
        )
        self.parent.acknowledgementText = _(
            "SSL3D builds on MONAI and PyTorch; the pretext tasks follow VoCo (CVPR 2024) and MIS-FM (2023)."
        )


#
# Parameter node
#
class TrainingSource(enum.Enum):
    FOLDER = "folder"
    SCENE = "scene"

    def label(self):
        return {"folder": _("Dataset folder"), "scene": _("Segmentations in the scene")}[self.value]


class Task(enum.Enum):
    SEGMENTATION = "segmentation"
    INTERACTIVE = "interactive"

    def label(self):
        return {"segmentation": _("Segmentation"), "interactive": _("Click to segment")}[self.value]


@parameterNodeWrapper
class SSLSegmentParameterNode:
    modelPath: Path
    device: Device = Device.AUTO
    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    showSurface: bool = False
    trainingSource: TrainingSource = TrainingSource.FOLDER
    datasetFolder: Path
    initBundle: Path
    task: Task = Task.SEGMENTATION
    fineTuneSteps: Annotated[int, WithinRange(0, 10_000_000)] = 0
    fineTuneOutput: Path


#
# Widget
#
class SSLSegmentWidget(ClickSection, ScriptedLoadableModuleWidget, VTKObservationMixin):  # noqa: F405
    """The module's panel: model, Segment, Click to segment (:class:`ClickSection`), Fine-tune."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)  # noqa: F405
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._bundleInfo = {}
        self._segmentRun = None  # (folder, device) of the running segmentation
        self._chart = None  # RunChart of the fine-tuning run
        self._pairs = None  # ssl3d.mrml.TrainingPairs, made in setup
        self._clicker = None  # ssl3d.serve.client.ServerClickWorker, made in setup
        self._clicks = None  # ssl3d.mrml.ClickBook: the structure the clicks refine, their points; made in setup
        self._choosingTarget = False
        self._observedPointLists = []
        self._shortcuts = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SSLSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        if showUnsupportedSlicer(self.layout, uiWidget):
            return  # an older Slicer: one message, nothing else is set up
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SSLSegmentLogic()
        from ssl3d import mrml

        self._pairs = mrml.TrainingPairs()
        self._clicks = mrml.ClickBook()
        self.ui.clickServerLineEdit.text = str(slicer.util.settingsValue(CLICK_SERVER_SETTING, "") or "")
        self.ui.clickServerLineEdit.editingFinished.connect(self.onClickServerChanged)
        self.ui.clickTokenLineEdit.editingFinished.connect(self.onClickServerChanged)
        self._clicker = self._newClickWorker()
        self._pathFields = PathFields({  # the dataset field picks a folder: the engine finds a dataset.json in it
            "modelPath": self.ui.modelPathLineEdit, "datasetFolder": self.ui.datasetPathLineEdit,
            "initBundle": self.ui.initBundlePathLineEdit, "fineTuneOutput": self.ui.fineTuneOutputPathLineEdit},
            lambda: self._parameterNode)
        self._chart = RunChart(self.ui.fineTunePlotWidget, "SSLSegmentPlot")
        for placeWidget in (self.ui.positivePlaceWidget, self.ui.negativePlaceWidget):
            placeWidget.buttonsVisible = False
            placeWidget.placeButton().show()
            # clicks stay in place mode until the user leaves it, as in nnInteractive
            placeWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        for keys, slotName in CLICK_SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(keys), self.parent)
            shortcut.setContext(qt.Qt.ApplicationShortcut)  # the slice views have the keyboard focus
            shortcut.activated.connect(getattr(self, slotName))
            shortcut.enabled = False
            self._shortcuts.append(shortcut)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.modelPathLineEdit.currentPathChanged.connect(self.onModelChanged)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.fineTuneButton.clicked.connect(self.onFineTuneButton)
        self.ui.addPairButton.clicked.connect(self.onAddPair)
        self.ui.removePairButton.clicked.connect(self.onRemovePair)
        self.ui.resetClicksButton.clicked.connect(self.onResetClicks)
        self.ui.undoClickButton.clicked.connect(self.onUndoClick)
        # The Segment Editor, embedded as nnInteractive does: clicks refine its selected segment, and its effects
        # paint or erase that segment between clicks. The source volume follows the volume chosen above.
        editor = self.ui.segmentEditorWidget
        editor.sourceVolumeNodeSelectorVisible = False
        editor.switchToSegmentationsButtonVisible = False
        editor.currentSegmentIDChanged.connect(self.onTargetSegmentChanged)
        editor.segmentationNodeChanged.connect(self.onTargetSegmentChanged)
        self.ui.clickBusyProgressBar.visible = False
        self.ui.clickCollapsibleButton.contentsCollapsed.connect(self.onClickSectionToggled)

        self.timer.timeout.connect(self.onTimer)
        self.initializeParameterNode()
        if reattachJobs(self.logic.jobs, JOBS_SETTING):  # a reload while fine-tuning: follow it again
            self.ui.fineTuneButton.text = _("Cancel")
            self._chart.reset(_("Fine-tuning"))
            self.timer.start()

    def cleanup(self) -> None:
        self.timer.stop()
        if self.logic is None:
            return
        self.logic.jobs.cancel("segment")  # seconds long, no run folder to come back to
        keepJobs(self.logic.jobs, JOBS_SETTING)  # a reload must not cancel a fine-tuning run
        self._clicker.stop()  # ends the local click server
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is None:
            return
        self.initializeParameterNode()
        self._connectSegmentEditor()

    def exit(self) -> None:
        if self.logic is None:
            return
        self._leavePlaceMode()
        self._updateShortcuts(False)
        editor = self.ui.segmentEditorWidget
        editor.setActiveEffect(None)  # no paint brush left active in the views of another module
        editor.uninstallKeyboardShortcuts()
        editor.removeViewObservations()
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self._leavePlaceMode()
        for node in self._observedPointLists:  # the point lists go with the scene
            self.removeObserver(node, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onPointPlaced)
        self._observedPointLists = []
        self.setParameterNode(None)
        self._pairs.clear()
        self.ui.pairsListWidget.clear()  # the list shows exactly the pairs
        self._clicker.submit("forget")  # the session's volume and clicks went with the scene
        self._clicks.forget()

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()
            self._connectSegmentEditor()
            self.onClickSectionToggled(self.ui.clickCollapsibleButton.collapsed)  # point lists went with the scene

    def _connectSegmentEditor(self) -> None:
        """Share the scene's Segment Editor parameter node (the Segment Editor module's), so both show one selection."""
        editor = self.ui.segmentEditorWidget
        from ssl3d import mrml

        editor.setMRMLSegmentEditorNode(mrml.segment_editor_node(slicer.mrmlScene))
        editor.installKeyboardShortcuts()
        editor.setupViewObservations()
        if self._parameterNode and self._parameterNode.inputVolume and editor.segmentationNode() is not None:
            editor.setSourceVolumeNode(self._parameterNode.inputVolume)

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if pathOrNone(p.modelPath) is None and slicer.util.settingsValue(MODEL_SETTING, ""):
            p.modelPath = Path(slicer.util.settingsValue(MODEL_SETTING, ""))
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode: Optional[SSLSegmentParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.onModelChanged()

    @property
    def parameters(self) -> SSLSegmentParameterNode:
        """The scene's parameter node, also while the module is not shown (a job may end then)."""
        return self._parameterNode or self.logic.getParameterNode()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self._pathFields.show(p)
        from ssl3d import bundle_info

        jobs = self.logic.jobs
        canSegment = bundle_info.bundle_task(self._bundleInfo) == "segmentation" and p.inputVolume is not None
        editor = self.ui.segmentEditorWidget
        if (p.inputVolume is not None and editor.mrmlSegmentEditorNode() is not None and editor.segmentationNode() is not None
                and editor.sourceVolumeNode() != p.inputVolume):  # the editor takes a source volume only with a segmentation
            editor.setSourceVolumeNode(p.inputVolume)
        self.ui.segmentButton.enabled = jobs.running("segment") or canSegment
        fromScene = p.trainingSource == TrainingSource.SCENE
        for widget in (self.ui.scenePairsLabel, self.ui.scenePairsWidget):
            widget.visible = fromScene
        for widget in (self.ui.datasetLabel, self.ui.datasetPathLineEdit):
            widget.visible = not fromScene
        hasData = len(self._pairs) > 0 if fromScene else pathOrNone(p.datasetFolder) is not None
        self.ui.fineTuneButton.enabled = jobs.running("finetune") or (hasData and pathOrNone(p.fineTuneOutput) is not None)

    # -------------------------------------------------------------------------------------- model
    def onModelChanged(self, path=None) -> None:
        """Show what the chosen bundle holds, and remember it for the next session."""
        if self._parameterNode is None:
            return
        folder = pathOrNone(self.ui.modelPathLineEdit.currentPath)  # the binding may not have updated the node yet
        from ssl3d import bundle_info

        self._bundleInfo = bundle_info.read_bundle_info(folder)
        self.ui.modelInfoTextBrowser.setHtml(bundle_info.describe_bundle(self._bundleInfo))
        if self._bundleInfo:
            qt.QSettings().setValue(MODEL_SETTING, str(folder))
        if not self.ui.clickCollapsibleButton.collapsed:
            self._warmClickServer(folder)
        self._checkCanApply()

    # ------------------------------------------------------------------------------------ segment
    def onSegmentButton(self) -> None:
        if self.logic.jobs.running("segment"):
            self.logic.jobs.cancel("segment")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            if not ensureEngineRequirements():
                return
            device = self._parameterNode.device.value
            if device == Device.CUDA.value and not self._gpuMemoryAllows():
                device = "cpu"
            self._startSegmentation(device)

    def _gpuMemoryAllows(self) -> bool:
        """GPU chosen explicitly: check its free memory against the model's estimate; ask before going on.

        (With Auto the segment job makes the same check itself and falls back to the CPU with a log line.)
        """
        from ssl3d import mrml
        from ssl3d.infer import device_for_bundle

        p = self._parameterNode
        choice = device_for_bundle(pathOrNone(p.modelPath), "cuda", volume=mrml.volume_from_node(p.inputVolume, copy=False),
                                   other_process=True)  # the segment job runs in its own process
        if not choice.message:
            return True
        return not slicer.util.confirmYesNoDisplay(
            _("{message}\n\nSegment on the CPU instead (slower)?").format(message=choice.message))

    def _startSegmentation(self, device: str) -> None:
        from ssl3d import job_arguments, mrml

        p = self._parameterNode
        folder = Path(slicer.util.tempDirectory("ssl3d-segment"))
        inputFile = mrml.export_volume(p.inputVolume, folder / "input.nrrd", compress=False)
        args = job_arguments.segment_arguments(pathOrNone(p.modelPath), inputFile, folder / SEGMENT_OUTPUT, device)
        self.logic.jobs.start("segment", args, folder)
        self._segmentRun = (folder, device)
        self.ui.segmentButton.text = _("Cancel")
        self.ui.segmentProgressBar.value = 0
        self.ui.segmentStatusLabel.text = _("Segmenting...")
        self.timer.start()

    def onSegmentFinished(self, job) -> None:
        self.ui.segmentButton.text = _("Segment")
        folder, device = self._segmentRun
        message = job.error_message or ""
        if job.cancelled:
            self.ui.segmentStatusLabel.text = _("Cancelled.")
        elif job.returncode != 0 and device != "cpu" and "out of memory" in message.lower():
            if slicer.util.confirmYesNoDisplay(_("The GPU ran out of memory. Segment on the CPU instead (slower)?")):
                self._startSegmentation("cpu")
                return
            self.ui.segmentStatusLabel.text = _("Failed: {message}").format(message=message)
        elif job.returncode != 0:
            self.ui.segmentStatusLabel.text = _("Failed: {message}").format(message=message)
            slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message), detailedText=job.stderr)
        else:
            with slicer.util.tryWithErrorDisplay(_("Failed to load the segmentation."), waitCursor=True):
                from ssl3d import mrml

                p = self.parameters
                segmentation = mrml.load_segmentation_file(folder / SEGMENT_OUTPUT, slicer.mrmlScene, p.inputVolume,
                                                           p.outputSegmentation, labels=mrml.bundle_labels(self._bundleInfo),
                                                           surface=p.showSurface)
                p.outputSegmentation = segmentation
                self.ui.segmentProgressBar.value = self.ui.segmentProgressBar.maximum
                self.ui.segmentStatusLabel.text = _("Done: {count} segments.").format(
                    count=segmentation.GetSegmentation().GetNumberOfSegments())
        self._checkCanApply()

    # ---------------------------------------------------------------------------------- fine-tune
    def onAddPair(self) -> None:
        volume, segmentation = self.ui.pairVolumeSelector.currentNode(), self.ui.pairSegmentationSelector.currentNode()
        if volume is None or segmentation is None:
            slicer.util.errorDisplay(_("Choose a volume and its segmentation."))
            return
        self.ui.pairsListWidget.addItem(self._pairs.add(volume, segmentation))
        self._checkCanApply()

    def onRemovePair(self) -> None:
        row = self.ui.pairsListWidget.currentRow
        if self._pairs.remove(row):
            self.ui.pairsListWidget.takeItem(row)
        self._checkCanApply()

    def onFineTuneButton(self) -> None:
        if self.logic.jobs.running("finetune"):
            self.logic.jobs.cancel("finetune")
            self.ui.fineTuneStatusLabel.text = _("Cancelling: the job saves a checkpoint and stops...")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start fine-tuning."), waitCursor=True):
            if not ensureEngineRequirements():
                return
            from ssl3d import job_arguments

            p = self._parameterNode
            data, labels = pathOrNone(p.datasetFolder), None
            if p.trainingSource == TrainingSource.SCENE:
                data, labels = self._pairs.export(slicer.mrmlScene, Path(slicer.util.tempDirectory("ssl3d-finetune-data")))
            args = job_arguments.finetune_arguments(data, pathOrNone(p.fineTuneOutput), pathOrNone(p.initBundle),
                                               p.task.value, p.fineTuneSteps, labels)
            self._chart.reset(_("Fine-tuning"))
            self.ui.fineTuneLogTextEdit.setPlainText("ssl3d " + " ".join(args))
            self.logic.jobs.start("finetune", args, pathOrNone(p.fineTuneOutput))
            self.ui.fineTuneButton.text = _("Cancel")
            self.timer.start()
        self._checkCanApply()

    def _showFineTuneEvents(self, events: list) -> None:
        if not events:
            return
        from ssl3d import bundle_info, mrml

        self._chart.add(events)
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                self.ui.fineTuneProgressBar.maximum = max(1, int(event.get("total") or 0))
                self.ui.fineTuneProgressBar.value = int(event.get("step") or 0)
                self.ui.fineTuneStatusLabel.text = mrml.progress_text(event)
            elif kind == "metric":
                self.ui.fineTuneLogTextEdit.appendPlainText(f"{event.get('name')}: {event.get('value')}")
            elif kind in ("log", "error") and event.get("message"):
                self.ui.fineTuneLogTextEdit.appendPlainText(event["message"])
            elif kind == "done":
                bundle = bundle_info.bundle_from_outputs(event.get("outputs") or {})
                if bundle is not None:
                    self.parameters.modelPath = bundle  # the new model becomes the selected one
                    self.ui.fineTuneLogTextEdit.appendPlainText(_("New model: {path}").format(path=bundle))

    def onFineTuneFinished(self, job) -> None:
        self.ui.fineTuneButton.text = _("Fine-tune")
        if job.state == "killed":
            self.ui.fineTuneStatusLabel.text = _("Stopped after the cancel grace period; the last checkpoint is {path}.").format(
                path=job.last_checkpoint or _("none"))
        elif job.cancelled:
            self.ui.fineTuneStatusLabel.text = _("Cancelled. The checkpoint is kept in the output folder.")
        elif job.returncode != 0:
            self.ui.fineTuneStatusLabel.text = _("Failed: {message}").format(message=job.error_message)
            slicer.util.errorDisplay(_("Fine-tuning failed: {message}").format(message=job.error_message),
                                     detailedText=job.stderr)
        else:
            self.ui.fineTuneStatusLabel.text = _("Done: the new model is selected above.")
        self._checkCanApply()

    # ---------------------------------------------------------------------------------- events
    def onTimer(self) -> None:
        jobs = self.logic.jobs
        for event in jobs.take_events("segment"):
            if event.get("event") == "progress" and event.get("total"):
                self.ui.segmentProgressBar.maximum = int(event["total"])
                self.ui.segmentProgressBar.value = int(event.get("step") or 0)
            elif event.get("event") == "log" and event.get("message"):
                self.ui.segmentStatusLabel.text = event["message"]
        self._showFineTuneEvents(jobs.take_events("finetune"))
        for role, finished in (("segment", self.onSegmentFinished), ("finetune", self.onFineTuneFinished)):
            job = jobs.finished(role)
            if job is not None:
                finished(job)
        self._showClickResults()
        self.timer.setInterval(20 if self._clicker.pending() else 250)  # a click's answer is taken at once
        if not jobs.running("segment") and not jobs.running("finetune") and not self._clicker.pending():
            self.timer.stop()


#
# Logic
#
class SSLSegmentLogic(ScriptedLoadableModuleLogic):  # noqa: F405
    """Runs ``ssl3d segment`` / ``ssl3d finetune`` jobs (command lines: :mod:`ssl3d.job_arguments`); the click point lists."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        from ssl3d.jobs import JobBoard

        self.jobs = JobBoard(python=pythonSlicer())

    def getParameterNode(self):
        return SSLSegmentParameterNode(super().getParameterNode())

    def pointList(self, kind: str):
        """The include (positive, green) or exclude (negative, red) point list, created on first use."""
        from ssl3d import mrml

        return mrml.point_list_node(slicer.mrmlScene, kind)


#
# Test
#
class SSLSegmentTest(ScriptedLoadableModuleTest):  # noqa: F405
    """In-Slicer test: fine-tune a tiny model on a phantom segmentation, segment a phantom with it, then refine
    a segment with two clicks through the module (point lists, click server, the Segment Editor's segment)."""

    bundle = None  # the fine-tuned bundle, shared by the segmentation and click tests

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from ssl3d import requirements

        self.setUp()
        reason = requirements.skip_reason()  # under --testing nothing is installed: skip, saying what is missing
        if reason:
            self.skipTest(reason)
        self.test_command_lines()
        self.test_bundle_description()
        self.test_finetune_and_segment()
        self.test_two_clicks()

    def test_command_lines(self):
        from ssl3d import job_arguments

        args = job_arguments.finetune_arguments(Path("d"), Path("o"), None, "interactive", 5)
        self.assertEqual(args, ["finetune", "--data", "d", "--out", "o", "--task", "interactive", "--steps", "5"])
        args = job_arguments.segment_arguments(Path("m"), Path("in.nii.gz"), Path("out.nii.gz"), "cpu")
        self.assertEqual(args[-2:], ["--device", "cpu"])

    def test_bundle_description(self):
        info = {"task": "segmentation", "network": {"name": "unet"}, "preprocessing": {"spacing": [1.5, 1.5, 2.0]},
                "labels": [{"value": 1, "name": "liver", "color": [221, 130, 101]}],
                "provenance": {"data": "phantoms", "steps": 20, "licence": "CC-BY-4.0"},
                "metrics": {"validation": {"dice": 0.9}}}
        from ssl3d import bundle_info

        text = bundle_info.describe_bundle(info)
        for expected in ("liver", "#dd8265", "1.5 x 1.5 x 2", "steps=20", "dice=0.900", "CC-BY-4.0"):
            self.assertIn(expected, text)

    def test_finetune_and_segment(self):
        from ssl3d import bundle_info, job_arguments, mrml
        from ssl3d.data.phantoms import LABEL_COLORS, LABELS, make_phantom

        labels = {value: (name, tuple(c / 255 for c in LABEL_COLORS[value])) for value, name in LABELS.items()}
        pairs = []
        for seed in range(2):
            image, truth = make_phantom(seed)
            volume = mrml.volume_to_node(image, slicer.mrmlScene, f"phantom {seed}")
            pairs.append((volume, mrml.labelmap_to_segmentation(truth, slicer.mrmlScene, labels, volume)))
        root = Path(slicer.util.tempDirectory("ssl3d-test"))
        data = mrml.export_training_pairs(pairs, root / "data").parent
        logic = SSLSegmentLogic()
        self.delayDisplay("Fine-tuning for 2 steps on the CPU")
        names = {str(value): name for value, name in LABELS.items()}
        events = logic.jobs.run(job_arguments.finetune_arguments(data, root / "run", steps=2, labels=names), root / "run")
        done = [e for e in events if e.get("event") == "done"]
        bundle = bundle_info.bundle_from_outputs(done[-1].get("outputs") or {}) if done else None
        self.assertIsNotNone(bundle, "fine-tuning wrote no bundle")
        SSLSegmentTest.bundle = bundle
        self.delayDisplay("Segmenting the SSL3D phantom of Sample Data")
        import SampleData

        writePhantomSample()  # Sample Data's downloadSample does not run custom downloaders: it finds these files
        volume = SampleData.downloadSamples(PHANTOM_SAMPLE)[0]
        mrml.export_volume(volume, root / "input.nii.gz")
        logic.jobs.run(job_arguments.segment_arguments(bundle, root / "input.nii.gz", root / SEGMENT_OUTPUT, "cpu"), root)
        info = bundle_info.read_bundle_info(bundle)
        segmentation = mrml.load_segmentation_file(root / SEGMENT_OUTPUT, slicer.mrmlScene, volume, labels=mrml.bundle_labels(info))
        names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
        self.assertTrue(names <= set(LABELS.values()), names)
        self.delayDisplay("Test passed")

    def test_two_clicks(self):
        import numpy as np
        from ssl3d import mrml
        from ssl3d.data.phantoms import make_phantom

        self.assertIsNotNone(self.bundle, "test_finetune_and_segment makes the bundle")
        image, truth = make_phantom(6)
        volume = mrml.volume_to_node(image, slicer.mrmlScene, "phantom 6")
        inside = self._rasOf(image, np.argwhere(truth.array == 1).mean(axis=0))  # the liver's centre
        outside = self._rasOf(image, np.argwhere(truth.array == 5).mean(axis=0))  # the spine's centre
        slicer.util.selectModule("SSLSegment")
        widget = slicer.modules.sslsegment.widgetRepresentation().self()
        widget.ui.modelPathLineEdit.currentPath = str(self.bundle)
        widget._parameterNode.inputVolume = volume
        widget._parameterNode.device = Device.CPU
        widget.ui.clickCollapsibleButton.collapsed = False
        editor = widget.ui.segmentEditorWidget
        clicks = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "two clicks")  # empty: no other test's segments
        clicks.CreateDefaultDisplayNodes()
        clicks.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        editor.setSegmentationNode(clicks)
        editor.setSourceVolumeNode(volume)

        self.delayDisplay("First click (include)")
        widget.logic.pointList("positive").AddControlPoint(*inside)
        self._waitForClicks(widget)
        segmentationNode, segmentId = editor.segmentationNode(), editor.currentSegmentID()
        self.assertEqual(segmentationNode, clicks)
        self.assertTrue(segmentId, "the click made no segment for the Segment Editor")
        session = widget._clicker._session
        first = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume)
        self.assertEqual(len(session.clicks), 1)
        np.testing.assert_array_equal(first != 0, session.mask.array != 0)  # what the session predicted, on the grid

        self.delayDisplay("Second click (exclude)")
        widget.logic.pointList("negative").AddControlPoint(*outside)
        self._waitForClicks(widget)
        second = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume)
        self.assertEqual(len(session.clicks), 2)
        np.testing.assert_array_equal(second != 0, session.mask.array != 0)

        self.delayDisplay("Undo")
        widget.onUndoClick()
        self._waitForClicks(widget)
        undone = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume)
        np.testing.assert_array_equal(undone != 0, first != 0)
        self.delayDisplay("Test passed")

    @staticmethod
    def _rasOf(image, kji) -> tuple:
        k, j, i = (float(v) for v in kji)
        return tuple(float(v) for v in (image.ijk_to_ras @ [i, j, k, 1.0])[:3])

    @staticmethod
    def _waitForClicks(widget, timeout: float = 120.0) -> None:
        """Wait as the module does: Qt's event loop runs (the module's timer takes the results) while this thread
        keeps the GIL between events, as PythonQt does; time.sleep would release it and hide a starving worker."""
        deadline = time.monotonic() + timeout
        while widget._clicker.pending() and time.monotonic() < deadline:
            slicer.app.processEvents()
            qt.QThread.msleep(20)  # a C++ sleep: PythonQt does not release the GIL around it
        widget._showClickResults()
