"""VoCo inspection as SSLPretrain shows it (``mrml.load_inspection`` + ``mrml.show_inspection``), rendered by
Slicer's slice views: heat maps tint the cells the summary gives with the heat table's colours, the base-crop
grid is drawn as outlines on the cell borders, the crop ROI is drawn where the crop is (oriented on an oblique
volume), and the dense localisation map shows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

pytest.importorskip("slicer_core", reason="slicer-core is not installed")
from pictures import HEAT_THRESHOLD, blend, far, heat_rgb, interior, ring, voxel_values  # noqa: E402

from ssl3d import mrml  # noqa: E402
from ssl3d.io import read_volume  # noqa: E402

OPACITY = 0.6  # SSLPretrain's overlay opacity slider (its default is 0.5)
SIZE = (320, 320)


@pytest.fixture(scope="module")
def voco_lung1(tmp_path_factory, voco_cpu_bundle, lung1):
    """``ssl3d inspect voco --dense`` of the real lung1 CT with the session's trained voco-v1-cpu bundle."""
    from ssl3d.inspect import inspect_voco, write_inspection

    folder = tmp_path_factory.mktemp("voco_lung1") / "inspect"
    write_inspection(inspect_voco(voco_cpu_bundle, lung1[0], dense=True, seed=0), folder)
    return lung1[0], folder


@pytest.fixture(scope="module")
def voco_oblique(tmp_path_factory, voco_cpu_bundle, oblique_phantom):
    from ssl3d.inspect import inspect_voco, write_inspection

    folder = tmp_path_factory.mktemp("voco_oblique") / "inspect"
    write_inspection(inspect_voco(voco_cpu_bundle, oblique_phantom[0], seed=1), folder)
    return oblique_phantom[0], folder


def _scene(host, ct, folder, view_name="Red"):
    view = host.slice_view(view_name, SIZE)
    node = mrml.volume_to_node(ct, host.scene, "ct")
    loaded = mrml.load_inspection("voco", folder, host.scene, "ct")
    summary = json.loads((folder / "summary.json").read_text())
    crop = summary["crops"][summary["maps_show_crop"]]
    mrml.show_layers(host.scene, background=node)
    view.fit()
    view.jump(crop["center"])
    return view, node, loaded, summary, crop


def _hide_roi(loaded):
    loaded["box"][0].GetDisplayNode().SetVisibility(False)


@pytest.mark.parametrize("chosen, key", [("True weights", "true"), ("Predicted weights", "predicted")])
def test_heat_maps_tint_the_cells_the_summary_gives(host, voco_lung1, chosen, key):
    ct, folder = voco_lung1
    view, node, loaded, summary, crop = _scene(host, ct, folder)
    _hide_roi(loaded)
    base = view.render()
    mrml.show_inspection(host.scene, loaded, chosen, OPACITY, node)
    picture = view.render()
    cells = voxel_values(view, read_volume(folder / "grid.nrrd"), outside=0)
    weights = np.asarray(crop[key], dtype=np.float64)
    top = max(max(crop["true"]), max(crop["predicted"]))  # one colour scale for both maps
    tinted = shown = 0
    for cell, weight in enumerate(weights):
        where = interior(cells == cell + 1, margin=5)  # away from the grid outline
        if not where.any():
            continue
        shown += 1
        if weight < HEAT_THRESHOLD * top:
            assert far(picture[where], base[where], 3) < 0.01, f"cell {cell} (weight {weight:.3f}) is not transparent"
        else:
            tinted += 1
            expected = blend(base[where], heat_rgb(weight, top), OPACITY)
            assert far(picture[where], expected, 10) < 0.02, \
                f"cell {cell} (weight {weight:.3f}) is not in the heat table's colour at opacity {OPACITY}"
    assert shown >= 8 and tinted >= 1, (shown, tinted)


def test_grid_outlines_lie_on_the_cell_borders(host, voco_lung1):
    ct, folder = voco_lung1
    view, node, loaded, _, _ = _scene(host, ct, folder)
    _hide_roi(loaded)
    mrml.show_inspection(host.scene, loaded, "True weights", OPACITY, node)
    with_grid = view.render().astype(np.int16)
    mrml.show_layers(host.scene, background=node, foreground=loaded["True weights"][0], foreground_opacity=OPACITY)
    without = view.render().astype(np.int16)
    cells = voxel_values(view, read_volume(folder / "grid.nrrd"), outside=0)
    changed = np.abs(with_grid - without).max(axis=-1) > 12
    borders = np.zeros_like(changed)
    for value in np.unique(cells[cells > 0]):
        borders |= ring(cells == value, width=1)
    inside = np.zeros_like(changed)
    for value in np.unique(cells[cells > 0]):
        inside |= interior(cells == value, margin=5)
    assert changed[borders].mean() > 0.6, "the grid outline is not drawn on the cell borders"
    assert changed[inside].mean() < 0.01, "the grid is filled, not outlined: the heat map is covered"
    near_border = ndimage.binary_dilation(borders, iterations=4)
    assert changed[~near_border].mean() < 0.01, "the grid layer changes pixels away from the cell borders"


