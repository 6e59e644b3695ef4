import gzip
import re
import struct

import numpy as np
import pytest

from ssl3d.errors import InputError, VolumeReadError
from ssl3d.io import LPS_TO_RAS, Volume, read_volume, write_volume

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


def _oblique_volume(dtype=np.int16):
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    array = rng.integers(-1000, 1000, size=(7, 9, 11)).astype(dtype)
    return Volume.from_geometry(array, spacing=(0.7, 1.3, 2.9), origin=(-12.5, 30.25, 7.0), direction=q)


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_keeps_array_and_geometry(tmp_path, suffix):
    volume = _oblique_volume()
    back = read_volume(write_volume(volume, tmp_path / f"v{suffix}"))
    assert back.shape == volume.shape
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.ijk_to_ras, volume.ijk_to_ras, atol=1e-5)
    np.testing.assert_allclose(back.spacing, [0.7, 1.3, 2.9], atol=1e-6)


def test_auto_compression_skips_noise_and_compresses_label_maps(tmp_path):
    shape = (40, 64, 64)
    noise = Volume.from_geometry(np.random.default_rng(0).random(shape, dtype=np.float32), spacing=(1, 1, 1))
    labels = Volume.from_geometry(np.zeros(shape, np.uint8), spacing=(1, 1, 1))
    labels.array[10:20, 10:40, 5:30] = 3
    for name, volume in (("noise", noise), ("labels", labels)):
        path = write_volume(volume, tmp_path / f"{name}.nrrd", compress="auto")
        np.testing.assert_array_equal(read_volume(path).array, volume.array)
    raw_bytes = noise.array.nbytes
    assert (tmp_path / "noise.nrrd").stat().st_size > raw_bytes  # written raw: header + every byte
    assert (tmp_path / "labels.nrrd").stat().st_size < labels.array.nbytes / 20


def test_geometry_agrees_with_nibabel_and_pynrrd(tmp_path):
    """Readers other than ITK see the same voxels at the same RAS positions (NIfTI: RAS affine; NRRD: LPS)."""
    import nibabel
    import nrrd

    volume = _oblique_volume()
    image = nibabel.load(str(write_volume(volume, tmp_path / "v.nii.gz")))
    np.testing.assert_allclose(image.affine, volume.ijk_to_ras, atol=1e-4)  # the sform is float32
    np.testing.assert_array_equal(np.asarray(image.dataobj), volume.array.transpose(2, 1, 0))
    data, header = nrrd.read(str(write_volume(volume, tmp_path / "v.nrrd")))
    assert header["space"] == "left-posterior-superior"
    flip = LPS_TO_RAS[:3, :3]
    np.testing.assert_allclose(flip @ np.asarray(header["space directions"], float).T, volume.ijk_to_ras[:3, :3], atol=1e-9)
    np.testing.assert_allclose(flip @ np.asarray(header["space origin"], float), volume.ijk_to_ras[:3, 3], atol=1e-9)
    np.testing.assert_array_equal(data, volume.array.transpose(2, 1, 0))


