import numpy as np
import pytest
from scipy import ndimage

from ssl3d.data.phantoms import LABELS, PHANTOM_VERSION, make_phantom


def _centroid_ras(labels, value):
    idx = np.argwhere(labels.array == value).mean(axis=0)  # (k, j, i)
    return (labels.ijk_to_ras @ np.array([idx[2], idx[1], idx[0], 1.0]))[:3]


def test_deterministic_and_seed_dependent():
    a_img, a_lab = make_phantom(5, shape=(24, 32, 32))
    b_img, b_lab = make_phantom(5, shape=(24, 32, 32))
    c_img, _ = make_phantom(6, shape=(24, 32, 32))
    np.testing.assert_array_equal(a_img.array, b_img.array)
    np.testing.assert_array_equal(a_lab.array, b_lab.array)
    assert not np.array_equal(a_img.array, c_img.array)
    assert a_img.array.dtype == np.int16 and a_lab.array.dtype == np.uint8
    assert PHANTOM_VERSION == 1


def test_organ_order_is_stable_across_seeds():
    for seed in range(8):
        _, labels = make_phantom(seed, shape=(32, 48, 48), oblique=seed % 2 == 1)
        present = set(np.unique(labels.array)) - {0}
        assert present == set(LABELS), (seed, present)
        r = {v: _centroid_ras(labels, v) for v in LABELS}
        # in patient terms (RAS): liver right of spleen, right kidney right of left kidney,
        # spine posterior to aorta, kidneys posterior to the liver
        def lateral(v):
            return labels.direction.T @ r[v]  # coordinates along the tilted axes
        assert lateral(1)[0] < lateral(2)[0]  # i grows to the left: liver has the smaller i
        assert lateral(4)[0] < lateral(3)[0]
        assert lateral(5)[1] > lateral(6)[1]  # j grows posterior: spine behind aorta
        assert lateral(3)[1] > lateral(1)[1]


def _body_depth(image):
    """In-plane distance (voxels) of each voxel to the outside of the body, the body found from the image alone:
    the largest connected region above -500 HU with its holes filled."""
    regions, _ = ndimage.label(image.array > -500)
    body = ndimage.binary_fill_holes(regions == np.argmax(np.bincount(regions.ravel())[1:]) + 1)
    return np.stack([ndimage.distance_transform_edt(axial) for axial in body])


@pytest.mark.parametrize("seed", range(4))
def test_labels_inside_the_body(seed):
    image, labels = make_phantom(seed, shape=(32, 48, 48))
    depth = _body_depth(image)
    assert np.mean(depth == 0) > 0.2  # air around the body
    # every organ lies inside the body, at least 2 voxels (in-plane) from its skin: nothing sticks out
    for value in LABELS:
        assert np.any(labels.array == value) and depth[labels.array == value].min() >= 2, value


def test_oblique_changes_direction_only():
    image, _ = make_phantom(2, shape=(24, 32, 32))
    tilted, _ = make_phantom(2, shape=(24, 32, 32), oblique=True)
    assert not np.allclose(image.direction, tilted.direction)
    np.testing.assert_array_equal(image.array, tilted.array)
    np.testing.assert_allclose(np.abs(np.linalg.det(tilted.direction)), 1.0)


# ------------------------------------------------------------------------------ Sample Data phantom
import hashlib  # noqa: E402

from ssl3d.data import phantoms  # noqa: E402
from ssl3d.io import read_volume  # noqa: E402


def _digests(paths):
    """SHA-256 of each file without its NRRD header comments (pynrrd stamps the write time in one)."""
    digests = []
    for path in paths:
        header, data = path.read_bytes().split(b"\n\n", 1)
        fields = b"\n".join(line for line in header.split(b"\n") if not line.startswith(b"#"))
        digests.append(hashlib.sha256(fields + b"\n\n" + data).hexdigest())
    return digests


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom-sample")
    return folder, phantoms.write_phantom_sample(folder)


