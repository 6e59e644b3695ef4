"""A replay of Slicer's ``slicer.parameterNodeWrapper`` (Base/Python/slicer/parameterNodeWrapper, 5.8 to 5.12),
on a real slicer-core ``vtkMRMLScriptedModuleNode``.

What a module's GUI state depends on is replayed as Slicer's code does it: values are serialized into the
node's string parameters (node references for MRML nodes) and cached; ``connectGui`` finds the widgets with a
``SlicerParameterName`` property (the values of ``gui.__dict__`` for a namespace), creates one connector per
widget, whose constructor may rebuild the widget (the enum and ``Choice`` combo boxes clear the box and add
their items, firing ``currentIndexChanged``), then writes the node's value into each widget and only then
connects the widget's signal; every ``connectGui`` adds a node observer that writes the node into the GUI and
is never removed; ``disconnectGui`` disconnects the widget signals of that tag.
"""

from __future__ import annotations

import enum
import pathlib
import typing
from dataclasses import dataclass

import slicer as slicer_core  # slicer-core: the real MRML classes
import vtk

from .pythonqt import unwrap

__all__ = ["parameterNodeWrapper", "WithinRange", "Minimum", "Maximum", "Choice", "Default", "Decimals", "SingleStep"]

NAME_PROPERTY = "SlicerParameterName"


@dataclass
class WithinRange:
    minimum: float
    maximum: float


@dataclass
class Minimum:
    minimum: float


@dataclass
class Maximum:
    maximum: float


class Choice:
    def __init__(self, choices):
        self.choices = list(choices)


@dataclass
class Default:
    value: object


@dataclass
class Decimals:
    value: int


@dataclass
class SingleStep:
    value: float


def _split(datatype):
    if typing.get_origin(datatype) is typing.Annotated:
        base, *annotations = typing.get_args(datatype)
        return base, annotations
    return datatype, []


def _first(annotations, kind):
    return next((a for a in annotations if isinstance(a, kind)), None)


def _is_node_type(base) -> bool:
    return isinstance(base, type) and issubclass(base, slicer_core.vtkMRMLNode)


# ------------------------------------------------------------------------------------------ serializers
class _Serializer:
    """One parameter's text form in the node, as Slicer's serializers write it."""

    def __init__(self, base):
        self.base = base

    def default(self):
        if _is_node_type(self.base):
            return None
        if issubclass(self.base, enum.Enum):
            return next(iter(self.base))
        return self.base()  # int() = 0, str() = "", Path() = "." (Slicer's default too)

    def write(self, node, name, value):
        if _is_node_type(self.base):
            node.SetNodeReferenceID(name, value.GetID() if value is not None else None)
        elif issubclass(self.base, enum.Enum):
            node.SetParameter(name, value.name)
        else:
            node.SetParameter(name, str(value))

    def read(self, node, name):
        if _is_node_type(self.base):
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        if issubclass(self.base, enum.Enum):
            return self.base[text]
        if self.base is bool:
            return text == "True"
        return self.base(text)

    def isIn(self, node, name) -> bool:
        if _is_node_type(self.base):
            return node.GetNodeReferenceID(name) is not None or name in _referenceRoles(node)
        return node.GetParameter(name) != "" or name in node.GetParameterNames()


def _referenceRoles(node):
    return [node.GetNthNodeReferenceRole(i) for i in range(node.GetNumberOfNodeReferenceRoles())]


# ------------------------------------------------------------------------------------------- connectors
class _Connector:
    """A widget bound to one parameter; the constructor does what Slicer's connector constructors do."""

    signal = ""

    def __init__(self, widget, base, annotations):
        self.widget, self.base, self._callback = widget, base, None

    def onChanged(self, callback):
        signal = getattr(self.widget, self.signal)
        if self._callback is not None:
            signal.disconnect(self._changed)
        self._callback = callback
        if callback is not None:
            signal.connect(self._changed)

    def _changed(self, *args):
        if self._callback is not None:
            self._callback()


class _CheckBox(_Connector):
    signal = "stateChanged"

    def read(self):
        return self.widget.isChecked()

    def write(self, value):
        self.widget.setChecked(bool(value))


