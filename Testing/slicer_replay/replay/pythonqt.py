"""PythonQt's view of Qt objects, on top of PySide6.

Inside Slicer, a Qt property reads and writes as an attribute (``label.text = "x"``, ``box.currentIndex``) while
every method stays callable (``box.setCurrentIndex(1)``); PySide6 has either methods only or, with its
``true_property`` feature, properties without the setters. :class:`PythonQtObject` gives the module code
PythonQt's behaviour: a name that is a Qt property of the object's meta-object is the property, anything else
is PySide6's attribute; QObjects coming back are wrapped again and wrapped ones passed to Qt are unwrapped.
"""

from __future__ import annotations

from PySide6 import QtCore

__all__ = ["PythonQtObject", "wrap", "unwrap"]


def _is_property(qobject, name: str) -> bool:
    return not name.startswith("_") and qobject.metaObject().indexOfProperty(name) >= 0


class PythonQtObject:
    __slots__ = ("_qobject",)

    def __init__(self, qobject) -> None:
        object.__setattr__(self, "_qobject", qobject)

    def __getattr__(self, name):
        qobject = object.__getattribute__(self, "_qobject")
        if _is_property(qobject, name):
            return wrap(qobject.property(name))
        value = getattr(qobject, name)
        if callable(value) and not isinstance(value, (QtCore.SignalInstance, type)):
            return lambda *args, **kwargs: wrap(value(*map(unwrap, args), **{k: unwrap(v) for k, v in kwargs.items()}))
        return value

    def __setattr__(self, name, value) -> None:
        qobject = object.__getattribute__(self, "_qobject")
        if _is_property(qobject, name):
            if not qobject.setProperty(name, unwrap(value)):
                raise TypeError(f"cannot set {type(qobject).__name__}.{name} to {value!r}")
        else:
            setattr(qobject, name, value)

    def __eq__(self, other) -> bool:
        return unwrap(other) is self._qobject

    def __hash__(self) -> int:
        return hash(id(self._qobject))

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<PythonQt {type(self._qobject).__name__} {self._qobject.objectName()!r}>"


def wrap(value):
    if isinstance(value, QtCore.QObject) and not isinstance(value, PythonQtObject):
        return PythonQtObject(value)
    if isinstance(value, list):
        return [wrap(v) for v in value]
    return value


def unwrap(value):
    if isinstance(value, PythonQtObject):
        return object.__getattribute__(value, "_qobject")
    return value
