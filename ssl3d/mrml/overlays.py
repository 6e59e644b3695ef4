"""Overlays: colour tables, coloured maps and label maps shown over a CT, ``ssl3d inspect`` folders loaded
as overlay nodes, and the slice views' layers."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..io import Volume, read_volume
from .markups import box_roi_node
from .nodes import named_node
from .plots import table_node
from .volumes import volume_to_node

__all__ = ["HEAT_STOPS", "ALPHA_COLORS", "HEAT_THRESHOLD", "INSPECT_OUTPUTS", "color_table_node", "heat_table_node",
           "alpha_table_node", "overlay_node", "inspection_overlay_node", "load_inspection", "voco_weights_table", "show_layers",
           "show_inspection"]

#: VoCo heat map: transparent black -> red -> yellow -> white, from weight 0 to 1.
HEAT_STOPS = ((0.0, (0.0, 0.0, 0.0, 0.0)), (0.35, (0.8, 0.0, 0.0, 1.0)), (0.7, (1.0, 0.8, 0.0, 1.0)),
              (1.0, (1.0, 1.0, 1.0, 1.0)))
#: Volume Fusion coefficient classes 0..4 (alpha = 0, 1/4, 1/2, 3/4, 1); class 0 stays transparent.
ALPHA_COLORS = (("alpha 0", (0.0, 0.0, 0.0, 0.0)), ("alpha 1/4", (0.23, 0.30, 0.75, 1.0)),
                ("alpha 1/2", (0.40, 0.76, 0.65, 1.0)), ("alpha 3/4", (0.99, 0.75, 0.44, 1.0)),
                ("alpha 1", (0.84, 0.10, 0.11, 1.0)))
#: Share of the largest heat value below which a heat map stays transparent (the image shows through).
HEAT_THRESHOLD = 0.02
#: What ``ssl3d inspect`` writes, per method: (file, overlay label or None for a helper layer, kind).
INSPECT_OUTPUTS = {
    "voco": (("predicted.nrrd", "Predicted weights", "heat"), ("truth.nrrd", "True weights", "heat"),
             ("localisation.nrrd", "Localisation (dense)", "share"), ("grid.nrrd", None, "grid")),
    "vf": (("predicted.nrrd", "Predicted alpha", "alpha"), ("truth.nrrd", "True alpha", "alpha"),
           ("error.nrrd", "Error", "alpha"), ("confidence.nrrd", "Confidence", "heat"), ("fused.nrrd", None, "fused")),
}


def color_table_node(scene: Any, name: str, entries: Sequence[tuple[str, Sequence[float]]]) -> Any:
    """A user colour table node, entry i = ``(name, (r, g, b, a))`` in 0..1; reused when ``name`` exists."""
    table = named_node(scene, "vtkMRMLColorTableNode", name)
    table.SetTypeToUser()
    table.SetNumberOfColors(len(entries))
    for index, (entry_name, rgba) in enumerate(entries):
        table.SetColor(index, entry_name, *[float(c) for c in rgba])
    return table


def heat_table_node(scene: Any, name: str = "SSL3D heat", stops: Sequence = HEAT_STOPS, count: int = 256) -> Any:
    """A continuous colour table interpolated between ``stops`` ((position 0..1, (r, g, b, a)), ...)."""
    positions = np.array([position for position, _ in stops])
    colors = np.array([rgba for _, rgba in stops], dtype=np.float64)
    samples = np.linspace(0.0, 1.0, count)
    table = np.stack([np.interp(samples, positions, colors[:, c]) for c in range(4)], axis=1)
    return color_table_node(scene, name, [(f"{s:.3f}", rgba) for s, rgba in zip(samples, table)])


def alpha_table_node(scene: Any, name: str = "SSL3D fusion alpha") -> Any:
    """The one colour table for Volume Fusion maps: classes 0..4 = alpha 0, 1/4, 1/2, 3/4, 1."""
    return color_table_node(scene, name, ALPHA_COLORS)


def overlay_node(volume: Volume, scene: Any, name: str, color_table: Any = None, threshold: float | None = None,
                 window: tuple[float, float] | None = None, labelmap: bool = False, node: Any = None) -> Any:
    """A volume node to show over the CT: a coloured map with low values transparent, or a label map.

    Args:
        volume: the map, on the CT's grid.
        scene: the MRML scene.
        name: node name; an existing node of that name and kind is updated in place (so repeated
            inspections do not pile up nodes) unless ``node`` is given.
        color_table: a colour node or its ID (e.g. from :func:`heat_table_node`); default: Slicer's grey.
        threshold: values below it are not shown (scalar maps only).
        window: (low, high) value range mapped onto the colour table; default: the map's min..max.
        labelmap: show integer classes through ``color_table`` as a label map.
        node: the volume node to update.

    Returns:
        The volume node; show it with ``slicer.util.setSliceViewerLayers(foreground=node)`` (or as
        ``label=`` for label maps).
    """
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    if node is None:
        node = named_node(scene, class_name, name)
    node = volume_to_node(volume, scene, name, labelmap=labelmap, node=node)
    display = node.GetDisplayNode()
    if color_table is not None:
        display.SetAndObserveColorNodeID(color_table if isinstance(color_table, str) else color_table.GetID())
    if labelmap:
        return node
    array = volume.array
    low, high = window if window is not None else (float(array.min()), float(array.max()))
    if high <= low:
        high = low + 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, high)
    if threshold is not None:
        display.SetApplyThreshold(1)
        display.SetLowerThreshold(float(threshold))
        display.SetUpperThreshold(max(float(array.max()), float(threshold)) + 1.0)
    else:
        display.SetApplyThreshold(0)
    return node


def inspection_overlay_node(volume: Volume, scene: Any, name: str, kind: str, heat_top: float = 1.0) -> Any:
    """An ``ssl3d inspect`` output as the overlay node it is shown as, by kind.

    Kinds: ``heat`` (VoCo weights, confidence: the heat table over ``0..heat_top``, values under
    :data:`HEAT_THRESHOLD` of it transparent), ``share`` (VoCo's dense localisation share, 0..1 the same way),
    ``alpha`` (Volume Fusion classes through the alpha table, as a label map), ``grid`` (VoCo's base-crop
    cells, a label map drawn as outlines by :func:`show_inspection`), anything else a grey image (the fused
    input). Nodes are reused by name, so a repeated inspection updates them.
    """
    if kind == "heat":
        return overlay_node(volume, scene, name, color_table=heat_table_node(scene), threshold=HEAT_THRESHOLD * heat_top,
                            window=(0.0, heat_top))
    if kind == "share":
        return overlay_node(volume, scene, name, color_table=heat_table_node(scene), threshold=HEAT_THRESHOLD, window=(0.0, 1.0))
    if kind == "alpha":
        return overlay_node(volume, scene, name, color_table=alpha_table_node(scene), labelmap=True)
    if kind == "grid":
        return overlay_node(volume, scene, name, color_table="vtkMRMLColorTableNodeLabels", labelmap=True)
    return overlay_node(volume, scene, name)


def load_inspection(method: str, folder: str | os.PathLike, scene: Any, volume_name: str,
                    table: bool = False) -> dict[str, tuple[Any, str]]:
    """Load an ``ssl3d inspect voco|vf`` folder as overlay nodes: ``{label: (node, kind)}``.

    VoCo: predicted and true heat maps on one colour scale (so they compare at a glance), the dense
    localisation map when there is one, the base-crop grid, and the first crop of ``boxes.json`` as a locked
    (oriented) ROI under ``"box"``. Volume Fusion: the fused image, the true and predicted alpha classes and
    the error through one alpha colour table, and the confidence as a heat map. Show one with
    :func:`show_inspection`. ``table=True`` adds VoCo's predicted and true weights per cell of the first crop
    (``summary.json``) as a table node under ``"table"``.
    """
    folder = Path(folder)
    outputs = [(file_name, label, kind, read_volume(folder / file_name))
               for file_name, label, kind in INSPECT_OUTPUTS[method] if (folder / file_name).is_file()]
    top = max([float(volume.array.max()) for _, _, kind, volume in outputs if kind == "heat"] + [1e-6])
    loaded = {}
    for file_name, label, kind, volume in outputs:
        name = f"{volume_name} {method} {file_name.split('.')[0]}"
        loaded[label or kind] = (inspection_overlay_node(volume, scene, name, kind, heat_top=top), kind)
    corners = _first_box_corners(folder / "boxes.json")
    if corners is not None:
        loaded["box"] = (box_roi_node(scene, f"{volume_name} VoCo crop (effective)", corners), "box")
    summary = _read_json(folder / "summary.json") if table and method == "voco" else None
    if isinstance(summary, dict) and summary:
        loaded["table"] = (voco_weights_table(summary, scene, f"{volume_name} VoCo weights"), "table")
    return loaded


def voco_weights_table(summary: Mapping[str, Any], scene: Any, name: str) -> Any:
    """The first crop of an ``ssl3d inspect voco`` summary as a table: ``cell``, ``predicted``, ``true`` weights."""
    crops = summary.get("crops") if isinstance(summary.get("crops"), list) else [summary]
    crop = crops[0] if crops else {}
    predicted = list(crop.get("predicted") or [])
    truth = list(crop.get("true") or crop.get("truth") or [])
    columns = {"cell": list(range(max(len(predicted), len(truth)))), "predicted": predicted, "true": truth}
    return table_node(scene, name, columns)


def _read_json(path: Path) -> Any:
    """A JSON file's value, None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _first_box_corners(path: Path) -> list | None:
    """RAS corners of the first box in ``boxes.json`` (``{"boxes": [{"corners": [...]}]}`` or a list), if any."""
    boxes = _read_json(path)
    if isinstance(boxes, dict):
        boxes = boxes.get("boxes", [boxes])
    if not isinstance(boxes, list) or not boxes or not isinstance(boxes[0], dict):
        return None
    corners = boxes[0].get("corners") or boxes[0].get("ras_corners")
    return corners if isinstance(corners, list) and len(corners) >= 2 else None


def show_layers(scene: Any, background: Any = None, foreground: Any = None, label: Any = None,
                foreground_opacity: float = 1.0, label_opacity: float = 1.0, label_outline: bool = False) -> None:
    """Show volume nodes in every slice view, as ``slicer.util.setSliceViewerLayers`` (None empties a layer)."""
    def node_id(node: Any) -> str | None:
        return node.GetID() if node is not None else None

    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(node_id(background))
        composite.SetForegroundVolumeID(node_id(foreground))
        composite.SetLabelVolumeID(node_id(label))
        composite.SetForegroundOpacity(float(foreground_opacity))
        composite.SetLabelOpacity(float(label_opacity))
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
        scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").SetUseLabelOutline(bool(label_outline))


def show_inspection(scene: Any, loaded: Mapping[str, tuple[Any, str]], chosen: str, opacity: float, volume_node: Any) -> None:
    """Show one loaded inspection output over its image, as SSLPretrain does when an overlay is chosen.

    ``loaded`` is ``{label: (node, kind)}`` (kinds of :func:`inspection_overlay_node`, plus ``fused`` for
    Volume Fusion's input, which becomes the background instead of ``volume_node``). A heat map goes to the
    foreground at ``opacity`` over VoCo's base-crop grid, drawn as cell outlines in the label layer; an
    alpha map goes to the label layer, filled at ``opacity``.
    """
    node, kind = loaded.get(chosen, (None, None))
    background = loaded.get("fused", (volume_node, None))[0]
    grid = loaded.get("grid", (None, None))[0]
    if kind == "alpha":
        show_layers(scene, background, None, node, label_opacity=opacity)
    else:
        show_layers(scene, background, node if kind in ("heat", "share") else None, grid, foreground_opacity=opacity,
                    label_outline=grid is not None)
