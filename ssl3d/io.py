"""Volumes with their geometry, and reading/writing them exactly.

A :class:`Volume` is a numpy array in (k, j, i) order (slices first, as numpy, SimpleITK and Slicer's
``arrayFromVolume`` give it) plus a 4x4 IJK->RAS matrix (Slicer's convention). ITK files store LPS; the
conversion happens here, once, in :func:`_sitk_to_volume` and :func:`_volume_to_sitk`.

Example::

    vol = read_volume("ct.nii.gz")          # vol.array.shape == (slices, rows, columns)
    write_volume(vol.like(mask), "mask.nrrd")  # same origin, spacing and direction as ct.nii.gz
"""

from __future__ import annotations

import gzip
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, VolumeReadError

__all__ = ["Volume", "read_volume", "write_volume", "VOLUME_SUFFIXES", "volume_suffix", "LPS_TO_RAS"]

#: File endings :func:`read_volume` understands (a folder is read as a DICOM series).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")
WRITE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D scalar image: ``array`` in (k, j, i) order and its 4x4 ``ijk_to_ras`` matrix.

    Args:
        array: 3D numpy array, axes (k, j, i) = (slice, row, column).
        ijk_to_ras: 4x4 matrix mapping homogeneous voxel indices (i, j, k, 1) to RAS millimetres.
    """

    array: np.ndarray
    ijk_to_ras: np.ndarray

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        matrix = np.asarray(self.ijk_to_ras, dtype=np.float64)
        if array.ndim != 3:
            raise InputError(f"Volume array must be 3D (k, j, i), got shape {array.shape}.")
        if matrix.shape != (4, 4):
            raise InputError(f"ijk_to_ras must be a 4x4 matrix, got shape {matrix.shape}.")
        if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise InputError(f"ijk_to_ras must be finite and invertible, got {matrix.tolist()}.")
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "ijk_to_ras", matrix)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape (k, j, i)."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along (i, j, k), as ITK and Slicer report it."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def origin(self) -> np.ndarray:
        """RAS position (mm) of voxel (0, 0, 0)."""
        return self.ijk_to_ras[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the RAS unit vectors of the i, j, k axes."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    @property
    def ras_to_ijk(self) -> np.ndarray:
        """Inverse of :attr:`ijk_to_ras`."""
        return np.linalg.inv(self.ijk_to_ras)

    def like(self, array: np.ndarray) -> "Volume":
        """A new Volume on this grid; ``array`` must have this volume's shape."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise InputError(f"array shape {array.shape} does not match the volume grid {self.array.shape}.")
        return Volume(array, self.ijk_to_ras.copy())

    def same_grid(self, other: "Volume", atol: float = 1e-4) -> bool:
        """True when ``other`` has this shape, origin, spacing and direction (to ``atol`` mm)."""
        return self.shape == other.shape and np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=atol)

    def ras_to_index(self, ras: Any) -> np.ndarray:
        """Continuous voxel index (i, j, k) of a RAS point."""
        point = np.append(np.asarray(ras, dtype=np.float64), 1.0)
        return (self.ras_to_ijk @ point)[:3]

    @staticmethod
    def from_geometry(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> "Volume":
        """Build a Volume from RAS ``spacing`` (i, j, k), ``origin`` and column ``direction``."""
        direction = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
        matrix = np.eye(4)
        matrix[:3, :3] = direction * np.asarray(spacing, dtype=np.float64)
        matrix[:3, 3] = origin
        return Volume(array, matrix)


def volume_suffix(path: str | os.PathLike) -> str:
    """The known file ending of ``path`` ('' for a folder or an unknown ending)."""
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


# ---------------------------------------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike) -> Volume:
    """Read a NIfTI, NRRD, MHA/MHD file or a DICOM series folder as a :class:`Volume`.

    Raises:
        VolumeReadError: the file is missing, unreadable, truncated/corrupt, not 3D scalar, has
            non-finite values or a zero/non-finite spacing. The message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeReadError(f"{path}: no such file or folder.")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        suffix = volume_suffix(path)
        if not suffix:
            raise VolumeReadError(f"{path}: unknown volume format; expected one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder.")
        _check_complete(path, suffix)
        image = _sitk_read(path)
    return _sitk_to_volume(image, path)


def _sitk_read(path: Path):
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise VolumeReadError(f"{path}: cannot be read as a volume ({reason[:200]}).") from None


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder)) or ()
    if not series:
        raise VolumeReadError(f"{folder}: a folder must hold a DICOM series, none was found.")
    # The series with the most slices is the image; scouts and secondary captures are smaller.
    files = max((reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series), key=len)
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError:
        raise VolumeReadError(f"{folder}: the DICOM series cannot be read.") from None


def _check_complete(path: Path, suffix: str) -> None:
    """Detect truncated/corrupt files that ITK would silently read as partially filled volumes."""
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: the file is empty.")
    if path.name.lower().endswith(".gz") or _is_gzip(path):
        size = _gzip_size(path)
    else:
        size = path.stat().st_size
    if suffix in (".nii", ".nii.gz"):
        expected = _nifti_expected_size(path)
        if expected is not None and size < expected:
            raise VolumeReadError(f"{path}: truncated: the header needs {expected} bytes of data, the file has {size}.")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _gzip_size(path: Path) -> int:
    """Decompress the whole stream (checking its CRC and length) and return the decompressed size."""
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
    except (EOFError, OSError, zlib.error) as exc:
        raise VolumeReadError(f"{path}: the compressed data is truncated or corrupt ({exc}).") from None
    return total


def _nifti_expected_size(path: Path) -> int | None:
    import nibabel

    try:
        header = nibabel.load(str(path)).header
    except Exception as exc:  # nibabel raises many types for bad headers
        raise VolumeReadError(f"{path}: not a valid NIfTI header ({exc}).") from None
    shape = header.get_data_shape()
    return int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize


def _sitk_to_volume(image, path: Path) -> Volume:
    import SimpleITK as sitk

    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeReadError(f"{path}: must be a scalar volume, it has {image.GetNumberOfComponentsPerPixel()} components per voxel.")
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = image[:, :, :, 0]
        size = image.GetSize()
    if image.GetDimension() != 3:
        raise VolumeReadError(f"{path}: must be a 3D volume, it is {image.GetDimension()}D with size {size}.")
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise VolumeReadError(f"{path}: spacing must be positive, got {tuple(spacing)}.")
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise VolumeReadError(f"{path}: the volume holds {int(np.sum(~np.isfinite(array)))} NaN or infinite voxels.")
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = image.GetOrigin()
    try:
        return Volume(array, LPS_TO_RAS @ lps)
    except InputError as exc:
        raise VolumeReadError(f"{path}: {exc}") from None


# ---------------------------------------------------------------------------------------------- writing


def _volume_to_sitk(volume: Volume):
    import SimpleITK as sitk

    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    lps = LPS_TO_RAS @ volume.ijk_to_ras
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``volume`` to a NIfTI, NRRD or MHA/MHD file, atomically (no partial file on failure).

    Raises:
        InputError: unknown file ending or a folder that does not exist.
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = volume_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"{path}: cannot write this format; use one of {', '.join(WRITE_SUFFIXES)}.")
    if not path.parent.is_dir():
        raise InputError(f"{path}: the folder {path.parent} does not exist.")
    if suffix == ".mhd":  # header + raw pair: an atomic rename of two files is not possible
        sitk.WriteImage(_volume_to_sitk(volume), str(path), compress)
        return path
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        sitk.WriteImage(_volume_to_sitk(volume), tmp, compress)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
