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
import re
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, VolumeReadError
from .filemodes import give_umask_mode

__all__ = ["Volume", "read_volume", "write_volume", "header_geometry", "VOLUME_SUFFIXES", "volume_suffix", "LPS_TO_RAS"]

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
        VolumeReadError: the file is missing, unreadable, truncated/corrupt (compressed data are
            decompressed and checksum-verified first), not 3D scalar (a single slice counts as 2D; a
            multi-layer ``.seg.nrrd`` is refused with advice), has non-finite values or a zero/non-finite
            spacing; a DICOM series has a damaged file or a missing/uneven slice. The message names the file.
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


def header_geometry(path: Path) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(size, spacing) along (i, j, k) from a volume's header, without reading its voxels; (None, None)
    when it cannot be read. A DICOM folder: its largest series' slice size and file count."""
    import SimpleITK as sitk

    try:
        reader = sitk.ImageFileReader()
        if path.is_dir():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
            if not files:
                return None, None
            reader.SetFileName(files[0])
            reader.ReadImageInformation()
            size = np.array([*reader.GetSize()[:2], len(files)], np.float64)
            return size, np.array([*reader.GetSpacing()[:2], np.nan], np.float64)  # slice spacing: not in one file
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return np.array(reader.GetSize()[:3], np.float64), np.array(reader.GetSpacing()[:3], np.float64)
    except RuntimeError:
        return None, None


def _sitk_read(path: Path):
    import SimpleITK as sitk

    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeReadError(f"{path}: cannot be read as a volume ({_itk_reason(str(exc))}).") from None


def _itk_reason(text: str) -> str:
    """The part of an ITK exception a user can act on: its message after "ITK ERROR:" on one line, without
    source paths, object addresses or unprintable bytes; a singular direction matrix said in words."""
    if "Bad direction" in text or "determinant is 0" in text:
        return "the direction matrix in its header is singular (two axes parallel, or one of length 0), so it has no orientation"
    found = re.search(r"(?:ITK ERROR:|sitk::ERROR:)(.*)", text, re.S)
    body = found.group(1) if found else text
    body = re.sub(r"\w+\(0x[0-9a-fA-F]+\):\s*", "", body)  # "ImageFileReader(0x55e...): "
    return " ".join(_printable(body).split())[:200] or "unreadable"


def _printable(text: str) -> str:
    """``text`` with every character that is not printable (binary data in a header) shown as "?"."""
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


def _read_dicom_series(folder: Path):
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = [reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in reader.GetGDCMSeriesIDs(str(folder)) or ()]
    if not series:
        raise VolumeReadError(f"{folder}: a folder must hold a DICOM series, none was found.")
    # The series with the most slices is the image; scouts and secondary captures are smaller.
    files = max(series, key=len)
    _check_unlisted_dicom_files(folder, {Path(name).name for names in series for name in names})
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()  # the slice headers, for the position check without reading them again
    reader.SetSpacingWarningRelThreshold(float("inf"))  # uneven slices get our error below, not ITK's warning too
    try:
        image = reader.Execute()
    except RuntimeError:
        raise VolumeReadError(f"{folder}: the DICOM series cannot be read.") from None
    _check_slice_positions(folder, files, reader, image.GetDepth())
    return image


