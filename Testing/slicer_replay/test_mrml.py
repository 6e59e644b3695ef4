"""ssl3d.mrml on a real MRML scene (slicer-core, no Qt): geometry, segmentations, overlays, plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the importable 'slicer' is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

import vtk  # noqa: E402  (slicer-core's VTK)

from ssl3d import mrml  # noqa: E402
from ssl3d.errors import InputError  # noqa: E402
from ssl3d.io import Volume, read_volume  # noqa: E402


def _oblique(spacing=(0.8, 0.9, 2.5), origin=(-40.0, 12.0, 30.0), angle=0.3) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(spacing)
    matrix[:3, 3] = origin
    return matrix


def _transform(scene, matrix: np.ndarray, parent=None):
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetMatrixTransformToParent(mrml.nodes.to_vtk(matrix))
    if parent is not None:
        node.SetAndObserveTransformNodeID(parent.GetID())
    return node


def _labels_volume(matrix=None) -> Volume:
    array = np.zeros((6, 9, 11), np.uint8)  # (k, j, i)
    array[1:4, 2:6, 1:5] = 1
    array[3:6, 5:9, 6:10] = 3  # value 2 absent on purpose
    return Volume(array, _oblique() if matrix is None else matrix)


# --------------------------------------------------------------------------------------------- volumes
def test_volume_round_trip_oblique(scene):
    volume = Volume(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6), _oblique())
    node = mrml.volume_to_node(volume, scene, "ct")
    assert node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")
    assert node.GetImageData().GetDimensions() == (6, 5, 4)
    assert node.GetSpacing() == pytest.approx((0.8, 0.9, 2.5))
    back = mrml.volume_from_node(node)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)
    # the array is a copy: changing the node does not change the Volume
    shared = mrml.volume_from_node(node, copy=False)  # geometry checks: no copy of the voxels
    node.GetImageData().GetPointData().GetScalars().SetValue(0, 999)
    assert back.array.flat[0] == 0 and shared.array.flat[0] == 999
    np.testing.assert_allclose(shared.ijk_to_ras, volume.ijk_to_ras, atol=1e-9)


def test_volume_from_node_applies_nested_linear_transforms(scene):
    volume = Volume(np.ones((3, 4, 5), np.float32), _oblique())
    node = mrml.volume_to_node(volume, scene, "ct")
    outer = _oblique(spacing=(1, 1, 1), origin=(5.0, -7.0, 2.0), angle=-0.5)
    inner = np.diag([1.0, 1.0, 1.0, 1.0])
    inner[:3, 3] = (0.0, 10.0, 0.0)
    node.SetAndObserveTransformNodeID(_transform(scene, inner, parent=_transform(scene, outer)).GetID())
    np.testing.assert_allclose(mrml.volume_from_node(node).ijk_to_ras, outer @ inner @ volume.ijk_to_ras, atol=1e-9)


def test_volume_from_node_refuses_non_linear_transform(scene):
    node = mrml.volume_to_node(Volume(np.zeros((2, 2, 2)), np.eye(4)), scene, "ct")
    warp = scene.AddNewNodeByClass("vtkMRMLGridTransformNode", "warp")
    node.SetAndObserveTransformNodeID(warp.GetID())
    with pytest.raises(InputError, match=r"'ct' is under the non-linear transform 'warp'.*[Hh]arden"):
        mrml.volume_from_node(node)


@pytest.mark.parametrize("bad", [None, "markups"])
def test_volume_from_node_needs_a_volume(scene, bad):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode") if bad else None
    with pytest.raises(InputError, match="scalar volume node is needed"):
        mrml.volume_from_node(node)
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(InputError, match="'empty' has no image data"):
        mrml.volume_from_node(empty)


@pytest.mark.parametrize(
    "dtype, labelmap, expected",
    [(np.bool_, True, np.uint8), (np.float16, False, np.float32), (np.int64, True, np.int32), (np.float64, True, np.int32)],
)
def test_volume_to_node_dtypes(scene, dtype, labelmap, expected):
    node = mrml.volume_to_node(Volume(np.ones((2, 3, 4), dtype), np.eye(4)), scene, "x", labelmap=labelmap)
    assert bool(node.IsA("vtkMRMLLabelMapVolumeNode")) is bool(labelmap)
    assert mrml.volume_from_node(node).array.dtype == expected
    assert node.GetDisplayNode() is not None


def test_volume_to_node_rejects_fractional_labels(scene):
    with pytest.raises(InputError, match="integer values"):
        mrml.volume_to_node(Volume(np.full((2, 2, 2), 0.5), np.eye(4)), scene, "x", labelmap=True)


def test_export_and_import_volume_keep_world_geometry(scene, tmp_path):
    volume = Volume(np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32), _oblique())
    node = mrml.volume_to_node(volume, scene, "ct")
    shift = np.eye(4)
    shift[:3, 3] = (3.0, 4.0, 5.0)
    node.SetAndObserveTransformNodeID(_transform(scene, shift).GetID())
    path = mrml.export_volume(node, tmp_path / "ct.nii.gz")
    again = mrml.import_volume(path, scene, "again")
    np.testing.assert_allclose(mrml.volume_from_node(again).ijk_to_ras, shift @ volume.ijk_to_ras, atol=1e-4)
    np.testing.assert_array_equal(mrml.volume_from_node(again).array, volume.array)


# ---------------------------------------------------------------------------------------- segmentations
LABELS = {1: ("liver", (0.8, 0.3, 0.2)), 2: ("spleen", (0.2, 0.6, 0.2)), 3: ("aorta", (0.9, 0.1, 0.1), "ctx~cat~type")}


def _segments(node) -> dict:
    segmentation = node.GetSegmentation()
    return {
        segmentation.GetNthSegment(i).GetName(): (segmentation.GetNthSegment(i).GetLabelValue(),
                                                  tuple(round(c, 6) for c in segmentation.GetNthSegment(i).GetColor()))
        for i in range(segmentation.GetNumberOfSegments())
    }


def test_labelmap_to_segmentation_names_colours_reference(scene):
    labels = _labels_volume()
    reference = mrml.volume_to_node(labels.like(labels.array.astype(np.float32)), scene, "ct")
    seg = mrml.labelmap_to_segmentation(labels, scene, LABELS, reference)
    assert seg.IsA("vtkMRMLSegmentationNode") and seg.GetName() == "ct segmentation"
    assert _segments(seg) == {"liver": (1, (0.8, 0.3, 0.2)), "aorta": (3, (0.9, 0.1, 0.1))}  # absent 2: no segment
    assert seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole()) is reference
    converter = slicer.vtkSegmentationConverter
    ijk_to_ras = vtk.vtkMatrix4x4()
    reference.GetIJKToRASMatrix(ijk_to_ras)
    geometry = seg.GetSegmentation().GetConversionParameter(converter.GetReferenceImageGeometryParameterName())
    assert geometry == converter.SerializeImageGeometry(ijk_to_ras, reference.GetImageData())
    aorta = seg.GetSegmentation().GetSegment(seg.GetSegmentation().GetSegmentIdBySegmentName("aorta"))
    terminology = vtk.reference("")
    assert aorta.GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), terminology)
    assert terminology.get() == "ctx~cat~type"
    for value, name in ((1, "liver"), (3, "aorta")):
        mask = mrml.segment_to_labelmap(seg, name, reference)
        assert mask.array.dtype == np.uint8 and mask.same_grid(labels)
        np.testing.assert_array_equal(mask.array, (labels.array == value).astype(np.uint8))
    assert scene.GetFirstNodeByName("ssl3d temporary labels") is None  # temporary nodes are gone


def test_segmentation_follows_a_transformed_reference(scene):
    labels = _labels_volume()
    shift = _oblique(spacing=(1, 1, 1), origin=(20.0, 0.0, -5.0), angle=0.2)
    local = Volume(labels.array.astype(np.float32), labels.ijk_to_ras)
    reference = mrml.volume_to_node(local, scene, "ct")
    reference.SetAndObserveTransformNodeID(_transform(scene, shift).GetID())
    world = mrml.volume_from_node(reference)
    seg = mrml.labelmap_to_segmentation(world.like(labels.array), scene, LABELS, reference)
    assert seg.GetTransformNodeID() == reference.GetTransformNodeID()
    mask = mrml.segment_to_labelmap(seg, "liver", reference)
    np.testing.assert_allclose(mask.ijk_to_ras, world.ijk_to_ras, atol=1e-9)
    np.testing.assert_array_equal(mask.array, (labels.array == 1).astype(np.uint8))


def test_segment_to_labelmap_on_another_reference_grid(scene):
    labels = _labels_volume(matrix=np.diag([1.0, 1.0, 1.0, 1.0]))
    reference = mrml.volume_to_node(labels.like(labels.array.astype(np.float32)), scene, "ct")
    seg = mrml.labelmap_to_segmentation(labels, scene, LABELS, reference)
    coarse = np.diag([2.0, 1.0, 1.0, 1.0])  # every other column
    grid = mrml.volume_to_node(Volume(np.zeros((6, 9, 6), np.float32), coarse), scene, "coarse")
    mask = mrml.segment_to_labelmap(seg, "liver", grid)
    assert mask.shape == (6, 9, 6)
    np.testing.assert_allclose(mask.ijk_to_ras, coarse)
    np.testing.assert_array_equal(mask.array, (labels.array[:, :, ::2] == 1).astype(np.uint8))


def test_segment_to_labelmap_unknown_segment(scene):
    labels = _labels_volume()
    reference = mrml.volume_to_node(labels, scene, "ct")
    seg = mrml.labelmap_to_segmentation(labels, scene, LABELS, reference)
    with pytest.raises(InputError, match=r"no segment 'kidney'; its segments are \['liver', 'aorta'\]"):
        mrml.segment_to_labelmap(seg, "kidney", reference)


def test_labelmap_to_segmentation_rejects_0_255_colours(scene):
    labels = _labels_volume()
    reference = mrml.volume_to_node(labels, scene, "ct")
    with pytest.raises(InputError, match="0..1 as MRML uses"):
        mrml.labelmap_to_segmentation(labels, scene, {1: ("liver", (200, 80, 50))}, reference)


def test_labelmap_to_segmentation_replaces_segments_of_a_given_node(scene):
    labels = _labels_volume()
    reference = mrml.volume_to_node(labels, scene, "ct")
    seg = mrml.labelmap_to_segmentation(labels, scene, LABELS, reference)
    again = mrml.labelmap_to_segmentation(labels.like((labels.array == 1).astype(np.uint8)), scene, LABELS, reference,
                                          segmentation_node=seg)
    assert again is seg and list(_segments(seg)) == ["liver"]


def test_segmentation_to_labelmap_and_training_export(scene, tmp_path):
    labels = _labels_volume()
    first = mrml.volume_to_node(labels.like(labels.array.astype(np.int16)), scene, "case one")
    seg1 = mrml.labelmap_to_segmentation(labels, scene, LABELS, first)
    swapped = labels.like(np.where(labels.array == 1, 3, np.where(labels.array == 3, 1, 0)).astype(np.uint8))
    second = mrml.volume_to_node(swapped.like(swapped.array.astype(np.int16)), scene, "case/two")
    seg2 = mrml.labelmap_to_segmentation(swapped, scene, {1: ("aorta", (1, 0, 0)), 3: ("liver", (0, 1, 0))}, second)
    combined, names = mrml.segmentation_to_labelmap(seg1, first)
    assert {value: name for value, (name, _) in names.items()} == {1: "liver", 2: "aorta"}
    np.testing.assert_array_equal(combined.array, np.select([labels.array == 1, labels.array == 3], [1, 2], 0))

    dataset = json.loads(mrml.export_training_pairs([(first, seg1), (second, seg2)], tmp_path / "data").read_text())
    from ssl3d.data.datasets import find_cases  # the engine reads the export as a fine-tuning dataset

    assert [case.name for case in find_cases(tmp_path / "data", labels=True)] == ["000_case_one", "001_case_two"]
    assert dataset["labels"] == {"0": "background", "1": "liver", "2": "aorta"}
    assert dataset["numTraining"] == 2
    assert dataset["training"][1] == {"image": "./imagesTr/001_case_two.nii.gz", "label": "./labelsTr/001_case_two.nii.gz"}
    for case in dataset["training"]:
        image, label = read_volume(tmp_path / "data" / case["image"]), read_volume(tmp_path / "data" / case["label"])
        assert image.same_grid(labels) and label.same_grid(labels)
        # the same organ has the same value in both cases, whatever its value in the scene
        np.testing.assert_array_equal(label.array, combined.array)


def test_a_fine_tuning_export_is_raw_nrrd_straight_from_the_nodes(scene, tmp_path):
    """The module writes its fine-tuning input on Slicer's main thread: uncompressed, read back exactly."""
    labels = _labels_volume()
    volume = mrml.volume_to_node(labels.like(labels.array.astype(np.int16) * 100), scene, "case one")
    segmentation = mrml.labelmap_to_segmentation(labels, scene, LABELS, volume)
    dataset = json.loads(mrml.export_training_pairs([(volume, segmentation)], tmp_path / "data", compress=False).read_text())
    assert dataset["training"] == [{"image": "./imagesTr/000_case_one.nrrd", "label": "./labelsTr/000_case_one.nrrd"}]
    for role in ("image", "label"):
        data = (tmp_path / "data" / dataset["training"][0][role]).read_bytes()
        assert b"\nencoding: raw\n" in data[:data.index(b"\n\n")]
    image = read_volume(tmp_path / "data" / "imagesTr" / "000_case_one.nrrd")
    np.testing.assert_array_equal(image.array, labels.array.astype(np.int16) * 100)
    from ssl3d.data.datasets import find_cases

    assert [c.name for c in find_cases(tmp_path / "data", labels=True)] == ["000_case_one"]


