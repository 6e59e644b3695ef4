"""Volume Fusion: fusion contracts, official statistics, crop/augment semantics and the loss (CPU)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from ssl3d.errors import ConfigError, InputError
from ssl3d.pretext import vf_loss
from ssl3d.pretext import volume_fusion as vf

STATS = json.loads((Path(__file__).parents[1] / "data" / "fixtures" / "vf_stats.json").read_text())
CROP = (64, 128, 128)


pytestmark = pytest.mark.usefixtures("one_thread")  # Testing/conftest.py


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def fractions(label: torch.Tensor, classes: int = 5) -> torch.Tensor:
    """(N, classes) voxel fraction of each class per sample."""
    flat = label.reshape(label.shape[0], -1).long()
    return torch.stack([torch.bincount(row, minlength=classes).double() / row.numel() for row in flat])


# ----------------------------------------------------------------------------- v1
def test_fuse_v1_alpha_relation_and_roll():
    x = torch.randn(3, 2, 16, 24, 24, generator=gen(0))
    fused, label = vf.fuse_v1(x, gen(1), size_min=(2, 2, 2), size_max=(8, 12, 12))
    assert fused.shape == x.shape and fused.dtype == x.dtype
    assert label.shape == (3, 1, 16, 24, 24) and label.dtype == torch.uint8
    assert set(label.unique().tolist()) <= {0, 1, 2, 3, 4} and int(label.max()) > 0
    alpha = label.double() / 4
    expected = alpha * torch.roll(x, 1, 0).double() + (1 - alpha) * x.double()
    torch.testing.assert_close(fused.double(), expected, rtol=0, atol=1e-6)
    zero, one = (label == 0).expand_as(x), (label == 4).expand_as(x)
    assert torch.equal(fused[zero], x[zero]) and torch.equal(fused[one], torch.roll(x, 1, 0)[one])


def paint_plain(boxes: vf.Boxes, spatial: tuple[int, int, int]) -> np.ndarray:
    out = np.zeros((boxes.counts.shape[0], 1, *spatial), np.uint8)
    for n, count in enumerate(boxes.counts.tolist()):
        for b in range(count):
            (d0, h0, w0), (d1, h1, w1) = boxes.starts[n, b].tolist(), boxes.stops[n, b].tolist()
            out[n, 0, d0:d1, h0:h1, w0:w1] = int(boxes.classes[n, b])
    return out


def test_fuse_v1_label_is_the_drawn_boxes_painted_in_order():
    x = torch.rand(4, 1, 32, 48, 48)
    boxes = vf.draw_boxes_v1(4, (32, 48, 48), gen(5), size_max=(20, 30, 30))
    _, label = vf.fuse_v1(x, gen(5), size_max=(20, 30, 30))
    np.testing.assert_array_equal(label.numpy(), paint_plain(boxes, (32, 48, 48)))


def test_draw_boxes_v1_bounds():
    spatial = CROP
    b = vf.draw_boxes_v1(300, spatial, gen(2))
    assert b.counts.min() >= 10 and b.counts.max() <= 40 and {10, 40} <= set(b.counts.tolist())
    used = torch.arange(40) < b.counts[:, None]
    assert bool((b.classes[used] >= 1).all() and (b.classes[used] <= 4).all() and (b.classes[~used] == 0).all())
    size = b.stops - b.starts
    shape = torch.tensor(spatial)
    assert bool((b.starts >= 0).all() and (b.stops <= shape).all() and (size >= 1).all())
    interior = ((b.starts > 0) & (b.stops < shape)).all(-1) & used
    inner = size[interior]
    assert bool((inner >= torch.tensor([8, 8, 8])).all() and (inner <= torch.tensor([40, 80, 80])).all())
    assert inner.min(0).values.tolist() == [8, 8, 8] and inner.max(0).values.tolist() == [40, 80, 80]


def test_fuse_v1_needs_two_samples():
    with pytest.raises(InputError, match=r"N >= 2.*N=1"):
        vf.fuse_v1(torch.rand(1, 1, 8, 8, 8))
    with pytest.raises(InputError, match="x must be a floating tensor"):
        vf.fuse_v1(torch.zeros(2, 1, 8, 8, 8, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="block_range"):
        vf.fuse_v1(torch.rand(2, 1, 8, 8, 8), block_range=(5, 2))
    with pytest.raises(InputError, match="size_min must be <= size_max"):
        vf.fuse_v1(torch.rand(2, 1, 8, 8, 8), size_min=(9, 8, 8), size_max=(8, 8, 8))


def test_v1_class_fractions_match_the_official_generator():
    g, fr, counts = gen(11), [], []
    for _ in range(8):  # 200 samples as 8 label batches of 25 (labels only: no fused images needed)
        boxes = vf.draw_boxes_v1(25, CROP, g)
        fr.append(fractions(vf.paint_boxes_v1(boxes, CROP)))
        counts.append(boxes.counts)
    mean = torch.cat(fr).mean(0)
    ref = STATS["v1"]["class_fraction"]["mean"]
    assert torch.allclose(mean, torch.tensor(ref, dtype=torch.float64), atol=0.02), (mean, ref)
    assert abs(torch.cat(counts).double().mean().item() - STATS["v1"]["boxes_per_sample_mean"]) < 2.5


# ----------------------------------------------------------------------------- v2
def test_fuse_v2_block_structure():
    spatial, g = (40, 64, 64), gen(3)
    blocks = vf.draw_blocks_v2(6, spatial, g)
    label = vf.paint_blocks_v2(blocks, spatial)
    for n in range(6):
        (bd, bh, bw), (gd, gh, gw) = blocks.sizes[n].tolist(), blocks.counts[n].tolist()
        off = blocks.offsets[n].tolist()
        assert 5 <= bd <= 20 and 8 <= bh <= 32 and 8 <= bw <= 32
        assert all(0 <= o <= s % b for o, s, b in zip(off, spatial, (bd, bh, bw)))
        assert (gd, gh, gw) == tuple(s // b for s, b in zip(spatial, (bd, bh, bw)))
        grid = label[n, 0, off[0]:off[0] + gd * bd, off[1]:off[1] + gh * bh, off[2]:off[2] + gw * bw]
        cells = grid.reshape(gd, bd, gh, bh, gw, bw).permute(0, 2, 4, 1, 3, 5).reshape(gd, gh, gw, -1)
        assert bool((cells == cells[..., :1]).all()), "label must be constant on each grid block"
        assert int((cells[..., 0] > 0).sum()) == int(gd * gh * gw * 0.7)
        assert int(label[n].sum()) == int(grid.long().sum()), "voxels outside the grid must be 0"
        assert torch.equal(cells[..., 0], blocks.classes[n, :gd, :gh, :gw])


def test_fuse_v2_alpha_relation_and_same_draws():
    fg, bg = torch.rand(2, 3, 1, 32, 48, 48, generator=gen(0))
    fused, label = vf.fuse_v2(fg, bg, gen(4))
    blocks = vf.draw_blocks_v2(3, (32, 48, 48), gen(4))
    assert torch.equal(label, vf.paint_blocks_v2(blocks, (32, 48, 48)))
    alpha = label.double() / 4
    torch.testing.assert_close(fused.double(), alpha * fg.double() + (1 - alpha) * bg.double(), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="same shape"):
        vf.fuse_v2(fg, bg[:, :, :8])
    with pytest.raises(ConfigError, match="foreground_ratio"):
        vf.fuse_v2(fg, bg, foreground_ratio=1.5)


def test_v2_class_fractions_match_the_official_generator():
    g, fr, sizes = gen(12), [], []
    for _ in range(4):
        blocks = vf.draw_blocks_v2(50, CROP, g)
        fr.append(fractions(vf.paint_blocks_v2(blocks, CROP)))
        sizes.append(blocks.sizes)
    mean = torch.cat(fr).mean(0)
    ref = STATS["v2"]["class_fraction"]["mean"]
    assert torch.allclose(mean, torch.tensor(ref, dtype=torch.float64), atol=0.02), (mean, ref)
    block_mean = torch.cat(sizes).double().mean(0)
    assert torch.allclose(block_mean, torch.tensor(STATS["v2"]["block_size_mean"], dtype=torch.float64), atol=2.0)


# ----------------------------------------------------------------------------- percentiles and intensity
@pytest.mark.parametrize("values", ["normal", "ties"])
def test_percentile_exact_equals_numpy(values):
    g = gen(7)
    x = torch.randn(3, 1, 20, 50, 60, generator=g)
    if values == "ties":
        x = (x * 3).round()
    q = torch.tensor([[0.0, 0.1, 1.7], [2.0, 50.0, 98.3], [99.9, 100.0, 98.0]], dtype=torch.float64)
    got = vf.percentile(x, q)
    for n in range(3):
        ref = np.percentile(x[n].numpy().astype(np.float64), q[n].numpy())
        np.testing.assert_allclose(got[n].numpy(), ref, rtol=1e-6, atol=1e-6)
    hist = vf.percentile(x, q, method="histogram")
    width = (x.amax((1, 2, 3, 4)) - x.amin((1, 2, 3, 4))).double() / 4096
    assert bool(((hist - got).abs() <= 2 * width[:, None] + 1e-9).all())
    with pytest.raises(ConfigError, match="percentile method"):
        vf.percentile(x, q, method="sorted")


def contrast_plain(x: np.ndarray, p0: float, p1: float) -> np.ndarray:
    vmin, vmax, v0, v1 = x.min(), x.max(), np.percentile(x, p0), np.percentile(x, p1)
    return np.where(x < v0, 0.1 * (x - vmin) / (v0 - vmin),
                    np.where(x <= v1, 0.1 + 0.8 * (x - v0) / (v1 - v0), 0.9 + 0.1 * (x - v1) / (vmax - v1)))


def test_adaptive_contrast_and_gamma_follow_the_documented_formulas():
    x = torch.randn(2, 1, 16, 32, 32, generator=gen(8)) * 300 + 40
    p0, p1 = torch.tensor([0.3, 1.9], dtype=torch.float64), torch.tensor([98.1, 99.8], dtype=torch.float64)
    y = vf.adaptive_contrast(x, p0, p1)
    for n in range(2):
        ref = contrast_plain(x[n].double().numpy(), float(p0[n]), float(p1[n]))
        np.testing.assert_allclose(y[n].double().numpy(), ref, atol=2e-6)
    assert float(y.min()) == 0.0 and abs(float(y.max()) - 1.0) < 1e-6
    gamma = torch.tensor([0.7, 1.4], dtype=torch.float64)
    z = vf.gamma_correction(x, gamma)
    for n in range(2):
        xn = x[n].double().numpy()
        lo, hi = xn.min(), xn.max()
        ref = ((xn - lo) / (hi - lo)) ** float(gamma[n]) * (hi - lo) + lo
        np.testing.assert_allclose(z[n].double().numpy(), ref, rtol=1e-5, atol=1e-3)
    with pytest.raises(InputError, match="p_low <= p_high"):
        vf.adaptive_contrast(x, p1, p0)
    const = torch.full((1, 1, 4, 4, 4), 3.0)
    assert torch.equal(vf.gamma_correction(const, torch.tensor([1.3])), const)


def test_normalize_hu():
    x = torch.tensor([-3000.0, -1000.0, -500.0, 0.0, 250.0, 1000.0, 4000.0])
    assert vf.normalize_hu(x).tolist() == [-1.0, -1.0, -0.5, 0.0, 0.25, 1.0, 1.0]


# ----------------------------------------------------------------------------- crops
def test_crop_v1_draws_and_cuts():
    x = torch.arange(2 * 10 * 12 * 14, dtype=torch.float32).reshape(2, 1, 10, 12, 14)
    crop = vf.draw_crop_v1(2, (10, 12, 14), gen(0), size=(4, 6, 8))
    out = vf.apply_crop_v1(x, crop)
    for n in range(2):
        (s0, s1, s2), flips = crop.starts[n].tolist(), crop.flips[n].tolist()
        ref = x[n, :, s0:s0 + 4, s1:s1 + 6, s2:s2 + 8]
        ref = ref.flip([1 + a for a in range(3) if flips[a]]) if any(flips) else ref
        assert torch.equal(out[n], ref)
    many = vf.draw_crop_v1(2000, (10, 12, 14), gen(1), size=(4, 6, 8))
    assert abs(many.flips.double().mean().item() - 0.5) < 0.03
    assert many.starts.min(0).values.tolist() == [0, 0, 0] and many.starts.max(0).values.tolist() == [6, 6, 6]
    with pytest.raises(InputError, match="smaller than the crop size"):
        vf.draw_crop_v1(1, (10, 12, 14), size=(64, 128, 128))


def test_draw_crop4vf_ranges():
    spatial, out = (80, 100, 300), (64, 128, 128)
    p = vf.draw_crop4vf(500, spatial, gen(9), out)
    lo = torch.tensor([int(o * 0.7) for o in out])
    hi = torch.minimum(torch.tensor([int(o * 1.5) for o in out]), torch.tensor(spatial))
    assert bool((p.sizes >= lo).all() and (p.sizes <= hi).all())
    assert bool((p.sizes[..., 1] == 100).any() and (p.sizes[..., 2] > 128).any())
    assert bool((p.starts >= 0).all() and (p.starts + p.sizes <= torch.tensor(spatial)).all())
    assert bool(p.p_low.min() >= 0.1 and p.p_low.max() <= 2.0 and p.p_high.min() >= 98 and p.p_high.max() <= 99.9)
    assert bool(p.gamma.min() >= 0.7 and p.gamma.max() <= 1.5)
    assert abs(p.invert.double().mean().item() - 0.25) < 0.06 and abs(p.flips.double().mean().item() - 0.5) < 0.03
    for mode, flips, intensity in ((0, False, False), (1, False, True), (2, True, False), (3, True, True)):
        q = vf.draw_crop4vf(50, (80, 140, 140), gen(mode), out, aug_mode=mode)
        assert bool(q.flips.any()) == flips and q.intensity == intensity
        if mode < 2:
            assert bool((q.sizes == torch.tensor(out)).all()), "aug_mode 0/1 use scale 1"
    with pytest.raises(ConfigError, match="aug_mode"):
        vf.draw_crop4vf(1, spatial, aug_mode=4)
    with pytest.raises(ConfigError, match="p_low_range must end below"):
        vf.draw_crop4vf(1, spatial, p_low_range=(1.0, 60.0), p_high_range=(50.0, 99.0))


def test_apply_crop4vf_geometry_is_scipy_zoom_order1_with_flips():
    vol = torch.rand(2, 1, 30, 40, 50, generator=gen(10))
    out = (16, 24, 20)
    p = vf.draw_crop4vf(2, vol.shape[2:], gen(11), out, aug_mode=2)
    fg, bg = vf.apply_crop4vf(vol, p)
    for n in range(2):
        for j, patch in enumerate((fg, bg)):
            (s0, s1, s2), (c0, c1, c2) = p.starts[n, j].tolist(), p.sizes[n, j].tolist()
            crop = vol[n, 0, s0:s0 + c0, s1:s1 + c1, s2:s2 + c2].double().numpy()
            ref = ndimage.zoom(crop, [o / c for o, c in zip(out, (c0, c1, c2))], order=1)
            axes = [a for a in range(3) if p.flips[n, j, a]]
            ref = np.flip(ref, axes) if axes else ref
            np.testing.assert_allclose(patch[n, 0].double().numpy(), ref, atol=1e-5)


def test_crop4vf_intensity_inversion_and_determinism():
    vol = torch.randn(2, 1, 40, 60, 60, generator=gen(12)) * 100
    p = vf.draw_crop4vf(2, vol.shape[2:], gen(13), (24, 32, 32))
    plain = dataclasses.replace(p, invert=torch.tensor([False, False]))
    inverted = dataclasses.replace(p, invert=torch.tensor([True, False]))
    fg0, bg0 = vf.apply_crop4vf(vol, plain)
    fg1, bg1 = vf.apply_crop4vf(vol, inverted)
    assert float(fg0.min()) >= 0.0 and float(fg0.max()) <= 1.0 + 1e-6
    torch.testing.assert_close(fg1[0], 1 - fg0[0]) and torch.testing.assert_close(bg1[0], 1 - bg0[0])
    assert torch.equal(fg1[1], fg0[1]) and torch.equal(bg1[1], bg0[1])
    a = vf.crop4vf(vol, gen(14), (24, 32, 32))
    b = vf.crop4vf(vol, gen(14), (24, 32, 32))
    c = vf.crop4vf(vol, gen(15), (24, 32, 32))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    with pytest.raises(InputError, match="1 channel"):
        vf.crop4vf(torch.rand(1, 2, 40, 60, 60))


# ----------------------------------------------------------------------------- loss
def loss_plain(outputs: list[torch.Tensor], label: torch.Tensor, weights: list[float],
               ce_form: str = "clamped") -> dict[str, torch.Tensor]:
    """The documented formula in float64, written plainly: a softmax per loss, full one-hot, pooled GT;
    the CE as PyMIC writes it (clamped: log(0.999 p + 5e-4), a906dfc; plain: log p, 8bcebd6)."""
    onehot = F.one_hot(label[:, 0].long(), 5).permute(0, 4, 1, 2, 3).double()
    dice_sum = ce_sum = 0.0
    for w, out in zip(weights, outputs):
        y = F.adaptive_avg_pool3d(onehot, out.shape[2:])
        p_dice, p_ce = torch.softmax(out, 1), torch.softmax(out, 1)
        dims = (0, 2, 3, 4)
        dice_c = (2 * (p_dice * y).sum(dims) + 1e-5) / (y.sum(dims) + p_dice.sum(dims) + 1e-5)
        dice = (1 - dice_c).mean()
        log_p = torch.log(0.999 * p_ce + 5e-4) if ce_form == "clamped" else torch.log(p_ce)
        ce = (-(y * log_p).sum(1)).mean()
        dice_sum, ce_sum = dice_sum + w * dice, ce_sum + w * ce
    dice, ce = dice_sum / sum(weights), ce_sum / sum(weights)
    return {"dice": dice, "ce": ce, "total": 0.5 * dice + 0.5 * ce}


@pytest.mark.parametrize("weights, numbers", [("equal", [1, 1, 1]), ("halving", [1, 0.5, 0.25]),
                                              ([0.2, 1.0, 3.0], [0.2, 1.0, 3.0])])
def test_fusion_loss_equals_the_float64_formula(weights, numbers):
    g = gen(20)
    label = torch.randint(0, 5, (2, 1, 8, 16, 16), generator=g, dtype=torch.uint8)
    logits = [torch.randn(2, 5, *s, generator=g, dtype=torch.float64) * 2 for s in ((8, 16, 16), (8, 8, 8), (4, 4, 4))]
    ours_in = [t.float().requires_grad_() for t in logits]
    ref_in = [t.clone().requires_grad_() for t in logits]
    ours, ref = vf_loss.fusion_loss(ours_in, label, weights=weights), loss_plain(ref_in, label, numbers)
    for key in ("dice", "ce", "total"):
        torch.testing.assert_close(ours[key].double(), ref[key], rtol=1e-5, atol=1e-6)
    ours["total"].backward()
    ref["total"].backward()
    for a, b in zip(ours_in, ref_in):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("weights, numbers", [("equal", [1, 1, 1]), ("halving", [1, 0.5, 0.25])])
def test_plain_ce_equals_pymic_8bcebd6_and_differs_from_the_clamp(weights, numbers):
    g = gen(22)
    label = torch.randint(0, 5, (2, 1, 8, 16, 16), generator=g, dtype=torch.uint8)
    logits = [torch.randn(2, 5, *s, generator=g, dtype=torch.float64) * 8 for s in ((8, 16, 16), (8, 8, 8), (4, 4, 4))]
    ours = vf_loss.fusion_loss([t.float() for t in logits], label, weights=weights, ce="plain")
    ref = loss_plain(logits, label, numbers, "plain")
    for key in ("dice", "ce", "total"):
        torch.testing.assert_close(ours[key].double(), ref[key], rtol=1e-5, atol=1e-6)
    clamped = loss_plain(logits, label, numbers, "clamped")["ce"]
    assert abs(float(ref["ce"] - clamped)) / float(ref["ce"]) > 0.1  # the audit's 42 % at x8: the forms differ


def test_plain_ce_is_finite_where_the_official_form_is_nan():
    label = torch.randint(0, 5, (1, 1, 4, 8, 8), generator=gen(23), dtype=torch.uint8)
    logits = torch.randn(1, 5, 4, 8, 8, generator=gen(24)) * 40
    official = loss_plain([logits], label, [1.0], "plain")["ce"]  # float32 softmax underflows: 0 * log 0
    assert torch.isnan(official)
    ours = vf_loss.fusion_loss(logits.requires_grad_(), label, weights="off", ce="plain")
    exact = F.cross_entropy(logits.double(), label[:, 0].long())  # -log p of the true class, in float64
    torch.testing.assert_close(ours["ce"].double(), exact, rtol=1e-5, atol=1e-5)
    ours["total"].backward()
    assert torch.isfinite(logits.grad).all()


def test_deep_supervision_off_uses_the_first_output_only():
    g = gen(25)
    label = torch.randint(0, 5, (1, 1, 8, 16, 16), generator=g, dtype=torch.uint8)
    logits = [torch.randn(1, 5, *s, generator=g) for s in ((8, 16, 16), (4, 8, 8))]
    off = vf_loss.fusion_loss(logits, label, weights="off")
    first = vf_loss.fusion_loss(logits[0], label, weights="equal")
    both = vf_loss.fusion_loss(logits, label, weights="equal")
    for key in ("dice", "ce", "total"):
        assert torch.equal(off[key], first[key])
    assert not torch.equal(off["total"], both["total"])


def test_fusion_loss_single_output_and_errors():
    label = torch.randint(0, 5, (1, 1, 4, 6, 6), dtype=torch.uint8)
    logits = torch.randn(1, 5, 4, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(vf_loss.fusion_loss(logits.float(), label)["total"].double(),
                               loss_plain([logits], label, [1.0])["total"], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="label must be an integer"):
        vf_loss.fusion_loss(logits, label.float())
    with pytest.raises(InputError, match=r"outputs\[0\]"):
        vf_loss.fusion_loss(logits[:, :3], label)
    with pytest.raises(InputError, match="0..4"):
        vf_loss.fusion_loss(logits, label + 5)
    with pytest.raises(ConfigError, match="weights"):
        vf_loss.fusion_loss([logits, logits[..., :3, :3, :3]], label, weights=[1.0])
    with pytest.raises(ConfigError, match="did|one of"):
        vf_loss.fusion_loss(logits, label, weights="halve")
    with pytest.raises(ConfigError, match="ce must be one of"):
        vf_loss.fusion_loss(logits, label, ce="clamp")


def test_class_dice():
    label = torch.randint(0, 5, (2, 1, 4, 8, 8), generator=gen(21), dtype=torch.uint8)
    perfect = F.one_hot(label[:, 0].long(), 5).permute(0, 4, 1, 2, 3).float()
    assert vf_loss.class_dice(perfect, label).tolist() == [1.0] * 5
    wrong = perfect.roll(1, dims=1)  # predicts class c + 1 everywhere
    assert float(vf_loss.class_dice(wrong, label).max()) < 1e-4