def _dicom_header(path: Path):
    """A reader holding ``path``'s DICOM header, or None when GDCM cannot parse the file."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    return reader


def _check_unlisted_dicom_files(folder: Path, listed: set[str]) -> None:
    """GDCM leaves out files it cannot parse; a damaged slice would silently vanish from the series."""
    for entry in sorted(folder.iterdir()):
        if entry.name in listed or entry.name.startswith(".") or entry.name.upper() == "DICOMDIR" or not entry.is_file():
            continue
        with open(entry, "rb") as handle:
            magic = handle.read(132)[128:]
        looks_dicom = magic == b"DICM" or entry.suffix.lower() in (".dcm", ".dicom", ".ima")
        if looks_dicom and _dicom_header(entry) is None:
            raise VolumeReadError(f"{entry}: this DICOM file of the series folder {folder} cannot be parsed (truncated or damaged).")


def _check_slice_positions(folder: Path, files, reader, depth: int) -> None:
    """Refuse gaps and uneven steps between slice positions (0020|0032): ITK reads one spacing for all.

    ``reader``: the executed series reader, holding each slice's header (MetaDataDictionaryArrayUpdateOn).
    """
    if depth != len(files):
        return  # multi-frame files: ITK's geometry is all there is
    positions, normal = [], None
    for index in range(len(files)):
        if not reader.HasMetaDataKey(index, "0020|0032"):
            return  # no positions: ITK's geometry is all there is
        positions.append(_dicom_numbers(reader.GetMetaData(index, "0020|0032")))
        if normal is None and reader.HasMetaDataKey(index, "0020|0037"):
            cosines = _dicom_numbers(reader.GetMetaData(index, "0020|0037"))
            normal = np.cross(cosines[:3], cosines[3:6]) if cosines.size == 6 else None
    if len(positions) < 3 or any(p.size != 3 for p in positions):
        return
    positions = np.asarray(positions)
    if normal is None or not np.linalg.norm(normal) > 0:
        normal = positions[-1] - positions[0]
    steps = np.abs(np.diff(positions @ (normal / max(np.linalg.norm(normal), 1e-12))))
    typical = float(np.median(steps))
    uneven = np.flatnonzero(np.abs(steps - typical) > 0.01 * typical + 1e-3)
    if typical <= 1e-3 or uneven.size:
        at = int(uneven[0]) if uneven.size else int(np.argmin(steps))
        raise VolumeReadError(
            f"{folder}: the DICOM slices are unevenly spaced: {Path(files[at]).name} and {Path(files[at + 1]).name} "
            f"lie {steps[at]:.4g} mm apart, the other slices {typical:.4g} mm (a missing, damaged or extra slice).")


def _dicom_numbers(value: str) -> np.ndarray:
    try:
        return np.asarray([float(v) for v in value.strip().split("\\")], dtype=np.float64)
    except ValueError:
        return np.zeros(0)


def _check_complete(path: Path, suffix: str) -> None:
    """Detect truncated/corrupt files that ITK would silently read as partially filled or wrong volumes, and
    header errors ITK hides (zero voxel sizes set to 1) or reports vaguely, before ITK sees the file."""
    if path.stat().st_size == 0:
        raise VolumeReadError(f"{path}: the file is empty.")
    if suffix in (".nii", ".nii.gz"):
        _check_nifti(path)
    elif suffix in (".nrrd", ".seg.nrrd"):
        _check_nrrd(path)
    else:
        _check_metaimage(path)


def _header_numbers(path: Path, name: str, text: str | None, default: str = "0") -> list[float]:
    """The numbers of a header field (``default`` when absent), or a VolumeReadError naming the field."""
    try:
        return [float(v) for v in (text if text is not None else default).split()]
    except ValueError:
        raise VolumeReadError(f"{path}: the header field {name!r} must hold numbers, got {text!r}.") from None


def _header_int(path: Path, name: str, text: str | None, default: int = 0) -> int:
    numbers = _header_numbers(path, name, text, "")
    return int(numbers[0]) if numbers else default


def _check_spacing(path: Path, spacing) -> None:
    """Zero and non-finite voxel sizes; a negative one is left to ITK (NIfTI: it reads the magnitude)."""
    values = tuple(float(v) for v in spacing)
    if not all(np.isfinite(v) and v != 0 for v in values):
        raise VolumeReadError(f"{path}: spacing must be non-zero and finite, got {values}.")


# NIfTI

_MAGIC = {"gzip": b"\x1f\x8b", "bzip2": b"BZh"}  # first bytes of a compressed stream


def _check_nifti(path: Path) -> None:
    with open(path, "rb") as handle:
        compressed = path.name.lower().endswith(".gz") or handle.read(2) == _MAGIC["gzip"]
    # ITK silently accepts truncated/corrupt streams, so the whole stream is decompressed once here as well
    size = _inflated_size(path, 0, "gzip", str(path)) if compressed else path.stat().st_size
    header = _nifti_header(path, compressed)
    shape = header.get_data_shape()
    expected = int(header.get_data_offset()) + int(np.prod(shape)) * header.get_data_dtype().itemsize
    if size < expected:
        raise VolumeReadError(f"{path}: truncated: the header needs {expected} bytes of data, the file has {size}.")
    _check_spacing(path, header["pixdim"][1:1 + min(len(shape), 3)])
    if header.get_data_dtype().kind == "f":
        _check_nifti_finite(path, compressed, header)


def _check_nifti_finite(path: Path, compressed: bool, header, chunk: int = 1 << 24) -> None:
    """ITK's NIfTI reader turns NaN voxels into 0, so the stored floats are checked here, streamed in chunks."""
    dtype, count = header.get_data_dtype(), int(np.prod(header.get_data_shape()))
    step = chunk - chunk % dtype.itemsize
    bad = 0
    with (gzip.open if compressed else open)(path, "rb") as handle:
        handle.seek(int(header.get_data_offset()))
        while count > 0:
            data = np.frombuffer(handle.read(min(step, count * dtype.itemsize)), dtype=dtype)
            if data.size == 0:
                break
            bad += int(data.size - np.count_nonzero(np.isfinite(data)))
            count -= data.size
    if bad:
        raise VolumeReadError(f"{path}: the volume holds {bad} NaN or infinite voxels.")


