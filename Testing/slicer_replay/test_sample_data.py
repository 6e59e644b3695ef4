"""The Sample Data phantom as Slicer reads it (slicer-core, no Qt): the files that SSLPretrain's custom
downloader writes load with the storage nodes behind Sample Data's "VolumeFile" and "SegmentationFile"."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the importable 'slicer' is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

from ssl3d import mrml  # noqa: E402
from ssl3d.data import phantoms  # noqa: E402


def _load(scene, node_class: str, storage_class: str, path, name: str):
    node = scene.AddNewNodeByClass(node_class, name)
    storage = scene.AddNewNodeByClass(storage_class)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    assert storage.ReadData(node), f"{storage_class} could not read {path.name}"
    return node


def test_phantom_sample_loads_as_volume_and_named_segments(tmp_path):
    image_path, seg_path = phantoms.write_phantom_sample(tmp_path)
    expected_image, expected_labels = phantoms.make_phantom(phantoms.SAMPLE_SEED, phantoms.SAMPLE_SHAPE)
    scene = slicer.vtkMRMLScene()
    try:
        image = _load(scene, "vtkMRMLScalarVolumeNode", "vtkMRMLVolumeArchetypeStorageNode", image_path, "SSL3D phantom")
        volume = mrml.volume_from_node(image)
        np.testing.assert_array_equal(volume.array, expected_image.array)
        np.testing.assert_allclose(volume.ijk_to_ras, expected_image.ijk_to_ras, atol=1e-5)

        organs = _load(scene, "vtkMRMLSegmentationNode", "vtkMRMLSegmentationStorageNode", seg_path, "SSL3D phantom organs")
        segmentation = organs.GetSegmentation()
        segments = [segmentation.GetNthSegment(i) for i in range(segmentation.GetNumberOfSegments())]
        assert [s.GetName() for s in segments] == list(phantoms.LABELS.values())
        for value, segment in zip(phantoms.LABELS, segments):
            np.testing.assert_allclose(segment.GetColor(), np.array(phantoms.LABEL_COLORS[value]) / 255.0, atol=1e-5)
            mask = mrml.segment_to_labelmap(organs, segmentation.GetNthSegmentID(value - 1), image)
            np.testing.assert_array_equal(mask.array > 0, expected_labels.array == value, err_msg=segment.GetName())
    finally:
        scene.Clear(1)