class _SpinBox(_Connector):
    signal = "valueChanged"

    def __init__(self, widget, base, annotations):
        super().__init__(widget, base, annotations)
        bounds = _first(annotations, WithinRange)
        if bounds is not None:
            widget.setRange(bounds.minimum, bounds.maximum)
        else:
            widget.setRange(-2**31, 2**31 - 1)

    def read(self):
        return self.widget.value()

    def write(self, value):
        self.widget.setValue(value)


class _Slider(_Connector):
    signal = "valueChanged"

    def __init__(self, widget, base, annotations):
        super().__init__(widget, base, annotations)
        bounds = _first(annotations, WithinRange)
        if bounds is None:
            raise RuntimeError("Cannot have a connection to ctkSliderWidget where the float types is unbounded.")
        widget.setProperty("minimum", bounds.minimum)
        widget.setProperty("maximum", bounds.maximum)

    def read(self):
        return self.widget.property("value")

    def write(self, value):
        self.widget.setProperty("value", float(value))


class _EnumComboBox(_Connector):
    signal = "currentIndexChanged"

    def __init__(self, widget, base, annotations):
        super().__init__(widget, base, annotations)
        label = getattr(base, "label", lambda e: e.name)
        self._fill([(label(e), e) for e in base])

    def _fill(self, items):
        self._items = items
        self.widget.clear()  # fires currentIndexChanged(-1) on a filled box
        for text, _ in items:
            self.widget.addItem(text)  # the first one fires currentIndexChanged(0)

    def read(self):
        return self._items[self.widget.currentIndex()][1]  # index -1 reads the last value, as in Slicer

    def write(self, value):
        for index, (_, e) in enumerate(self._items):
            if e == value:
                self.widget.setCurrentIndex(index)
                return
        raise ValueError(f"Unable to find value {value}")


class _ChoiceComboBox(_EnumComboBox):
    def __init__(self, widget, base, annotations):
        _Connector.__init__(self, widget, base, annotations)
        choice = _first(annotations, Choice)
        if choice is None:
            raise RuntimeError("ComboBoxToStringableConnector requires the Choice annotation to be used.")
        self._fill([(str(c), c) for c in choice.choices])


class _LineEdit(_Connector):
    signal = "textChanged"

    def read(self):
        return self.widget.text()

    def write(self, value):
        self.widget.setText(value)


class _PathLineEdit(_Connector):
    signal = "currentPathChanged"

    def read(self):
        return self.base(self.widget.property("currentPath"))

    def write(self, value):
        self.widget.setProperty("currentPath", str(value))  # Path() writes "."


class _NodeComboBox(_Connector):
    signal = "currentNodeChanged"

    def __init__(self, widget, base, annotations):
        super().__init__(widget, base, annotations)
        widget.setProperty("nodeTypes", [base.__name__])

    def read(self):
        return self.widget.currentNode()

    def write(self, value):
        self.widget.setCurrentNode(value)


def _connector(widget, datatype):
    base, annotations = _split(datatype)
    kind = type(widget).__name__
    if kind == "QCheckBox" and base is bool:
        return _CheckBox(widget, base, annotations)
    if kind in ("QSpinBox", "QSlider") and base is int:
        return _SpinBox(widget, base, annotations)
    if kind in ("QDoubleSpinBox", "ctkSliderWidget") and base is float:
        return _Slider(widget, base, annotations)
    if kind == "QComboBox" and isinstance(base, type) and issubclass(base, enum.Enum):
        return _EnumComboBox(widget, base, annotations)
    if kind == "QComboBox" and base in (int, float, str, bool):
        return _ChoiceComboBox(widget, base, annotations)
    if kind == "QLineEdit" and base is str:
        return _LineEdit(widget, base, annotations)
    if kind == "ctkPathLineEdit" and base in (pathlib.Path, pathlib.PosixPath, pathlib.PurePath):
        return _PathLineEdit(widget, base, annotations)
    if kind in ("qMRMLNodeComboBox",) and _is_node_type(base):
        return _NodeComboBox(widget, base, annotations)
    raise RuntimeError(f"Unable to create GUI connector from datatype '{datatype}' to widget type '{kind}'")


