import gzip
import shutil

import numpy as np
import pytest

from ssl3d.errors import InputError, VolumeReadError
from ssl3d.io import Volume, read_volume, write_volume

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


def test_seg_nrrd_is_read(tmp_path, phantom):
    _, labels = phantom
    write_volume(labels, tmp_path / "x.nrrd")
    shutil.copy(tmp_path / "x.nrrd", tmp_path / "x.seg.nrrd")
    back = read_volume(tmp_path / "x.seg.nrrd")
    np.testing.assert_array_equal(back.array, labels.array)


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


def test_nan_and_zero_spacing_are_refused(tmp_path):
    array = np.zeros((3, 4, 5), np.float32)
    array[1, 2, 3] = np.nan
    _write_sitk(tmp_path / "nan.nrrd", array)
    with pytest.raises(VolumeReadError, match="nan.nrrd: the volume holds 1 NaN"):
        read_volume(tmp_path / "nan.nrrd")
    header = "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nspace: left-posterior-superior\nspace directions: (0,0,0) (0,1,0) (0,0,1)\nencoding: raw\nendian: little\n\n"
    (tmp_path / "zero.nrrd").write_bytes(header.encode() + bytes(16))
    with pytest.raises(VolumeReadError, match="zero.nrrd"):
        read_volume(tmp_path / "zero.nrrd")


def test_write_refuses_unknown_format_and_leaves_nothing(tmp_path, phantom):
    with pytest.raises(InputError, match="cannot write"):
        write_volume(phantom[0], tmp_path / "v.png")
    with pytest.raises(InputError, match="does not exist"):
        write_volume(phantom[0], tmp_path / "missing" / "v.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_gzip_helper_counts_full_stream(tmp_path):
    from ssl3d.io import _gzip_size

    path = tmp_path / "a.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"x" * 12345)
    assert _gzip_size(path) == 12345
