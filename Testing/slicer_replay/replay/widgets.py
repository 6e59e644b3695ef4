"""Stand-ins for the CTK and qMRML widgets of the modules' .ui files: real PySide6 widgets with the properties,
signals and slots the modules use, behaving as CTK's and Slicer's C++ classes do where a test depends on it.

Only behaviour read in those classes' sources is replayed (cited per class); MRML nodes cross signals as Python
objects. ``DIALOGS`` records the file dialogs a browse opened instead of showing them.
"""

from __future__ import annotations

from PySide6 import QtCore, QtWidgets

DIALOGS: list[tuple[str, str]] = []  # (dialog kind, widget name) for each browse


class qMRMLWidget(QtWidgets.QWidget):
    """The .ui files connect a qMRMLWidget's mrmlSceneChanged(vtkMRMLScene*) to each MRML widget's
    setMRMLScene(vtkMRMLScene*); a VTK object cannot cross a PySide6 signal, so setMRMLScene hands the scene
    to the descendants itself, which is what those connections do."""

    mrmlSceneChanged = QtCore.Signal("vtkMRMLScene*")

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    @QtCore.Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene):
        self._scene = scene
        for child in self.findChildren(QtCore.QObject):
            if hasattr(child, "_scene"):
                child._scene = scene

    def mrmlScene(self):
        return self._scene


class qSlicerWidget(qMRMLWidget):
    pass


class ctkCollapsibleButton(QtWidgets.QWidget):
    contentsCollapsed = QtCore.Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False
        self._text = ""

    def _get_collapsed(self):
        return self._collapsed

    def _set_collapsed(self, value):
        if bool(value) != self._collapsed:
            self._collapsed = bool(value)
            self.contentsCollapsed.emit(self._collapsed)

    collapsed = QtCore.Property(bool, _get_collapsed, _set_collapsed)
    text = QtCore.Property(str, lambda self: self._text, lambda self, v: setattr(self, "_text", v))


class ctkPathLineEdit(QtWidgets.QWidget):
    """CTK's ctkPathLineEdit: ``filters`` are QDir::Filters; browse() opens a file dialog whenever Files is set
    (ctkPathLineEdit.cpp, browse()), else a folder dialog."""

    currentPathChanged = QtCore.Signal(str)
    Dirs, Files, Drives, NoSymLinks, Readable, Writable, Executable = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40

    def __init__(self, parent=None):
        super().__init__(parent)
        self._path = ""
        self._filters = self.AllEntries = self.Dirs | self.Files | self.Drives

    def _get_path(self):
        return self._path

    def _set_path(self, value):
        value = str(value)
        if value != self._path:
            self._path = value
            self.currentPathChanged.emit(value)

    currentPath = QtCore.Property(str, _get_path, _set_path)
    filters = QtCore.Property(int, lambda self: self._filters, lambda self, v: setattr(self, "_filters", int(v)))

    def setCurrentPath(self, value):
        self._set_path(value)

    def browse(self):
        kind = ("save file" if self._filters & self.Writable else "open file") if self._filters & self.Files else "directory"
        DIALOGS.append((kind, self.objectName()))


class ctkSliderWidget(QtWidgets.QWidget):
    valueChanged = QtCore.Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._value, self._minimum, self._maximum, self._step, self._decimals = 0.0, 0.0, 99.0, 1.0, 2

    def _set_value(self, value):
        value = min(max(float(value), self._minimum), self._maximum)
        if value != self._value:
            self._value = value
            self.valueChanged.emit(value)

    value = QtCore.Property(float, lambda self: self._value, _set_value)
    minimum = QtCore.Property(float, lambda self: self._minimum, lambda self, v: setattr(self, "_minimum", float(v)))
    maximum = QtCore.Property(float, lambda self: self._maximum, lambda self, v: setattr(self, "_maximum", float(v)))
    singleStep = QtCore.Property(float, lambda self: self._step, lambda self, v: setattr(self, "_step", float(v)))
    decimals = QtCore.Property(int, lambda self: self._decimals, lambda self, v: setattr(self, "_decimals", int(v)))


class qMRMLNodeComboBox(qMRMLWidget):
    """A node selector: holds one node of ``nodeTypes`` of its scene (None when empty)."""

    currentNodeChanged = QtCore.Signal(object)
    currentNodeIDChanged = QtCore.Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self._types = None, []

    nodeTypes = QtCore.Property("QStringList", lambda self: self._types, lambda self, v: setattr(self, "_types", list(v)))

    def currentNode(self):
        return self._node

    def currentNodeID(self):
        return self._node.GetID() if self._node is not None else ""

    def setCurrentNode(self, node):
        if node is not self._node:
            self._node = node
            self.currentNodeChanged.emit(node)
            self.currentNodeIDChanged.emit(self.currentNodeID())

    def setCurrentNodeID(self, nodeID):
        self.setCurrentNode(self._scene.GetNodeByID(nodeID) if nodeID and self._scene is not None else None)


class qMRMLCheckableNodeComboBox(qMRMLNodeComboBox):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.checked = []

    def checkedNodes(self):
        return list(self.checked)