def test_lps_on_disk_ras_in_memory(tmp_path):
    import SimpleITK as sitk

    volume = Volume.from_geometry(np.zeros((2, 3, 4), np.int16), spacing=(1, 2, 3), origin=(10, 20, 30))
    write_volume(volume, tmp_path / "v.nrrd")
    image = sitk.ReadImage(str(tmp_path / "v.nrrd"))
    assert image.GetOrigin() == pytest.approx((-10, -20, 30))
    assert image.GetDirection() == pytest.approx((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert image.GetSize() == (4, 3, 2)


def test_volume_helpers():
    volume = _oblique_volume()
    np.testing.assert_allclose(volume.ras_to_ijk @ volume.ijk_to_ras, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-12)
    ras = volume.ijk_to_ras @ [3, 4, 5, 1]
    np.testing.assert_allclose(volume.ras_to_index(ras[:3]), [3, 4, 5], atol=1e-9)
    assert volume.like(np.ones(volume.shape)).same_grid(volume)
    with pytest.raises(InputError, match="does not match"):
        volume.like(np.ones((1, 2, 3)))
    with pytest.raises(InputError, match="3D"):
        Volume(np.zeros((2, 2)), np.eye(4))


def test_dicom_series_from_real_ct(tmp_path, lung1):
    import SimpleITK as sitk

    from ssl3d.io import _volume_to_sitk

    image, _ = lung1
    small = image.like(image.array)  # whole sample, 48 slices
    sitk_image = _volume_to_sitk(small)
    folder = tmp_path / "series"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = sitk_image.GetDirection()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for k in range(0, sitk_image.GetDepth(), 4):
        sl = sitk_image[:, :, k]
        position = sitk_image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {
            "0020|000e": series_uid,
            "0020|0032": "\\".join(f"{p:.6f}" for p in position),
            "0020|0037": "\\".join(f"{d:.6f}" for d in (direction[0], direction[3], direction[6], direction[1], direction[4], direction[7])),
            "0020|0013": str(k),
            "0008|0060": "CT",
            "0008|0018": f"{series_uid}.{k}",
        }
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k:03d}.dcm"))
        writer.Execute(sl)
    back = read_volume(folder)
    assert back.shape == (12, 512, 512)
    np.testing.assert_array_equal(back.array, image.array[::4])
    np.testing.assert_allclose(back.origin, image.origin, atol=1e-3)
    np.testing.assert_allclose(back.spacing, image.spacing * [1, 1, 4], atol=1e-3)
    np.testing.assert_allclose(back.direction, image.direction, atol=1e-6)


def _segmentation(masks, oblique=True):
    """A Slicer segmentation (slicerio) of ``masks`` (i, j, k), each a segment; overlapping ones go to new layers."""
    slicerio = pytest.importorskip("slicerio")
    ijk_to_lps = _oblique_volume().ijk_to_ras if oblique else np.eye(4)
    segmentation = slicerio.create_segmentation(masks[0].shape, LPS_TO_RAS @ ijk_to_lps)
    for n, mask in enumerate(masks):
        slicerio.add_segment(segmentation, mask, {"name": f"organ {n}"})
    return slicerio, segmentation


def _boxes(overlap):
    a, b = np.zeros((2, 11, 9, 7), bool)  # (segment, i, j, k)
    a[1:5, 2:6, 1:4] = True
    b[(4 if overlap else 6):9, 3:8, 2:6] = True
    return [a, b]


def test_single_layer_seg_nrrd_is_read_as_its_label_map(tmp_path):
    slicerio, segmentation = _segmentation(_boxes(overlap=False))
    assert segmentation["voxels"].ndim == 3 and [s["labelValue"] for s in segmentation["segments"]] == [1, 2]
    slicerio.write_segmentation(str(tmp_path / "x.seg.nrrd"), segmentation)
    assert b"Segment1_LabelValue:=2" in (tmp_path / "x.seg.nrrd").read_bytes()[:4096]
    back = read_volume(tmp_path / "x.seg.nrrd")
    np.testing.assert_array_equal(back.array, segmentation["voxels"].transpose(2, 1, 0))
    np.testing.assert_allclose(back.ijk_to_ras, LPS_TO_RAS @ segmentation["ijkToLPS"], atol=1e-5)


def test_multi_layer_seg_nrrd_is_refused_with_advice(tmp_path):
    slicerio, segmentation = _segmentation(_boxes(overlap=True))
    assert segmentation["voxels"].shape == (2, 11, 9, 7)  # two layers: the segments overlap
    slicerio.write_segmentation(str(tmp_path / "x.seg.nrrd"), segmentation)
    with pytest.raises(VolumeReadError, match=r"x\.seg\.nrrd: .*2 overlapping segment layers.*slicerio.*label map"):
        read_volume(tmp_path / "x.seg.nrrd")


def test_missing_file_names_it(tmp_path):
    with pytest.raises(VolumeReadError, match="nope.nii.gz: no such file"):
        read_volume(tmp_path / "nope.nii.gz")


def test_truncated_gzip_is_detected(tmp_path, phantom):
    path = write_volume(phantom[0], tmp_path / "v.nii.gz")
    data = path.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(VolumeReadError, match="cut.nii.gz: .*truncated or corrupt"):
        read_volume(bad)


def test_truncated_uncompressed_nifti_is_detected(tmp_path, phantom):
    path = write_volume(phantom[0], tmp_path / "v.nii")
    bad = tmp_path / "cut.nii"
    bad.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(VolumeReadError, match="cut.nii: truncated"):
        read_volume(bad)


def test_corrupt_gzip_payload_is_detected(tmp_path, phantom):
    path = write_volume(phantom[0], tmp_path / "v.nii.gz")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "flip.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(VolumeReadError, match="flip.nii.gz"):
        read_volume(bad)


def test_garbage_and_empty_files(tmp_path):
    (tmp_path / "g.nrrd").write_bytes(b"not a volume at all")
    with pytest.raises(VolumeReadError, match="g.nrrd"):
        read_volume(tmp_path / "g.nrrd")
    (tmp_path / "e.nii.gz").write_bytes(b"")
    with pytest.raises(VolumeReadError, match="e.nii.gz: the file is empty"):
        read_volume(tmp_path / "e.nii.gz")
    (tmp_path / "x.png").write_bytes(b"png")
    with pytest.raises(VolumeReadError, match="unknown volume format"):
        read_volume(tmp_path / "x.png")
    empty = tmp_path / "emptydir"
    empty.mkdir()
    with pytest.raises(VolumeReadError, match="DICOM series"):
        read_volume(empty)


def _write_sitk(path, array, spacing=None, vector=False):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def test_2d_4d_vector_inputs_are_refused(tmp_path):
    _write_sitk(tmp_path / "flat.nrrd", np.zeros((5, 6), np.int16))
    with pytest.raises(VolumeReadError, match="flat.nrrd: must be a 3D volume"):
        read_volume(tmp_path / "flat.nrrd")
    _write_sitk(tmp_path / "four.nii.gz", np.zeros((2, 3, 4, 5), np.int16))
    with pytest.raises(VolumeReadError, match="four.nii.gz: must be a 3D volume"):
        read_volume(tmp_path / "four.nii.gz")
    _write_sitk(tmp_path / "rgb.nrrd", np.zeros((3, 4, 5, 3), np.uint8), vector=True)
    with pytest.raises(VolumeReadError, match="rgb.nrrd: must be a scalar volume"):
        read_volume(tmp_path / "rgb.nrrd")


def test_nan_is_refused(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    _write_sitk(tmp_path / "nan.nrrd", array)
    with pytest.raises(VolumeReadError, match="nan.nrrd: the volume holds 1 NaN"):
        read_volume(tmp_path / "nan.nrrd")


@pytest.mark.parametrize("name", ["nan.nii", "nan.nii.gz"])
def test_nan_in_nifti_is_refused(tmp_path, name):
    import nibabel

    array = np.ones((4, 5, 6), np.float32)
    array[1, 2, 3], array[0, 0, 0] = np.nan, -np.inf  # ITK's NIfTI reader would give 0 for the NaN
    nibabel.save(nibabel.Nifti1Image(array, np.eye(4)), tmp_path / name)
    with pytest.raises(VolumeReadError, match=f"{name}: the volume holds 2 NaN or infinite voxels"):
        read_volume(tmp_path / name)
    nibabel.save(nibabel.Nifti1Image(np.full((4, 5, 6), 2.0, ">f8"), np.eye(4)), tmp_path / name)
    assert read_volume(tmp_path / name).array.mean() == 2.0


def _zero_spacing(tmp_path, suffix):
    """A file whose first voxel size is 0 (ITK and nibabel would silently read it as 1 mm)."""
    if suffix == ".nrrd":
        header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nspace: left-posterior-superior\n"
                  "space directions: (0,0,0) (0,1,0) (0,0,1)\nencoding: raw\nendian: little\n\n")
        data = header.encode() + bytes(16)
    else:
        plain = ".mha" if suffix == ".mha" else ".nii"
        data = write_volume(_oblique_volume(), tmp_path / f"v{plain}", compress=False).read_bytes()
        if suffix == ".mha":
            start = data.index(b"ElementSpacing = ")
            end = data.index(b"\n", start)
            data = data[:start] + b"ElementSpacing = 0 1.3 2.9" + data[end:]
        else:  # NIfTI-1: pixdim[1] is the float32 at byte 80
            data = data[:80] + struct.pack("<f", 0.0) + data[84:]
            data = gzip.compress(data) if suffix == ".nii.gz" else data
    (tmp_path / f"zero{suffix}").write_bytes(data)
    return tmp_path / f"zero{suffix}"


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".mha", ".nrrd"])
def test_zero_spacing_is_refused(tmp_path, suffix):
    path = _zero_spacing(tmp_path, suffix)
    with pytest.raises(VolumeReadError, match=rf"zero{re.escape(suffix)}: spacing must be non-zero and finite, got \(0\.0, "):
        read_volume(path)


