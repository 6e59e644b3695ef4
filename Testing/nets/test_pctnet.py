"""PCT-Net (ssl3d.nets.pctnet): official layout, index quirk, forward shapes, gradients, input checks.

The full-size network (~711 GFLOP per forward) is only built, on the meta device, for its layout;
numerics run on a reduced config.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from ssl3d.errors import ConfigError, InputError
from ssl3d.nets.pctnet import DROP_PATH_RATE, PCTNet, pad_to_input_size

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "fixtures"

# Reduced config: level 2 is 8x8x8 (padded to 9^3 for windows of 3, shifted), level 3 is 4^3 (padded
# to 6^3, shifted), level 4 is 2^3 (window shrinks to 2, no shift).
SMALL = dict(
    in_chns=1,
    class_num=3,
    input_size=[16, 32, 32],
    feature_chns=[4, 8, 16, 32, 64],
    window_sizes=[3, 3, 3],
)


def _meta_net(**kwargs: object) -> PCTNet:
    with torch.device("meta"):
        return PCTNet(**kwargs)


def _small_net(seed: int = 0, **kwargs: object) -> PCTNet:
    torch.manual_seed(seed)
    return PCTNet(**{**SMALL, **kwargs})


def _load_fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


# ---------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("class_num, fixture", [(2, "pctnet_keys_c2.json"), (5, "pctnet_keys_c5.json")])
def test_state_dict_layout_matches_official(class_num: int, fixture: str) -> None:
    expected = _load_fixture(fixture)
    net = _meta_net(class_num=class_num)
    state = net.state_dict()
    assert list(state) == list(expected["keys"])  # same keys, same order
    assert {k: list(v.shape) for k, v in state.items()} == expected["keys"]
    non_float = {k: str(v.dtype) for k, v in state.items() if v.dtype != torch.float32}
    assert non_float == expected["state_dict_dtypes"]  # int64 counters and relative-position indices
    assert len(state) == expected["num_entries"] == 684
    assert sum(p.numel() for p in net.parameters()) == expected["num_parameters_registered"]
    assert sum(b.numel() for b in net.buffers()) == expected["num_buffer_elements"]


@pytest.mark.parametrize(
    "kwargs, count",
    [({}, 45_287_730), ({"class_num": 5}, 45_289_554), ({"resolution_mode": 0}, 45_256_114)],
)
def test_parameter_counts(kwargs: dict, count: int) -> None:
    assert sum(p.numel() for p in _meta_net(**kwargs).parameters()) == count


def test_defaults_are_the_demo_config() -> None:
    assert _meta_net().config == _load_fixture("pctnet_keys_c2.json")["config"]


def test_every_block_has_drop_path_0_2_and_single_prelu() -> None:
    net = _small_net(dropout=[0, 0, 0, 0, 0])
    rates = [m.rate for m in net.modules() if type(m).__name__ == "_DropPath"]
    assert len(rates) == 10 and set(rates) == {DROP_PATH_RATE} == {0.2}
    assert {m.num_parameters for m in net.modules() if isinstance(m, nn.PReLU)} == {1}


# ------------------------------------------------------------------------------ relative-position index


@pytest.mark.parametrize(
    "kwargs, module, window, max_index, used_rows",
    [
        ({}, "convtrans_e4", 6, 290, 291),  # demo: 8^3 at level 4, window 6
        ({"resolution_mode": 0}, "convtrans_e4", 4, 114, 115),  # 4x8x8 at level 4: window shrinks to 4
    ],
)
def test_relative_position_index_quirk(
    kwargs: dict, module: str, window: int, max_index: int, used_rows: int
) -> None:
    torch.manual_seed(0)
    block = getattr(PCTNet(input_size=[64, 128, 128], feature_chns=[2, 2, 4, 8, 16], **kwargs).pyramid_ct, module)
    for swin in block.trans.blocks:
        index = swin.attn.relative_position_index
        assert index.dtype == torch.int64 and index.shape == (window**3, window**3)
        assert int(index.max()) == max_index and index.unique().numel() == used_rows
        assert swin.attn.relative_position_bias_table.shape[0] == (2 * window - 1) ** 3
        # the quirk: the (2w-1)^3 distinct offsets fall on fewer rows, so some share a bias
        assert used_rows < (2 * window - 1) ** 3


# ----------------------------------------------------------------------------------------------- numerics


def test_forward_shapes_of_the_four_outputs() -> None:
    net = _small_net()
    x = torch.randn(2, 1, 16, 32, 32)
    for training in (True, False):
        net.train(training)
        outs = net(x)
        assert isinstance(outs, list)
        assert [tuple(o.shape) for o in outs] == [
            (2, 3, 16, 32, 32),  # level 0, full size
            (2, 3, 16, 16, 16),  # level 1: in-plane halved (resolution_mode 1)
            (2, 3, 8, 8, 8),  # level 2
            (2, 3, 4, 4, 4),  # level 3
        ]


def test_demo_input_size_with_tiny_channels_matches_official_shape_table() -> None:
    """64x128x128 in, windows of 6: levels 2-4 padded to 36^3, 18^3, 12^3 with shifted blocks."""
    net = _small_net(input_size=[64, 128, 128], feature_chns=[2, 2, 4, 8, 16], window_sizes=[6, 6, 6]).eval()
    swins = [m for m in net.pyramid_ct.modules() if type(m).__name__ == "_SwinBlock"]
    assert [(m.resolution, m.window, m.shift) for m in swins[:2]] == [((32, 32, 32), 6, 0), ((32, 32, 32), 6, 3)]
    assert [m.resolution[0] for m in swins] == [32] * 4 + [16] * 4 + [8] * 2
    assert {m.window for m in swins} == {6} and [m.shift for m in swins] == [0, 3] * 5
    with torch.no_grad():
        outs = net(torch.randn(1, 1, 64, 128, 128))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 128, 128), (64, 64, 64), (32, 32, 32), (16, 16, 16)]
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize(
    "mode, size, shapes",
    [
        (0, [16, 32, 32], [(16, 32, 32), (8, 16, 16), (4, 8, 8), (2, 4, 4)]),
        (2, [8, 32, 32], [(8, 32, 32), (8, 16, 16), (8, 8, 8), (4, 4, 4)]),
    ],
)
def test_forward_shapes_other_resolution_modes(mode: int, size: list[int], shapes: list[tuple]) -> None:
    net = _small_net(resolution_mode=mode, input_size=size).eval()
    outs = net(torch.randn(1, 1, *size))
    assert [tuple(o.shape[2:]) for o in outs] == shapes


def test_single_output_without_multiscale_pred() -> None:
    net = _small_net(multiscale_pred=False).eval()
    out = net(torch.randn(1, 1, 16, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 16, 32, 32)


def test_single_output_skips_the_coarse_heads() -> None:
    """Without multiscale_pred the official network never runs pyramid_ct.out_conv2/3: a training forward
    leaves their BatchNorm statistics untouched (the other BNs do move) and calls neither."""
    net = _small_net(multiscale_pred=False).train()
    coarse = {n: b.clone() for n, b in net.named_buffers() if n.startswith(("pyramid_ct.out_conv2.", "pyramid_ct.out_conv3."))}
    assert any(n.endswith("running_mean") for n in coarse)
    calls = []
    for name in ("out_conv2", "out_conv3"):
        getattr(net.pyramid_ct, name).register_forward_hook(lambda *_: calls.append(name))
    before = net.pyramid_ct.convtrans_e2.conv.conv_conv[0].running_mean.clone()
    net(torch.randn(2, 1, 16, 32, 32))
    assert not calls
    for name, value in coarse.items():
        assert torch.equal(dict(net.named_buffers())[name], value), name
    assert not torch.equal(net.pyramid_ct.convtrans_e2.conv.conv_conv[0].running_mean, before)


def test_eval_is_deterministic_and_train_is_stochastic() -> None:
    net = _small_net()
    x = torch.randn(2, 1, 16, 32, 32)
    net.eval()
    with torch.no_grad():
        first, second = net(x), net(x)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    net.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = net(x)[0]
        torch.manual_seed(2)
        b = net(x)[0]
    assert not torch.equal(a, b)  # dropout / DropPath active in training


def test_training_step_reaches_every_used_parameter() -> None:
    net = _small_net().train()
    torch.manual_seed(3)
    x = torch.randn(2, 1, 16, 32, 32)
    labels = torch.randint(0, 3, (2, 16, 32, 32))
    outs = net(x)
    targets = [nn.functional.interpolate(labels[:, None].float(), size=o.shape[2:])[:, 0].long() for o in outs]
    loss = sum(nn.functional.cross_entropy(o, t) for o, t in zip(outs, targets))
    loss.backward()
    unused = set(net.unused_parameter_names())
    for name, param in net.named_parameters():
        if name in unused:
            assert param.grad is None, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    # unused: the embeddings and heads of modes 0 and 2, and the 5 registered-but-unapplied norm_layers
    assert all(n.startswith(("embeddings.0.", "embeddings.2.", "pred_heads.0.", "pred_heads.2."))
               or ".norm_layer." in n for n in unused)
    assert sum(".norm_layer." in n for n in unused) == 10


# ------------------------------------------------------------------------------- block-level quirks


def test_conv_branch_has_no_residual() -> None:
    block = _small_net().pyramid_ct.convtrans_e2.conv.eval()
    nn.init.zeros_(block.conv_conv[6].weight)
    nn.init.zeros_(block.conv_conv[6].bias)
    out = block(torch.randn(1, 16, 8, 8, 8))
    assert torch.equal(out, torch.zeros_like(out))


def test_padding_after_layernorm_is_zero_and_unmasked() -> None:
    """Level-3 block 0 (4^3 grid, window 3, no shift): the window at the far corner holds one real
    token and 26 zero-padded ones, whose keys and values are then just the qkv bias."""
    swin = _small_net().pyramid_ct.convtrans_e3.trans.blocks[0].eval()
    assert (swin.resolution, swin.window, swin.shift) == ((4, 4, 4), 3, 0)
    nn.init.zeros_(swin.mlp.fc2.weight)  # isolate the attention half of the block
    nn.init.zeros_(swin.mlp.fc2.bias)
    with torch.no_grad():
        nn.init.normal_(swin.attn.qkv.bias)
        nn.init.normal_(swin.norm1.bias)  # so that padding before the LayerNorm would differ
        x = torch.randn(1, 64, 32)
        out = swin(x)[0, -1]  # token (3, 3, 3), first position of the last window
        attn = swin.attn
        heads, dim = attn.num_heads, 32 // attn.num_heads
        q = attn.qkv(swin.norm1(x[0, -1]))[:32].view(heads, dim)
        k_pad, v_pad = attn.qkv.bias[32:64].view(heads, dim), attn.qkv.bias[64:].view(heads, dim)
        k_real, v_real = attn.qkv(swin.norm1(x[0, -1]))[32:].view(2, heads, dim)
        keys = torch.cat([k_real[None], k_pad[None].expand(26, -1, -1)])  # (27, heads, dim)
        values = torch.cat([v_real[None], v_pad[None].expand(26, -1, -1)])
        bias = attn.relative_position_bias_table[attn.relative_position_index[0]]  # (27, heads)
        weights = ((q * attn.scale * keys).sum(-1) + bias).softmax(0)  # (27, heads)
        expected = x[0, -1] + attn.proj((weights[..., None] * values).sum(0).reshape(32))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_shift_mask_separates_regions_of_the_last_window() -> None:
    from ssl3d.nets.pctnet import _shift_mask, _window_partition, _window_reverse

    mask = _shift_mask((6, 6, 6), window=3, shift=1, like=torch.zeros(1))
    assert mask.shape == (8, 27, 27) and set(mask.unique().tolist()) == {-100.0, 0.0}
    assert mask[0].eq(0).all()  # the first window lies inside one region
    # the last window splits 2 + 1 along each axis: (2^2 + 1^2)^3 same-region pairs
    assert int(mask[7].eq(0).sum()) == 125
    grid = torch.randn(2, 6, 9, 3, 5)
    assert torch.equal(_window_reverse(_window_partition(grid, 3), 3, (6, 9, 3)), grid)


# --------------------------------------------------------------------------------------- input checks


def test_wrong_input_size_names_the_expected_size() -> None:
    net = _small_net()
    with pytest.raises(InputError, match=r"\(N, 1, 16, 32, 32\).*\[16, 32, 32\].*pad_to_input_size"):
        net(torch.randn(1, 1, 16, 32, 16))
    with pytest.raises(InputError, match="input_size"):
        net(torch.randn(1, 2, 16, 32, 32))


def test_pad_to_input_size_round_trip() -> None:
    x = torch.randn(1, 1, 13, 30, 32)
    padded, box = pad_to_input_size(x, [16, 32, 32], value=-1.0)
    assert padded.shape == (1, 1, 16, 32, 32)
    assert box == (slice(1, 14), slice(1, 31), slice(0, 32))
    assert torch.equal(padded[(..., *box)], x)
    assert padded[0, 0, 0].eq(-1.0).all()
    out = _small_net().eval()(padded)[0]
    assert out[(..., *box)].shape == (1, 3, 13, 30, 32)
    with pytest.raises(InputError, match="no larger than input_size"):
        pad_to_input_size(torch.randn(1, 1, 17, 32, 32), [16, 32, 32])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_chns": 0}, "in_chns must be an integer >= 1, got 0"),
        ({"class_num": 2.0}, "class_num must be an integer"),
        ({"input_size": [16, 32]}, "input_size must be 3 integers"),
        ({"input_size": [12, 32, 32]}, r"input_size must be divisible by \[8, 16, 16\].*got \[12, 32, 32\]"),
        ({"feature_chns": [4, 8, 16, 32]}, "feature_chns must be 5 integers"),
        ({"feature_chns": [4, 8, 18, 32, 64]}, r"feature_chns\[2\] must be divisible by num_heads\[0\] = 4"),
        ({"dropout": [0, 0, 0.2, 0.2, 1.5]}, r"dropout must be 5 probabilities in \[0, 1\)"),
        ({"depths": [2, 0, 2]}, "depths must be 3 integers >= 1"),
        ({"window_sizes": [6, 6]}, "window_sizes must be 3 integers"),
        ({"resolution_mode": 3}, "resolution_mode must be 0, 1 or 2, got 3"),
        ({"multiscale_pred": 1}, "multiscale_pred must be True or False"),
    ],
)
def test_ill_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PCTNet(**{**SMALL, **kwargs})
