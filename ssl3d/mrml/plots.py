"""Tables and plots: columns as a table node, and a run's events as loss and metric curves on a chart."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import vtk

from ..job_arguments import number
from ..errors import InputError
from .nodes import named_node

__all__ = ["table_node", "events_to_table", "events_to_plot", "RunPlot"]

_TABLE_ROLE = "ssl3d.table"  # chart attribute prefix naming the table node that holds a series


def table_node(scene: Any, name: str, columns: Mapping[str, Sequence[Any]], node: Any = None) -> Any:
    """A table node with the given columns (numbers as double columns, anything else as text), reused by name.

    Shorter columns are padded (NaN or ""), so every column has the length of the longest.
    """
    if node is None:
        node = named_node(scene, "vtkMRMLTableNode", name)
    table = node.GetTable()
    table.Initialize()
    rows = max((len(values) for values in columns.values()), default=0)
    for column_name, values in columns.items():
        values = list(values)
        numeric = all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in values)
        array = vtk.vtkDoubleArray() if numeric else vtk.vtkStringArray()
        array.SetName(str(column_name))
        array.SetNumberOfValues(rows)
        for row in range(rows):
            if numeric:
                array.SetValue(row, float(values[row]) if row < len(values) else float("nan"))
            else:
                array.SetValue(row, str(values[row]) if row < len(values) else "")
        table.AddColumn(array)
    node.Modified()
    return node


def _curves(events: Iterable[Mapping[str, Any]], kind: str) -> list[tuple[int, dict[str, float]]]:
    """(step, {column: value}) rows: loss terms of progress events, or metric values of metric events."""
    rows = []
    for event in events:
        step = event.get("step")
        if step is None:
            continue
        if kind == "loss" and event.get("event") == "progress" and isinstance(event.get("loss"), Mapping):
            values = {str(k): number(v) for k, v in event["loss"].items()}
        elif kind == "metric" and event.get("event") == "metric" and event.get("name"):
            values = {str(event["name"]): number(event.get("value"))}
        else:
            continue
        rows.append((int(step), values))
    return rows


def _column(table: vtk.vtkTable, name: str) -> vtk.vtkDoubleArray:
    column = table.GetColumnByName(name)
    if column is None:
        column = vtk.vtkDoubleArray()
        column.SetName(name)
        column.SetNumberOfValues(table.GetNumberOfRows())
        column.Fill(float("nan"))
        table.AddColumn(column)
    return column


def events_to_table(events: Iterable[Mapping[str, Any]], scene: Any, table: Any = None, name: str = "Loss",
                    kind: str = "loss") -> Any:
    """Append the curves in ``events`` to a table node: a ``step`` column and one column per term.

    Args:
        events: engine events (``ssl3d.events``); only ``progress`` events with a ``loss`` dict
            (``kind="loss"``) or ``metric`` events (``kind="metric"``, one column per metric name) count.
        scene: the MRML scene.
        table: the table node to append to (created when ``None``).
        name: name of a new table node.
        kind: ``"loss"`` or ``"metric"``.

    Returns:
        The table node. Terms that appear later get a new column, NaN in earlier rows.
    """
    if kind not in ("loss", "metric"):
        raise InputError(f"kind must be 'loss' or 'metric', got {kind!r}.")
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    data = table.GetTable()
    steps = _column(data, "step")
    for step, values in _curves(events, kind):
        columns = [_column(data, term) for term in values]
        row = data.GetNumberOfRows()
        for index in range(data.GetNumberOfColumns()):
            data.GetColumn(index).InsertNextValue(float("nan"))
        steps.SetValue(row, float(step))
        for column, value in zip(columns, values.values()):
            column.SetValue(row, value)
    data.Modified()
    table.Modified()
    return table


def events_to_plot(events: Iterable[Mapping[str, Any]], scene: Any, chart: Any = None, name: str = "Loss") -> Any:
    """Append ``events`` to a plot chart: one line per loss term and per metric, against the step.

    The chart's tables (``<name> loss`` and ``<name> metrics``) are created on the first call and
    found again through the chart's attributes, so call it again with the same chart for new events.
    """
    events = list(events)
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.SetTitle(name)
        chart.SetXAxisTitle("step")
        chart.SetYAxisTitle("value")
    for kind, suffix in (("loss", "loss"), ("metric", "metrics")):
        table = scene.GetNodeByID(chart.GetAttribute(f"{_TABLE_ROLE}.{kind}") or "")
        if table is None:
            table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{chart.GetName()} {suffix}")
            chart.SetAttribute(f"{_TABLE_ROLE}.{kind}", table.GetID())
        events_to_table(events, scene, table, kind=kind)
        _add_series(scene, chart, table, kind)
    return chart


def _add_series(scene: Any, chart: Any, table: Any, kind: str) -> None:
    """One line series per data column of ``table`` not yet on ``chart``."""
    present = set()
    for index in range(chart.GetNumberOfPlotSeriesNodes()):
        series = chart.GetNthPlotSeriesNode(index)
        if series is not None and series.GetTableNodeID() == table.GetID():
            present.add(series.GetYColumnName())
    data = table.GetTable()
    for index in range(data.GetNumberOfColumns()):
        column = data.GetColumn(index).GetName()
        if column == "step" or column in present:
            continue
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", column)
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName("step")
        series.SetYColumnName(column)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone if kind == "loss" else series.MarkerStyleCircle)
        series.SetUniqueColor()
        chart.AddAndObservePlotSeriesNodeID(series.GetID())


class RunPlot:
    """The loss chart of the run a module shows: one chart per run, whatever the scene does.

    A chart that went with a closed scene is drawn again once, with all the run's events, when the next
    events arrive (no new chart per timer tick). The chart is shown in the plot view node with
    ``singleton_tag``.

    Example::

        plot = RunPlot("SSLPretrainPlot")
        view = plot.reset(scene, "Pretraining loss")   # a new (empty) chart: show ``view`` in the plot widget
        view = plot.add(scene, events)                  # None while the same chart grows
    """

    def __init__(self, singleton_tag: str) -> None:
        self.singleton_tag = singleton_tag
        self.title, self.events, self.chart = "", [], None

    def reset(self, scene: Any, title: str) -> Any:
        """Start the chart of a new run; returns its plot view node."""
        self.title, self.events, self.chart = title, [], None
        return self.add(scene, [])

    def add(self, scene: Any, events: Iterable[Mapping[str, Any]]) -> Any:
        """Append ``events``; returns the plot view node when the chart was made anew (to be shown), else None."""
        events = list(events)
        self.events.extend(events)
        if self.chart is not None and scene.IsNodePresent(self.chart):
            events_to_plot(events, scene, self.chart)
            return None
        self.chart = events_to_plot(self.events, scene, name=self.title)
        view = scene.GetSingletonNode(self.singleton_tag, "vtkMRMLPlotViewNode")
        if view is None:
            view = scene.AddNewNodeByClass("vtkMRMLPlotViewNode")
            view.SetSingletonTag(self.singleton_tag)
        view.SetPlotChartNodeID(self.chart.GetID())
        return view