def test_negative_nifti_pixdim_is_read_with_positive_spacing(tmp_path):
    """ITK reads a negative pixdim beside a valid sform as its magnitude; only zero voxel sizes are refused."""
    volume = Volume.from_geometry(np.arange(60, dtype=np.int16).reshape(3, 4, 5), spacing=(2, 2, 2))
    data = write_volume(volume, tmp_path / "v.nii", compress=False).read_bytes()
    (tmp_path / "neg.nii").write_bytes(data[:80] + struct.pack("<f", -2.0) + data[84:])  # pixdim[1]
    back = read_volume(tmp_path / "neg.nii")
    np.testing.assert_allclose(back.spacing, [2, 2, 2], atol=1e-6)
    np.testing.assert_array_equal(back.array, volume.array)


@pytest.mark.parametrize("shape", [(1, 6, 7), (5, 1, 7), (5, 6, 1)])
def test_single_slice_is_refused_as_2d(tmp_path, shape):
    path = write_volume(Volume(np.zeros(shape, np.int16), np.eye(4)), tmp_path / "slice.nrrd")
    with pytest.raises(VolumeReadError, match=r"slice.nrrd: must be a 3D volume, it is a single 2D slice"):
        read_volume(path)


# ------------------------------------------------------------------ truncated and corrupt files, per format
# (suffix, compressed, damage); a flipped byte is only detectable in compressed data (their checksums).
DAMAGE = [
    (".nrrd", False, "cut"), (".nrrd", True, "cut"), (".nrrd", True, "flip"),
    (".mha", False, "cut"), (".mha", True, "cut"), (".mha", True, "flip"),
    (".mhd", False, "cut"), (".mhd", True, "cut"), (".mhd", True, "flip"),
]


