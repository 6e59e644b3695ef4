"""Segmentation nodes: label maps in (with names, colours and terminology), segments out as masks, click
results written into a box of a segment, ``.seg.nrrd`` files, and a bundle's labels in MRML's colours."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..io import Volume, read_volume
from .nodes import remove_node, to_vtk, to_world
from .volumes import volume_from_node, volume_to_node

__all__ = ["SEGMENT_FILL_OPACITY", "SEGMENT_OUTLINE_OPACITY", "labelmap_to_segmentation", "find_segment_id",
           "segment_to_labelmap", "segmentation_to_labelmap", "write_mask_region", "read_segmentation_labels",
           "load_segmentation_file", "bundle_labels", "segment_editor_node"]

#: Segments in 2D: Slicer's defaults, set explicitly so what the views show does not hang on the scene's defaults.
SEGMENT_FILL_OPACITY, SEGMENT_OUTLINE_OPACITY = 0.5, 1.0


def _check_labels(labels: Mapping[int, Sequence[Any]]) -> dict[int, tuple[str, tuple[float, float, float], str | None]]:
    checked = {}
    for value, entry in labels.items():
        if int(value) != value or int(value) <= 0:
            raise InputError(f"label values must be positive integers, got {value!r}.")
        name, color = entry[0], tuple(float(c) for c in entry[1])
        if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
            raise InputError(f"label {value} ({name}): colour must be three numbers in 0..1 as MRML uses, got {color}; "
                             "bundle colours are 0..255, convert them with bundle_labels().")
        terminology = entry[2] if len(entry) > 2 else None
        checked[int(value)] = (str(name), color, terminology)
    return checked


def labelmap_to_segmentation(volume: Volume, scene: Any, labels: Mapping[int, Sequence[Any]], reference_node: Any,
                             segmentation_node: Any = None, name: str | None = None) -> Any:
    """A segmentation node with one segment per label value present in ``volume``.

    Args:
        volume: integer label map (0 = background), on any grid (normally the reference's).
        scene: the MRML scene.
        labels: ``{value: (name, (r, g, b))}`` with r, g, b in 0..1; an optional third item is a
            terminology entry string (set as the segment's terminology tag). Values without an entry
            become ``"Label N"`` with a grey colour.
        reference_node: the volume the segmentation belongs to; its geometry becomes the
            segmentation's reference image geometry (needed by the Segment Editor and DICOM SEG export),
            and the segmentation goes under the same parent transform (``volume`` is in world RAS).
        segmentation_node: replace the segments of this node instead of adding a new node.
        name: name of a new node (default: ``"<reference name> segmentation"``).

    Returns:
        The segmentation node. Segment names and colours come from ``labels``; each segment's label value
        is its value in ``volume``.
    """
    import slicer  # on use: importing ssl3d.mrml needs MRML's vtk classes only

    checked = _check_labels(labels)
    world = to_world(reference_node)
    volume = Volume(volume.array, np.linalg.inv(world) @ volume.ijk_to_ras)  # in the reference's local space
    values = np.unique(volume.array)
    values = [int(v) for v in values if v != 0]
    if any(v < 0 for v in values):
        raise InputError(f"label map values must be >= 0, got {min(values)}.")
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name or f"{reference_node.GetName()} segmentation")
        segmentation_node.CreateDefaultDisplayNodes()
        _show_segments(segmentation_node.GetDisplayNode())
    else:
        segmentation_node.GetSegmentation().RemoveAllSegments()
    segmentation_node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    segmentation_node.SetNodeReferenceID(segmentation_node.GetReferenceImageGeometryReferenceRole(), reference_node.GetID())
    if not values:
        return segmentation_node
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "ssl3d temporary labels")
    label_node = None
    try:
        table.SetTypeToUser()
        table.SetNumberOfColors(max(values) + 1)
        table.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        for value in values:
            entry_name, color, _ = checked.get(value, (f"Label {value}", (0.5, 0.5, 0.5), None))
            table.SetColor(value, entry_name, *color, 1.0)
        label_node = volume_to_node(volume, scene, "ssl3d temporary label map", labelmap=True)
        label_node.SetAndObserveTransformNodeID(reference_node.GetTransformNodeID())  # same frame: no resampling
        label_node.GetDisplayNode().SetAndObserveColorNodeID(table.GetID())
        before = segmentation_node.GetSegmentation().GetNumberOfSegments()
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(label_node, segmentation_node, ""):
            raise InputError(f"the label map could not be imported into '{segmentation_node.GetName()}'.")
    finally:
        for temporary in (label_node, table):
            if temporary is not None:
                remove_node(scene, temporary)
    segmentation = segmentation_node.GetSegmentation()
    for index in range(before, segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        _, color, terminology = checked.get(segment.GetLabelValue(), (None, None, None))
        if color is not None:
            segment.SetColor(*color)  # exact: the colour table holds 8-bit colours
        if terminology:
            segment.SetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
    return segmentation_node


def _show_segments(display: Any) -> None:
    """Segments in the slice views: filled at half opacity with an opaque outline, so the image shows through."""
    display.SetVisibility(True)
    display.SetVisibility2DFill(True)
    display.SetVisibility2DOutline(True)
    display.SetOpacity2DFill(SEGMENT_FILL_OPACITY)
    display.SetOpacity2DOutline(SEGMENT_OUTLINE_OPACITY)


def find_segment_id(segmentation_node: Any, segment: str) -> str:
    """A segment's ID from its ID or name."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(segment) is not None:
        return segment
    by_name = segmentation.GetSegmentIdBySegmentName(segment)
    if by_name:
        return by_name
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    raise InputError(f"'{segmentation_node.GetName()}' has no segment {segment!r}; its segments are {names}.")


def segment_to_labelmap(segmentation_node: Any, segment_id: str, reference_volume_node: Any) -> Volume:
    """One segment as a 0/1 uint8 mask on the grid of ``reference_volume_node`` (world RAS geometry).

    ``segment_id`` may also be a segment name. The returned Volume has exactly the geometry
    :func:`volume_from_node` gives the reference volume.
    """
    import slicer

    segment_id = find_segment_id(segmentation_node, segment_id)
    reference = volume_from_node(reference_volume_node)
    scene = segmentation_node.GetScene()
    label_node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "ssl3d temporary export")
    try:
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        if not logic.ExportSegmentsToLabelmapNode(segmentation_node, ids, label_node, reference_volume_node):
            raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' could not be exported.")
        image = label_node.GetImageData()
        dims = image.GetDimensions()
        array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    finally:
        remove_node(scene, label_node)
    if array.shape != reference.shape:
        raise InputError(f"segment {segment_id!r} was exported on a {array.shape} grid, "
                         f"not on the reference grid {reference.shape}.")
    return reference.like((array > 0).astype(np.uint8))


def write_mask_region(segmentation_node: Any, segment_id: str, ijk_to_ras: Any, box: Sequence[int],
                      values: np.ndarray, changed: np.ndarray | None = None) -> None:
    """Write a 0/1 mask into one segment inside a box of a grid only; the rest of the segment is kept.

    Args:
        segmentation_node: the segmentation; ``segment_id`` (ID or name) must exist in it.
        ijk_to_ras: 4x4 IJK->world RAS matrix of the full grid the box indexes (e.g. the reference
            volume's, as :func:`volume_from_node` gives it).
        box: half-open ``(k0, k1, j0, j1, i0, i1)`` on that grid (an ``InteractiveSession.last_changed``).
        values: the mask inside the box, shape ``(k1-k0, j1-j0, i1-i0)``; non-zero = in the segment.
        changed: optional boolean array of the same shape: only these voxels are written, the others keep
            what the segment holds (so edits made in the Segment Editor survive a click).

    Names, colours, other segments (outside written voxels) and the reference geometry are untouched.
    """
    import slicer

    segment_id = find_segment_id(segmentation_node, segment_id)
    k0, k1, j0, j1, i0, i1 = (int(v) for v in box)
    values = np.asarray(values) != 0
    if values.shape != (k1 - k0, j1 - j0, i1 - i0):
        raise InputError(f"mask region of shape {values.shape} does not fit the box {tuple(box)}.")
    changed = np.ones_like(values) if changed is None else np.asarray(changed, dtype=bool)
    if changed.shape != values.shape:
        raise InputError(f"changed-voxel mask of shape {changed.shape} does not fit the box {tuple(box)}.")
    if values.size == 0 or not changed.any():
        return
    local = np.linalg.inv(to_world(segmentation_node)) @ np.asarray(ijk_to_ras, dtype=np.float64)
    extent = [i0, i1 - 1, j0, j1 - 1, k0, k1 - 1]
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    # MERGE_MAX with the added voxels, then MERGE_MIN with all but the removed ones: a local replace
    # (MODE_REPLACE would replace the whole segment, whatever the extent).
    for mode, array in ((logic.MODE_MERGE_MAX, values & changed), (logic.MODE_MERGE_MIN, values | ~changed)):
        if mode == logic.MODE_MERGE_MAX and not array.any() or mode == logic.MODE_MERGE_MIN and array.all():
            continue
        image = slicer.vtkOrientedImageData()
        image.SetExtent(*extent)
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        image.SetImageToWorldMatrix(to_vtk(local))
        numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = array.astype(np.uint8).ravel()
        if not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, mode, extent):
            raise InputError(f"segment {segment_id!r} of '{segmentation_node.GetName()}' could not be updated.")


