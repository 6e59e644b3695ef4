"""Slicer without Slicer: the modules' widget code run against real Qt widgets (PySide6, seen as PythonQt sees
them) and a real MRML scene (slicer-core), with Slicer's Python layers replayed from their sources.

``with SlicerReplay() as slicer_replay:`` puts stand-ins for ``slicer``, ``qt``, ``ctk``, ``slicer.util``,
``slicer.parameterNodeWrapper`` and ``slicer.ScriptedLoadableModule`` into ``sys.modules`` (restored on exit);
``slicer_replay.widget("SSLPretrain")`` loads the module file and makes its widget as Slicer's module manager does
(``Widget(parent)`` then ``setup()``); ``enter()``/``exit()``/``close_scene()``/``reload()`` do what Slicer does
on those occasions; ``process_events()`` runs Qt's event loop for a while (timers fire).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
import time
import types
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtWidgets  # noqa: E402
from PySide6.QtUiTools import QUiLoader  # noqa: E402

from . import parameter_node, widgets  # noqa: E402
from .pythonqt import PythonQtObject, unwrap, wrap  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
_REPLACED = ("slicer", "slicer.util", "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.i18n",
             "qt", "ctk", "SampleData", "SSLPretrain", "SSLSegment", "SSLPretrainLib", "SSLPretrainLib.engineSetup",
             "SSLPretrainLib.sampleData", "SSLPretrainLib.widgets", "SSLSegmentLib", "SSLSegmentLib.clickSection")  # the modules' files bind the stand-ins above


class _QtClass:
    """``qt.QTimer`` and friends: instances come out as PythonQt sees them; static members pass through."""

    def __init__(self, cls):
        self._cls = cls

    def __call__(self, *args, **kwargs):
        return wrap(self._cls(*map(unwrap, args), **kwargs))

    def __getattr__(self, name):
        return getattr(self._cls, name)


def _qt_module() -> types.ModuleType:
    module = types.ModuleType("qt")

    def lookup(name):
        for source in (QtWidgets, QtCore, QtGui):
            if hasattr(source, name):
                value = getattr(source, name)
                return _QtClass(value) if isinstance(value, type) and issubclass(value, QtCore.QObject) else value
        raise AttributeError(name)

    module.__getattr__ = lookup
    return module


class _App:
    """``slicer.app``: version, testing mode, signal connections recorded."""

    def __init__(self, version=(5, 10, 0), testing=False):
        self.majorVersion, self.minorVersion, self.patchVersion = version[:3]
        self.applicationVersion = ".".join(map(str, version))
        self.testing = testing
        self.connections = []

    def connect(self, signal, slot):
        self.connections.append((signal, slot))

    def testingEnabled(self):
        return self.testing

    def processEvents(self):
        QtWidgets.QApplication.processEvents()


class SlicerReplay:
    def __init__(self, version=(5, 10, 0), testing=False, answers=True):
        import slicer as slicer_core

        self.app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
        self.core = slicer_core
        self.scene = slicer_core.vtkMRMLScene()
        interaction = slicer_core.vtkMRMLInteractionNode()  # Slicer's application logic adds it to every scene
        interaction.SetSingletonTag("Singleton")
        self.scene.AddNode(interaction)
        self.scene.RegisterNodeClass(slicer_core.vtkMRMLSegmentEditorNode())  # as the Segmentations module does
        _register_conversion_rules(slicer_core)
        selection = slicer_core.vtkMRMLSelectionNode()
        selection.SetSingletonTag("Singleton")
        self.scene.AddNode(selection)
        self.slicer_app = _App(version, testing)
        self.messages: list[tuple[str, str]] = []  # (kind, text) of every dialog shown
        self.answers = answers  # what confirmation dialogs answer
        self.temp = Path(tempfile.mkdtemp(prefix="slicer-replay-"))
        # Slicer's settings (QSettings) in a folder of this replay, never the user's
        QtCore.QSettings.setDefaultFormat(QtCore.QSettings.IniFormat)
        QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(self.temp / "settings"))
        self.widgets: dict[str, object] = {}
        self._saved = {}

    # ------------------------------------------------------------------------------------------ set-up
    def __enter__(self):
        import ssl3d.mrml  # noqa: F401  (loaded before the swap; the slicer its functions import on use forwards to slicer-core)

        self._saved = {name: sys.modules.get(name) for name in _REPLACED}
        self._saved_path = list(sys.path)
        sys.modules.update(self._modules())
        for module in ("SSLPretrain", "SSLSegment"):
            sys.path.insert(0, str(ROOT / module))
        return self

    def __exit__(self, *exc):
        for name, module in self._saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        sys.path[:] = self._saved_path

    def _modules(self) -> dict:
        core, replay = self.core, self
        slicer = types.ModuleType("slicer")
        slicer.__path__ = []

        def slicer_attr(name):
            if name in _WIDGET_CLASSES:
                return _WIDGET_CLASSES[name]
            return getattr(core, name)

        slicer.__getattr__ = slicer_attr
        slicer.mrmlScene, slicer.app = self.scene, self.slicer_app
        slicer.util = self._util()
        slicer.i18n = types.ModuleType("slicer.i18n")
        slicer.i18n.tr = lambda text: text
        slicer.i18n.translate = lambda context, text: text
        slicer.parameterNodeWrapper = types.ModuleType("slicer.parameterNodeWrapper")
        for name in parameter_node.__all__:
            setattr(slicer.parameterNodeWrapper, name, getattr(parameter_node, name))
        slicer.ScriptedLoadableModule = self._scripted()
        ctk = types.ModuleType("ctk")
        for cls in widgets.CLASSES:
            setattr(ctk if cls.__name__.startswith("ctk") else slicer, cls.__name__, _QtClass(cls))
        sample = types.ModuleType("SampleData")
        sample.SampleDataLogic = type("SampleDataLogic", (), {"registerCustomSampleDataSource": staticmethod(lambda **kw: None)})
        return {"slicer": slicer, "slicer.util": slicer.util, "slicer.i18n": slicer.i18n,
                "slicer.parameterNodeWrapper": slicer.parameterNodeWrapper,
                "slicer.ScriptedLoadableModule": slicer.ScriptedLoadableModule, "qt": _qt_module(), "ctk": ctk,
                "SampleData": sample}

    def _util(self) -> types.ModuleType:
        core_util, replay = self.core.util, self
        util = types.ModuleType("slicer.util")
        util.__getattr__ = lambda name: getattr(core_util, name)
        util.VTKObservationMixin, util.NodeModify = core_util.VTKObservationMixin, core_util.NodeModify

        def loadUI(path):
            loader = QUiLoader()
            for cls in widgets.CLASSES:
                loader.registerCustomWidget(cls)
            file = QtCore.QFile(str(path))
            file.open(QtCore.QFile.ReadOnly)
            widget = loader.load(file)
            file.close()
            if widget is None:
                raise RuntimeError(f"cannot load {path}: {loader.errorString()}")
            return wrap(widget)

        def childWidgetVariables(widget):
            ui = types.SimpleNamespace()
            for child in unwrap(widget).findChildren(QtCore.QObject):
                if child.objectName():
                    setattr(ui, child.objectName(), wrap(child))
            return ui

        def record(kind):
            def show(text, *args, **kwargs):
                replay.messages.append((kind, str(text)))
                return replay.answers
            return show

        @contextlib.contextmanager
        def tryWithErrorDisplay(message=None, show=True, waitCursor=False):
            try:  # as Slicer's: show the error, then raise it again
                yield
            except Exception as error:
                if show:
                    replay.messages.append(("error", f"{message} {error}" if message else str(error)))
                raise

        util.loadUI, util.childWidgetVariables, util.tryWithErrorDisplay = loadUI, childWidgetVariables, tryWithErrorDisplay
        util.errorDisplay, util.warningDisplay, util.infoDisplay = record("error"), record("warning"), record("info")
        util.confirmOkCancelDisplay = util.confirmYesNoDisplay = record("confirm")
        util.delayDisplay = record("delay")
        util.mainWindow = lambda: None
        util.tempDirectory = lambda key="__SlicerTemp__": tempfile.mkdtemp(prefix=key, dir=replay.temp)
        util.settingsValue = lambda key, default=None, converter=None: QtCore.QSettings().value(key, default)
        util.setSliceViewerLayers = lambda **kwargs: replay.messages.append(("layers", repr(sorted(kwargs))))
        util.getNodesByClass = lambda cls: [replay.scene.GetNthNodeByClass(i, cls) for i in range(replay.scene.GetNumberOfNodesByClass(cls))]
        return util

    def _scripted(self) -> types.ModuleType:
        replay = self
        module = types.ModuleType("slicer.ScriptedLoadableModule")
        import unittest

        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent
                self.moduleName = type(self).__name__

        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent
                self.moduleName = type(self).__name__[: -len("Widget")]

            def resourcePath(self, filename):
                return str(ROOT / self.moduleName / "Resources" / filename)

            def setup(self):
                self.layout = self.parent.layout()

            def cleanup(self):
                pass

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.moduleName = type(self).__name__[: -len("Logic")]

            def getParameterNode(self):  # Slicer's: the scene's singleton scripted module node, made on first use
                node = replay.scene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
                if node is None:
                    node = replay.core.vtkMRMLScriptedModuleNode()
                    node.SetSingletonTag(self.moduleName)
                    node.SetName(self.moduleName)
                    node = replay.scene.AddNode(node)
                return node

        class ScriptedLoadableModuleTest(unittest.TestCase):
            pass

        for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
            setattr(module, cls.__name__, cls)
        module.__all__ = [cls.__name__ for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                                   ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]
        return module

    # ------------------------------------------------------------------------------------ what Slicer does
    def load(self, name: str):
        """Import the module file as Slicer's module factory does (a fresh module object each time)."""
        spec = importlib.util.spec_from_file_location(name, ROOT / name / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        getattr(module, name)(types.SimpleNamespace())
        return module

    def widget(self, name: str, module=None):
        """The module's widget after ``setup()``, shown in a parent that Slicer would make."""
        module = module or self.load(name)
        parent = QtWidgets.QWidget()
        QtWidgets.QVBoxLayout(parent)
        parent.isEntered = False
        widget = getattr(module, f"{name}Widget")(wrap(parent))
        widget.setup()
        self.widgets[name] = widget
        return widget

    def enter(self, widget):
        unwrap(widget.parent).isEntered = True
        widget.enter()

    def exit(self, widget):
        widget.exit()
        unwrap(widget.parent).isEntered = False

    def close_scene(self):
        """File / Close scene: vtkMRMLScene::Clear(0), which fires StartCloseEvent and EndCloseEvent."""
        self.scene.Clear(0)

    def reload(self, name: str):
        """The module's Reload button: cleanup() of the old widget, then a new module object and widget."""
        old = self.widgets[name]
        old.cleanup()
        unwrap(old.parent).deleteLater()
        return self.widget(name)

    def click(self, pointList, ras) -> bool:
        """A left click in a slice view: places a point on ``pointList`` only in place mode for that list; after
        it, place mode ends unless the interaction node is persistent (vtkSlicerMarkupsWidget / the markups
        displayable manager call SwitchToViewTransformMode)."""
        interaction = self.scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")
        selection = self.scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        if interaction.GetCurrentInteractionMode() != interaction.Place or selection.GetActivePlaceNodeID() != pointList.GetID():
            return False
        index = pointList.AddControlPoint(*ras)
        if not interaction.GetPlaceModePersistence():
            interaction.SwitchToViewTransformMode()
        return index >= 0

    def process_events(self, seconds: float = 0.0):
        deadline = time.monotonic() + seconds
        while True:
            self.app.processEvents(QtCore.QEventLoop.AllEvents, 50)
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


_WIDGET_CLASSES: dict = {}


def _register_conversion_rules(core) -> None:
    """The segmentation conversion rules that Slicer's Segmentations module registers at startup (without them
    a segmentation cannot make an empty binary labelmap segment)."""
    factory = core.vtkSegmentationConverterFactory.GetInstance()
    if factory.GetConverterRules():
        return
    for rule in (core.vtkBinaryLabelmapToClosedSurfaceConversionRule, core.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        factory.RegisterConverterRule(rule())
