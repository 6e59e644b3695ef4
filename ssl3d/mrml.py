"""MRML adapters: volume nodes <-> :class:`~ssl3d.io.Volume`, label maps -> segmentation nodes, overlays.

The only engine module that imports Slicer. It uses MRML classes and VTK's numpy support only (no Qt, no
``slicer.util``, no ``slicer.mrmlScene``), so it runs in Slicer and in plain Python with ``slicer-core``;
every function takes the scene it works in.

Geometry: a Volume's ``ijk_to_ras`` is the node's IJK->RAS matrix with the node's parent transforms
applied (world coordinates), so points from markups (:func:`ras_point_from_markup`, world RAS) and the
engine's outputs agree. Non-linear parent transforms are refused: harden them first.

Example::

    ct = volume_from_node(volume_node)                        # Volume in world RAS
    write_volume(ct, tmp / "input.nii.gz")                    # ... ssl3d segment ... -> output.nii.gz
    labels = bundle_labels(json.load(open(bundle / "bundle.json")))
    seg = labelmap_to_segmentation(read_volume(tmp / "output.nii.gz"), scene, labels, volume_node)
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .errors import InputError
from .io import Volume, read_volume, write_volume

__all__ = [
    "volume_from_node",
    "volume_to_node",
    "export_volume",
    "import_volume",
    "labelmap_to_segmentation",
    "segment_to_labelmap",
    "segmentation_to_labelmap",
    "write_mask_region",
    "read_segmentation_labels",
    "load_segmentation_file",
    "export_training_pairs",
    "bundle_labels",
    "ras_point_from_markup",
    "ras_points_from_markup",
    "roi_center",
    "roi_size",
    "box_roi_node",
    "format_ras",
    "color_table_node",
    "heat_table_node",
    "alpha_table_node",
    "overlay_node",
    "inspection_overlay_node",
    "load_inspection",
    "show_layers",
    "show_inspection",
    "point_list_node",
    "table_node",
    "events_to_table",
    "events_to_plot",
    "progress_text",
]

#: VoCo heat map: transparent black -> red -> yellow -> white, from weight 0 to 1.
HEAT_STOPS = ((0.0, (0.0, 0.0, 0.0, 0.0)), (0.35, (0.8, 0.0, 0.0, 1.0)), (0.7, (1.0, 0.8, 0.0, 1.0)),
              (1.0, (1.0, 1.0, 1.0, 1.0)))
#: Volume Fusion coefficient classes 0..4 (alpha = 0, 1/4, 1/2, 3/4, 1); class 0 stays transparent.
ALPHA_COLORS = (("alpha 0", (0.0, 0.0, 0.0, 0.0)), ("alpha 1/4", (0.23, 0.30, 0.75, 1.0)),
                ("alpha 1/2", (0.40, 0.76, 0.65, 1.0)), ("alpha 3/4", (0.99, 0.75, 0.44, 1.0)),
                ("alpha 1", (0.84, 0.10, 0.11, 1.0)))
#: Click points: include (positive) green, exclude (negative) red, as nnInteractive and MONAI Label colour them.
POINT_COLORS = {"positive": (0.2, 0.8, 0.3), "negative": (0.9, 0.2, 0.2)}
POINT_LIST_NAMES = {"positive": "SSL include points", "negative": "SSL exclude points"}
#: Segments in 2D: Slicer's defaults, set explicitly so what the views show does not hang on the scene's defaults.
SEGMENT_FILL_OPACITY, SEGMENT_OUTLINE_OPACITY = 0.5, 1.0
#: Share of the largest heat value below which a heat map stays transparent (the image shows through).
HEAT_THRESHOLD = 0.02
#: What ``ssl3d inspect`` writes, per method: (file, overlay label or None for a helper layer, kind).
INSPECT_OUTPUTS = {
    "voco": (("predicted.nrrd", "Predicted weights", "heat"), ("truth.nrrd", "True weights", "heat"),
             ("localisation.nrrd", "Localisation (dense)", "share"), ("grid.nrrd", None, "grid")),
    "vf": (("predicted.nrrd", "Predicted alpha", "alpha"), ("truth.nrrd", "True alpha", "alpha"),
           ("error.nrrd", "Error", "alpha"), ("confidence.nrrd", "Confidence", "heat"), ("fused.nrrd", None, "fused")),
}
_TABLE_ROLE = "ssl3d.table"  # chart attribute prefix naming the table node that holds a series


# ------------------------------------------------------------------------------------------ matrices
def _to_numpy(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=np.float64)


def _to_vtk(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _to_world(node: Any) -> np.ndarray:
    """4x4 matrix from the node's local coordinates to world RAS (identity without a parent transform).

    Raises:
        InputError: the node lies under a non-linear (warping) transform.
    """
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise InputError(
            f"'{node.GetName()}' is under the non-linear transform '{transform.GetName()}'; harden the transform "
            "(Data module: right-click the node, Harden transform) or remove it, then try again.")
    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _to_numpy(matrix)


# ------------------------------------------------------------------------------------------ volumes
def volume_from_node(node: Any, copy: bool = True) -> Volume:
    """A copy of a scalar or label map volume node as a Volume, in world RAS.

    The array is (k, j, i), as ``slicer.util.arrayFromVolume`` gives it; ``ijk_to_ras`` is the node's
    IJK->RAS matrix with its linear parent transforms applied. ``copy=False`` shares the node's voxels
    (valid while its image data lives; for reading geometry and voxels on the main thread, never to keep).

    Raises:
        InputError: no node, no image data, more than one component per voxel, or a non-linear transform.
    """
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"a scalar volume node is needed, got {_describe(node)}.")
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"volume '{node.GetName()}' has no image data.")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(f"volume '{node.GetName()}' must have one component per voxel, "
                         f"it has {image.GetNumberOfScalarComponents()}.")
    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    if copy:
        array = array.copy()
    local = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(local)
    return Volume(array, _to_world(node) @ _to_numpy(local))


def _vtk_ready(array: np.ndarray, labelmap: bool) -> np.ndarray:
    """The array in a dtype VTK and Slicer handle well (no bool, float16 or 64-bit integer label maps)."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max:
            return array.astype(np.int32)
        if labelmap:
            raise InputError(f"label values must fit in 32 bits, got the range {low}..{high}.")
    return array


