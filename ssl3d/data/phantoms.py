"""CT-like abdominal phantoms with organs at anatomically consistent relative positions.

VoCo's prior is that organs sit in consistent places; these phantoms make that prior learnable offline.
Each seed varies body size, organ size, shape, position and contrast, and the noise, but never the
relative layout (liver on the patient's right, spleen on the left and posterior, kidneys posterior and
either side of the spine, aorta in front of the spine).

Label values (:data:`LABELS`)::

    0 background   1 liver   2 spleen   3 left kidney   4 right kidney   5 spine   6 aorta

The volume is stored like a typical axial CT: on disk (LPS) the direction is the identity, so in RAS
memory i grows towards the patient's left, j towards posterior, k towards superior. ``oblique=True``
tilts that direction by a seeded rotation of 10-25 degrees (the voxels are unchanged).

Example::

    image, labels = make_phantom(0, shape=(48, 64, 64))
    image.array.dtype, image.array.min() >= -1024   # int16, True

:func:`write_phantom_sample` writes the phantom that Slicer's Sample Data module offers as "SSL3DPhantom".
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from ..io import LPS_TO_RAS, Volume

__all__ = ["make_phantom", "write_phantom_dataset", "write_phantom_sample", "LABELS", "LABEL_COLORS", "PHANTOM_VERSION",
           "SAMPLE_SEED", "SAMPLE_SHAPE", "SAMPLE_FILES"]

#: Change only on purpose: thresholds in other tests depend on the phantom's appearance.
PHANTOM_VERSION = 1

LABELS = {1: "liver", 2: "spleen", 3: "left kidney", 4: "right kidney", 5: "spine", 6: "aorta"}
LABEL_COLORS = {
    1: (221, 130, 101),
    2: (157, 108, 162),
    3: (185, 102, 83),
    4: (185, 102, 83),
    5: (241, 214, 145),
    6: (216, 101, 79),
}

# Organ ellipsoids in body-normalised coordinates (R, A, S in -1..1 of the body's half-extents):
# label, centre (R, A, S), radii (R, A, S), mean HU.
_ORGANS = (
    (1, (0.38, 0.08, 0.25), (0.36, 0.42, 0.42), 60.0),
    (2, (-0.50, -0.22, 0.30), (0.16, 0.20, 0.22), 48.0),
    (3, (-0.30, -0.42, -0.15), (0.11, 0.13, 0.24), 150.0),
    (4, (0.30, -0.42, -0.25), (0.11, 0.13, 0.24), 150.0),
)
_SPINE = (5, (0.0, -0.62), 0.12, 550.0)  # label, centre (R, A), radius, HU: a cylinder along S
_AORTA = (6, (-0.08, -0.36), 0.07, 200.0)


def _body_coordinates(shape: tuple[int, int, int], half_extent: np.ndarray) -> tuple[np.ndarray, ...]:
    """Normalised (R, A, S) coordinates of every voxel of a (k, j, i) grid; i -> left, j -> posterior."""
    k, j, i = (np.arange(n, dtype=np.float32) for n in shape)
    r = -(i - (shape[2] - 1) / 2) / (shape[2] / 2) / half_extent[0]
    a = -(j - (shape[1] - 1) / 2) / (shape[1] / 2) / half_extent[1]
    s = (k - (shape[0] - 1) / 2) / (shape[0] / 2) / half_extent[2]
    return s[:, None, None], a[None, :, None], r[None, None, :]


def _oblique_rotation(rng: np.random.Generator) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(10, 25))
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _geometry(rng: np.random.Generator, shape: tuple[int, int, int], oblique: bool) -> np.ndarray:
    spacing = np.array([1.6, 1.6, 2.5]) * rng.uniform(0.9, 1.1)  # (i, j, k) mm
    direction = np.diag([-1.0, -1.0, 1.0])  # identity in LPS
    if oblique:
        direction = _oblique_rotation(rng) @ direction
    matrix = np.eye(4)
    matrix[:3, :3] = direction * spacing
    extent = direction @ (spacing * (np.array(shape[::-1]) - 1))
    matrix[:3, 3] = -extent / 2 + rng.uniform(-20, 20, size=3)
    return matrix


def make_phantom(seed: int, shape: tuple[int, int, int] = (48, 64, 64), oblique: bool = False) -> tuple[Volume, Volume]:
    """A CT-like abdominal phantom and its label map.

    Args:
        seed: everything random (sizes, positions, contrast, noise, geometry) follows from it.
        shape: array shape (k, j, i); each side >= 16.
        oblique: tilt the direction matrix (voxels unchanged).

    Returns:
        (image, labels): int16 HU image and uint8 label map (values in :data:`LABELS`) on the same grid.
    """
    if len(shape) != 3 or min(shape) < 16:
        raise ValueError(f"shape must be 3 sides >= 16 (k, j, i), got {shape}.")
    rng = np.random.default_rng(seed)
    half_extent = np.array([0.88, 0.72, 1.3]) * rng.uniform(0.92, 1.05, size=3)
    s, a, r = _body_coordinates(shape, half_extent)
    body = (r**2 + a**2) <= 1.0
    fat = body & ((r / 0.9) ** 2 + (a / 0.86) ** 2 > 1.0)
    image = np.full(shape, -1000.0, dtype=np.float32)
    image[np.broadcast_to(body, shape)] = 35.0 + rng.normal(0, 5)
    image[np.broadcast_to(fat, shape)] = -100.0 + rng.normal(0, 10)
    labels = np.zeros(shape, dtype=np.uint8)
    for label, centre, radii, hu in _ORGANS:
        c = np.asarray(centre) + rng.uniform(-0.05, 0.05, size=3)
        rad = np.asarray(radii) * rng.uniform(0.85, 1.15, size=3)
        tilt = rng.uniform(-0.3, 0.3)  # organ shape: a sheared ellipsoid
        inside = ((r - c[0] - tilt * (s - c[2])) / rad[0]) ** 2 + ((a - c[1]) / rad[1]) ** 2 + ((s - c[2]) / rad[2]) ** 2 <= 1.0
        _paint(image, labels, inside & body, label, hu + rng.normal(0, 12))
    for label, centre, radius, hu in (_SPINE, _AORTA):
        c = np.asarray(centre) + rng.uniform(-0.03, 0.03, size=2)
        rad = radius * rng.uniform(0.85, 1.15)
        inside = np.broadcast_to(((r - c[0]) ** 2 + (a - c[1]) ** 2) <= rad**2, shape)
        _paint(image, labels, inside, label, hu + rng.normal(0, 30))
    image += rng.normal(0, rng.uniform(8, 20), size=shape).astype(np.float32)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    matrix = _geometry(rng, shape, oblique)
    return Volume(image, matrix), Volume(labels, matrix.copy())


def _paint(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, label: int, hu: float) -> None:
    mask = np.broadcast_to(mask, labels.shape)
    image[mask] = hu
    labels[mask] = label


#: The Sample Data phantom: make_phantom(SAMPLE_SEED, SAMPLE_SHAPE), not oblique.
SAMPLE_SEED = 7
SAMPLE_SHAPE = (64, 128, 128)
#: Its file names; the version is in the name, so a changed phantom never reuses a stale cached file.
SAMPLE_FILES = (f"SSL3DPhantom-v{PHANTOM_VERSION}.nrrd", f"SSL3DPhantom-v{PHANTOM_VERSION}.seg.nrrd")


def write_phantom_sample(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write the Sample Data phantom into ``folder`` unless both of its files are there already.

    The image is ``make_phantom(SAMPLE_SEED, SAMPLE_SHAPE)``: 128 x 128 x 64 voxels (i, j, k), int16 HU,
    about 1.6 x 1.6 x 2.5 mm (the seed scales the spacing by 0.9-1.1), axial with the identity direction
    in LPS. The labels are a Slicer segmentation (``.seg.nrrd``, one layer, label value = :data:`LABELS`
    key) whose segments carry the organ names and :data:`LABEL_COLORS`, on the same grid.

    Both files are written to temporaries beside their targets and renamed only when both are complete,
    so an interrupted call leaves no partial file. Every call writes the same voxels, geometry and segment
    fields (the segmentation's bytes differ only in the write time that pynrrd puts in a comment).

    Returns:
        (image path, segmentation path), named :data:`SAMPLE_FILES`.
    """
    from ..filemodes import give_umask_mode
    from ..io import write_volume

    folder = Path(folder)
    targets = tuple(folder / name for name in SAMPLE_FILES)
    if all(path.is_file() and path.stat().st_size > 0 for path in targets):
        return targets
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = make_phantom(SAMPLE_SEED, SAMPLE_SHAPE)
    writers = (lambda tmp: write_volume(image, tmp), lambda tmp: _write_segmentation(labels, tmp))
    staged = []
    try:
        for target, write in zip(targets, writers):
            # the temporary ends like its target: the writers pick the format from the ending
            handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{target.name}", dir=folder)
            os.close(handle)
            staged.append(Path(tmp))
            write(staged[-1])
            give_umask_mode(staged[-1])  # mkstemp makes 0600 files
        for tmp, target in zip(staged, targets):
            os.replace(tmp, target)
    finally:
        for tmp in staged:
            tmp.unlink(missing_ok=True)
    return targets