# ---------------------------------------------------------------------------------------------- wrapper
class _Cached:
    """Slicer's _CachedParameterWrapper: the value is read once and again on each node Modified event."""

    def __init__(self, serializer, node, name, default):
        self.serializer, self.node, self.name, self.default = serializer, node, name, default
        self._writing = False
        self.value = self._read()
        self.tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, self._modified)

    def _read(self):  # Slicer's _Parameter.read: a parameter missing from the node (a reset node) gets its default
        if not self.serializer.isIn(self.node, self.name):
            self.serializer.write(self.node, self.name, self.default)
        return self.serializer.read(self.node, self.name)

    def _modified(self, caller, event):
        if not self._writing:
            self.value = self._read()

    def write(self, value):
        self._writing = True
        try:
            wasModifying = self.node.StartModify()
            self.serializer.write(self.node, self.name, value)
            self.value = self.serializer.read(self.node, self.name)
            self.node.EndModify(wasModifying)
        finally:
            self._writing = False


def _init(self, parameterNode):
    self.parameterNode = parameterNode
    self._guis, self._nextTag, self._updatingGui = {}, 0, False
    self._cache = {}
    for name, (serializer, default) in type(self).allParameters.items():
        if not serializer.isIn(parameterNode, name):
            serializer.write(parameterNode, name, default)
        self._cache[name] = _Cached(serializer, parameterNode, name, default)


def _property(name):
    return property(lambda self: self._cache[name].value, lambda self, value: self._cache[name].write(value))


def _updateGui(self):
    if self._updatingGui:
        return
    self._updatingGui = True
    try:
        wasModifying = self.parameterNode.StartModify()
        for mapping in self._guis.values():
            for name, connector in mapping.items():
                connector.write(self._cache[name].value)
        self.parameterNode.EndModify(wasModifying)
    finally:
        self._updatingGui = False


def _connectGui(self, gui):
    widgets = {}
    for widget in vars(gui).values():
        name = widget.property(NAME_PROPERTY)
        if name:
            widgets[name] = widget
    return self.connectParametersToGui(widgets)


def _connectParametersToGui(self, mapping):
    connectors = {name: _connector(unwrap(widget), self.allTypes[name]) for name, widget in mapping.items()}
    tag = self._nextTag
    self._nextTag += 1
    self._guis[tag] = connectors
    for name, connector in connectors.items():
        connector.write(self._cache[name].value)

        def callback(name=name, connector=connector):
            wasModifying = self.parameterNode.StartModify()
            if not self._updatingGui:
                self._cache[name].write(connector.read())
            self.parameterNode.EndModify(wasModifying)

        connector.onChanged(callback)
    self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: _updateGui(self))
    return tag


def _disconnectGui(self, tag):
    for connector in self._guis.pop(tag, {}).values():
        connector.onChanged(None)


def parameterNodeWrapper(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
    cls.allParameters, cls.allTypes = {}, {}
    for name, datatype in hints.items():
        base, annotations = _split(datatype)
        serializer = _Serializer(base)
        default = getattr(cls, name) if name in cls.__dict__ else (
            _first(annotations, Default).value if _first(annotations, Default) else serializer.default())
        cls.allParameters[name] = (serializer, default)
        cls.allTypes[name] = datatype
        setattr(cls, name, _property(name))
    cls.__init__ = _init
    cls.connectGui = _connectGui
    cls.connectParametersToGui = _connectParametersToGui
    cls.disconnectGui = _disconnectGui
    cls.getValue = lambda self, name: self._cache[name].value
    cls.setValue = lambda self, name, value: self._cache[name].write(value)
    cls.StartModify = lambda self: self.parameterNode.StartModify()
    cls.EndModify = lambda self, was: self.parameterNode.EndModify(was)
    cls.AddObserver = lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
    cls.RemoveObserver = lambda self, tag: self.parameterNode.RemoveObserver(tag)
    cls.Modified = lambda self: self.parameterNode.Modified()
    return cls
