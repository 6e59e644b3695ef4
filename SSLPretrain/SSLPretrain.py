"""SSLPretrain: self-supervised pretraining (VoCo, Volume Fusion) and pretext inspection from Slicer.

Widget wiring only. Pretraining and inspection run as ``ssl3d pretrain`` / ``ssl3d inspect`` jobs in a
background process (:mod:`ssl3d.jobs`); their events are queued by the job's reader thread and drained
here by a QTimer. Volumes cross the process boundary as files written and read by :mod:`ssl3d.mrml`.
"""

import enum
import sys
from pathlib import Path
from typing import Annotated, Optional

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *  # noqa: F403
from slicer.util import VTKObservationMixin
from SSLPretrainLib.engineSetup import (ensureEngineRequirements, keepJobs, pythonSlicer, reattachJobs,
                                        showUnsupportedSlicer)
from SSLPretrainLib.sampleData import PHANTOM_FILES, PHANTOM_NODES, PHANTOM_SAMPLE, registerSampleData, writePhantomSample
from SSLPretrainLib.widgets import PathFields, RunChart, pathOrNone

# Run from a source checkout (Extension Wizard or additional module paths), the engine package sits one folder
# up; an installed extension has ssl3d/ next to this file, which is on sys.path already.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "ssl3d" / "__init__.py").is_file() and str(_CHECKOUT) not in sys.path:
    sys.path.append(str(_CHECKOUT))

#: Preset and network names of each method (ssl3d.config's registry; `ssl3d pretrain --help` lists them).
PRESETS = {"voco": ("voco-v1-cpu", "voco-v2-cpu", "voco-v1", "voco-v2"), "vf": ("vf-v1-cpu", "vf-v2-cpu", "vf-v1", "vf-v2")}
NETWORKS = {"voco": ("swin-b", "swin-l", "swin-h", "swinunetr", "cnn-small"), "vf": ("pctnet", "unet", "swinunetr")}
JOBS_SETTING = "SSL3D/SSLPretrain/runningJobs"  # role -> run folder of the jobs a module reload left running


#
# SSLPretrain
#
class SSLPretrain(ScriptedLoadableModule):  # noqa: F405
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)  # noqa: F405
        self.parent.title = _("SSL Pretrain")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["SSL3D developers"]
        self.parent.helpText = _(
            "Pretrain a 3D encoder without labels on a folder of CT or MR volumes, with VoCo (volume contrast) or "
            "Volume Fusion, on the GPU or the CPU; follow runs started elsewhere; and look inside the pretext task: "
            "which base crop the model thinks a box belongs to, which fusion coefficient it predicts per voxel. Needs Slicer 5.10 or newer."
        )
        self.parent.acknowledgementText = _(
            "VoCo: Wu, Zhuang, Chen, 'VoCo: A Simple-yet-Effective Volume Contrastive Learning Framework for 3D "
            "Medical Image Analysis', CVPR 2024. Volume Fusion: Wang et al., 'MIS-FM: 3D Medical Image Segmentation "
            "using Foundation Models Pretrained on a Large-Scale Unannotated Dataset', 2023."
        )
        # Sample Data is set up once the application has started (all modules are loaded then)
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Parameter node
#
class DataSource(enum.Enum):
    FOLDER = "folder"
    SCENE = "scene"

    def label(self):
        return {"folder": _("Folder of volumes"), "scene": _("Volumes in the scene")}[self.value]


class Method(enum.Enum):
    VOCO = "voco"
    VF = "vf"

    def label(self):
        return {"voco": _("VoCo (volume contrast)"), "vf": _("Volume Fusion")}[self.value]


