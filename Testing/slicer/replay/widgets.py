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


CLASSES = (qMRMLWidget, qSlicerWidget, ctkCollapsibleButton, ctkPathLineEdit, ctkSliderWidget, qMRMLNodeComboBox,
           qMRMLCheckableNodeComboBox, qMRMLPlotWidget, qMRMLTableView, qMRMLSegmentSelectorWidget)
