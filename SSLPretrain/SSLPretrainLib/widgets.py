"""Widget helpers of both modules: folder fields bound to the parameter node, and the run's loss chart."""

from pathlib import Path
from typing import Optional

import ctk
import slicer


def pathOrNone(value) -> Optional[Path]:
    """A path parameter as a Path, or None when unset (the parameter node stores '' or '.')."""
    text = str(value or "").strip()
    return Path(text) if text not in ("", ".") else None


class PathFields:
    """Folder fields bound to the parameter node's ``Path`` parameters by hand, so an empty field stays empty.

    (Slicer's connector writes ``str(Path())``, ".", into every empty ctkPathLineEdit.) Each field picks a folder.
    """

    def __init__(self, fields: dict, parameterNode) -> None:
        self.fields, self._parameterNode = fields, parameterNode  # name -> ctkPathLineEdit; () -> node or None
        for name, pathEdit in fields.items():
            pathEdit.filters = ctk.ctkPathLineEdit.Dirs
            pathEdit.currentPathChanged.connect(lambda text, name=name: self.store(name, text))

    def store(self, name: str, text: str) -> None:
        p = self._parameterNode()
        if p is not None and pathOrNone(text) != pathOrNone(getattr(p, name)):
            setattr(p, name, Path(text.strip()) if text.strip() else Path())

    def show(self, p) -> None:
        for name, pathEdit in self.fields.items():
            path = pathOrNone(getattr(p, name))
            if pathOrNone(pathEdit.currentPath) != path:
                pathEdit.currentPath = str(path) if path is not None else ""


class RunChart:
    """The plot widget's side of :class:`ssl3d.mrml.RunPlot`: one chart per run, shown in ``plotWidget``."""

    def __init__(self, plotWidget, singletonTag: str) -> None:
        self.plotWidget, self.singletonTag, self.plot = plotWidget, singletonTag, None

    def reset(self, title: str) -> None:
        self._show(self._runPlot().reset(slicer.mrmlScene, title))

    def add(self, events: list) -> None:
        self._show(self._runPlot().add(slicer.mrmlScene, events))

    def _runPlot(self):
        if self.plot is None:  # made on first use: the engine is imported after the dependency check
            from ssl3d import mrml

            self.plot = mrml.RunPlot(self.singletonTag)
        return self.plot

    def _show(self, viewNode) -> None:
        if viewNode is not None:
            self.plotWidget.setMRMLPlotViewNode(viewNode)