def test_export_training_pairs_needs_segments(scene, tmp_path):
    volume = mrml.volume_to_node(_labels_volume(), scene, "ct")
    empty = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "empty")
    with pytest.raises(InputError, match="pair 1: the segmentation of 'ct' has no segments"):
        mrml.export_training_pairs([(volume, empty)], tmp_path)
    with pytest.raises(InputError, match="at least one"):
        mrml.export_training_pairs([], tmp_path)


def test_bundle_labels_convert_colours():
    info = {"labels": [{"value": 0, "name": "background", "color": [0, 0, 0]},
                       {"value": 1, "name": "liver", "color": [255, 0, 51]},
                       {"value": 2, "name": "spleen", "color": [0, 255, 0], "terminology": "a~b"}]}
    assert mrml.bundle_labels(info) == {1: ("liver", (1.0, 0.0, 0.2)), 2: ("spleen", (0.0, 1.0, 0.0), "a~b")}
    assert mrml.bundle_labels({"labels": {"1": {"name": "x", "color": [0, 0, 255]}}}) == {1: ("x", (0.0, 0.0, 1.0))}
    with pytest.raises(InputError, match="0..255"):
        mrml.bundle_labels({"labels": [{"value": 1, "name": "x", "color": [300, 0, 0]}]})


# ----------------------------------------------------------------------------------------------- points
def test_points_and_roi_in_world_coordinates(scene):
    shift = np.eye(4)
    shift[:3, 3] = (10.0, 0.0, -2.0)
    transform = _transform(scene, shift)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "positive")
    points.AddControlPoint(vtk.vtkVector3d(1, 2, 3))
    points.AddControlPoint(vtk.vtkVector3d(4, 5, 6))
    points.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(mrml.ras_points_from_markup(points), [[11, 2, 1], [14, 5, 4]])
    np.testing.assert_allclose(mrml.ras_point_from_markup(points), [14, 5, 4])
    np.testing.assert_allclose(mrml.ras_point_from_markup(points, 0), [11, 2, 1])
    with pytest.raises(InputError, match="has 2 placed point"):
        mrml.ras_point_from_markup(points, 2)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetCenter(1.0, 2.0, 3.0)
    roi.SetSize(20.0, 30.0, 40.0)
    roi.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(mrml.roi_center(roi), [11, 2, 1])
    np.testing.assert_allclose(mrml.roi_size(roi), [20, 30, 40])
    assert mrml.format_ras(mrml.roi_center(roi)) == "11,2,1"
    assert mrml.format_ras([-0.004, 12.346, 1e3]) == "0,12.35,1000"
    with pytest.raises(InputError):
        mrml.format_ras([1.0, float("nan"), 2.0])


