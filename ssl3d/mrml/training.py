"""Training data from the scene: (volume, segmentation) pairs as an ``imagesTr``/``labelsTr`` dataset, and
scene volumes as a folder for ``ssl3d pretrain --data``."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..io import write_volume
from .segmentations import segmentation_to_labelmap
from .volumes import export_volume

__all__ = ["export_training_pairs", "export_volumes", "TrainingPairs"]


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


def export_volumes(nodes: Sequence[Any], folder: str | os.PathLike) -> Path:
    """Write scene volumes (world geometry, raw ``.nrrd``) into a folder that ``ssl3d pretrain --data`` reads.

    Raises:
        InputError: no volumes.
    """
    if not nodes:
        raise InputError("Check at least one volume to pretrain on.")
    folder = Path(folder)
    for index, node in enumerate(nodes):
        export_volume(node, folder / f"{index:03d}_{_safe_name(node.GetName())}.nrrd", compress=False)
    return folder


class TrainingPairs:
    """The (volume, segmentation) pairs a user lists for fine-tuning, kept as node IDs (so a closed scene
    leaves no dangling nodes), in the order they were added.

    Example::

        pairs = TrainingPairs()
        pairs.add(ct, organs)                              # "CT  +  CT organs": the list's line
        folder, labels = pairs.export(scene, tmp)          # dataset folder, {"0": "background", "1": ...}
    """

    def __init__(self) -> None:
        self.ids: list[tuple[str, str]] = []

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, volume_node: Any, segmentation_node: Any) -> str:
        """Add a pair; returns its line for the list.

        Raises:
            InputError: the volume or the segmentation is missing.
        """
        if volume_node is None or segmentation_node is None:
            raise InputError("Choose a volume and its segmentation.")
        self.ids.append((volume_node.GetID(), segmentation_node.GetID()))
        return f"{volume_node.GetName()}  +  {segmentation_node.GetName()}"

    def remove(self, row: int) -> bool:
        """Remove the pair at ``row``; False when there is none."""
        if not 0 <= row < len(self.ids):
            return False
        del self.ids[row]
        return True

    def clear(self) -> None:
        self.ids = []

    def export(self, scene: Any, folder: str | os.PathLike) -> tuple[Path, dict[str, str]]:
        """Write the pairs as a dataset (raw ``.nrrd``: a job's input written on Slicer's main thread) with
        :func:`export_training_pairs`; returns its folder and its ``dataset.json`` labels."""
        pairs = [(scene.GetNodeByID(volume), scene.GetNodeByID(segmentation)) for volume, segmentation in self.ids]
        dataset = export_training_pairs(pairs, folder, compress=False)
        return dataset.parent, json.loads(dataset.read_text(encoding="utf-8"))["labels"]


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or "volume"