def read_segmentation_labels(path: str | os.PathLike) -> dict[int, tuple[str, tuple[float, float, float]]]:
    """``{label value: (name, (r, g, b) 0..1)}`` of a ``.seg.nrrd`` file's segments (its header only).

    Only single-layer files (as ``ssl3d segment`` writes) map label values to segments one to one.
    """
    import slicerio

    segmentation = slicerio.read_segmentation(str(path), skip_voxels=True)
    labels = {}
    for segment in segmentation.get("segments", []):
        value = int(segment.get("labelValue", 0))
        if value > 0:
            color = tuple(float(c) for c in (segment.get("color") or (0.5, 0.5, 0.5))[:3])
            labels[value] = (str(segment.get("name") or f"Label {value}"), color)
    return labels


def load_segmentation_file(path: str | os.PathLike, scene: Any, reference_node: Any, segmentation_node: Any = None,
                           labels: Mapping[int, Sequence[Any]] | None = None, name: str | None = None,
                           surface: bool = False) -> Any:
    """Load an ``ssl3d segment`` output (``.seg.nrrd`` or a label map) as segments on ``reference_node``.

    Names and colours come from the ``.seg.nrrd`` header; ``labels`` (e.g. :func:`bundle_labels`) fill in
    values the file does not name and add terminology. Geometry as :func:`labelmap_to_segmentation`
    (reference image geometry set, same parent transform as the reference volume). ``surface=True`` also
    makes the closed surfaces (the segments show in 3D).
    """
    path = Path(path)
    merged = {int(k): tuple(v) for k, v in (labels or {}).items()}
    if path.name.lower().endswith(".seg.nrrd"):
        for value, (entry_name, color) in read_segmentation_labels(path).items():
            merged[value] = (entry_name, color) + tuple(merged.get(value, ())[2:3])
    volume = read_volume(path)  # refuses multi-layer .seg.nrrd files with advice
    segmentation_node = labelmap_to_segmentation(volume, scene, merged, reference_node, segmentation_node=segmentation_node,
                                                 name=name)
    if surface:
        segmentation_node.CreateClosedSurfaceRepresentation()
    return segmentation_node