class qMRMLPlotWidget(qMRMLWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.viewNode = None

    def setMRMLPlotViewNode(self, node):
        self.viewNode = node


class qMRMLTableView(QtWidgets.QTableView):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.tableNode, self._scene = None, None

    @QtCore.Slot("vtkMRMLScene*")
    def setMRMLScene(self, scene):
        self._scene = scene

    def setMRMLTableNode(self, node):
        self.tableNode = node


class qMRMLSegmentSelectorWidget(qMRMLWidget):
    pass


class qMRMLSegmentEditorWidget(qMRMLWidget):
    """The Segment Editor widget: its selection lives in its segment editor node (as in Slicer); every
    saveStateForUndo() keeps a copy of the segmentation that undo() restores (qMRMLSegmentEditorWidget.cxx keeps
    vtkSegmentation copies in its undo list)."""

    currentSegmentIDChanged = QtCore.Signal(str)
    segmentationNodeChanged = QtCore.Signal(object)
    sourceVolumeNodeChanged = QtCore.Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._editorNode, self._segmentation, self._source, self._segment = None, None, None, ""
        self._selectorVisible = self._switchVisible = True
        self.undoStates, self.shortcutsInstalled, self.viewsObserved, self.activeEffect = [], False, False, None

    sourceVolumeNodeSelectorVisible = QtCore.Property(bool, lambda self: self._selectorVisible,
                                                      lambda self, v: setattr(self, "_selectorVisible", bool(v)))
    switchToSegmentationsButtonVisible = QtCore.Property(bool, lambda self: self._switchVisible,
                                                         lambda self, v: setattr(self, "_switchVisible", bool(v)))

    def setMRMLSegmentEditorNode(self, node):
        self._editorNode = node

    def mrmlSegmentEditorNode(self):
        return self._editorNode

    def segmentationNode(self):
        return self._segmentation

    def setSegmentationNode(self, node):
        if node is not self._segmentation:
            self._segmentation, self._segment = node, ""
            self.undoStates = []
            self.segmentationNodeChanged.emit(node)

    def sourceVolumeNode(self):
        return self._source

    def setSourceVolumeNode(self, node):
        if self._segmentation is None:  # Slicer: no source volume without a segmentation
            return
        if node is not self._source:
            self._source = node
            self.sourceVolumeNodeChanged.emit(node)

    def currentSegmentID(self):
        return self._segment

    def setCurrentSegmentID(self, segmentId):
        if segmentId != self._segment:
            self._segment = segmentId
            self.currentSegmentIDChanged.emit(segmentId)

    def setActiveEffect(self, effect):
        self.activeEffect = effect

    def installKeyboardShortcuts(self):
        self.shortcutsInstalled = True

    def uninstallKeyboardShortcuts(self):
        self.shortcutsInstalled = False

    def setupViewObservations(self):
        self.viewsObserved = True

    def removeViewObservations(self):
        self.viewsObserved = False

    def saveStateForUndo(self):
        import slicer as slicer_core

        if self._segmentation is not None:
            copy = slicer_core.vtkSegmentation()
            copy.DeepCopy(self._segmentation.GetSegmentation())
            self.undoStates.append(copy)

    def undo(self):
        if self.undoStates and self._segmentation is not None:
            self._segmentation.GetSegmentation().DeepCopy(self.undoStates.pop())
            self._segmentation.Modified()


class qSlicerMarkupsPlaceWidget(qSlicerWidget):
    """Markups place widget on the scene's interaction node, as qSlicerMarkupsPlaceWidget.cxx: enabling place
    mode with ForcePlaceSingleMarkup (or ForcePlaceMultipleMarkups) sets the node's persistence off (on) first;
    with the default ShowPlaceMultipleMarkupsOption the persistence stays as it was (off in a new scene)."""

    ShowPlaceMultipleMarkupsOption, ForcePlaceSingleMarkup, ForcePlaceMultipleMarkups = 0, 1, 2
    activeMarkupsPlaceModeChanged = QtCore.Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._node, self._buttons, self._multiple = None, True, self.ShowPlaceMultipleMarkupsOption
        self._placeButton = QtWidgets.QToolButton(self)

    buttonsVisible = QtCore.Property(bool, lambda self: self._buttons, lambda self, v: setattr(self, "_buttons", bool(v)))
    placeMultipleMarkups = QtCore.Property(int, lambda self: self._multiple, lambda self, v: setattr(self, "_multiple", int(v)))

    def interactionNode(self):
        return self._scene.GetNodeByID("vtkMRMLInteractionNodeSingleton")

    def placeButton(self):
        return self._placeButton

    def currentNode(self):
        return self._node

    def setCurrentNode(self, node):
        self._node = node

    def _get_enabled(self):
        node = self.interactionNode()
        selection = self._scene.GetNodeByID("vtkMRMLSelectionNodeSingleton")
        return (node.GetCurrentInteractionMode() == node.Place and self._node is not None
                and selection.GetActivePlaceNodeID() == self._node.GetID())

    def setPlaceModeEnabled(self, enable):
        node = self.interactionNode()
        if enable:
            if self._multiple == self.ForcePlaceSingleMarkup:
                node.SetPlaceModePersistence(0)
            elif self._multiple == self.ForcePlaceMultipleMarkups:
                node.SetPlaceModePersistence(1)
            self._scene.GetNodeByID("vtkMRMLSelectionNodeSingleton").SetActivePlaceNodeID(self._node.GetID())
            node.SetCurrentInteractionMode(node.Place)
        elif self._get_enabled():
            node.SetCurrentInteractionMode(node.ViewTransform)
        self.activeMarkupsPlaceModeChanged.emit(bool(enable))

    def _get_persistency(self):
        return bool(self.interactionNode().GetPlaceModePersistence())

    placeModeEnabled = QtCore.Property(bool, _get_enabled, setPlaceModeEnabled)
    placeModePersistency = QtCore.Property(bool, _get_persistency,
                                           lambda self, v: self.interactionNode().SetPlaceModePersistence(int(bool(v))))


CLASSES = (qMRMLWidget, qSlicerWidget, ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox,
           qMRMLCheckableNodeComboBox, qMRMLPlotWidget, qMRMLTableView, qMRMLSegmentSelectorWidget,
           qMRMLSegmentEditorWidget, qSlicerMarkupsPlaceWidget)