def _nifti_header(path: Path, compressed: bool):
    """The header as stored: nibabel's checks would replace a zero voxel size by 1, as ITK does."""
    import nibabel

    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as handle, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a bad header gets one error below, not warnings first
            first = handle.read(4)
            handle.seek(0)
            if 540 in (int.from_bytes(first, "little"), int.from_bytes(first, "big")):
                return nibabel.Nifti2Header.from_fileobj(handle, check=False)
            return nibabel.Nifti1Header.from_fileobj(handle, check=False)
    except Exception as exc:  # nibabel raises many types for bad headers
        raise VolumeReadError(f"{path}: not a valid NIfTI header ({exc}).") from None


# NRRD and MetaImage: text header, then raw or compressed data in the file or a separate one

_NRRD_TYPE_SIZES = {"char": 1, "int8": 1, "short": 2, "int16": 2, "int": 4, "int32": 4, "longlong": 8, "int64": 8, "float": 4, "double": 8}
_MET_TYPE_SIZES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4, "MET_LONG": 4,
                   "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8}
_CODECS = {"raw": None, "gzip": "gzip", "gz": "gzip", "bzip2": "bzip2", "bz2": "bzip2"}
_MAX_LINE = 1 << 16


def _nrrd_type_size(name: str) -> int | None:
    """Bytes per value of an NRRD ``type`` ('unsigned short int', 'uint16_t', 'ushort', ... -> 2)."""
    words = [w for w in name.lower().removesuffix("_t").split() if w not in ("signed", "unsigned")]
    key = "".join(words[:-1] if len(words) > 1 and words[-1] == "int" else words)
    return _NRRD_TYPE_SIZES.get(key[1:] if key.startswith("u") and key[1:] in _NRRD_TYPE_SIZES else key)


def _nrrd_header(path: Path) -> tuple[dict[str, str], dict[str, str], int]:
    """(fields by lower-case name, key:=value pairs, offset of attached data)."""
    fields: dict[str, str] = {}
    pairs: dict[str, str] = {}
    with open(path, "rb") as handle:
        if not handle.readline(_MAX_LINE).startswith(b"NRRD000"):
            raise VolumeReadError(f"{path}: not an NRRD file (it does not start with 'NRRD000').")
        while line := (raw := handle.readline(_MAX_LINE)).decode("latin-1").rstrip("\r\n"):
            if line.startswith("#"):
                continue
            key, sep, value = line.partition(":=")
            if sep and ": " not in key:
                pairs[key] = value
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise VolumeReadError(f"{path}: not a valid NRRD header line: {line[:80]!r}.")
            fields[key.strip().lower()] = value.strip()
        offset = handle.tell()
    if not raw and "data file" not in fields and "datafile" not in fields:
        raise VolumeReadError(f"{path}: truncated: the NRRD header ends without its blank line and data.")
    return fields, pairs, offset


