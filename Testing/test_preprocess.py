import numpy as np
import pytest
import torch

from ssl3d.data.preprocess import GridMapping, PreprocessConfig, apply_intensity, parse_intensity, preprocess
from ssl3d.errors import ConfigError, InputError

ORIENT_ONLY = PreprocessConfig(orientation="RAS", intensity="window:-175,250")
RESAMPLE = PreprocessConfig(orientation="RAS", spacing=(2.0, 1.7, 3.1), intensity="none", pad_to=(40, 40, 24), resize=(30, 36, 20))


@pytest.mark.parametrize("which", ["phantom", "oblique_phantom"])
def test_labels_round_trip_exactly(request, which):
    image, labels = request.getfixturevalue(which)
    x, y, mapping = preprocess(image, ORIENT_ONLY, labels)
    assert x.shape[:2] == (1, 1) and x.dtype == torch.float32 and y.dtype == torch.uint8
    back = mapping.to_input_grid(y[0, 0])
    assert back.same_grid(labels)
    np.testing.assert_array_equal(back.array, labels.array)


def test_model_space_runs_along_s_a_r(phantom):
    image, _ = phantom
    _, mapping = preprocess(image, ORIENT_ONLY)
    axes = mapping.model_affine[:3, :3]  # columns: model x, y, z in RAS
    assert np.argmax(np.abs(axes[:, 0])) == 0 and axes[0, 0] > 0  # x towards R
    assert np.argmax(np.abs(axes[:, 1])) == 1 and axes[1, 1] > 0  # y towards A
    assert np.argmax(np.abs(axes[:, 2])) == 2 and axes[2, 2] > 0  # z towards S


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_mapping_is_exact_through_resample_pad_and_resize(oblique_phantom, axis):
    """Trilinear interpolation reproduces linear fields, so the model value must equal the mapped index."""
    image, _ = oblique_phantom
    field = np.indices(image.shape)[2 - axis].astype(np.float32)  # input index i, j or k
    x, mapping = preprocess(image.like(field), RESAMPLE)
    zz, yy, xx = np.indices(x.shape[2:])
    ijk = np.stack([xx, yy, zz, np.ones_like(xx)], -1) @ mapping.model_to_input.T
    inside = np.all((ijk[..., :3] > 1) & (ijk[..., :3] < np.array(image.shape[::-1]) - 2), -1)
    np.testing.assert_allclose(x[0, 0].numpy()[inside], ijk[..., axis][inside], atol=1e-3)
    back = mapping.to_input_grid(x[0, 0], label=False)
    assert back.same_grid(image)
    core = (slice(3, -3),) * 3
    np.testing.assert_allclose(back.array[core], field[core], atol=1e-3)


def test_real_ct_round_trip(lung1):
    image, labels = lung1
    config = PreprocessConfig(orientation="RAS", spacing=(1.5, 1.5, 5.0), intensity="window:-1000,500")
    x, y, mapping = preprocess(image, config, labels)
    back = mapping.to_input_grid(y[0, 0])
    assert back.same_grid(image) and back.array.dtype == np.uint8
    dice = 2 * np.sum((back.array > 0) & (labels.array > 0)) / (np.sum(back.array > 0) + np.sum(labels.array > 0))
    assert dice > 0.9  # nearest resampling at 1.5 mm and back


def test_foreground_crop_and_channel_maps(phantom):
    image, labels = phantom
    config = PreprocessConfig(orientation="RAS", intensity="window:-175,250", foreground_threshold=0.3)
    x, y, mapping = preprocess(image, config, labels)
    assert x.shape[2:] != image.shape  # cropped
    maps = mapping.to_input_grid(torch.stack([y[0, 0] == 1, y[0, 0] == 5]).float(), label=False, fill=0.0)
    assert len(maps) == 2 and all(m.same_grid(image) for m in maps)
    np.testing.assert_array_equal(maps[0].array > 0.5, labels.array == 1)


