"""A segmentation result as SSLSegment shows it (``mrml.load_segmentation_file`` of what ``ssl3d segment``
writes), and the click point lists (``mrml.point_list_node``), rendered by Slicer's slice views: each segment is
filled at half opacity and outlined, in its bundle colour, exactly where the label map has it on the CT's own
grid (axial and oblique volumes); include points green, exclude points red.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("slicer_core", reason="slicer-core is not installed")
from pictures import POINT_RGB, SEGMENT_FILL_OPACITY, blend, far, interior, near_color, ring, voxel_values  # noqa: E402

from ssl3d import mrml  # noqa: E402
from ssl3d.data.phantoms import LABELS, make_phantom  # noqa: E402

SIZE = (256, 256)
#: A bundle's labels with distinct colours (0..255), as bundle.json stores them.
BUNDLE = {"labels": [{"value": v, "name": name, "color": color} for (v, name), color in zip(
    LABELS.items(), [(230, 120, 40), (60, 200, 70), (40, 90, 230), (220, 40, 200), (240, 230, 60), (40, 220, 220)])]}


def _seg_file(tmp_path, labels):
    from ssl3d.infer.segment import _write_seg_nrrd

    entries = [(e["value"], e["name"], tuple(e["color"])) for e in BUNDLE["labels"]]
    path = tmp_path / "segmentation.seg.nrrd"
    _write_seg_nrrd(labels, entries, path)
    return path


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_segments_filled_and_outlined_in_bundle_colours_on_the_ct_grid(host, tmp_path, oblique):
    image, labels = make_phantom(4, shape=(32, 64, 64), oblique=oblique)
    view = host.slice_view("Red", SIZE)
    ct = mrml.volume_to_node(image, host.scene, "ct")
    mrml.show_layers(host.scene, background=ct)
    segmentation = mrml.load_segmentation_file(_seg_file(tmp_path, labels), host.scene, ct,
                                               labels=mrml.bundle_labels(BUNDLE))
    view.fit()
    k, j, i = (np.mean(axis) for axis in np.nonzero(labels.array == 1))  # through the liver
    view.jump((labels.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])
    picture = view.render()
    segmentation.GetDisplayNode().SetVisibility(False)
    base = view.render()
    values = voxel_values(view, labels, outside=0)
    checked = 0
    for entry in BUNDLE["labels"]:
        region = values == entry["value"]
        fill, edge = interior(region, margin=3), ring(region, width=1)
        if fill.sum() < 30:
            continue
        checked += 1
        expected = blend(base[fill], entry["color"], SEGMENT_FILL_OPACITY)
        assert far(picture[fill], expected, 8) < 0.03, \
            f"{entry['name']}: not filled in {entry['color']} at {SEGMENT_FILL_OPACITY} where the label map has it"
        outline = near_color(picture, entry["color"], 12)
        covered = ndimage.binary_dilation(outline, iterations=2)
        assert covered[edge].mean() > 0.8, f"{entry['name']}: its border is not outlined in its colour"
        assert outline[fill].mean() < 0.02, f"{entry['name']}: the fill is opaque (outline colour inside)"
    assert checked >= 3


def test_click_points_in_include_and_exclude_colours(host):
    image, _ = make_phantom(4, shape=(32, 64, 64))
    view = host.slice_view("Red", SIZE)
    ct = mrml.volume_to_node(image, host.scene, "ct")
    mrml.show_layers(host.scene, background=ct)
    view.fit()
    centre = image.ijk_to_ras @ np.array([32, 32, 16, 1.0])
    include, exclude = centre[:3] + (15.0, 10.0, 0.0), centre[:3] - (15.0, 10.0, 0.0)
    mrml.point_list_node(host.scene, "positive").AddControlPoint(*include)
    mrml.point_list_node(host.scene, "negative").AddControlPoint(*exclude)
    view.jump(centre[:3])
    picture = view.render()
    rows, cols = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    for point, kind, other in ((include, "positive", "negative"), (exclude, "negative", "positive")):
        r, c = view.pixel(point)
        around = (rows - r) ** 2 + (cols - c) ** 2 <= 10 ** 2
        own = near_color(picture, np.array(POINT_RGB[kind]) * 255, 40)
        wrong = near_color(picture, np.array(POINT_RGB[other]) * 255, 40)
        assert own[around].sum() >= 15, f"the {kind} point is not drawn in {POINT_RGB[kind]} at its position"
        assert not wrong[around].any(), f"the {kind} point shows the {other} colour"