def volume_to_node(volume: Volume, scene: Any, name: str, labelmap: bool = False, node: Any = None) -> Any:
    """Add ``volume`` to ``scene`` as a scalar (or label map) volume node with its geometry.

    Args:
        volume: the image; its ``ijk_to_ras`` becomes the node's IJK->RAS matrix (no parent transform).
        scene: the MRML scene (``slicer.mrmlScene`` in Slicer).
        name: node name (made unique by nothing: the scene allows equal names).
        labelmap: make a ``vtkMRMLLabelMapVolumeNode`` (integer values) instead of a scalar volume.
        node: update this existing volume node instead of adding one (its parent transform is removed).

    Returns:
        The volume node, with a display node.
    """
    if labelmap and volume.array.dtype.kind == "f":
        if not np.all(np.mod(volume.array, 1) == 0):
            raise InputError(f"'{name}': a label map needs integer values, got {volume.array.dtype} with fractions.")
        volume = volume.like(volume.array.astype(np.int32))
    array = np.ascontiguousarray(_vtk_ready(volume.array, labelmap))
    image = vtk.vtkImageData()
    image.SetDimensions(*array.shape[::-1])
    scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    else:
        node.SetName(name)
        node.SetAndObserveTransformNodeID(None)
    node.SetIJKToRASMatrix(_to_vtk(volume.ijk_to_ras))
    node.SetAndObserveImageData(image)
    if node.GetDisplayNode() is None:
        _add_display_node(node, scene)
    return node