# --------------------------------------------------------------------------------------------- overlays
def test_overlay_heat_map_threshold_and_reuse(scene):
    weights = Volume(np.linspace(0, 1, 2 * 3 * 4).reshape(2, 3, 4).astype(np.float32), _oblique())
    heat = mrml.heat_table_node(scene)
    node = mrml.overlay_node(weights, scene, "VoCo predicted", color_table=heat, threshold=0.05, window=(0.0, 1.0))
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == heat.GetID() and heat.GetNumberOfColors() == 256
    assert display.GetApplyThreshold() == 1 and display.GetLowerThreshold() == pytest.approx(0.05)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    rgba = [0.0] * 4
    heat.GetColor(0, rgba)
    assert rgba[3] == 0.0  # weight 0 is transparent
    again = mrml.overlay_node(weights.like(weights.array * 0.5), scene, "VoCo predicted", color_table=mrml.heat_table_node(scene))
    assert again is node and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLColorTableNode") == 36 + 1  # Slicer's tables + one heat table
    np.testing.assert_allclose(mrml.volume_from_node(again).array, weights.array * 0.5)


def test_overlay_alpha_label_maps_share_one_table(scene):
    classes = Volume(np.arange(5, dtype=np.uint8).repeat(4).reshape(1, 4, 5), np.eye(4))
    table = mrml.alpha_table_node(scene)
    nodes = [mrml.overlay_node(classes, scene, name, color_table=table, labelmap=True) for name in ("truth", "predicted")]
    assert all(n.IsA("vtkMRMLLabelMapVolumeNode") and n.GetDisplayNode().GetColorNodeID() == table.GetID() for n in nodes)
    assert [table.GetColorName(i) for i in range(5)] == ["alpha 0", "alpha 1/4", "alpha 1/2", "alpha 3/4", "alpha 1"]
    assert mrml.alpha_table_node(scene) is table