def _check_nrrd(path: Path) -> None:
    fields, pairs, offset = _nrrd_header(path)
    sizes = [int(n) for n in fields.get("sizes", "").split() if n.lstrip("-").isdigit()]
    directions = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
    if len(sizes) == 4 and directions[:1] == ["none"] and any(k.startswith("Segment") for k in pairs):
        raise VolumeReadError(
            f"{path}: a segmentation with {sizes[0]} overlapping segment layers, not one label map; read it with "
            "slicerio (read_segmentation, then extract_segments) or export a label map from Slicer.")
    vectors = [_nrrd_vector(v) for v in directions if v != "none"]
    spacings = [v for v in _header_numbers(path, "spacings", fields.get("spacings"), "") if not np.isnan(v)]
    _check_spacing(path, [np.linalg.norm(v) for v in vectors] + spacings)
    itemsize, codec = _nrrd_type_size(fields.get("type", "")), _CODECS.get(fields.get("encoding", "").lower(), "")
    if itemsize is None or codec == "" or not sizes or _header_int(path, "line skip", fields.get("line skip")):
        return  # text encodings and line skips: ITK's own checks
    data_file = fields.get("data file", fields.get("datafile"))
    if data_file is not None:
        if len(data_file.split()) > 1 or data_file.upper() == "LIST":
            return  # several data files
        offset = 0
    skip = _header_int(path, "byte skip", fields.get("byte skip"))
    _check_data(path, data_file, offset, skip, int(np.prod(sizes)) * itemsize, codec)


def _nrrd_vector(text: str) -> np.ndarray:
    try:
        return np.asarray([float(v) for v in text.strip("()").split(",")], dtype=np.float64)
    except ValueError:
        return np.full(3, np.nan)