def _add_display_node(node: Any, scene: Any) -> Any:
    """A display node for a volume, with Slicer's default colour table when the scene has it."""
    labelmap = node.IsA("vtkMRMLLabelMapVolumeNode")
    display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode" if labelmap else "vtkMRMLScalarVolumeDisplayNode")
    default = "vtkMRMLColorTableNodeLabels" if labelmap else "vtkMRMLColorTableNodeGrey"
    if scene.GetNodeByID(default) is not None:
        display.SetAndObserveColorNodeID(default)
    if not labelmap:
        display.AutoWindowLevelOn()
    node.SetAndObserveDisplayNodeID(display.GetID())
    return display


def export_volume(node: Any, path: str | os.PathLike, compress: bool | str = True) -> Path:
    """Write a volume node to a file with its world geometry (parent transform applied).

    A job's temporary input is written with ``compress=False`` and straight from the node's voxels (no copy):
    on Slicer's main thread that is ~0.2 s for a 512x512x300 CT instead of seconds for gzip.
    """
    return write_volume(volume_from_node(node, copy=False), path, compress=compress)


def import_volume(path: str | os.PathLike, scene: Any, name: str, labelmap: bool = False, node: Any = None) -> Any:
    """Read a volume file into a (new or given) volume node."""
    return volume_to_node(read_volume(path), scene, name, labelmap=labelmap, node=node)


# ------------------------------------------------------------------------------------- segmentations
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
    checked = _check_labels(labels)
    to_world = _to_world(reference_node)
    volume = Volume(volume.array, np.linalg.inv(to_world) @ volume.ijk_to_ras)  # in the reference's local space
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
                _remove_node(scene, temporary)
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


def _remove_node(scene: Any, node: Any) -> None:
    display = node.GetDisplayNode() if hasattr(node, "GetDisplayNode") else None
    if display is not None:
        scene.RemoveNode(display)
    scene.RemoveNode(node)


def _segment_id(segmentation_node: Any, segment: str) -> str:
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
    segment_id = _segment_id(segmentation_node, segment_id)
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
        _remove_node(scene, label_node)
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
    segment_id = _segment_id(segmentation_node, segment_id)
    k0, k1, j0, j1, i0, i1 = (int(v) for v in box)
    values = np.asarray(values) != 0
    if values.shape != (k1 - k0, j1 - j0, i1 - i0):
        raise InputError(f"mask region of shape {values.shape} does not fit the box {tuple(box)}.")
    changed = np.ones_like(values) if changed is None else np.asarray(changed, dtype=bool)
    if changed.shape != values.shape:
        raise InputError(f"changed-voxel mask of shape {changed.shape} does not fit the box {tuple(box)}.")
    if values.size == 0 or not changed.any():
        return
    local = np.linalg.inv(_to_world(segmentation_node)) @ np.asarray(ijk_to_ras, dtype=np.float64)
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
        image.SetImageToWorldMatrix(_to_vtk(local))
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
                           labels: Mapping[int, Sequence[Any]] | None = None, name: str | None = None) -> Any:
    """Load an ``ssl3d segment`` output (``.seg.nrrd`` or a label map) as segments on ``reference_node``.

    Names and colours come from the ``.seg.nrrd`` header; ``labels`` (e.g. :func:`bundle_labels`) fill in
    values the file does not name and add terminology. Geometry as :func:`labelmap_to_segmentation`
    (reference image geometry set, same parent transform as the reference volume).
    """
    path = Path(path)
    merged = {int(k): tuple(v) for k, v in (labels or {}).items()}
    if path.name.lower().endswith(".seg.nrrd"):
        for value, (entry_name, color) in read_segmentation_labels(path).items():
            merged[value] = (entry_name, color) + tuple(merged.get(value, ())[2:3])
    volume = read_volume(path)  # refuses multi-layer .seg.nrrd files with advice
    return labelmap_to_segmentation(volume, scene, merged, reference_node, segmentation_node=segmentation_node, name=name)


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
        info = segmentation.GetSegment(_segment_id(segmentation_node, segment))
        labels[value] = (info.GetName(), tuple(info.GetColor()))
    if labelmap is None:
        reference = volume_from_node(reference_volume_node)
        labelmap = reference.like(np.zeros(reference.shape, np.uint8))
    return labelmap, labels


