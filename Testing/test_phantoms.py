import numpy as np

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


def test_labels_inside_the_body():
    image, labels = make_phantom(3, shape=(32, 48, 48))
    assert np.all(image.array[labels.array > 0] > -500)
    assert np.mean(image.array[labels.array == 0] < -900) > 0.2  # air around the body


def test_oblique_changes_direction_only():
    image, _ = make_phantom(2, shape=(24, 32, 32))
    tilted, _ = make_phantom(2, shape=(24, 32, 32), oblique=True)
    assert not np.allclose(image.direction, tilted.direction)
    np.testing.assert_array_equal(image.array, tilted.array)
    np.testing.assert_allclose(np.abs(np.linalg.det(tilted.direction)), 1.0)
