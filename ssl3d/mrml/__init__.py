"""MRML adapters: volume nodes <-> :class:`~ssl3d.io.Volume`, label maps -> segmentation nodes, overlays.

The only engine package that imports Slicer. It uses MRML classes and VTK's numpy support only (no Qt, no
``slicer.util``, no ``slicer.mrmlScene``), so it runs in Slicer and in plain Python with ``slicer-core``;
every function takes the scene it works in. One module per node kind, importing in one direction:

- ``nodes``: matrices, world transforms, node lookup by name (the leaf);
- ``volumes``: volume nodes <-> Volume; ``segmentations``: label maps, segments, ``.seg.nrrd``, bundle labels;
- ``markups``: control points, ROIs, click point lists; ``clicks``: click-to-segment bookkeeping;
- ``plots``: tables and loss/metric charts;
- ``overlays``: colour tables, inspection overlays, slice view layers (over volumes, markups and plots);
- ``training``: scene data written as datasets for ``ssl3d finetune`` and ``ssl3d pretrain``.

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

from ..job_arguments import progress_text
from .clicks import ClickBook, clear_click_points
from .markups import (POINT_COLORS, POINT_LIST_NAMES, box_roi_node, format_ras, point_list_node, ras_point_from_markup,
                      ras_points_from_markup, roi_center, roi_size)
from .overlays import (ALPHA_COLORS, HEAT_STOPS, HEAT_THRESHOLD, INSPECT_OUTPUTS, alpha_table_node, color_table_node,
                       heat_table_node, inspection_overlay_node, load_inspection, overlay_node, show_inspection, show_layers,
                       voco_weights_table)
from .plots import RunPlot, events_to_plot, events_to_table, table_node
from .segmentations import (SEGMENT_FILL_OPACITY, SEGMENT_OUTLINE_OPACITY, bundle_labels, labelmap_to_segmentation,
                            load_segmentation_file, read_segmentation_labels, segment_to_labelmap, segmentation_to_labelmap,
                            segment_editor_node, write_mask_region)
from .training import TrainingPairs, export_training_pairs, export_volumes
from .volumes import export_volume, import_volume, volume_from_node, volume_to_node

__all__ = [
    "volume_from_node",
    "volume_to_node",
    "export_volume",
    "import_volume",
    "labelmap_to_segmentation",
    "segment_to_labelmap",
    "segmentation_to_labelmap",
    "write_mask_region",
    "segment_editor_node",
    "read_segmentation_labels",
    "load_segmentation_file",
    "export_training_pairs",
    "export_volumes",
    "TrainingPairs",
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
    "voco_weights_table",
    "show_layers",
    "show_inspection",
    "point_list_node",
    "ClickBook",
    "clear_click_points",
    "table_node",
    "events_to_table",
    "events_to_plot",
    "RunPlot",
    "progress_text",
]
