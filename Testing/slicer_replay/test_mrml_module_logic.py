"""What moved from the Slicer modules into ssl3d.mrml, on a real MRML scene (slicer-core): the run's loss chart,
the fine-tuning pairs list, scene volumes as a pretraining folder, the Segment Editor's parameter node, VoCo's
weights table, a segmentation's closed surfaces, and the click-to-segment bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the importable 'slicer' is not slicer-core (no vtkMRMLScene)", allow_module_level=True)

from ssl3d import mrml  # noqa: E402
from ssl3d.errors import InputError  # noqa: E402
from ssl3d.io import Volume, read_volume, write_volume  # noqa: E402


def _loss(step: int, total: float) -> dict:
    return {"event": "progress", "step": step, "loss": {"total": total}}


def _charts(scene) -> list:
    return [scene.GetNthNodeByClass(i, "vtkMRMLPlotChartNode") for i in range(scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode"))]


def test_run_plot_keeps_one_chart_per_run_and_redraws_after_a_scene_clear(scene):
    plot = mrml.RunPlot("TestPlot")
    view = plot.reset(scene, "Pretraining loss")
    assert view.GetSingletonTag() == "TestPlot" and view.GetPlotChartNodeID() == plot.chart.GetID()
    assert plot.add(scene, [_loss(1, 1.0)]) is None and plot.add(scene, [_loss(2, 0.5)]) is None  # the same chart grows
    assert len(_charts(scene)) == 1
    table = scene.GetNodeByID(plot.chart.GetAttribute("ssl3d.table.loss")).GetTable()
    assert table.GetNumberOfRows() == 2
    scene.Clear(0)  # the chart went with the scene: drawn again once, with all the run's events
    view = plot.add(scene, [_loss(3, 0.25)])
    assert view is not None and len(_charts(scene)) == 1 and plot.chart.GetName() == "Pretraining loss"
    assert scene.GetNodeByID(plot.chart.GetAttribute("ssl3d.table.loss")).GetTable().GetNumberOfRows() == 3
    assert plot.reset(scene, "next run") is not None and len(_charts(scene)) == 2


def _pair(scene, name: str, value: int):
    array = np.zeros((4, 5, 6), np.uint8)
    array[1:3, 1:4, 2:5] = value
    volume = mrml.volume_to_node(Volume(array.astype(np.int16) * 10, np.eye(4)), scene, name)
    labels = {value: (f"organ {value}", (0.2, 0.4, 0.6))}
    return volume, mrml.labelmap_to_segmentation(Volume(array, np.eye(4)), scene, labels, volume)


def test_training_pairs_list_remove_and_export(scene, tmp_path):
    pairs = mrml.TrainingPairs()
    first, second = _pair(scene, "ct one", 1), _pair(scene, "ct two", 2)
    assert pairs.add(*first) == "ct one  +  ct one segmentation"
    pairs.add(*second)
    pairs.add(*first)
    assert len(pairs) == 3 and not pairs.remove(3) and pairs.remove(2) and len(pairs) == 2
    with pytest.raises(InputError):
        pairs.add(first[0], None)
    folder, labels = pairs.export(scene, tmp_path / "data")
    assert labels == {"0": "background", "1": "organ 1", "2": "organ 2"}
    dataset = json.loads((folder / "dataset.json").read_text())
    assert [case["image"] for case in dataset["training"]] == ["./imagesTr/000_ct_one.nrrd", "./imagesTr/001_ct_two.nrrd"]
    assert np.unique(read_volume(folder / "labelsTr" / "001_ct_two.nrrd").array).tolist() == [0, 2]
    pairs.clear()
    assert pairs.ids == []


def test_export_volumes_writes_a_pretraining_folder(scene, tmp_path):
    nodes = [mrml.volume_to_node(Volume(np.full((2, 3, 4), v, np.int16), np.diag([2.0, 2.0, 3.0, 1.0])), scene, name)
             for v, name in ((1, "CT: chest"), (2, "CT: chest"))]
    folder = mrml.export_volumes(nodes, tmp_path)
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["000_CT_chest.nrrd", "001_CT_chest.nrrd"]
    assert read_volume(folder / files[1]).same_grid(mrml.volume_from_node(nodes[1]))
    with pytest.raises(InputError):
        mrml.export_volumes([], tmp_path)


def test_segment_editor_node_is_the_scene_singleton(scene):
    scene.RegisterNodeClass(slicer.vtkMRMLSegmentEditorNode())  # as Slicer's Segmentations module does
    node = mrml.segment_editor_node(scene)
    assert node.IsA("vtkMRMLSegmentEditorNode") and node.GetSingletonTag() == "SegmentEditor"
    assert mrml.segment_editor_node(scene) is node
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentEditorNode") == 1


def test_load_inspection_adds_the_voco_weights_table(scene, tmp_path):
    write_volume(Volume(np.linspace(0, 0.5, 24, dtype=np.float32).reshape(2, 3, 4), np.eye(4)), tmp_path / "predicted.nrrd")
    assert "table" not in mrml.load_inspection("voco", tmp_path, scene, "ct", table=True)  # no summary.json
    (tmp_path / "summary.json").write_text(json.dumps({"crops": [{"predicted": [0.7, 0.3], "true": [0.6, 0.3, 0.1]}]}))
    assert "table" not in mrml.load_inspection("voco", tmp_path, scene, "ct")
    node, kind = mrml.load_inspection("voco", tmp_path, scene, "ct", table=True)["table"]
    table = node.GetTable()
    assert kind == "table" and node.GetName() == "ct VoCo weights" and table.GetNumberOfRows() == 3
    assert [table.GetColumnByName("cell").GetValue(r) for r in range(3)] == [0, 1, 2]
    assert np.isnan(table.GetColumnByName("predicted").GetValue(2))
    assert table.GetColumnByName("true").GetValue(2) == pytest.approx(0.1)
    (tmp_path / "vf").mkdir()
    (tmp_path / "vf" / "summary.json").write_text((tmp_path / "summary.json").read_text())
    assert "table" not in mrml.load_inspection("vf", tmp_path / "vf", scene, "ct", table=True)  # VoCo's only


def test_load_segmentation_file_makes_closed_surfaces_on_request(scene, tmp_path):
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()  # rules the Segmentations module registers
    if not factory.GetConverterRules():
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    volume, _ = _pair(scene, "ct", 1)
    array = np.zeros((4, 5, 6), np.uint8)
    array[1:3, 1:4, 2:5] = 1
    write_volume(Volume(array, np.eye(4)), tmp_path / "labels.nii.gz")
    closed = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    plain = mrml.load_segmentation_file(tmp_path / "labels.nii.gz", scene, volume)
    assert not plain.GetSegmentation().ContainsRepresentation(closed)
    surface = mrml.load_segmentation_file(tmp_path / "labels.nii.gz", scene, volume, surface=True)
    assert surface.GetSegmentation().ContainsRepresentation(closed)


def test_click_book_aims_sends_the_volume_once_and_undoes_points(scene):
    volume, segmentation = _pair(scene, "ct", 1)
    positive, negative = mrml.point_list_node(scene, "positive"), mrml.point_list_node(scene, "negative")
    book = mrml.ClickBook()
    target = ("bundle", "cpu", volume.GetID(), segmentation.GetID(), "segment")
    assert book.aim(target) and not book.aim(target)
    sent, key = book.volume_to_send(volume)
    assert sent.same_grid(mrml.volume_from_node(volume)) and book.volume_to_send(volume) == (None, key)
    positive.AddControlPoint(1.0, 1.0, 1.0)
    first = book.record(positive.GetID())
    negative.AddControlPoint(2.0, 2.0, 2.0)
    second = book.record(negative.GetID())
    assert [tag for tag, _ in book.points] == [first, second] and second == first + 1
    book.failed(first)
    assert [tag for tag, _ in book.points] == [second]
    assert book.undo_point(scene) and negative.GetNumberOfControlPoints() == 0 and not book.undo_point(scene)
    assert book.aim(target[:4] + ("other segment",)) and book.volume_key == key  # same session: the volume stays
    assert book.aim(("other bundle",) + target[1:]) and book.volume_key is None  # a new session needs it
    book.volume_to_send(volume)
    book.failed(None, volume_lost=True)
    assert book.volume_key is None
    assert book.release() and book.target is None and not book.release()
    book.aim(target)
    book.forget()
    assert (book.target, book.volume_key, book.points) == (None, None, [])


def test_clear_click_points_keeps_the_last_point_of_one_list(scene):
    positive, negative = mrml.point_list_node(scene, "positive"), mrml.point_list_node(scene, "negative")
    for node in (positive, negative):
        for x in range(3):
            node.AddControlPoint(float(x), 0.0, 0.0)
    mrml.clear_click_points(scene, keep=negative)
    assert positive.GetNumberOfControlPoints() == 0 and negative.GetNumberOfControlPoints() == 1
    assert mrml.ras_point_from_markup(negative)[0] == pytest.approx(2.0)
    mrml.clear_click_points(scene)
    assert negative.GetNumberOfControlPoints() == 0
