"""VoCo sample generation: shapes, labels vs crop positions, base-crop cache, augmentation, determinism.

The official pipeline works on MONAI (C, x, y, z) arrays; ours on (C, z, y, x) model-space tensors. The
MONAI comparisons below transpose once and check that crops, resizes and augmentations agree.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ssl3d.errors import ConfigError, InputError
from ssl3d.pretext import voco_samples as vs

PLAIN = vs.SampleSpec(grid=3, base=8, crop=8, out=8, depth=8, flip_p=0.0, rot90_p=0.0, shift_p=0.0)
RESIZED = vs.SampleSpec(grid=3, base=12, crop=12, out=8, depth=12, flip_p=0.0, rot90_p=0.0, shift_p=0.0)


def _to_monai(t: torch.Tensor) -> torch.Tensor:
    """(C, z, y, x) model space <-> (C, x, y, z) as the official MONAI pipeline holds it (an involution)."""
    return t.permute(0, 3, 2, 1)


def _volume(spec: vs.SampleSpec, seed: int = 0) -> torch.Tensor:
    return torch.rand(spec.volume_shape, generator=torch.Generator().manual_seed(seed))


def test_official_shapes():
    # v2: (1, 64, 192, 192) -> 2 random + 9 base crops of 64³ per volume; v1 the same with 16 bases
    for spec, k in ((vs.V2_SAMPLES, 9), (vs.V1_SAMPLES, 16)):
        vol = torch.zeros(spec.volume_shape)
        batch = vs.VocoSampler(spec, torch.Generator().manual_seed(0))([vol, vol], keys=["a", "b"])
        assert batch.crops.shape == (2 * (2 + k), 1, 64, 64, 64)
        assert batch.random.shape == (4, 1, 64, 64, 64) and batch.base.shape == (2 * k, 1, 64, 64, 64)
        assert batch.labels.shape == (2, 2, k) and batch.labels.dtype == torch.float64
        lo, hi = spec.centre_range
        assert (lo, hi) == ((48, 336) if k == 16 else (32, 160))
        assert batch.draws.centres.min() >= lo and batch.draws.centres.max() < hi


def test_labels_match_crop_content():
    # each voxel holds the index of its base cell, so a crop's cell histogram is its label row
    d, size, g = PLAIN.depth, PLAIN.size, PLAIN.grid
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    cells = ((x // PLAIN.base) * g + (y // PLAIN.base)).float().expand(1, d, size, size)
    sampler = vs.VocoSampler(vs.SampleSpec(**{**PLAIN.__dict__, "n_random": 4}), torch.Generator().manual_seed(1))
    for _ in range(5):
        batch = sampler(torch.stack([cells, cells]))
        counts = F.one_hot(batch.random.long().flatten(1), g * g).sum(1).double() / batch.random[0].numel()
        np.testing.assert_allclose(counts.reshape(2, 4, g * g).numpy(), batch.labels.numpy(), rtol=0, atol=1e-12)


def test_centre_indexes_x_along_w_and_y_along_h():
    x_coord = torch.arange(PLAIN.size).float().expand(PLAIN.volume_shape)
    y_coord = x_coord.transpose(-1, -2)
    draws = vs.draw_samples(PLAIN, 1, torch.Generator().manual_seed(2))
    (cx, cy), half = draws.centres[0, 0], PLAIN.crop // 2
    bases = vs.base_crops(x_coord, PLAIN)
    assert vs.cut_samples(x_coord, bases, draws, PLAIN).crops[0].min() == cx - half
    assert vs.cut_samples(y_coord, vs.base_crops(y_coord, PLAIN), draws, PLAIN).crops[0].min() == cy - half
    assert bases[2 * 3 + 0].min() == 2 * PLAIN.base  # cell ix=2, iy=0 starts at x = 2*base


def test_base_crop_cache_equals_direct_crop_and_resize():
    spec, vol = RESIZED, _volume(RESIZED)
    cached = vs.BaseCropCache(spec).get("v", vol)  # (9, 1, 8, 8, 8)
    for ix, iy in itertools.product(range(3), range(3)):
        cut = vol[None, :, :, iy * 12 : (iy + 1) * 12, ix * 12 : (ix + 1) * 12]
        direct = F.interpolate(cut, size=(8, 8, 8), mode="trilinear", align_corners=True)[0]
        torch.testing.assert_close(cached[ix * 3 + iy], direct, rtol=0, atol=1e-6)


def test_crops_equal_the_official_monai_crop_and_resize():
    from monai.transforms import Resize, SpatialCrop

    spec, vol = RESIZED, _volume(RESIZED, 3)
    resize = Resize((8, 8, 8), mode="trilinear", align_corners=True)
    official = _to_monai(vol)
    batch = vs.VocoSampler(spec, torch.Generator().manual_seed(4))(vol)
    for ix, iy in itertools.product(range(3), range(3)):
        crop = SpatialCrop(roi_center=((ix + 0.5) * 12, (iy + 0.5) * 12, 6), roi_size=(12, 12, 12))(official)
        expected = _to_monai(torch.as_tensor(resize(crop)))
        torch.testing.assert_close(batch.base[ix * 3 + iy], expected, rtol=0, atol=1e-5)
    for s, (cx, cy) in enumerate(batch.draws.centres[0].tolist()):
        crop = SpatialCrop(roi_center=(cx, cy, 6), roi_size=(12, 12, 12))(official)
        torch.testing.assert_close(batch.random[s], _to_monai(torch.as_tensor(resize(crop))), rtol=0, atol=1e-5)


def test_augmentation_equals_monai_flips_then_rot90_then_shift():
    from monai.transforms import Flip, Rotate90

    crop = torch.rand(1, 1, 5, 6, 6)  # (N, C, z, y, x), y == x for the rotation
    for flips in itertools.product([False, True], repeat=3):
        for k in range(4):
            got = vs.apply_augment(crop.clone(), np.array([flips]), np.array([k]), np.array([0.05], np.float32))
            expected = _to_monai(crop[0])
            for axis, flip in enumerate(flips):  # spatial axes 0, 1, 2 = x, y, z
                expected = Flip(spatial_axis=axis)(expected) if flip else expected
            expected = Rotate90(k=k, spatial_axes=(0, 1))(expected) if k else expected
            torch.testing.assert_close(got[0], _to_monai(torch.as_tensor(expected)) + 0.05, rtol=0, atol=1e-7)


def test_augment_touches_only_drawn_crops_and_draw_rates():
    crops = torch.rand(3, 1, 4, 4, 4)
    out = vs.apply_augment(crops.clone(), np.zeros((3, 3), bool), np.array([0, 1, 0]), np.array([0.0, 0.0, 0.1], np.float32))
    assert torch.equal(out[0], crops[0]) and not torch.equal(out[1], crops[1])
    torch.testing.assert_close(out[2], crops[2] + 0.1)
    draws = vs.draw_samples(vs.V2_SAMPLES, 2000, torch.Generator().manual_seed(5))
    assert abs(draws.flips.mean() - 0.2) < 0.01
    assert abs((draws.rot_k > 0).mean() - 0.2) < 0.01 and set(np.unique(draws.rot_k)) == {0, 1, 2, 3}
    assert abs((draws.shift != 0).mean() - 0.5) < 0.01 and np.abs(draws.shift).max() <= 0.1


def test_determinism_with_a_seeded_generator():
    spec = vs.SampleSpec(grid=3, base=32, crop=32, out=16, depth=32)  # the CPU preset's sizes
    vols = torch.stack([_volume(spec, 6), _volume(spec, 7)])
    first = vs.VocoSampler(spec, torch.Generator().manual_seed(8))(vols, keys=[0, 1])
    again = vs.VocoSampler(spec, torch.Generator().manual_seed(8))(vols, keys=[0, 1])
    other = vs.VocoSampler(spec, torch.Generator().manual_seed(9))(vols, keys=[0, 1])
    assert first.crops.shape == (2 * 11, 1, 16, 16, 16)
    assert torch.equal(first.crops, again.crops) and torch.equal(first.labels, again.labels)
    assert not torch.equal(first.crops, other.crops)


def test_batch_layout_and_reused_output_buffer():
    vols = [_volume(PLAIN, 10), _volume(PLAIN, 11)]
    bases = [vs.base_crops(v, PLAIN) for v in vols]
    draws = vs.draw_samples(PLAIN, 2, torch.Generator().manual_seed(12))
    buffer = torch.empty(2 * 11, 1, 8, 8, 8)
    batch = vs.cut_samples(vols, bases, draws, PLAIN, out=buffer)
    assert batch.crops is buffer
    assert torch.equal(batch.base[9:], bases[1])  # volume 1's bases follow volume 0's, after all random crops
    cx, cy = draws.centres[1, 0]
    assert torch.equal(batch.random[2], vols[1][:, :, cy - 4 : cy + 4, cx - 4 : cx + 4])


def test_cache_keeps_the_most_recent_volumes():
    cache = vs.BaseCropCache(PLAIN, max_volumes=2)
    for key in ("a", "b", "a", "c"):
        cache.get(key, _volume(PLAIN))
    assert len(cache) == 2 and "b" not in cache._items


def test_ill_inputs():
    with pytest.raises(InputError, match="volumes must be"):
        vs.base_crops(torch.zeros(1, 8, 24, 20), PLAIN)
    with pytest.raises(InputError, match="floating-point"):
        vs.base_crops(torch.zeros(PLAIN.volume_shape, dtype=torch.int16), PLAIN)
    with pytest.raises(InputError, match="generator"):
        vs.draw_samples(PLAIN, 1, None)
    with pytest.raises(ConfigError, match="crop must be <="):
        vs.SampleSpec(grid=2, base=8, crop=20)
    with pytest.raises(ConfigError, match="flip_p"):
        vs.SampleSpec(flip_p=1.5)