def test_show_layers_sets_every_slice_view_and_the_label_outline(scene):
    ct = mrml.volume_to_node(Volume(np.zeros((2, 3, 4), np.int16), np.eye(4)), scene, "ct")
    heat = mrml.overlay_node(Volume(np.ones((2, 3, 4), np.float32), np.eye(4)), scene, "heat")
    composites = []
    for name in ("Red", "Green"):
        logic = slicer.vtkMRMLSliceLogic()
        logic.SetMRMLScene(scene)
        logic.AddSliceNode(name)
        composites.append(logic.GetSliceCompositeNode())
    mrml.show_layers(scene, background=ct, foreground=heat, label=ct, foreground_opacity=0.3, label_outline=True)
    for composite in composites:
        assert (composite.GetBackgroundVolumeID(), composite.GetForegroundVolumeID()) == (ct.GetID(), heat.GetID())
        assert composite.GetLabelVolumeID() == ct.GetID() and composite.GetForegroundOpacity() == pytest.approx(0.3)
    assert all(scene.GetNthNodeByClass(i, "vtkMRMLSliceNode").GetUseLabelOutline() for i in range(2))
    mrml.show_layers(scene, background=ct)
    assert composites[0].GetForegroundVolumeID() is None and composites[1].GetLabelVolumeID() is None
    assert not scene.GetNthNodeByClass(0, "vtkMRMLSliceNode").GetUseLabelOutline()


