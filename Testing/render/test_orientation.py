"""Slicer's radiological convention in the slice views of a volume that ``ssl3d.mrml`` adds: patient right on
screen left (axial, coronal), anterior up (axial), superior up (coronal, sagittal).

The phantom is stored as a real CT is (i towards patient left, j towards posterior: LPS-like voxels, the
IJK->RAS matrix of lung1), with one bright marker on each of the patient's right, anterior and superior sides.
Positions on screen are read from the picture, not from the view's matrices.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer_core", reason="slicer-core is not installed")
from ssl3d import mrml  # noqa: E402
from ssl3d.io import Volume  # noqa: E402

SHAPE = (40, 64, 64)  # (k, j, i)
IJK_TO_RAS = np.array([[-2.0, 0.0, 0.0, 64.0], [0.0, -2.0, 0.0, 64.0], [0.0, 0.0, 2.5, -50.0], [0.0, 0.0, 0.0, 1.0]])
MARKERS = {"right": (200, 5), "anterior": (600, 40), "superior": (1000, 120)}  # HU, and which colour of the grey


def _phantom() -> Volume:
    array = np.full(SHAPE, -1000, np.int16)
    array[8:32, 16:48, 16:48] = 0  # body
    array[18:22, 30:34, 4:10] = 200     # low i -> high R: the patient's right
    array[18:22, 4:10, 30:34] = 600     # low j -> high A: anterior
    array[34:38, 30:34, 30:34] = 1000   # high k -> high S: superior
    return Volume(array, IJK_TO_RAS)


def _centroid(picture: np.ndarray, grey: int) -> np.ndarray:
    rows, cols = np.nonzero(np.abs(picture[..., 0].astype(int) - grey) <= 12)
    assert rows.size > 20, f"marker of grey {grey} not in the view"
    return np.array([rows.mean(), cols.mean()])


@pytest.mark.parametrize("view_name, checks", [
    ("Red", {"right": "left", "anterior": "up"}),
    ("Green", {"right": "left", "superior": "up"}),
    ("Yellow", {"superior": "up"}),
])
def test_patient_right_on_screen_left_and_anterior_superior_up(host, view_name, checks):
    view = host.slice_view(view_name, (200, 200))
    volume = _phantom()
    node = mrml.volume_to_node(volume, host.scene, "phantom")
    node.GetDisplayNode().AutoWindowLevelOff()
    node.GetDisplayNode().SetWindowLevelMinMax(-1000, 1000)  # HU h -> grey (h + 1000) * 255 / 2000
    mrml.show_layers(host.scene, background=node)
    view.fit()
    centre = volume.ijk_to_ras @ np.array([32, 32, 20, 1.0])
    for marker, side in checks.items():
        # the slice through the marker, so it is in the picture
        hu = {"right": 200, "anterior": 600, "superior": 1000}[marker]
        k, j, i = (np.mean(axis) for axis in np.nonzero(volume.array == hu))
        view.jump((volume.ijk_to_ras @ np.array([i, j, k, 1.0]))[:3])
        picture = view.render()
        row, col = _centroid(picture, round((hu + 1000) * 255 / 2000))
        middle = np.array(view.pixel(centre[:3]), dtype=float)
        if side == "left":
            assert col < middle[1] - 20, f"{view_name}: the patient's {marker} marker is not on screen left ({col:.0f} vs {middle[1]:.0f})"
        else:
            assert row < middle[0] - 20, f"{view_name}: the {marker} marker is not up ({row:.0f} vs {middle[0]:.0f})"