def test_dense_localisation_map_shows_over_the_ct(host, voco_lung1):
    ct, folder = voco_lung1
    view, node, loaded, _, _ = _scene(host, ct, folder)
    _hide_roi(loaded)
    base = view.render()
    mrml.show_inspection(host.scene, loaded, "Localisation (dense)", OPACITY, node)
    picture = view.render()
    share = voxel_values(view, read_volume(folder / "localisation.nrrd"), outside=0)
    cells = voxel_values(view, read_volume(folder / "grid.nrrd"), outside=0)
    away = np.zeros(share.shape, bool)
    for value in np.unique(cells[cells > 0]):
        away |= interior(cells == value, margin=5)
    # regions of one share value, away from the grid outline, the picture's edge and changes of the share
    steady = away & ~ring(np.ones_like(away), 1) & (ndimage.maximum_filter(share, 5) == ndimage.minimum_filter(share, 5))
    shown = steady & (share >= HEAT_THRESHOLD)
    hidden = steady & (share < HEAT_THRESHOLD)
    assert shown.sum() > 500, "the localisation map is not in the view"
    expected = blend(base[shown], heat_rgb(share[shown], 1.0), OPACITY)
    assert far(picture[shown], expected, 10) < 0.02
    if hidden.any():
        assert far(picture[hidden], base[hidden], 3) < 0.01


def _plane_polygon(corners: np.ndarray, point: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """Where a box (8 corners) meets a plane: the polygon's vertices in order."""
    axes = mrml.markups.box_frame(corners)[0]  # columns: the box's edge directions
    along = np.abs((corners[None] - corners[:, None]) @ axes) > 1e-3 * np.ptp(corners)
    edges = [(a, b) for a in range(8) for b in range(a + 1, 8) if along[a, b].sum() == 1]  # differ along one axis
    hits = []
    for a, b in edges:
        da, db = (corners[a] - point) @ normal, (corners[b] - point) @ normal
        if da * db < 0:
            hits.append(corners[a] + (corners[b] - corners[a]) * da / (da - db))
    hits = np.array(hits)
    centre = hits.mean(axis=0)
    u = hits[0] - centre
    v = np.cross(normal, u)
    order = np.argsort(np.arctan2((hits - centre) @ v, (hits - centre) @ u))
    return hits[order]


@pytest.mark.parametrize("case", ["lung1", "oblique"])
def test_crop_roi_is_drawn_at_the_crop_oriented(host, voco_lung1, voco_oblique, case):
    """The ROI's 2D fill covers exactly where the crop box meets the slice (text labels off: they are not
    what is checked); an axis-aligned box on the oblique volume would spill over its sides."""
    from matplotlib.path import Path as Polygon
    ct, folder = voco_lung1 if case == "lung1" else voco_oblique
    view, node, loaded, _, crop = _scene(host, ct, folder)
    roi = loaded["box"][0].GetDisplayNode()
    roi.SetPropertiesLabelVisibility(False)
    roi.SetPointLabelsVisibility(False)
    mrml.show_inspection(host.scene, loaded, "True weights", OPACITY, node)
    with_roi = view.render().astype(np.int16)
    _hide_roi(loaded)
    without = view.render().astype(np.int16)
    changed = np.abs(with_roi - without).max(axis=-1) > 8
    polygon = _plane_polygon(np.asarray(crop["corners"], dtype=np.float64), np.asarray(crop["center"]),
                             np.array([0.0, 0.0, 1.0]))  # the axial slice through the crop centre
    corners = np.array([view.pixel(p) for p in polygon], dtype=np.float64)
    rows, cols = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    pixels = np.stack([rows.ravel(), cols.ravel()], axis=1)
    inside = Polygon(corners).contains_points(pixels).reshape(rows.shape)
    depth_in, depth_out = ndimage.distance_transform_edt(inside), ndimage.distance_transform_edt(~inside)
    handles = np.concatenate([corners, (corners + np.roll(corners, -1, axis=0)) / 2])  # corner and edge handles
    off_handles = np.min(np.linalg.norm(pixels[:, None] - handles[None], axis=-1), axis=1).reshape(rows.shape) > 12
    band_in = inside & (depth_in >= 3) & (depth_in <= 6) & off_handles
    band_out = ~inside & (depth_out >= 4) & (depth_out <= 8) & off_handles
    assert band_in.sum() > 50 and band_out.sum() > 50
    assert changed[band_in].mean() > 0.9, f"the ROI is not drawn inside the crop ({changed[band_in].mean():.0%})"
    assert changed[band_out].mean() < 0.1, f"the ROI is drawn outside the crop ({changed[band_out].mean():.0%})"