def segmentation_to_labelmap(segmentation_node: Any, reference_volume_node: Any,
                             segment_ids: Sequence[str] | None = None) -> tuple[Volume, dict]:
    """All (or the given) segments as one label map on the reference grid: value i+1 for the i-th segment.

    Where segments overlap, the later one wins. Returns the label map and its
    ``{value: (name, (r, g, b))}`` labels (colours 0..1).
    """
    segmentation = segmentation_node.GetSegmentation()
    if segment_ids is None:
        segment_ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    labelmap = None
    labels = {}
    for value, segment in enumerate(segment_ids, start=1):
        mask = segment_to_labelmap(segmentation_node, segment, reference_volume_node)
        if labelmap is None:
            dtype = np.uint8 if len(segment_ids) < 256 else np.uint16
            labelmap = mask.like(np.zeros(mask.shape, dtype))
        labelmap.array[mask.array > 0] = value
        info = segmentation.GetSegment(find_segment_id(segmentation_node, segment))
        labels[value] = (info.GetName(), tuple(info.GetColor()))
    if labelmap is None:
        reference = volume_from_node(reference_volume_node)
        labelmap = reference.like(np.zeros(reference.shape, np.uint8))
    return labelmap, labels


def bundle_labels(info: Mapping[str, Any]) -> dict[int, tuple]:
    """``{value: (name, (r, g, b)[, terminology])}`` with colours in 0..1 from a bundle.json dict.

    Bundles store ``labels`` as a list of ``{"value", "name", "color": [r, g, b] 0..255, "terminology"?}``
    (a ``{value: {...}}`` mapping is accepted too). Background (0) is left out. A terminology given as a
    Slicer terminology entry string (``"ctx~category~type~..."``) is kept; other forms are not used yet.
    """
    entries = info.get("labels") or []
    if isinstance(entries, Mapping):
        entries = [{"value": key, **(entry if isinstance(entry, Mapping) else {"name": entry})}
                   for key, entry in entries.items()]
    labels = {}
    for entry in entries:
        value = int(entry["value"])
        if value == 0:
            continue
        color = entry.get("color") or (128, 128, 128)
        if len(color) != 3 or not all(0 <= c <= 255 for c in color):
            raise InputError(f"bundle label {value}: colour must be three numbers in 0..255, got {color}.")
        item = (str(entry.get("name", f"Label {value}")), tuple(c / 255.0 for c in color))
        terminology = entry.get("terminology")
        labels[value] = item + ((terminology,) if isinstance(terminology, str) and terminology else ())
    return labels


def segment_editor_node(scene: Any) -> Any:
    """The scene's Segment Editor parameter node (singleton tag ``"SegmentEditor"``, the Segment Editor module's),
    created when missing, so an embedded editor and the module show one selection."""
    node = scene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode")
    if node is None:
        node = scene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
        node.UnRegister(None)  # the scene holds the only reference
        node.SetSingletonTag("SegmentEditor")
        node = scene.AddNode(node)
    return node