def test_load_inspection_styles_each_output_by_kind(scene, tmp_path):
    from ssl3d.io import write_volume

    grid = np.eye(4)
    write_volume(Volume(np.linspace(0, 0.5, 24, dtype=np.float32).reshape(2, 3, 4), grid), tmp_path / "predicted.nrrd")
    write_volume(Volume(np.linspace(0, 0.8, 24, dtype=np.float32).reshape(2, 3, 4), grid), tmp_path / "truth.nrrd")
    write_volume(Volume(np.arange(24, dtype=np.uint8).reshape(2, 3, 4) % 5, grid), tmp_path / "grid.nrrd")
    corners = [[x, y, z] for x in (0, 2) for y in (0, 1) for z in (0, 1)]
    (tmp_path / "boxes.json").write_text(json.dumps({"boxes": [{"corners": corners}]}))
    loaded = mrml.load_inspection("voco", tmp_path, scene, "ct")
    assert {label: kind for label, (_, kind) in loaded.items()} == {
        "Predicted weights": "heat", "True weights": "heat", "grid": "grid", "box": "box"}
    for label in ("Predicted weights", "True weights"):  # one colour scale: the larger maximum
        display = loaded[label][0].GetDisplayNode()
        assert display.GetWindow() == pytest.approx(0.8) and display.GetLowerThreshold() == pytest.approx(0.8 * mrml.HEAT_THRESHOLD)
    assert loaded["grid"][0].IsA("vtkMRMLLabelMapVolumeNode")
    assert mrml.roi_size(loaded["box"][0]) == pytest.approx((2.0, 1.0, 1.0))
    assert mrml.load_inspection("voco", tmp_path, scene, "ct")["grid"][0] is loaded["grid"][0]  # updated in place


