"""Volume Fusion inspection as SSLPretrain shows it, rendered by Slicer's slice views: every alpha class is
in its colour-table colour where ``truth.nrrd`` / ``predicted.nrrd`` / ``error.nrrd`` hold it, class 0 leaves
the fused image visible, and the confidence heat map shows over the fused image.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("slicer_core", reason="slicer-core is not installed")
from pictures import ALPHA_RGB, HEAT_THRESHOLD, blend, far, heat_rgb, interior, voxel_values  # noqa: E402

from ssl3d import mrml  # noqa: E402
from ssl3d.io import read_volume  # noqa: E402

OPACITY = 0.7
SIZE = (256, 256)


@pytest.fixture(scope="module")
def vf_inspection(tmp_path_factory, vf_small_bundle, phantom):
    from ssl3d.inspect import inspect_fusion, write_inspection

    folder = tmp_path_factory.mktemp("vf_inspect") / "inspect"
    write_inspection(inspect_fusion(vf_small_bundle, phantom[0], seed=0), folder)
    return phantom[0], folder


def _scene(host, ct, folder):
    view = host.slice_view("Red", SIZE)
    node = mrml.volume_to_node(ct, host.scene, "ct")
    loaded = mrml.load_inspection("vf", folder, host.scene, "ct")
    mrml.show_layers(host.scene, background=loaded["fused"][0])
    view.fit()
    view.jump((ct.ijk_to_ras @ np.array([*(np.array(ct.shape[::-1]) / 2), 1.0]))[:3])
    return view, node, loaded


@pytest.mark.parametrize("chosen, file", [("True alpha", "truth.nrrd"), ("Predicted alpha", "predicted.nrrd"),
                                          ("Error", "error.nrrd")])
def test_alpha_classes_in_their_table_colours_over_the_fused_image(host, vf_inspection, chosen, file):
    ct, folder = vf_inspection
    view, node, loaded = _scene(host, ct, folder)
    fused = view.render()
    mrml.show_inspection(host.scene, loaded, chosen, OPACITY, node)
    picture = view.render()
    classes = voxel_values(view, read_volume(folder / file), outside=-1)
    seen = []
    for value in range(5):
        where = interior(classes == value, margin=2)
        if where.sum() < 20:
            continue
        seen.append(value)
        rgb = ALPHA_RGB.get(value)
        expected = fused[where] if value == 0 else blend(fused[where], np.array(rgb) * 255, OPACITY)
        assert far(picture[where], expected, 8) < 0.02, \
            f"{chosen}: class {value} is not shown in its colour ({rgb}) at opacity {OPACITY}"
    if file == "truth.nrrd":
        assert seen == [0, 1, 2, 3, 4], f"not every alpha class is in the view: {seen}"
    assert len(seen) >= 2


def test_confidence_heat_map_over_the_fused_image(host, vf_inspection):
    ct, folder = vf_inspection
    view, node, loaded = _scene(host, ct, folder)
    fused = view.render()
    mrml.show_inspection(host.scene, loaded, "Confidence", OPACITY, node)
    picture = view.render()
    volume = read_volume(folder / "confidence.nrrd")
    confidence = voxel_values(view, volume, outside=0)
    steady = (ndimage.maximum_filter(confidence, 5) - ndimage.minimum_filter(confidence, 5)) < 0.01
    shown = steady & (confidence >= HEAT_THRESHOLD * float(volume.array.max()))
    assert shown.sum() > 200, "the confidence map is not in the view"
    expected = blend(fused[shown], heat_rgb(confidence[shown], float(volume.array.max())), OPACITY)
    assert far(picture[shown], expected, 10) < 0.03