@pytest.mark.parametrize(("suffix", "compressed", "damage"), DAMAGE)
def test_truncated_or_corrupt_files_are_refused_quietly(tmp_path, capfd, suffix, compressed, damage):
    volume = _oblique_volume()  # random voxels: the compressed data are nearly as long as the raw data
    header = write_volume(volume, tmp_path / f"v{suffix}", compress=compressed)
    data_file = header.with_suffix(".zraw" if compressed else ".raw") if suffix == ".mhd" else header
    data = bytearray(data_file.read_bytes())
    if damage == "cut":
        del data[-300:]
    else:
        data[len(data) - len(data) // 4] ^= 0xFF
    data_file.write_bytes(bytes(data))
    capfd.readouterr()
    expected = "truncated.*: the header needs" if not compressed else "the compressed data is truncated or corrupt"
    with pytest.raises(VolumeReadError, match=rf"v{re.escape(suffix)}.*: {expected}"):
        read_volume(header)
    assert capfd.readouterr().err == ""  # checked before ITK, which would print its own complaints


def test_compressed_round_trip_passes_the_checks(tmp_path):
    volume = _oblique_volume()
    for suffix in (".nrrd", ".mha", ".mhd"):
        for compressed in (False, True):
            back = read_volume(write_volume(volume, tmp_path / f"v{int(compressed)}{suffix}", compress=compressed))
            np.testing.assert_array_equal(back.array, volume.array)


# ------------------------------------------------------------------------------------ DICOM series
def _write_series(folder, slices=6, spacing=2.5):
    """A tiny CT series written with SimpleITK, one file per slice, 001.dcm ... (positions 0020|0032 set)."""
    import SimpleITK as sitk

    array = np.arange(slices * 8 * 8, dtype=np.int16).reshape(slices, 8, 8) - 100
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.8, spacing))
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = "1.2.826.0.1.3680043.2.1125.9"
    for k in range(slices):
        piece = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {"0020|000e": uid, "0020|0032": "\\".join(f"{p:.6f}" for p in position), "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0013": str(k + 1), "0008|0060": "CT", "0008|0018": f"{uid}.{k + 1}"}
        for tag, value in tags.items():
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{k + 1:03d}.dcm"))
        writer.Execute(piece)
    return array