def test_point_list_nodes_are_made_once_in_their_colours(scene):
    include = mrml.point_list_node(scene, "positive")
    assert mrml.point_list_node(scene, "positive") is include and include.GetName() == "SSL include points"
    exclude = mrml.point_list_node(scene, "negative")
    assert exclude is not include
    assert exclude.GetDisplayNode().GetSelectedColor() == pytest.approx(mrml.POINT_COLORS["negative"])
    assert include.GetDisplayNode().GetColor() == pytest.approx(mrml.POINT_COLORS["positive"])
    include.AddControlPoint(0.0, 0.0, 0.0)
    assert include.GetNthControlPointLabel(0) == "+"


# ----------------------------------------------------------------------------------------------- events
def _progress(step, **loss):
    return {"event": "progress", "step": step, "total": 100, "loss": loss}


def test_events_to_plot_appends_series_per_term(scene):
    chart = mrml.events_to_plot([_progress(1, total=1.0, contrast=0.8), {"event": "log", "message": "x"},
                                 _progress(2, total=0.9, contrast=0.7)], scene, name="VoCo")
    assert chart.GetNumberOfPlotSeriesNodes() == 2
    chart = mrml.events_to_plot([_progress(3, total=0.5, contrast=0.4, regularise=0.1),
                                 {"event": "metric", "step": 3, "name": "val_dice", "value": 0.6}], scene, chart)
    names = sorted(chart.GetNthPlotSeriesNode(i).GetName() for i in range(chart.GetNumberOfPlotSeriesNodes()))
    assert names == ["contrast", "regularise", "total", "val_dice"]
    loss = scene.GetNodeByID(chart.GetAttribute("ssl3d.table.loss")).GetTable()
    assert loss.GetNumberOfRows() == 3
    assert [loss.GetColumnByName("step").GetValue(r) for r in range(3)] == [1, 2, 3]
    assert [loss.GetColumnByName("total").GetValue(r) for r in range(3)] == pytest.approx([1.0, 0.9, 0.5])
    regularise = loss.GetColumnByName("regularise")
    assert np.isnan(regularise.GetValue(0)) and regularise.GetValue(2) == pytest.approx(0.1)
    metrics = scene.GetNodeByID(chart.GetAttribute("ssl3d.table.metric")).GetTable()
    assert metrics.GetNumberOfRows() == 1 and metrics.GetColumnByName("val_dice").GetValue(0) == pytest.approx(0.6)


def test_events_to_table_kind_is_checked(scene):
    with pytest.raises(InputError, match="kind"):
        mrml.events_to_table([], scene, kind="lr")


@pytest.mark.parametrize(
    "event, text",
    [
        ({"step": 120, "total": 1000, "loss": {"total": 0.53219, "a": 1}, "samples_per_s": 3.14, "eta_s": 250},
         "step 120/1000 · loss 0.5322 · 3.14 samples/s · 4 min 10 s left"),
        ({"step": 5, "loss": {"dice_ce": 1.5}, "eta_s": 7300}, "step 5 · loss 1.5 · 2 h 1 min left"),
        ({"step": 5, "loss": {"a": 1.0, "b": 2.0}, "eta_s": None}, "step 5 · a 1"),
    ],
)
def test_progress_text(event, text):
    assert mrml.progress_text(event) == text


def test_table_node_pads_columns_and_is_reused(scene):
    table = mrml.table_node(scene, "VoCo weights", {"cell": [0, 1, 2], "predicted": [0.5, 0.25], "note": ["a", "b", "c"]})
    data = table.GetTable()
    assert (data.GetNumberOfRows(), data.GetNumberOfColumns()) == (3, 3)
    assert data.GetColumnByName("predicted").GetValue(1) == 0.25 and np.isnan(data.GetColumnByName("predicted").GetValue(2))
    assert data.GetColumnByName("note").GetValue(2) == "c"
    again = mrml.table_node(scene, "VoCo weights", {"cell": [0]})
    assert again is table and table.GetTable().GetNumberOfColumns() == 1


