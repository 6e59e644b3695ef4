"""VoCo losses, scores, heads, dropout, pooled features and EMA against the official values (fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ssl3d.errors import ConfigError, InputError
from ssl3d.pretext import voco

FIXTURES = Path(__file__).parents[1] / "data" / "fixtures"
TERMS = {"v1": ("pos", "neg", "reg", "total"), "v2": ("intra", "inter", "reg", "total")}
LOSSES = {"v1": voco.voco_v1_loss, "v2": voco.voco_v2_loss}


def _case(version: str, case: int):
    ref = np.load(FIXTURES / f"voco_loss_{version}.npz")
    names = ("x_student", "x_teacher", "bases_student", "bases_teacher")
    t = {name: torch.tensor(ref[f"case{case}_{name}"]) for name in names}
    t["x_student"].requires_grad_(True)
    t["bases_student"].requires_grad_(True)
    return ref, t


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("case", [0, 1])
def test_loss_terms_and_gradients_equal_official(version, case):
    ref, t = _case(version, case)
    # x (B=2, n_random=2, D), bases (2, K, D), labels (2, 2, K) float64
    inputs = (t["x_student"], t["x_teacher"], t["bases_student"], t["bases_teacher"])
    out = LOSSES[version](*inputs, torch.tensor(ref["labels"]))
    assert set(out) == set(TERMS[version])
    for term in TERMS[version]:
        expected = float(ref[f"case{case}_{term}"].ravel()[0])
        assert float(out[term].detach()) == pytest.approx(expected, rel=1e-6, abs=0), term
    assert out[TERMS[version][0]].dtype == torch.float64  # float64 labels promote the positive term
    assert out["total"].dtype == torch.float32 and out["total"].ndim == 0
    out["total"].backward()
    for grad, name in ((t["x_student"].grad, "grad_x_student"), (t["bases_student"].grad, "grad_bases_student")):
        expected = ref[f"case{case}_{name}"]
        err = np.abs(grad.numpy() - expected).max()
        assert err <= 1e-4 * np.abs(expected).max(), (name, err)


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("case", [0, 1])
def test_loss_under_autocast_equals_float32_official(version, case):
    """Inside an AMP step (CPU bfloat16 here) the loss still runs in float32: the official values to 1e-6."""
    ref, t = _case(version, case)
    inputs = (t["x_student"], t["x_teacher"], t["bases_student"], t["bases_teacher"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LOSSES[version](*inputs, torch.tensor(ref["labels"]))
        scores = voco.cosine_matrix(inputs[0], inputs[3])
    assert scores.dtype == torch.float32
    for term in TERMS[version]:
        expected = float(ref[f"case{case}_{term}"].ravel()[0])
        assert float(out[term].detach()) == pytest.approx(expected, rel=1e-6, abs=1e-9), term


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_teacher_tensors_get_no_gradient(version):
    ref, t = _case(version, 1)
    x_t = t["x_teacher"].clone().requires_grad_(True)
    b_t = t["bases_teacher"].clone().requires_grad_(True)
    out = LOSSES[version](t["x_student"], x_t, t["bases_student"], b_t, ref["labels"])
    out["total"].backward()
    assert x_t.grad is None and b_t.grad is None


def test_scores_equal_official_logits():
    for version in ("v1", "v2"):
        for case in (0, 1):
            ref, t = _case(version, case)
            x_s, x_t, b_s, b_t = (t[k].detach() for k in ("x_student", "x_teacher", "bases_student", "bases_teacher"))
            if version == "v1":
                got, expected = voco.position_scores_v1(x_s, x_t, b_s, b_t), ref[f"case{case}_per_volume_logits"]
            else:
                got, expected = voco.position_scores_v2(x_s, b_t), ref[f"case{case}_per_volume_logits_intra"]
            np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_reg_gradient_reaches_only_the_lower_index_base():
    b = (torch.rand(1, 3, 8) + 0.1).requires_grad_(True)  # positive cosines
    voco._reg_term(b).sum().backward()
    assert b.grad[0, 2].abs().sum() == 0  # the last base is only ever the detached operand
    assert b.grad[0, 0].abs().sum() > 0


def test_ill_loss_shapes():
    x, bases = torch.zeros(2, 2, 8), torch.zeros(2, 9, 8)
    with pytest.raises(InputError, match="labels must have shape"):
        voco.voco_v1_loss(x, x, bases, bases, torch.zeros(2, 2, 16))
    with pytest.raises(InputError, match="x_t must have the shape"):
        voco.voco_v2_loss(x, x[:1], bases, bases, torch.zeros(2, 2, 9))


def test_projection_head_uses_batch_statistics():
    head = voco.ProjectionHead(12, 16, 8)
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 16), (16, 16), (16, 8)]
    norms = [m for m in head if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(norms) == 2 and all(not m.affine and not m.track_running_stats for m in norms)
    x = torch.randn(6, 12)
    head.eval()
    full = head(x)
    assert not torch.allclose(full[:3], head(x[:3]))  # statistics of the whole batch, even in eval
    assert voco.ProjectionHead(1152, 2048, 2048)[-1].out_features == 2048
    with pytest.raises(ConfigError, match="hidden_dim"):
        voco.ProjectionHead(12, 0, 8)


def test_crop_dropout_drops_whole_rows_like_dropout1d():
    x = torch.ones(400, 32)
    out = voco.crop_dropout(x, 0.2, torch.Generator().manual_seed(0))
    rows = out.sum(1)
    assert set(rows.unique().tolist()) <= {0.0, 32 * 1.25}
    assert 0.1 < (rows == 0).float().mean() < 0.3
    reference = torch.nn.functional.dropout1d(x, 0.2, training=True)  # the official semantics on 2-D input
    assert set(reference.sum(1).unique().tolist()) <= {0.0, 32 * 1.25}
    module = voco.CropDropout(0.2).eval()
    assert module(x) is x


def test_pooled_features_of_swinunetr():
    from monai.networks.nets import SwinUNETR

    torch.manual_seed(0)
    net = SwinUNETR(in_channels=1, out_channels=2, feature_size=12, depths=(1, 1, 1, 1), window_size=4, use_v2=True)
    encoder = voco.SwinPooledEncoder(net)
    x = torch.randn(2, 1, 32, 32, 64)  # the deepest output is 1x1x2 (instance norm needs > 1 voxel)
    with torch.no_grad():
        outs = voco.swinunetr_encoder_outputs(net, x)
        feats = encoder(x)
    shapes = [(12, 32, 32, 64), (12, 16, 16, 32), (24, 8, 8, 16), (48, 4, 4, 8), (192, 1, 1, 2)]
    assert [tuple(o.shape[1:]) for o in outs] == shapes
    assert feats.shape == (2, voco.swin_feature_dim(12)) == (2, 288)
    torch.testing.assert_close(feats[:, :12], outs[0].mean((2, 3, 4)))
    with pytest.raises(InputError, match="divisible by 32"):
        voco.swinunetr_encoder_outputs(net, torch.zeros(1, 1, 48, 48, 40))


def test_ema_update():
    student, teacher = torch.nn.Linear(3, 2), voco.freeze_teacher(torch.nn.Linear(3, 2))
    before = teacher.weight.clone()
    voco.ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight.detach())
    assert not teacher.weight.requires_grad
    with pytest.raises(ConfigError, match="momentum"):
        voco.ema_update(teacher, student, 1.5)
    with pytest.raises(InputError, match="differ"):
        voco.ema_update(torch.nn.Linear(3, 4), student, 0.9)