def test_phantom_sample_files_and_geometry(sample):
    folder, (image_path, seg_path) = sample
    assert (image_path.name, seg_path.name) == phantoms.SAMPLE_FILES == ("SSL3DPhantom-v1.nrrd", "SSL3DPhantom-v1.seg.nrrd")
    assert sorted(p.name for p in folder.iterdir()) == sorted(phantoms.SAMPLE_FILES)  # no temporaries left
    image, labels = read_volume(image_path), read_volume(seg_path)
    expected_image, expected_labels = make_phantom(phantoms.SAMPLE_SEED, phantoms.SAMPLE_SHAPE)
    # as documented: 128 x 128 x 64 (i, j, k), int16, ~1.6 x 1.6 x 2.5 mm, identity direction in LPS
    assert image.shape == labels.shape == phantoms.SAMPLE_SHAPE == (64, 128, 128)
    assert image.array.dtype == np.int16
    np.testing.assert_array_equal(image.array, expected_image.array)
    np.testing.assert_array_equal(labels.array, expected_labels.array)
    for volume in (image, labels):
        np.testing.assert_allclose(volume.ijk_to_ras, expected_image.ijk_to_ras, atol=1e-6)
        np.testing.assert_allclose(volume.direction, np.diag([-1.0, -1.0, 1.0]), atol=1e-9)  # LPS identity, in RAS
    assert np.all(np.abs(image.spacing / np.array([1.6, 1.6, 2.5]) - 1) <= 0.1 + 1e-9)


def test_phantom_sample_segments_are_named_and_coloured(sample):
    slicerio = pytest.importorskip("slicerio")
    _, (_, seg_path) = sample
    segmentation = slicerio.read_segmentation(str(seg_path))
    voxels = segmentation["voxels"]  # (i, j, k)
    segments = {s["labelValue"]: s for s in segmentation["segments"]}
    assert sorted(segments) == sorted(phantoms.LABELS)
    for value, segment in segments.items():
        assert segment["name"] == phantoms.LABELS[value] and segment["layer"] == 0
        np.testing.assert_allclose(segment["color"], np.array(phantoms.LABEL_COLORS[value]) / 255.0, atol=1e-5)
        inside = np.argwhere(voxels == value)
        assert list(segment["extent"]) == [int(n) for axis in range(3) for n in (inside[:, axis].min(), inside[:, axis].max())]


def test_phantom_sample_is_deterministic(sample, tmp_path):
    _, paths = sample
    again = phantoms.write_phantom_sample(tmp_path)
    assert _digests(again) == _digests(paths)


def test_phantom_sample_is_not_rewritten_when_present(sample, monkeypatch):
    folder, paths = sample
    before = [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths]

    def fail(*args, **kwargs):
        raise AssertionError("the phantom was generated again")

    monkeypatch.setattr(phantoms, "make_phantom", fail)
    assert phantoms.write_phantom_sample(folder) == paths
    assert [(p.stat().st_ino, p.stat().st_mtime_ns) for p in paths] == before


def test_phantom_sample_completes_a_partial_pair(sample, tmp_path):
    _, paths = sample
    image = phantoms.write_phantom_sample(tmp_path)[0]
    (tmp_path / phantoms.SAMPLE_FILES[1]).unlink()
    image.write_bytes(b"")  # an empty file counts as missing
    assert _digests(phantoms.write_phantom_sample(tmp_path)) == _digests(paths)


def test_phantom_sample_leaves_no_partial_files(tmp_path, monkeypatch):
    def broken(labels, path):
        path.write_bytes(b"NRRD0004\n")  # a half-written file, then the failure
        raise OSError("disk full")

    monkeypatch.setattr(phantoms, "_write_segmentation", broken)
    folder = tmp_path / "cache"
    with pytest.raises(OSError, match="disk full"):
        phantoms.write_phantom_sample(folder)
    assert list(folder.iterdir()) == []  # neither the finished image nor the temporaries
