"""VoCo position labels: bitwise parity with the official get_position_label (fixtures), plus invariants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ssl3d.errors import InputError
from ssl3d.pretext.voco import position_labels

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("which", ["", "edge_"])
def test_labels_equal_official(version, which):
    ref = np.load(FIXTURES / f"voco_labels_{version}.npz")
    crop, base, grid = int(ref["roi"]), int(ref["base_roi"]), int(ref["num_crops"])
    got = position_labels(ref[f"{which}centers"], crop=crop, base=base, grid=grid)
    assert got.dtype == np.float64
    assert got.shape == ref[f"{which}labels"].shape  # (n, grid*grid)
    np.testing.assert_array_equal(got, ref[f"{which}labels"])


@pytest.mark.parametrize("crop, base, grid", [(96, 96, 4), (64, 64, 3), (32, 32, 3), (33, 32, 3)])
def test_labels_sum_to_one_over_the_whole_range(crop, base, grid):
    size = grid * base
    lo, hi = crop // 2, size - crop // 2
    cx, cy = np.meshgrid(np.arange(lo, hi), np.arange(lo, hi), indexing="ij")
    labels = position_labels(np.stack([cx.ravel(), cy.ravel()], 1), crop, base, grid)
    np.testing.assert_allclose(labels.sum(1), 1.0, rtol=0, atol=1e-12)
    assert labels.min() >= 0.0
    assert set(np.unique((labels > 0).sum(1))) <= {1, 2, 4}


def test_cell_index_is_ix_times_grid_plus_iy():
    # centre in cell ix=2 along x, iy=0 along y of a 4x4 grid of 96 voxels, fully inside it
    labels = position_labels([[2 * 96 + 48, 48]], crop=96, base=96, grid=4)
    assert labels[0, 2 * 4 + 0] == 1.0
    assert labels.sum() == 1.0


def test_ill_centers():
    with pytest.raises(InputError, match="centers must have shape"):
        position_labels(np.zeros((3, 3), int), 96, 96, 4)
    with pytest.raises(InputError, match="integer"):
        position_labels(np.full((2, 2), 48.5), 96, 96, 4)
    with pytest.raises(InputError, match="grid must be a positive integer"):
        position_labels([[48, 48]], 96, 96, 0)
