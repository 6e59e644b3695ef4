"""Markups: control points in world RAS, ROIs (centre, size, a locked box from corners), the click point
lists, and RAS points as the command line takes them."""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InputError
from .nodes import find_node, named_node, to_vtk

__all__ = ["POINT_COLORS", "POINT_LIST_NAMES", "ras_points_from_markup", "ras_point_from_markup", "roi_center",
           "roi_size", "box_roi_node", "box_frame", "format_ras", "point_list_node"]

#: Click points: include (positive) green, exclude (negative) red, as nnInteractive and MONAI Label colour them.
POINT_COLORS = {"positive": (0.2, 0.8, 0.3), "negative": (0.9, 0.2, 0.2)}
POINT_LIST_NAMES = {"positive": "SSL include points", "negative": "SSL exclude points"}


def ras_points_from_markup(markup_node: Any) -> np.ndarray:
    """World RAS positions (N, 3) of a markups node's placed control points."""
    points = []
    for index in range(markup_node.GetNumberOfControlPoints()):
        if markup_node.GetNthControlPointPositionStatus(index) != markup_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        markup_node.GetNthControlPointPositionWorld(index, position)
        points.append(position)
    return np.array(points, dtype=np.float64).reshape(-1, 3)


def ras_point_from_markup(markup_node: Any, index: int = -1) -> np.ndarray:
    """World RAS position (3,) of one placed control point (default: the last one).

    Raises:
        InputError: the node has no placed point at ``index``.
    """
    points = ras_points_from_markup(markup_node)
    if not -len(points) <= index < len(points):
        raise InputError(f"'{markup_node.GetName()}' has {len(points)} placed point(s), no point {index}.")
    return points[index]


def roi_center(roi_node: Any) -> np.ndarray:
    """World RAS centre (3,) of a markups ROI node."""
    center = [0.0, 0.0, 0.0]
    roi_node.GetCenterWorld(center)
    return np.array(center, dtype=np.float64)


def roi_size(roi_node: Any) -> np.ndarray:
    """World size (3,) of a markups ROI node in mm."""
    size = [0.0, 0.0, 0.0]
    roi_node.GetSizeWorld(size)
    return np.array(size, dtype=np.float64)


def box_roi_node(scene: Any, name: str, corners: Sequence[Sequence[float]], node: Any = None) -> Any:
    """A locked markups ROI on RAS ``corners`` (e.g. a crop box the engine reports), reused by name.

    Eight corners of a rectangular box (any order, e.g. ``boxes.json``'s) give an oriented ROI: its axes are
    the box's edges, so a crop of an oblique volume is drawn as it is, not as its RAS bounding box. Other
    points (or 8 that do not form a rectangular box) give the axis-aligned (RAS) bounding box.

    Raises:
        InputError: fewer than two points, or points that are not finite.
    """
    points = np.asarray(corners, dtype=np.float64).reshape(-1, 3)
    if len(points) < 2 or not np.all(np.isfinite(points)):
        raise InputError(f"a box needs at least two finite RAS corners, got {points.tolist()}.")
    if node is None:
        node = named_node(scene, "vtkMRMLMarkupsROINode", name)
    frame = box_frame(points)
    if frame is None:
        low, high = points.min(axis=0), points.max(axis=0)
        frame = (np.eye(3), (low + high) / 2.0, high - low)
    axes, center, size = frame
    object_to_node = np.eye(4)
    object_to_node[:3, :3], object_to_node[:3, 3] = axes, center
    node.SetAndObserveObjectToNodeMatrix(to_vtk(object_to_node))
    node.SetCenter(*center)
    node.SetSize(*size)
    node.SetLocked(True)
    return node


def box_frame(points: np.ndarray, tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(axes as columns, a rotation; centre; edge lengths) of 8 corners of a rectangular box, else None.

    The edges are the three differences from the first corner whose 0/1 sums give all 8 corners; each axis
    is the edge that points most along R, A, S in turn (so a slightly oblique box keeps R, A, S sizes).
    """
    import itertools

    if len(points) != 8:
        return None
    scale = tolerance * max(1.0, float(np.ptp(points, axis=0).max()))
    offsets = points[1:] - points[0]
    for trio in itertools.combinations(offsets, 3):
        edges = np.array(trio)
        sums = np.array(list(itertools.product((0, 1), repeat=3)), dtype=np.float64) @ edges
        if not all(np.linalg.norm(offsets - v, axis=1).min() < scale or np.linalg.norm(v) < scale for v in sums):
            continue
        lengths = np.linalg.norm(edges, axis=1)
        if lengths.min() < scale or np.abs(np.triu((edges / lengths[:, None]) @ (edges / lengths[:, None]).T, 1)).max() > tolerance:
            return None  # flat or sheared: not a box
        unit = edges / lengths[:, None]
        order, left = [], [0, 1, 2]
        for axis in range(3):
            order.append(left.pop(int(np.argmax([abs(unit[n, axis]) for n in left]))))
        axes = np.array([unit[n] * np.sign(unit[n, a] or 1.0) for a, n in enumerate(order)]).T
        if np.linalg.det(axes) < 0:  # a mirrored frame is no rotation; the box is symmetric, flip S
            axes[:, 2] = -axes[:, 2]
        return axes, points.mean(axis=0), lengths[order]
    return None


def format_ras(point: Iterable[float]) -> str:
    """``R,A,S`` for the command line (``--box``, ``--point``), in mm to 0.01: ``"12.5,-3,40.25"``."""
    values = [float(v) for v in point]
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"a RAS point needs three finite numbers, got {values}.")
    return ",".join(f"{round(v, 2) + 0.0:g}" for v in values)  # + 0.0: no "-0"


def point_list_node(scene: Any, kind: str) -> Any:
    """The include (``positive``, green, labelled ``+``) or exclude (``negative``, red, ``-``) click point list,
    made on first use (the module asks for it on every click: an existing list is returned untouched)."""
    node = find_node(scene, "vtkMRMLMarkupsFiducialNode", POINT_LIST_NAMES[kind])
    if node is not None:
        return node
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", POINT_LIST_NAMES[kind])
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    node.SetMarkupLabelFormat("+" if kind == "positive" else "-")
    display = node.GetDisplayNode()
    display.SetSelectedColor(*POINT_COLORS[kind])  # markups draw unselected points in Color, selected (default) in SelectedColor
    display.SetColor(*POINT_COLORS[kind])
    return node