def export_training_pairs(pairs: Sequence[tuple[Any, Any]], folder: str | os.PathLike, modality: str = "CT",
                          compress: bool = True) -> Path:
    """Write (volume node, segmentation node) pairs as an ``imagesTr``/``labelsTr`` dataset with ``dataset.json``.

    Segments are matched across pairs by name: the first pair's segments get values 1, 2, ... in their
    order, names new in later pairs get the next values. Each segmentation is exported on its own volume's
    grid. ``dataset.json`` follows the Medical Segmentation Decathlon layout. ``compress=False`` (a fine-tuning
    job's temporary input, written on Slicer's main thread): raw ``.nrrd`` straight from the nodes' voxels
    instead of gzip NIfTI, a fraction of the time.

    Returns:
        The path of ``dataset.json``.
    """
    if not pairs:
        raise InputError("at least one (volume, segmentation) pair is needed to make a training set.")
    folder = Path(folder)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    values: dict[str, int] = {}
    training = []
    for index, (volume_node, segmentation_node) in enumerate(pairs):
        if segmentation_node is None or segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
            raise InputError(f"pair {index + 1}: the segmentation of '{volume_node.GetName()}' has no segments.")
        labelmap, labels = segmentation_to_labelmap(segmentation_node, volume_node)
        remapped = np.zeros(labelmap.shape, np.uint16 if len(values) + len(labels) >= 256 else np.uint8)
        for value, (name, _) in labels.items():
            remapped[labelmap.array == value] = values.setdefault(name, len(values) + 1)
        case = f"{index:03d}_{_safe_name(volume_node.GetName())}{'.nii.gz' if compress else '.nrrd'}"
        export_volume(volume_node, folder / "imagesTr" / case, compress=compress)
        write_volume(labelmap.like(remapped), folder / "labelsTr" / case, compress=compress)
        training.append({"image": f"./imagesTr/{case}", "label": f"./labelsTr/{case}"})
    dataset = {
        "name": "SSL3D scene export",
        "description": "Volumes and segmentations exported from 3D Slicer by the SSLSegment module.",
        "modality": {"0": modality},
        "labels": {"0": "background", **{str(value): name for name, value in values.items()}},
        "numTraining": len(training),
        "training": training,
    }
    path = folder / "dataset.json"
    path.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return path


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "volume"


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


# ------------------------------------------------------------------------------------------- points
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
        node = _named_node(scene, "vtkMRMLMarkupsROINode", name)
    frame = _box_frame(points)
    if frame is None:
        low, high = points.min(axis=0), points.max(axis=0)
        frame = (np.eye(3), (low + high) / 2.0, high - low)
    axes, center, size = frame
    object_to_node = np.eye(4)
    object_to_node[:3, :3], object_to_node[:3, 3] = axes, center
    node.SetAndObserveObjectToNodeMatrix(_to_vtk(object_to_node))
    node.SetCenter(*center)
    node.SetSize(*size)
    node.SetLocked(True)
    return node