def _metaimage_header(path: Path) -> tuple[dict[str, str], int]:
    """(fields by lower-case name, offset of the data that follows ``ElementDataFile``)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        while "elementdatafile" not in fields:
            line = handle.readline(_MAX_LINE).decode("latin-1").strip()
            key, sep, value = line.partition("=")
            if not sep:
                if not line:
                    what = "the header ends before its ElementDataFile line"
                elif _printable(line) != line:
                    what = "binary data where a header line belongs"
                else:
                    what = f"not a MetaImage header line: {line[:80]!r}"
                raise VolumeReadError(f"{path}: not a readable MetaImage file ({what}).")
            fields[key.strip().lower()] = value.strip()
        return fields, handle.tell()


def _check_metaimage(path: Path) -> None:
    fields, offset = _metaimage_header(path)
    name = "ElementSpacing" if "elementspacing" in fields else "ElementSize"
    _check_spacing(path, _header_numbers(path, name, fields.get(name.lower()), ""))
    dims = [int(n) for n in fields.get("dimsize", "").split() if n.isdigit()]
    itemsize = _MET_TYPE_SIZES.get(fields.get("elementtype", "").upper())
    data_file = fields["elementdatafile"]
    if itemsize is None or not dims or len(data_file.split()) > 1 or data_file.upper() == "LIST":
        return  # unknown types and file lists: ITK's own checks
    expected = int(np.prod(dims)) * itemsize * _header_int(path, "ElementNumberOfChannels", fields.get("elementnumberofchannels"), 1)
    header_size = _header_int(path, "HeaderSize", fields.get("headersize"))
    local = data_file.upper() == "LOCAL"
    if local and header_size:
        return  # a header size inside a one-file image: rare, left to ITK
    codec = "zlib" if fields.get("compresseddata", "").lower() == "true" else None
    start = offset if local else max(header_size, 0)
    _check_data(path, None if local else data_file, start, -1 if header_size == -1 else 0, expected, codec)


def _check_data(path: Path, data_file: str | None, offset: int, skip: int, expected: int, codec: str | None) -> None:
    """The data holds at least ``expected`` bytes (raw) or exactly ``skip + expected`` once decompressed.

    ``skip`` == -1: raw data are the file's last ``expected`` bytes.
    """
    data, where = path, ""
    if data_file is not None:
        data, where = path.parent / data_file, f" (data file {data_file})"
        if not data.is_file():
            raise VolumeReadError(f"{path}: the data file {data_file} named in its header does not exist.")
    if codec is None:
        available, needed = data.stat().st_size - offset, expected + max(skip, 0)
        if available < needed:
            raise VolumeReadError(f"{path}: truncated{where}: the header needs {needed} bytes of data, the file has {max(available, 0)}.")
    elif skip != -1:
        total = _inflated_size(data, offset, codec, f"{path}{where}")
        if total != expected + skip:
            raise VolumeReadError(f"{path}: the compressed data{where} holds {total} bytes, the header needs {expected + skip}.")


def _inflater(codec: str):
    import bz2

    return bz2.BZ2Decompressor() if codec == "bzip2" else zlib.decompressobj(47)  # 47: zlib or gzip framing


def _inflated_size(data: Path, offset: int, codec: str, name: str) -> int:
    """Decompressed byte count of the stream(s) from ``offset``, every checksum verified; small reads keep
    the memory bounded (deflate expands at most ~1000x)."""
    magic = _MAGIC.get(codec)
    inflater, total, pending = _inflater(codec), 0, b""
    try:
        with open(data, "rb") as handle:
            handle.seek(offset)
            while chunk := pending or handle.read(1 << 16):
                total += len(inflater.decompress(chunk))
                pending = b""
                if inflater.eof:  # concatenated gzip/bzip2 members continue; other trailing bytes are ignored
                    pending = inflater.unused_data or handle.read(1 << 16)
                    if magic is None or not pending.startswith(magic):
                        return total
                    inflater = _inflater(codec)
    except (zlib.error, OSError, EOFError, ValueError) as exc:
        raise VolumeReadError(f"{name}: the compressed data is truncated or corrupt ({exc}).") from None
    raise VolumeReadError(f"{name}: the compressed data is truncated or corrupt (the stream ends early).")


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
    if min(size) < 2:
        raise VolumeReadError(f"{path}: must be a 3D volume, it is a single 2D slice (size {size} along i, j, k).")
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


def _worth_compressing(array: np.ndarray, sample_bytes: int = 1 << 22) -> bool:
    """Whether gzip pays: noisy float maps shrink ~10 % at ~10x the write time; label-like maps shrink 100x."""
    flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    if flat.size <= sample_bytes:
        sample = flat.tobytes()
    else:  # spread the sample over the volume: four chunks
        step = flat.size // 4
        sample = b"".join(flat[i * step:i * step + sample_bytes // 4].tobytes() for i in range(4))
    return len(zlib.compress(sample, 1)) < 0.7 * len(sample)


def check_writable(path: str | os.PathLike, option: str = "--output") -> None:
    """InputError naming ``path`` when no file can be created where it goes (read-only, full, no permission).

    Called before the work, so a long segmentation does not fail at its very end. The check writes and
    syncs one byte in a temporary file in the nearest existing folder of ``path`` and removes it.
    """
    path = Path(path).absolute()
    folder = next(p for p in path.parents if p.is_dir())
    try:
        handle, tmp = tempfile.mkstemp(prefix=".ssl3d-write-check-", dir=folder)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc}).") from None
    try:
        os.write(handle, b"\0")
        os.fsync(handle)
    except OSError as exc:
        raise InputError(f"{option} {path}: cannot write in {folder} ({exc.strerror or exc}).") from None
    finally:
        os.close(handle)
        os.unlink(tmp)


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool | str = True) -> Path:
    """Write ``volume`` to a NIfTI, NRRD or MHA/MHD file, atomically (no partial file on failure).

    ``compress``: True, False, or "auto" (gzip only when a sample of the data compresses well).

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
    if compress == "auto":
        compress = _worth_compressing(volume.array)
    compress = bool(compress)
    if suffix == ".mhd":  # header + raw pair: an atomic rename of two files is not possible
        sitk.WriteImage(_volume_to_sitk(volume), str(path), compress)
        return path
    try:
        handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    except OSError as exc:  # the temporary file is ours: the user's path is what went wrong
        raise InputError(f"{path}: cannot write in {path.parent} ({exc.strerror or exc}).") from None
    os.close(handle)
    try:
        sitk.WriteImage(_volume_to_sitk(volume), tmp, compress)
        give_umask_mode(tmp)  # mkstemp makes 0600 files; outputs get the usual permissions
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # ITK reports a failed write (a full disk) as RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).strip().splitlines()[-1][:200]
        raise InputError(f"{path}: cannot write the volume ({reason}).") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
