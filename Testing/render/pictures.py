"""Reading rendered slice views: which voxel each pixel shows, region masks, and Slicer's layer blending.

Expectations come from the volumes' own geometry and from the display the modules promise, written here
(not read from ``ssl3d.mrml`` or the scene's colour nodes), so a wrong colour node or constant, a lost
opacity or a flipped axis shows as a mismatch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ssl3d.io import Volume

#: VoCo heat maps: black -> red -> yellow -> white over 0..top (the table's alpha is not what shows: see heat_rgb).
HEAT_STOPS = ((0.0, (0.0, 0.0, 0.0)), (0.35, (0.8, 0.0, 0.0)), (0.7, (1.0, 0.8, 0.0)), (1.0, (1.0, 1.0, 1.0)))
#: Volume Fusion classes alpha = 0, 1/4, 1/2, 3/4, 1 (class 0 transparent).
ALPHA_RGB = {1: (0.23, 0.30, 0.75), 2: (0.40, 0.76, 0.65), 3: (0.99, 0.75, 0.44), 4: (0.84, 0.10, 0.11)}
#: Click points: include green, exclude red.
POINT_RGB = {"positive": (0.2, 0.8, 0.3), "negative": (0.9, 0.2, 0.2)}
SEGMENT_FILL_OPACITY = 0.5  # segments: filled at half opacity, outline opaque
HEAT_THRESHOLD = 0.02  # heat below 2 % of the top value stays transparent


def voxel_values(view, volume: Volume, outside: float = -1) -> np.ndarray:
    """The value of the voxel nearest to each pixel's centre on the slice plane (rows, cols); ``outside``
    where the pixel is off the volume."""
    rows, cols = view.size[1], view.size[0]
    r, c = np.mgrid[0:rows, 0:cols]
    xy = np.stack([c.ravel(), rows - 1 - r.ravel(), np.zeros(r.size), np.ones(r.size)])
    ijk = np.linalg.inv(volume.ijk_to_ras) @ view.xy_to_ras() @ xy
    i, j, k = (np.round(ijk[n]).astype(int) for n in range(3))
    depth, height, width = volume.array.shape
    inside = (i >= 0) & (i < width) & (j >= 0) & (j < height) & (k >= 0) & (k < depth)
    values = np.full(r.size, outside, dtype=np.float64)
    values[inside] = volume.array[k[inside], j[inside], i[inside]]
    return values.reshape(rows, cols)


def interior(mask: np.ndarray, margin: int = 2) -> np.ndarray:
    """Pixels of ``mask`` at least ``margin`` pixels from its border (nearest-voxel rounding stays out)."""
    return ndimage.binary_erosion(mask, iterations=margin) if margin else mask


def ring(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The pixels of ``mask`` within ``width`` of its border (where Slicer draws a label outline)."""
    return mask & ~ndimage.binary_erosion(mask, iterations=width)


def blend(base: np.ndarray, rgb, opacity: float) -> np.ndarray:
    """A layer of colour ``rgb`` (0..255) over ``base`` at ``opacity``: Slicer's compositing of a slice layer."""
    return base.astype(np.float64) * (1.0 - opacity) + np.asarray(rgb, dtype=np.float64) * opacity


def heat_rgb(values: np.ndarray, top: float) -> np.ndarray:
    """RGB 0..255 of ``values`` through :data:`HEAT_STOPS` over ``0..top`` (with its display threshold on, a
    scalar layer in Slicer is opaque above the threshold: the table's colour shows, not its alpha)."""
    positions = np.array([p for p, _ in HEAT_STOPS])
    colors = np.array([rgb for _, rgb in HEAT_STOPS])
    share = np.clip(np.asarray(values, dtype=np.float64) / top, 0.0, 1.0)
    return np.stack([np.interp(share, positions, colors[:, c]) for c in range(3)], axis=-1) * 255.0


def far(pixels: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    """Share of ``pixels`` (n, 3) whose colour is more than ``tolerance`` (any channel) from ``expected``."""
    if not len(pixels):
        raise AssertionError("no pixels to check: the region is not in the view")
    error = np.abs(pixels.astype(np.float64) - np.broadcast_to(expected, pixels.shape)).max(axis=-1)
    return float((error > tolerance).mean())


def near_color(picture: np.ndarray, rgb, tolerance: float) -> np.ndarray:
    """Pixels whose colour is within ``tolerance`` (any channel) of ``rgb`` (0..255)."""
    return np.abs(picture.astype(np.float64) - np.asarray(rgb, dtype=np.float64)).max(axis=-1) <= tolerance