def _box_frame(points: np.ndarray, tolerance: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
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


# ------------------------------------------------------------------------------------------ overlays
def color_table_node(scene: Any, name: str, entries: Sequence[tuple[str, Sequence[float]]]) -> Any:
    """A user colour table node, entry i = ``(name, (r, g, b, a))`` in 0..1; reused when ``name`` exists."""
    table = _named_node(scene, "vtkMRMLColorTableNode", name)
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


def _find_node(scene: Any, class_name: str, name: str) -> Any:
    for index in range(scene.GetNumberOfNodesByClass(class_name)):
        node = scene.GetNthNodeByClass(index, class_name)
        if node.GetName() == name and node.GetClassName() == class_name:
            return node
    return None


def _named_node(scene: Any, class_name: str, name: str) -> Any:
    found = _find_node(scene, class_name, name)
    return found if found is not None else scene.AddNewNodeByClass(class_name, name)


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
        node = _named_node(scene, class_name, name)
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


def load_inspection(method: str, folder: str | os.PathLike, scene: Any, volume_name: str) -> dict[str, tuple[Any, str]]:
    """Load an ``ssl3d inspect voco|vf`` folder as overlay nodes: ``{label: (node, kind)}``.

    VoCo: predicted and true heat maps on one colour scale (so they compare at a glance), the dense
    localisation map when there is one, the base-crop grid, and the first crop of ``boxes.json`` as a locked
    (oriented) ROI under ``"box"``. Volume Fusion: the fused image, the true and predicted alpha classes and
    the error through one alpha colour table, and the confidence as a heat map. Show one with
    :func:`show_inspection`.
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
    return loaded


def _first_box_corners(path: Path) -> list | None:
    """RAS corners of the first box in ``boxes.json`` (``{"boxes": [{"corners": [...]}]}`` or a list), if any."""
    try:
        boxes = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
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


def point_list_node(scene: Any, kind: str) -> Any:
    """The include (``positive``, green, labelled ``+``) or exclude (``negative``, red, ``-``) click point list,
    made on first use (the module asks for it on every click: an existing list is returned untouched)."""
    node = _find_node(scene, "vtkMRMLMarkupsFiducialNode", POINT_LIST_NAMES[kind])
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


# ------------------------------------------------------------------------------------ tables, events
def table_node(scene: Any, name: str, columns: Mapping[str, Sequence[Any]], node: Any = None) -> Any:
    """A table node with the given columns (numbers as double columns, anything else as text), reused by name.

    Shorter columns are padded (NaN or ""), so every column has the length of the longest.
    """
    if node is None:
        node = _named_node(scene, "vtkMRMLTableNode", name)
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
            values = {str(k): _number(v) for k, v in event["loss"].items()}
        elif kind == "metric" and event.get("event") == "metric" and event.get("name"):
            values = {str(event["name"]): _number(event.get("value"))}
        else:
            continue
        rows.append((int(step), values))
    return rows


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


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
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone if kind == "loss"
                              else slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        series.SetUniqueColor()
        chart.AddAndObservePlotSeriesNodeID(series.GetID())


def progress_text(event: Mapping[str, Any]) -> str:
    """One status line from a progress event: ``step 120/1000 · loss 0.532 · 3.1 samples/s · 4 min 10 s left``
    (a progress event with a ``message`` and no loss, as the cache build's, shows the message instead of the step)."""
    parts = []
    loss = event.get("loss")
    if event.get("message") and not loss:  # another phase of a run: the cache build ("cache: 3 of 12 volumes ...")
        parts.append(str(event["message"]))
    elif event.get("step") is not None:
        parts.append(f"step {event['step']}" + (f"/{event['total']}" if event.get("total") else ""))
    if isinstance(loss, Mapping) and loss:
        key = "total" if "total" in loss else next(iter(loss))
        value = _number(loss[key])
        parts.append(("loss" if key == "total" or len(loss) == 1 else key) + f" {value:.4g}")
    if event.get("samples_per_s"):
        parts.append(f"{_number(event['samples_per_s']):.3g} samples/s")
    if event.get("eta_s") is not None:
        parts.append(f"{_duration(_number(event['eta_s']))} left")
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _describe(node: Any) -> str:
    if node is None:
        return "nothing"
    return f"'{node.GetName()}' ({node.GetClassName()})" if hasattr(node, "GetClassName") else repr(node)