def test_box_roi_node_bounds_the_corners(scene):
    corners = [[-10.0, 5.0, 0.0], [30.0, -15.0, 64.0], [0.0, 0.0, 10.0]]
    roi = mrml.box_roi_node(scene, "crop", corners)
    np.testing.assert_allclose(mrml.roi_center(roi), [10.0, -5.0, 32.0])
    np.testing.assert_allclose(mrml.roi_size(roi), [40.0, 20.0, 64.0])
    assert roi.GetLocked() and mrml.box_roi_node(scene, "crop", corners[:2]) is roi
    with pytest.raises(InputError, match="two finite RAS corners"):
        mrml.box_roi_node(scene, "crop", [[0.0, 0.0, 0.0]])


def test_box_roi_node_is_oriented_on_oblique_corners(scene):
    # a crop box of an oblique volume: edges along the rotated axes, corners in a shuffled order; the long
    # S edge has a larger R component (26 mm) than the short R edge (11 mm), yet the ROI's x stays the R edge
    c, s = np.cos(0.3), np.sin(0.3)
    cy, sy = np.cos(0.35), np.sin(0.35)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    center, size = np.array([12.0, -30.0, 40.0]), np.array([12.0, 20.0, 80.0])
    bits = np.array(list(np.ndindex(2, 2, 2)), dtype=np.float64) - 0.5
    corners = (center + (bits * size) @ rotation.T)[[5, 0, 3, 7, 1, 6, 2, 4]]
    roi = mrml.box_roi_node(scene, "crop", corners)
    np.testing.assert_allclose(mrml.roi_center(roi), center, atol=1e-9)
    np.testing.assert_allclose(mrml.roi_size(roi), size, atol=1e-9)
    to_world = mrml.nodes.to_numpy(roi.GetObjectToWorldMatrix())
    np.testing.assert_allclose(to_world[:3, :3], rotation, atol=1e-9)
    inside = (np.linalg.inv(to_world) @ np.c_[corners, np.ones(8)].T)[:3].T  # corners in the ROI's frame
    np.testing.assert_allclose(np.abs(inside), np.broadcast_to(size / 2, (8, 3)), atol=1e-9)
    bounds = [0.0] * 6
    roi.GetRASBounds(bounds)
    np.testing.assert_allclose(bounds[1::2], corners.max(axis=0), atol=1e-9)  # it spans what the corners span
    # reused by name; a mirrored corner set (det < 0) still gives a rotation; other points: the RAS bounding box
    mirrored = corners * np.array([-1.0, 1.0, 1.0])
    assert mrml.box_roi_node(scene, "crop", mirrored) is roi
    np.testing.assert_allclose(np.linalg.det(mrml.nodes.to_numpy(roi.GetObjectToNodeMatrix())[:3, :3]), 1.0, atol=1e-9)
    np.testing.assert_allclose(mrml.roi_size(roi), size, atol=1e-9)
    sheared = corners + np.outer(corners[:, 2] - center[2], [0.5, 0.0, 0.0])
    mrml.box_roi_node(scene, "crop", sheared)
    np.testing.assert_allclose(mrml.roi_size(roi), np.ptp(sheared, axis=0), atol=1e-9)
    np.testing.assert_allclose(mrml.nodes.to_numpy(roi.GetObjectToNodeMatrix())[:3, :3], np.eye(3), atol=1e-12)


# ------------------------------------------------------------------------------------ click results
def _two_segments(scene, matrix=None):
    matrix = _oblique() if matrix is None else matrix
    reference = mrml.volume_to_node(Volume(np.zeros((6, 9, 11), np.int16), matrix), scene, "ct")
    segmentation = mrml.labelmap_to_segmentation(_labels_volume(matrix), scene, {1: ("liver", (0.8, 0.5, 0.4)),
                                                                                 3: ("spleen", (0.1, 0.2, 0.9))}, reference)
    return reference, segmentation


def _geometry(segmentation):
    return segmentation.GetSegmentation().GetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName())