class Device(enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"

    def label(self):
        return {"auto": _("Auto"), "cpu": _("CPU"), "cuda": _("GPU (CUDA)")}[self.value]


@parameterNodeWrapper
class SSLPretrainParameterNode:
    dataSource: DataSource = DataSource.FOLDER
    dataFolder: Path
    method: Method = Method.VOCO
    preset: str = "voco-v1-cpu"
    network: str = ""
    steps: Annotated[int, WithinRange(0, 10_000_000)] = 0
    batchSize: Annotated[int, WithinRange(0, 4096)] = 0
    device: Device = Device.AUTO
    outputFolder: Path
    resume: bool = False
    inspectModel: Path
    inspectVolume: vtkMRMLScalarVolumeNode
    cropRoi: vtkMRMLMarkupsROINode
    followRoi: bool = True
    denseMap: bool = False
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.5


#
# Widget
#
class SSLPretrainWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):  # noqa: F405
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)  # noqa: F405
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._chart = None  # RunChart of the shown run
        self._follower = None
        self._inspection = {}  # label in the Show box -> (node, kind)
        self._inspectMethod = None
        self._observedRoi = None
        self._inspectAgain = False
        self._runFolder = None
        self._inspectFolder = None
        self._presetMethod = None  # the method whose presets and networks the boxes list

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SSLPretrain.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        if showUnsupportedSlicer(self.layout, uiWidget):
            return  # an older Slicer: one message, nothing else is set up
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SSLPretrainLogic()
        self._chart = RunChart(self.ui.lossPlotWidget, "SSLPretrainPlot")
        self._pathFields = PathFields({"dataFolder": self.ui.dataFolderPathLineEdit, "outputFolder": self.ui.outputFolderPathLineEdit,
                                       "inspectModel": self.ui.inspectModelPathLineEdit}, lambda: self._parameterNode)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        # The method box is bound to the parameter node; the preset and network lists follow the node's method
        # (_checkCanApply), and only a user's choice in them (activated, never a refill) writes the node.
        self.ui.presetComboBox.activated.connect(self.onPresetChosen)
        self.ui.networkComboBox.activated.connect(self.onNetworkChosen)
        self.ui.startButton.clicked.connect(self.onStartButton)
        self.ui.openRunButton.clicked.connect(self.onOpenRunButton)
        self.ui.inspectButton.clicked.connect(self.onInspectButton)
        self.ui.overlayComboBox.currentIndexChanged.connect(self.showOverlay)
        self.ui.overlayOpacitySlider.valueChanged.connect(self.showOverlay)
        self.ui.inspectModelPathLineEdit.currentPathChanged.connect(self.updateInspectModelInfo)

        self.timer.timeout.connect(self.onTimer)
        self.initializeParameterNode()
        if reattachJobs(self.logic.jobs, JOBS_SETTING):  # a reload while pretraining: follow it again
            self.ui.startButton.text = _("Cancel")
            self._chart.reset(_("Pretraining loss"))
            self.timer.start()

    def cleanup(self) -> None:
        self.timer.stop()
        if self.logic is not None:
            self.logic.jobs.cancel("inspect")  # seconds long, no run folder to come back to
            keepJobs(self.logic.jobs, JOBS_SETTING)  # a reload must not cancel hours of training
        self.removeObservers()

    def enter(self) -> None:
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self) -> None:
        if self.logic is not None:
            self.setParameterNode(None)  # the GUI follows the node again on enter(); jobs are handled meanwhile

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._inspection = {}

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inspectVolume:
            self._parameterNode.inspectVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode: Optional[SSLPretrainParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        self._presetMethod = None
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()
            self.updateInspectModelInfo()

    @property
    def parameters(self) -> SSLPretrainParameterNode:
        """The scene's parameter node, also while the module is not shown (a job may end then)."""
        return self._parameterNode or self.logic.getParameterNode()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        self._pathFields.show(p)
        self.updatePresetChoices()
        fromScene = p.dataSource == DataSource.SCENE
        for widget in (self.ui.sceneVolumesLabel, self.ui.sceneVolumesComboBox):
            widget.visible = fromScene
        for widget in (self.ui.dataFolderLabel, self.ui.dataFolderPathLineEdit):
            widget.visible = not fromScene
        hasData = fromScene or pathOrNone(p.dataFolder) is not None
        running = self.logic.jobs.running("pretrain")
        self.ui.startButton.enabled = running or (hasData and pathOrNone(p.outputFolder) is not None)
        self.ui.inspectButton.enabled = self.logic.jobs.running("inspect") or (
            pathOrNone(p.inspectModel) is not None and p.inspectVolume is not None)
        self._observeRoi(p.cropRoi if p.followRoi else None)

    # ------------------------------------------------------------------------------------ choices
    def updatePresetChoices(self) -> None:
        """List the presets and networks of the parameter node's method and show the node's choice.

        The node is the truth: a saved ``vf-v2`` stays ``vf-v2`` through setup and re-entering. Only a change of
        method replaces a preset or network that the new method does not have.
        """
        p = self._parameterNode
        if p is None:
            return
        method = p.method.value
        if method != self._presetMethod:
            self._presetMethod = method
            for box, names, default in ((self.ui.presetComboBox, PRESETS[method], None),
                                        (self.ui.networkComboBox, NETWORKS[method], _("preset default"))):
                wasBlocked = box.blockSignals(True)
                box.clear()
                if default:
                    box.addItem(default, "")
                for name in names:
                    box.addItem(name, name)
                box.blockSignals(wasBlocked)
            with slicer.util.NodeModify(p):
                if p.preset not in PRESETS[method]:
                    p.preset = PRESETS[method][0]
                if p.network and p.network not in NETWORKS[method]:
                    p.network = ""
        for box, value in ((self.ui.presetComboBox, p.preset), (self.ui.networkComboBox, p.network)):
            if box.currentData != value:
                wasBlocked = box.blockSignals(True)
                box.setCurrentIndex(max(0, box.findData(value)))
                box.blockSignals(wasBlocked)

    def onPresetChosen(self, index=None) -> None:
        if self._parameterNode is not None and self.ui.presetComboBox.currentData:
            self._parameterNode.preset = self.ui.presetComboBox.currentData

    def onNetworkChosen(self, index=None) -> None:
        if self._parameterNode is not None:
            self._parameterNode.network = self.ui.networkComboBox.currentData or ""

    # ---------------------------------------------------------------------------------- pretrain
    def onStartButton(self) -> None:
        if self.logic.jobs.running("pretrain"):
            self.logic.jobs.cancel("pretrain")
            self.ui.statusLabel.text = _("Cancelling: the job saves a checkpoint and stops...")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start pretraining."), waitCursor=True):
            if not ensureEngineRequirements():
                return
            p = self._parameterNode
            self._follower = None
            data = pathOrNone(p.dataFolder)
            from ssl3d import job_arguments, mrml

            if p.dataSource == DataSource.SCENE:
                data = mrml.export_volumes(self.ui.sceneVolumesComboBox.checkedNodes(),
                                           Path(slicer.util.tempDirectory("ssl3d-pretrain-data")))
            args = job_arguments.pretrain_arguments(
                p.method.value, p.preset, data, pathOrNone(p.outputFolder), steps=p.steps, batch_size=p.batchSize,
                network=p.network, device=p.device.value, resume=p.resume)
            self._resetRunDisplay(_("Pretraining loss"))
            self.ui.logTextEdit.appendPlainText("ssl3d " + " ".join(args))
            self.logic.jobs.start("pretrain", args, pathOrNone(p.outputFolder))
            self.ui.startButton.text = _("Cancel")
            self.timer.start()
        self._checkCanApply()

    def onOpenRunButton(self) -> None:
        folder = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Open a run folder"))
        if not folder:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to open the run folder."), waitCursor=True):
            if not ensureEngineRequirements():
                return
            from ssl3d import bundle_info, jobs

            self._resetRunDisplay(Path(folder).name)
            self._follower = jobs.follow_run(folder)
            self._runFolder = Path(folder)
            self.ui.logTextEdit.appendPlainText(_("Following {folder}").format(folder=folder))
            bundle = bundle_info.newest_bundle(self._runFolder)
            if bundle is not None:  # a finished (or earlier) run: its bundle is ready to inspect
                self._parameterNode.inspectModel = bundle
            self.timer.start()

    def _resetRunDisplay(self, title: str) -> None:
        self._chart.reset(title)
        self.ui.logTextEdit.clear()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = ""

    def onTimer(self) -> None:
        self._showRunEvents(self.logic.jobs.take_events("pretrain"))
        if self._follower is not None:
            self._showRunEvents(self._follower.poll())
        self._showInspectEvents(self.logic.jobs.take_events("inspect"))
        for role, finished in (("pretrain", self.onPretrainFinished), ("inspect", self.onInspectFinished)):
            job = self.logic.jobs.finished(role)
            if job is not None:
                finished(job)
        if not self.logic.jobs.running("pretrain") and not self.logic.jobs.running("inspect") and self._follower is None:
            self.timer.stop()

    def _showRunEvents(self, events: list) -> None:
        if not events:
            return
        from ssl3d import bundle_info, mrml

        self._chart.add(events)
        for event in events:
            kind = event.get("event")
            if kind == "progress":
                self.ui.progressBar.maximum = max(1, int(event.get("total") or 0))
                self.ui.progressBar.value = int(event.get("step") or 0)
                self.ui.statusLabel.text = mrml.progress_text(event)
            elif kind in ("log", "error") and event.get("message"):
                self.ui.logTextEdit.appendPlainText(event["message"])
            elif kind == "checkpoint":
                self.ui.logTextEdit.appendPlainText(_("Checkpoint at step {step}").format(step=event.get("step")))
            elif kind == "done":
                bundle = bundle_info.bundle_from_outputs(event.get("outputs") or {})
                if bundle is None and self._follower is not None:
                    bundle = bundle_info.newest_bundle(self._runFolder)
                if bundle is not None:
                    self.parameters.inspectModel = bundle
                    self.ui.logTextEdit.appendPlainText(_("Pretext bundle: {path}").format(path=bundle))
            if kind in ("done", "error") and self._follower is not None:
                self._follower = None  # a followed run has ended: the timer stops once nothing else runs

    def onPretrainFinished(self, job) -> None:
        self.ui.startButton.text = _("Start pretraining")
        if job.state == "cancelled":  # the tree is gone and the engine wrote its checkpoint first
            self.parameters.resume = True
            self.ui.statusLabel.text = _("Cancelled. The checkpoint is kept: press Start to resume.")
        elif job.state == "killed":
            self.ui.statusLabel.text = _("Stopped after the cancel grace period; the last checkpoint is {path}.").format(
                path=job.last_checkpoint or _("none"))
        elif job.returncode != 0:
            self.ui.statusLabel.text = _("Failed: {message}").format(message=job.error_message)
            slicer.util.errorDisplay(_("Pretraining failed: {message}").format(message=job.error_message),
                                     detailedText=job.stderr)
        else:
            self.ui.progressBar.value = self.ui.progressBar.maximum
            self.ui.statusLabel.text = _("Done.")
        self._checkCanApply()

    # ------------------------------------------------------------------------------------ inspect
    def updateInspectModelInfo(self, path=None) -> None:
        from ssl3d import bundle_info

        info = bundle_info.read_bundle_info(pathOrNone(self.ui.inspectModelPathLineEdit.currentPath))
        self._inspectMethod = bundle_info.pretext_method(info)
        self.ui.inspectModelInfoLabel.text = bundle_info.describe_pretext(info)
        self._checkCanApply()

    def onInspectButton(self) -> None:
        if self.logic.jobs.running("inspect"):
            self.logic.jobs.cancel("inspect")
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the inspection."), waitCursor=True):
            if self._inspectMethod is None:
                raise ValueError(_("The bundle is not a VoCo or Volume Fusion pretext bundle."))
            if not ensureEngineRequirements():
                return
            self._startInspection()

    def _startInspection(self) -> None:
        from ssl3d import job_arguments, mrml

        p = self._parameterNode
        folder = Path(slicer.util.tempDirectory("ssl3d-inspect"))
        inputFile = mrml.export_volume(p.inspectVolume, folder / "input.nrrd", compress=False)
        box = mrml.format_ras(mrml.roi_center(p.cropRoi)) if p.cropRoi is not None and self._inspectMethod == "voco" else None
        args = job_arguments.inspect_arguments(self._inspectMethod, pathOrNone(p.inspectModel), inputFile, folder / "out",
                                          box=box, seed=p.seed, dense=p.denseMap)
        self.logic.jobs.start("inspect", args, folder / "out")
        self._inspectFolder = folder / "out"
        self.ui.inspectButton.text = _("Cancel")
        self.ui.inspectStatusLabel.text = _("Running the pretext task...")
        self.timer.start()

    def _showInspectEvents(self, events: list) -> None:
        from ssl3d import mrml

        for event in events:
            if event.get("event") == "progress":
                self.ui.inspectStatusLabel.text = mrml.progress_text(event)
            elif event.get("event") in ("log", "error") and event.get("message"):
                self.ui.inspectStatusLabel.text = event["message"]

    def onInspectFinished(self, job) -> None:
        self.ui.inspectButton.text = _("Inspect")
        if job.returncode == 0 and not job.cancelled:
            with slicer.util.tryWithErrorDisplay(_("Failed to load the inspection."), waitCursor=True):
                from ssl3d import mrml

                volumeName = self.parameters.inspectVolume.GetName()
                self._inspection = mrml.load_inspection(self._inspectMethod, self._inspectFolder, slicer.mrmlScene, volumeName,
                                                        table=True)
                self._fillOverlayChoices()
                self.ui.inspectStatusLabel.text = _("Done.")
        elif not job.cancelled:
            self.ui.inspectStatusLabel.text = _("Failed: {message}").format(message=job.error_message)
        if self._inspectAgain:
            self._inspectAgain = False
            self.onInspectButton()
        self._checkCanApply()

    def _fillOverlayChoices(self) -> None:
        wasBlocked = self.ui.overlayComboBox.blockSignals(True)
        self.ui.overlayComboBox.clear()
        for name, (node, kind) in self._inspection.items():
            if kind not in ("grid", "fused", "table", "box"):
                self.ui.overlayComboBox.addItem(name)
        self.ui.overlayComboBox.blockSignals(wasBlocked)
        self.showOverlay()
        table = self._inspection.get("table", (None, None))[0]
        self.ui.inspectTableView.setMRMLTableNode(table)

    def showOverlay(self, value=None) -> None:
        """Show the chosen output over the volume (or over the fused image for Volume Fusion)."""
        if not self._inspection or self._parameterNode is None:
            return
        from ssl3d import mrml

        mrml.show_inspection(slicer.mrmlScene, self._inspection, self.ui.overlayComboBox.currentText,
                             self.ui.overlayOpacitySlider.value, self._parameterNode.inspectVolume)

    def _observeRoi(self, roi) -> None:
        if roi is self._observedRoi:
            return
        if self._observedRoi is not None:
            self.removeObserver(self._observedRoi, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onRoiMoved)
        self._observedRoi = roi
        if roi is not None:
            self.addObserver(roi, slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent, self.onRoiMoved)

    def onRoiMoved(self, caller=None, event=None) -> None:
        if not self._inspection or self._inspectMethod != "voco":
            return
        if self.logic.jobs.running("inspect"):
            self._inspectAgain = True
        else:
            self.onInspectButton()


#
# Logic
#


#
# Logic
#
class SSLPretrainLogic(ScriptedLoadableModuleLogic):  # noqa: F405
    """Runs engine jobs in the background; their command lines come from :mod:`ssl3d.job_arguments`.

    Usable without the GUI (tests, the Python console): ``jobs`` is an :class:`ssl3d.jobs.JobBoard`:
    ``jobs.start`` a job, then poll ``jobs.take_events`` and ``jobs.finished``, or ``jobs.run`` it to the end.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        from ssl3d.jobs import JobBoard  # light: psutil is imported only to kill a job's process tree

        self.jobs = JobBoard(python=pythonSlicer())

    def getParameterNode(self):
        return SSLPretrainParameterNode(super().getParameterNode())


#
# Test
#
class SSLPretrainTest(ScriptedLoadableModuleTest):  # noqa: F405
    """In-Slicer test (Reload and Test, or `Slicer --testing`): the phantom from Sample Data, and a tiny CPU
    pretraining and inspection on phantoms."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        from ssl3d import requirements

        self.setUp()
        reason = requirements.skip_reason()
        if reason:
            self.skipTest(reason)
        self.test_requirements_listed()
        self.test_command_lines()
        self.test_phantom_sample()
        self.test_pretrain_and_inspect()

    def test_requirements_listed(self):
        from ssl3d import requirements

        self.assertTrue(all(r.minimum for r in requirements.REQUIREMENTS))
        reason = requirements.skip_reason()  # under --testing nothing is installed: skip, saying what is missing
        if reason:
            self.skipTest(reason)

    def test_command_lines(self):
        from ssl3d import job_arguments

        args = job_arguments.pretrain_arguments("voco", "voco-v1-cpu", Path("d"), Path("o"), steps=3, resume=True)
        self.assertEqual(args, ["pretrain", "--method", "voco", "--preset", "voco-v1-cpu", "--data", "d", "--out", "o",
                                "--steps", "3", "--device", "auto", "--resume"])
        args = job_arguments.inspect_arguments("voco", Path("b"), Path("ct.nii.gz"), Path("o"), box="1,2,3", dense=True)
        self.assertEqual(args, ["inspect", "voco", "--model", "b", "--input", "ct.nii.gz", "--out", "o", "--box", "1,2,3", "--dense"])
        self.assertNotIn("--dense", job_arguments.inspect_arguments("vf", Path("b"), Path("ct.nii.gz"), Path("o"), dense=True))

    def test_phantom_sample(self):
        import SampleData

        from ssl3d import mrml
        from ssl3d.data.phantoms import LABELS, SAMPLE_FILES, SAMPLE_SHAPE

        self.delayDisplay("Loading the SSL3D phantom from Sample Data")
        self.assertEqual(PHANTOM_FILES, SAMPLE_FILES)
        paths = writePhantomSample()  # downloadSample() skips custom downloaders: it then finds these files cached
        self.assertEqual(tuple(path.name for path in paths), PHANTOM_FILES)
        image, organs = SampleData.downloadSamples(PHANTOM_SAMPLE)
        self.assertTrue(image.IsA("vtkMRMLScalarVolumeNode"))
        self.assertEqual(image.GetName(), PHANTOM_NODES[0])
        self.assertEqual(mrml.volume_from_node(image).shape, SAMPLE_SHAPE)
        self.assertTrue(organs.IsA("vtkMRMLSegmentationNode"))
        segmentation = organs.GetSegmentation()
        names = {segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())}
        self.assertEqual(names, set(LABELS.values()))
        self.assertEqual(writePhantomSample(), paths)  # a second call reuses the files

    def test_pretrain_and_inspect(self):
        import SampleData

        from ssl3d import bundle_info, job_arguments, mrml
        from ssl3d.data.phantoms import make_phantom
        from ssl3d.io import write_volume

        self.delayDisplay("Writing phantoms")
        root = Path(slicer.util.tempDirectory("ssl3d-test"))
        (root / "data").mkdir()
        for seed in range(3):
            write_volume(make_phantom(seed)[0], root / "data" / f"phantom{seed}.nii.gz")
        writePhantomSample()
        ct = SampleData.downloadSample(PHANTOM_SAMPLE)  # the volume to inspect: Sample Data's phantom
        logic = SSLPretrainLogic()
        for method, preset in (("voco", "voco-v1-cpu"), ("vf", "vf-v1-cpu")):
            self.delayDisplay(f"Pretraining {preset} for 2 steps on the CPU")
            run = root / method
            events = logic.jobs.run(job_arguments.pretrain_arguments(method, preset, root / "data", run, steps=2, device="cpu"), run)
            done = [e for e in events if e.get("event") == "done"]
            bundle = bundle_info.bundle_from_outputs(done[-1].get("outputs") or {}) if done else bundle_info.newest_bundle(run)
            self.assertIsNotNone(bundle, f"{method}: no bundle in {run}")
            self.delayDisplay(f"Inspecting {method}")
            mrml.export_volume(ct, root / f"{method}-input.nii.gz")
            out = root / f"{method}-inspect"
            logic.jobs.run(job_arguments.inspect_arguments(method, bundle, root / f"{method}-input.nii.gz", out, dense=True), out)
            loaded = mrml.load_inspection(method, out, slicer.mrmlScene, ct.GetName(), table=True)
            reference = mrml.volume_from_node(ct)
            self.assertEqual("Localisation (dense)" in loaded, method == "voco")
            for label, (node, kind) in loaded.items():
                if kind in ("heat", "share", "alpha", "grid"):
                    self.assertTrue(mrml.volume_from_node(node).same_grid(reference), f"{method} {label}: geometry")
            self.assertTrue(any(kind in ("heat", "alpha") for node, kind in loaded.values()))
        self.delayDisplay("Test passed")