def test_intensity_specs():
    a = np.array([-2000.0, -175.0, 37.5, 250.0, 3000.0])
    np.testing.assert_allclose(apply_intensity(a, "window:-175,250"), [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(apply_intensity(a, "window:-1000,1000,-1,1")[[0, 4]], [-1, 1])
    z = apply_intensity(a, "zscore")
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-5
    assert apply_intensity(a, "percentile:0,100").max() == 1.0
    for bad in ("window:5,1", "window:a,b", "gamma", "percentile:90,10"):
        with pytest.raises(ConfigError, match="intensity"):
            parse_intensity(bad)


def _small_volume(values: np.ndarray):
    from ssl3d.io import Volume

    return Volume(values, np.diag([1.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize("mode", ["minimum", "zero", "reflect"])
def test_pad_modes(mode):
    """pad_to fills as MONAI SpatialPad (0), numpy's reflect (PyMIC's LUNA preprocessing) or the minimum."""
    array = np.random.default_rng(0).uniform(0.2, 0.9, (4, 5, 6)).astype(np.float32)  # (k, j, i); minimum > 0
    config = PreprocessConfig(orientation=None, intensity="none", pad_to=(10, 9, 8), pad_mode=mode)
    x, mapping = preprocess(_small_volume(array), config)
    assert x.shape[2:] == (8, 9, 10)
    data = x[0, 0].numpy()  # (z, y, x) = (k, j, i)
    widths = [(2, 2), (2, 2), (2, 2)]
    if mode == "reflect":
        np.testing.assert_array_equal(data, np.pad(array, widths, mode="reflect"))
    else:
        fill = 0.0 if mode == "zero" else float(array.min())
        np.testing.assert_array_equal(data, np.pad(array, widths, constant_values=fill))
    back = mapping.to_input_grid(x[0], label=False)[0]
    np.testing.assert_array_equal(back.array, array)  # the pad is cut off again, whatever fills it


def test_load_dtype_int16_truncates_as_monai_loadimage():
    """VoCo v1 reads images with LoadImaged(dtype=np.int16): numpy's cast, fractions toward zero."""
    array = np.array([-100.7, -0.5, 0.5, 37.9, 249.99, 250.0] * 4, np.float32).reshape(2, 3, 4)
    config = PreprocessConfig(orientation=None, intensity="none")
    as_read = preprocess(_small_volume(array), config)[0][0, 0].numpy()
    truncated = preprocess(_small_volume(array), PreprocessConfig(orientation=None, intensity="none", load_dtype="int16"))[0]
    np.testing.assert_array_equal(as_read, array)
    np.testing.assert_array_equal(truncated[0, 0].numpy(), array.astype(np.int16).astype(np.float32))
    assert float(truncated.min()) == -100.0 and truncated.dtype == torch.float32


def test_errors(phantom):
    image, labels = phantom
    with pytest.raises(InputError, match="no foreground"):
        preprocess(image.like(np.full(image.shape, -1000, np.int16)), PreprocessConfig(foreground_threshold=0.3))
    other = labels.like(labels.array[:, :, :].copy())
    shifted = type(other)(other.array, other.ijk_to_ras + np.diag([0, 0, 0, 0]) + np.eye(4) * 0)
    shifted.ijk_to_ras[0, 3] += 5
    with pytest.raises(InputError, match="does not match the image grid"):
        preprocess(image, ORIENT_ONLY, shifted)
    with pytest.raises(ConfigError, match="pad_mode must be one of minimum, zero, reflect"):
        preprocess(image, PreprocessConfig(pad_to=(8, 8, 8), pad_mode="edge"))
    with pytest.raises(ConfigError, match="load_dtype must be null or int16"):
        preprocess(image, PreprocessConfig(load_dtype="uint8"))
    _, mapping = preprocess(image, ORIENT_ONLY)
    with pytest.raises(InputError, match="model shape"):
        mapping.to_input_grid(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("spacing", [(500.0, 500.0, 1000.0), (0.001, 0.001, 0.005)])
def test_implausible_spacing_is_refused_before_resampling(spacing, monkeypatch):
    import monai.transforms

    from ssl3d.io import Volume

    volume = Volume.from_geometry(np.zeros((48, 64, 64), np.int16), spacing=spacing)
    monkeypatch.setattr(monai.transforms, "Spacing", None)  # the check must come before any resampling
    with pytest.raises(InputError, match=r"implausible spacing .* would give \(\d+, \d+, \d+\) voxels"):
        preprocess(volume, PreprocessConfig(orientation="RAS", spacing=(1.5, 1.5, 1.5)))


def test_plausible_spacings_pass_the_grid_bound():
    from ssl3d.data.preprocess import check_resampled_grid

    check_resampled_grid((512, 512, 48), (0.57, 0.57, 5.0), (1.5, 1.5, 1.5))  # lung1
    check_resampled_grid((64, 64, 64), (0.02, 0.02, 0.02), (1.5, 1.5, 1.5))  # factor 75: allowed
    with pytest.raises(InputError, match="GVoxels"):
        check_resampled_grid((512, 512, 600), (1.0, 1.0, 1.0), (0.1, 0.1, 0.1))  # 10x per axis, 157 GVoxels


def test_mapping_serialises(phantom):
    _, mapping = preprocess(phantom[0], RESAMPLE)
    again = GridMapping.from_dict(mapping.to_dict())
    np.testing.assert_allclose(again.model_affine, mapping.model_affine)
    assert again.model_shape == mapping.model_shape


@pytest.mark.parametrize("label", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_axis_aligned_paste_equals_the_generic_sampler(seed, label, monkeypatch):
    """The separable path (scaled, permuted, flipped grids) gives the generic 3D sampler's values."""
    import ssl3d.data.preprocess as pre

    rng = np.random.default_rng(seed)
    perm = rng.permutation(3)
    lin = np.zeros((3, 3))
    lin[perm, np.arange(3)] = rng.uniform(0.6, 2.5, 3) * rng.choice([-1, 1], 3)  # model axis b -> input axis perm[b]
    model_shape = tuple(int(v) for v in rng.integers(5, 12, 3))  # (D, H, W)
    input_shape = tuple(int(v) for v in rng.integers(8, 20, 3))  # (k, j, i)
    m = np.eye(4)
    m[:3, :3] = lin
    sizes = np.array(input_shape[::-1], dtype=float)  # (i, j, k)
    flipped = lin.sum(axis=1) < 0  # per input axis: the model grid runs backwards along it
    m[:3, 3] = np.where(flipped, rng.uniform(0.5, 1.2, 3) * sizes, rng.uniform(-0.3, 0.5, 3) * sizes)  # partly overlapping
    mapping = GridMapping(input_shape, np.diag([0.7, 0.8, 2.5, 1.0]), model_shape, m)
    pred = torch.from_numpy(rng.integers(0, 7, model_shape).astype(np.uint8)) if label else torch.rand(model_shape, dtype=torch.float32)
    fast = mapping.to_input_grid(pred, label=label, fill=9)
    monkeypatch.setattr(pre, "_separable_paste", lambda *args: None)
    generic = mapping.to_input_grid(pred, label=label, fill=9)
    assert (fast.array == 9).any() and (fast.array != 9).any()  # both inside and outside voxels are checked
    assert fast.array.dtype == generic.array.dtype
    np.testing.assert_allclose(fast.array, generic.array, rtol=0, atol=1e-5)