def test_write_mask_region_changes_only_the_box(scene):
    reference, segmentation = _two_segments(scene)
    before_geometry = _geometry(segmentation)
    liver = segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver")
    grid = mrml.volume_from_node(reference)
    old = mrml.segment_to_labelmap(segmentation, "liver", reference).array
    box = (2, 5, 1, 4, 0, 3)  # overlaps the liver (k 1:4, j 2:6, i 1:5) partly
    values = np.zeros((3, 3, 3), np.uint8)
    values[1:, 1:, 1:] = 1
    mrml.write_mask_region(segmentation, liver, grid.ijk_to_ras, box, values)
    new = mrml.segment_to_labelmap(segmentation, "liver", reference).array
    expected = old.copy()
    expected[2:5, 1:4, 0:3] = values
    np.testing.assert_array_equal(new, expected)
    np.testing.assert_array_equal(mrml.segment_to_labelmap(segmentation, "spleen", reference).array,
                                  _labels_volume().array == 3)
    names = [segmentation.GetSegmentation().GetNthSegment(i).GetName() for i in range(2)]
    assert names == ["liver", "spleen"]
    assert segmentation.GetSegmentation().GetSegment(liver).GetColor() == pytest.approx((0.8, 0.5, 0.4))
    assert _geometry(segmentation) == before_geometry


def test_write_mask_region_keeps_unchanged_voxels_and_follows_transforms(scene):
    reference, segmentation = _two_segments(scene)
    transform = _transform(scene, _oblique(spacing=(1, 1, 1), origin=(3.0, -2.0, 5.0), angle=0.4))
    for node in (reference, segmentation):
        node.SetAndObserveTransformNodeID(transform.GetID())
    grid = mrml.volume_from_node(reference)  # world RAS
    old = mrml.segment_to_labelmap(segmentation, "liver", reference).array
    values = np.ones((2, 2, 2), np.uint8)
    changed = np.zeros((2, 2, 2), bool)
    changed[0, 0, 0] = changed[1, 1, 1] = True
    mrml.write_mask_region(segmentation, "liver", grid.ijk_to_ras, (4, 6, 0, 2, 8, 10), values, changed)
    new = mrml.segment_to_labelmap(segmentation, "liver", reference).array
    expected = old.copy()
    expected[4, 0, 8] = expected[5, 1, 9] = 1
    np.testing.assert_array_equal(new, expected)
    # removing: zeros where changed
    mrml.write_mask_region(segmentation, "liver", grid.ijk_to_ras, (1, 2, 2, 3, 1, 2), np.zeros((1, 1, 1)))
    expected[1, 2, 1] = 0
    np.testing.assert_array_equal(mrml.segment_to_labelmap(segmentation, "liver", reference).array, expected)
    with pytest.raises(InputError, match="does not fit"):
        mrml.write_mask_region(segmentation, "liver", grid.ijk_to_ras, (0, 1, 0, 1, 0, 1), np.zeros((2, 1, 1)))


def test_load_segmentation_file_names_colours_geometry(scene, tmp_path):
    pytest.importorskip("slicerio")
    from ssl3d.infer.segment import _write_seg_nrrd

    labels = _labels_volume()
    path = tmp_path / "out.seg.nrrd"
    _write_seg_nrrd(labels, [(1, "liver", (255, 0, 0)), (3, "spleen", (0, 0, 255))], path)
    assert mrml.read_segmentation_labels(path) == {1: ("liver", (1.0, 0.0, 0.0)), 3: ("spleen", (0.0, 0.0, 1.0))}
    reference = mrml.volume_to_node(Volume(np.zeros(labels.shape, np.int16), labels.ijk_to_ras), scene, "ct")
    segmentation = mrml.load_segmentation_file(path, scene, reference, labels={1: ("x", (0.5, 0.5, 0.5), "ctx~a~b")})
    seg = segmentation.GetSegmentation()
    assert [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())] == ["liver", "spleen"]
    assert seg.GetNthSegment(1).GetColor() == pytest.approx((0.0, 0.0, 1.0))
    tag = vtk.reference("")
    assert seg.GetNthSegment(0).GetTag(slicer.vtkSegment.GetTerminologyEntryTagName(), tag) and str(tag) == "ctx~a~b"
    assert segmentation.GetNodeReferenceID(segmentation.GetReferenceImageGeometryReferenceRole()) == reference.GetID()
    np.testing.assert_array_equal(mrml.segment_to_labelmap(segmentation, "spleen", reference).array, labels.array == 3)