def _write_segmentation(labels: Volume, path: Path) -> None:
    """One-layer Slicer segmentation of :data:`LABELS` with names, colours and per-segment extents."""
    import slicerio

    segments = []
    for value, name in LABELS.items():
        k, j, i = np.nonzero(labels.array == value)
        extent = [int(n) for axis in (i, j, k) for n in (axis.min(), axis.max())] if len(k) else [0, -1, 0, -1, 0, -1]
        segments.append({
            "id": f"Segment_{value}", "name": name, "labelValue": value, "layer": 0, "extent": extent,
            "color": [round(c / 255.0, 6) for c in LABEL_COLORS[value]],
            "nameAutoGenerated": False, "colorAutoGenerated": False,
        })
    slicerio.write_segmentation(str(path), {
        "voxels": labels.array.transpose(2, 1, 0),  # (i, j, k): NRRD's axis order
        "ijkToLPS": LPS_TO_RAS @ labels.ijk_to_ras,
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
    })


def write_phantom_dataset(folder: Path, seeds, shape=(32, 48, 48)) -> Path:
    """An nnU-Net-style imagesTr/labelsTr folder of phantoms (used by the demo and the tests)."""
    from ..io import write_volume

    for sub in ("imagesTr", "labelsTr"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for seed in seeds:
        image, labels = make_phantom(seed, shape=shape)
        write_volume(image, folder / "imagesTr" / f"phantom{seed:03d}_0000.nii.gz")
        write_volume(labels, folder / "labelsTr" / f"phantom{seed:03d}.nii.gz")
    return folder