def test_dicom_series_is_read_with_its_slice_spacing(tmp_path):
    array = _write_series(tmp_path / "series")
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.spacing, [0.8, 0.8, 2.5], atol=1e-6)


def test_dicom_series_with_a_damaged_slice_is_refused(tmp_path):
    _write_series(tmp_path / "series")
    damaged = tmp_path / "series" / "003.dcm"
    damaged.write_bytes(damaged.read_bytes()[:-200])  # GDCM would drop it from the series, silently
    with pytest.raises(VolumeReadError, match=r"003\.dcm: .*cannot be parsed"):
        read_volume(tmp_path / "series")


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, capfd):
    _write_series(tmp_path / "series")
    (tmp_path / "series" / "004.dcm").unlink()
    capfd.readouterr()
    with pytest.raises(VolumeReadError, match=r"series: the DICOM slices are unevenly spaced: 003\.dcm and 005\.dcm lie 5 mm apart"):
        read_volume(tmp_path / "series")
    assert capfd.readouterr().err == ""  # no ITK warning on top of the error


def test_write_refuses_unknown_format_and_leaves_nothing(tmp_path, phantom):
    with pytest.raises(InputError, match="cannot write"):
        write_volume(phantom[0], tmp_path / "v.png")
    with pytest.raises(InputError, match="does not exist"):
        write_volume(phantom[0], tmp_path / "missing" / "v.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_inflate_helper_counts_every_gzip_member(tmp_path):
    from ssl3d.io import _inflated_size

    path = tmp_path / "a.gz"
    path.write_bytes(gzip.compress(b"x" * 12345) + gzip.compress(b"y" * 55))  # two members, as gzip -c a b > a.gz
    assert _inflated_size(path, 0, "gzip", str(path)) == 12400


def test_a_singular_direction_matrix_is_said_in_words(tmp_path):
    """ITK's message ends with a matrix row ('(0 0 1)'): the reason is named instead."""
    good = write_volume(Volume.from_geometry(np.zeros((4, 5, 6), np.int16)), tmp_path / "ok.nrrd")
    text = good.read_bytes()
    start = text.index(b"space directions")
    end = text.index(b"\n", start)
    (tmp_path / "parallel.nrrd").write_bytes(text[:start] + b"space directions: (1,0,0) (1,0,0) (0,0,1)" + text[end:])
    with pytest.raises(VolumeReadError, match=r"parallel\.nrrd: cannot be read as a volume \(the direction matrix in its "
                                              r"header is singular \(two axes parallel, or one of length 0\), so it has no orientation\)\.$"):
        read_volume(tmp_path / "parallel.nrrd")


def test_metaimage_errors_print_no_binary_bytes(tmp_path):
    (tmp_path / "junk.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n\x00\x01\xff\xfeJunk\x89PNG\nDimSize = 6 5 4\n"
                                        b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + b"\x00" * 240)
    with pytest.raises(VolumeReadError) as caught:
        read_volume(tmp_path / "junk.mha")
    message = str(caught.value)
    assert message.endswith("junk.mha: not a readable MetaImage file (binary data where a header line belongs).")
    assert message.isprintable()


def test_itk_reasons_keep_the_message_and_drop_paths_addresses_and_bytes():
    from ssl3d.io import _itk_reason

    text = ("Exception thrown in SimpleITK ImageFileReader_Execute: /tmp/build/itkImageFileReader.hxx:135:\n"
            "ITK ERROR: ImageFileReader(0x55efd53e4e70): Could not create IO object for reading file x.mha\n  The file \x00\x9f doesn't exist")
    assert _itk_reason(text) == "Could not create IO object for reading file x.mha The file ?? doesn't exist"
