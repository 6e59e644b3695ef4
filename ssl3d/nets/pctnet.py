"""PCT-Net, the network of MIS-FM (openmedlab/MIS-FM @ 1506d65, ``net/pct_net.py``), re-implemented.

PCT-Net is a 3D U-shaped network with five levels. Levels 0 and 1 are convolution only; levels 2 to 4
run a convolution branch and a Swin-transformer branch in parallel and sum them (the "PCT block"). It
predicts at four scales.

The module reproduces the official state-dict layout key for key (684 entries for the demo config) and
every behaviour that changes numbers:

- the relative-position index is built with the multipliers ``3w-1`` and ``2w-1`` (not ``(2w-1)**2``
  and ``2w-1``), so only some rows of the bias table are used and distinct offsets collide
  (:func:`_relative_position_index`);
- feature maps are zero-padded to a multiple of the window *after* the first LayerNorm and padded
  tokens are not masked; only the shift mask (-100) is applied (:class:`_SwinBlock`);
- DropPath is 0.2 in every transformer block, whatever ``dropout`` says (:data:`DROP_PATH_RATE`);
- PReLU has one shared parameter; the convolution branch has no residual (:class:`_ConvBlock`);
- each PCT block registers a LayerNorm (``norm_layer``) that its forward does not apply;
- all three patch embeddings and prediction heads exist, only the one of ``resolution_mode`` runs;
- ``input_size`` is fixed at construction: a different input size is an error
  (pad smaller images with :func:`pad_to_input_size`).

Tensors are (N, C, D, H, W); D, H, W are the three spatial axes of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError

__all__ = ["DROP_PATH_RATE", "PCTNet", "pad_to_input_size"]

DROP_PATH_RATE = 0.2
"""Stochastic-depth rate of every transformer block (the official default, never overridden)."""

MASK_VALUE = -100.0
"""Additive attention bias between tokens of different regions in a shifted window."""

# resolution_mode -> (level 0 is in-plane only, level 1 is in-plane only)
_PLANAR_LEVELS = {0: (False, False), 1: (True, False), 2: (True, True)}


# --------------------------------------------------------------------------------------------------
# Convolution blocks


def _scale(planar: bool) -> tuple[int, int, int]:
    """Pooling / transposed-convolution factor of one level step: in-plane only or all three axes."""
    return (1, 2, 2) if planar else (2, 2, 2)


def _conv3(in_chns: int, out_chns: int, planar: bool) -> nn.Conv3d:
    """A 3x3x3 convolution, or 1x3x3 when ``planar``, keeping the spatial size."""
    if planar:
        return nn.Conv3d(in_chns, out_chns, kernel_size=(1, 3, 3), padding=(0, 1, 1))
    return nn.Conv3d(in_chns, out_chns, kernel_size=3, padding=1)


class _ConvBlock(nn.Module):
    """Pre-activation double convolution BN-PReLU-Conv-BN-PReLU-Dropout-Conv, without residual."""

    def __init__(self, in_chns: int, out_chns: int, dropout: float, planar: bool) -> None:
        super().__init__()
        self.conv_conv = nn.Sequential(
            nn.BatchNorm3d(in_chns),
            nn.PReLU(),
            _conv3(in_chns, out_chns, planar),
            nn.BatchNorm3d(out_chns),
            nn.PReLU(),
            nn.Dropout(dropout),
            _conv3(out_chns, out_chns, planar),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_conv(x)


class _DownSample(nn.Module):
    """Max pooling, then BN-PReLU-Conv changing the channel count (conv of the destination level)."""

    def __init__(self, in_chns: int, out_chns: int, pool_planar: bool, conv_planar: bool) -> None:
        super().__init__()
        self.pool = nn.MaxPool3d(_scale(pool_planar))
        self.conv = nn.Sequential(nn.BatchNorm3d(in_chns), nn.PReLU(), _conv3(in_chns, out_chns, conv_planar))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(x))


class _UpCatBlock(nn.Module):
    """Upsample the coarse map (BN-PReLU-ConvTranspose), concatenate after the skip, BN-PReLU-Conv."""

    def __init__(self, chns_low: int, chns_high: int, planar: bool) -> None:
        super().__init__()
        scale = _scale(planar)
        self.up = nn.Sequential(
            nn.BatchNorm3d(chns_high),
            nn.PReLU(),
            nn.ConvTranspose3d(chns_high, chns_low, kernel_size=scale, stride=scale),
        )
        self.conv = nn.Sequential(nn.BatchNorm3d(2 * chns_low), nn.PReLU(), _conv3(2 * chns_low, chns_low, planar))

    def forward(self, x_low: torch.Tensor, x_high: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([x_low, self.up(x_high)], dim=1))


class _ConvLayer(nn.Module):
    """Output head: BN-PReLU-Conv 1x1x1 to the class scores."""

    def __init__(self, in_chns: int, class_num: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.BatchNorm3d(in_chns), nn.PReLU(), nn.Conv3d(in_chns, class_num, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


# --------------------------------------------------------------------------------------------------
# Swin transformer branch


def _relative_position_index(window: int) -> torch.Tensor:
    """Relative-position index of a ``window``³ window, built as the official code builds it.

    Offsets along D, H and W are shifted to ``[0, 2w-2]`` and combined as
    ``dd*(3w-1) + dh*(2w-1) + dw``. A collision-free index would use ``(2w-1)**2`` for D; this one
    reaches only ``(2w-2)*(5w-1)`` (290 for w = 6) and maps some distinct offsets to the same row.

    Returns:
        int64 tensor (w³, w³).
    """
    axis = torch.arange(window)
    coords = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij")).flatten(1)  # (3, w³)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # (w³, w³, 3)
    multipliers = torch.tensor([3 * window - 1, 2 * window - 1, 1], dtype=torch.int64)
    return (offsets * multipliers).sum(-1)


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, D, H, W, C) with sizes divisible by ``window`` -> (B * windows, window³, C), D-major order."""
    b, d, h, w, c = x.shape
    x = x.view(b, d // window, window, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, window**3, c)


def _window_reverse(windows: torch.Tensor, window: int, size: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`_window_partition`: (B * windows, window³, C) -> (B, D, H, W, C)."""
    d, h, w = size
    c = windows.shape[-1]
    x = windows.view(-1, d // window, h // window, w // window, window, window, window, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, d, h, w, c)


def _shift_mask(padded: Sequence[int], window: int, shift: int, like: torch.Tensor) -> torch.Tensor:
    """Attention mask of shifted windows over a padded grid: (windows, window³, window³), 0 or -100.

    Each axis is split into ``[0, n-w)``, ``[n-w, n-s)`` and ``[n-s, n)``; tokens of one window that
    come from different regions (after the cyclic shift) must not attend to each other.
    """
    region_ids = []
    for n in padded:
        ids = torch.zeros(n, dtype=torch.int64, device=like.device)
        ids[n - window : n - shift] = 1
        ids[n - shift :] = 2
        region_ids.append(ids)
    grid = region_ids[0][:, None, None] * 9 + region_ids[1][None, :, None] * 3 + region_ids[2][None, None, :]
    windows = _window_partition(grid[None, ..., None], window).squeeze(-1)  # (windows, window³)
    different = windows[:, None, :] != windows[:, :, None]
    return torch.zeros(different.shape, dtype=like.dtype, device=like.device).masked_fill(different, MASK_VALUE)


class _DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch of a sample with probability ``rate``."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class _Mlp(nn.Module):
    """Linear-GELU-Dropout-Linear-Dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class _WindowAttention(nn.Module):
    """Multi-head self-attention inside cubic windows, with the (quirky) relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 3, num_heads))
        self.register_buffer("relative_position_index", _relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _bias(self, tokens: int) -> torch.Tensor:
        """Relative-position bias (heads, tokens, tokens)."""
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(tokens, tokens, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B * windows, window³, C); mask: (windows, window³, window³) or None."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self._bias(n).unsqueeze(0)
        if mask is not None:
            windows = mask.shape[0]
            attn = attn.view(b // windows, windows, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(b, self.num_heads, n, n)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class _SwinBlock(nn.Module):
    """Pre-norm Swin block on a fixed token grid; window attention (shifted when ``shift`` > 0) + MLP.

    The normalised map is zero-padded at the far end of each axis to a multiple of the window and
    the padded tokens take part in attention unmasked. When the grid is not larger than the window
    on some axis, the window shrinks to the smallest grid size and the shift is dropped.
    """

    def __init__(
        self, dim: int, resolution: tuple[int, int, int], num_heads: int, window: int, shift: int, dropout: float
    ) -> None:
        super().__init__()
        if min(resolution) <= window:
            window, shift = min(resolution), 0
        self.resolution = resolution
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _WindowAttention(dim, window, num_heads, dropout)
        self.drop_path = _DropPath(DROP_PATH_RATE)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, 4 * dim, dropout)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad (B, D, H, W, C) at the end of D, H, W to multiples of the window."""
        d, h, w = self.resolution
        pads = [(-n) % self.window for n in (d, h, w)]
        return F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D', H', W', C) padded grid -> same shape, after (shifted) window attention."""
        padded = x.shape[1:4]
        dims, shifts = (1, 2, 3), (self.shift,) * 3
        mask = None
        if self.shift > 0:
            x = torch.roll(x, shifts=tuple(-s for s in shifts), dims=dims)
            mask = _shift_mask(padded, self.window, self.shift, x)
        windows = self.attn(_window_partition(x, self.window), mask)
        x = _window_reverse(windows, self.window, padded)
        return torch.roll(x, shifts=shifts, dims=dims) if self.shift > 0 else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, D*H*W, C) tokens in D, H, W row-major order -> same shape."""
        b, n, c = x.shape
        d, h, w = self.resolution
        y = self._pad(self.norm1(x).view(b, d, h, w, c))
        y = self._window_attention(y)[:, :d, :h, :w].reshape(b, n, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class _SwinLayer(nn.Module):
    """``depth`` Swin blocks alternating regular and shifted (by ``window // 2``) windows."""

    def __init__(
        self, dim: int, resolution: tuple[int, int, int], depth: int, num_heads: int, window: int, dropout: float
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            _SwinBlock(dim, resolution, num_heads, window, 0 if i % 2 == 0 else window // 2, dropout)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _ConvTransBlock(nn.Module):
    """The PCT block: ``ConvBlock(x) + Swin(x)`` on a (N, C, D, H, W) map of fixed spatial size."""

    def __init__(
        self, chns: int, resolution: tuple[int, int, int], depth: int, num_heads: int, window: int, dropout: float
    ) -> None:
        super().__init__()
        self.conv = _ConvBlock(chns, chns, dropout, planar=False)
        self.pos_drop = nn.Dropout(dropout)
        self.trans = _SwinLayer(chns, resolution, depth, num_heads, window, dropout)
        self.norm_layer = nn.LayerNorm(chns)  # registered but not applied, as in the official code

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        tokens = self.trans(self.pos_drop(x.flatten(2).transpose(1, 2)))
        return self.conv(x) + tokens.transpose(1, 2).reshape(n, c, d, h, w)


# --------------------------------------------------------------------------------------------------
# The three stages


class _PatchEmbedding(nn.Module):
    """Levels 0 and 1 (convolution only) and the step down to level 2, for one resolution mode."""

    def __init__(self, in_chns: int, chns: Sequence[int], dropout: Sequence[float], mode: int) -> None:
        super().__init__()
        planar0, planar1 = _PLANAR_LEVELS[mode]
        self.proj = _conv3(in_chns, chns[0], planar0)
        self.conv0 = _ConvBlock(chns[0], chns[0], dropout[0], planar0)
        self.conv1 = _ConvBlock(chns[1], chns[1], dropout[1], planar1)
        self.down1 = _DownSample(chns[0], chns[1], pool_planar=planar0, conv_planar=planar1)
        self.down2 = _DownSample(chns[1], chns[2], pool_planar=planar1, conv_planar=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = self.conv0(self.proj(x))
        x1 = self.conv1(self.down1(x0))
        return x0, x1, self.down2(x1)


class _PyramidConvTrans(nn.Module):
    """Levels 2 to 4 (PCT blocks): encoder e2-e4, decoder d3-d2, heads at levels 2 and 3."""

    def __init__(
        self,
        chns: Sequence[int],
        resolution: tuple[int, int, int],
        class_num: int,
        dropout: Sequence[float],
        depths: Sequence[int],
        num_heads: Sequence[int],
        window_sizes: Sequence[int],
    ) -> None:
        super().__init__()
        res2 = resolution
        res3 = tuple(n // 2 for n in res2)
        res4 = tuple(n // 2 for n in res3)
        self.down3 = _DownSample(chns[2], chns[3], pool_planar=False, conv_planar=False)
        self.down4 = _DownSample(chns[3], chns[4], pool_planar=False, conv_planar=False)
        self.up3 = _UpCatBlock(chns[2], chns[3], planar=False)
        self.up4 = _UpCatBlock(chns[3], chns[4], planar=False)

        def pct(level: int, res: tuple[int, ...]) -> _ConvTransBlock:
            i = level - 2
            return _ConvTransBlock(chns[level], res, depths[i], num_heads[i], window_sizes[i], dropout[level])

        self.convtrans_e2 = pct(2, res2)
        self.convtrans_d2 = pct(2, res2)
        self.convtrans_e3 = pct(3, res3)
        self.convtrans_d3 = pct(3, res3)
        self.convtrans_e4 = pct(4, res4)
        self.out_conv2 = _ConvLayer(chns[2], class_num)
        self.out_conv3 = _ConvLayer(chns[3], class_num)

    def forward(self, x: torch.Tensor, predict: bool = True) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Returns the level-2 decoder map and the level-2 and level-3 predictions (``None`` unless
        ``predict``: the official network skips the coarse heads without ``multiscale_pred``, so their
        BatchNorm statistics do not move and no compute is spent)."""
        x2 = self.convtrans_e2(x)
        x3 = self.convtrans_e3(self.down3(x2))
        x4 = self.convtrans_e4(self.down4(x3))
        x_d3 = self.convtrans_d3(self.up4(x3, x4))
        x_d2 = self.convtrans_d2(self.up3(x2, x_d3))
        if not predict:
            return x_d2, None, None
        return x_d2, self.out_conv2(x_d2), self.out_conv3(x_d3)


class _PredictionHead(nn.Module):
    """Decoder levels 1 and 0 with their predictions, for one resolution mode."""

    def __init__(self, chns: Sequence[int], class_num: int, dropout: Sequence[float], mode: int) -> None:
        super().__init__()
        planar0, planar1 = _PLANAR_LEVELS[mode]
        self.up1 = _UpCatBlock(chns[0], chns[1], planar0)
        self.up2 = _UpCatBlock(chns[1], chns[2], planar1)
        self.conv0 = _ConvBlock(chns[0], chns[0], dropout[0], planar0)
        self.conv1 = _ConvBlock(chns[1], chns[1], dropout[1], planar1)
        self.out_conv0 = _ConvLayer(chns[0], class_num)
        self.out_conv1 = _ConvLayer(chns[1], class_num)

    def forward(
        self, x0: torch.Tensor, x1: torch.Tensor, x_d2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the decoder maps of levels 0 and 1."""
        x_d1 = self.conv1(self.up2(x1, x_d2))
        return self.conv0(self.up1(x0, x_d1)), x_d1


# --------------------------------------------------------------------------------------------------
# Argument checks


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_list(name: str, value: object, length: int) -> list[int]:
    """``length`` integers >= 1, as a list."""
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if items is None or len(items) != length or not all(_is_int(v) and v >= 1 for v in items):
        raise ConfigError(f"{name} must be {length} integers >= 1, got {value!r}.")
    return items


def _level2_stride(mode: int) -> tuple[int, int, int]:
    """Downsampling factor from the input to level 2 for a resolution mode."""
    planar0, planar1 = _PLANAR_LEVELS[mode]
    return tuple(a * b for a, b in zip(_scale(planar0), _scale(planar1)))  # type: ignore[return-value]


def _check_scalars(cfg: dict[str, Any]) -> None:
    for name in ("in_chns", "class_num"):
        if not _is_int(cfg[name]) or cfg[name] < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {cfg[name]!r}.")
    if not _is_int(cfg["resolution_mode"]) or cfg["resolution_mode"] not in _PLANAR_LEVELS:
        raise ConfigError(f"resolution_mode must be 0, 1 or 2, got {cfg['resolution_mode']!r}.")
    if not isinstance(cfg["multiscale_pred"], bool):
        raise ConfigError(f"multiscale_pred must be True or False, got {cfg['multiscale_pred']!r}.")


def _check_dropout(value: object) -> list[float]:
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else []
    valid = [isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p < 1 for p in items]
    if len(items) != 5 or not all(valid):
        raise ConfigError(f"dropout must be 5 probabilities in [0, 1), got {value!r}.")
    return [float(p) for p in items]


def _check_sizes(cfg: dict[str, Any]) -> None:
    """input_size divisible by the stride down to level 4; level 2-4 channels divisible by the heads."""
    mode, size = cfg["resolution_mode"], cfg["input_size"]
    strides = [4 * s for s in _level2_stride(mode)]
    if any(n % s for n, s in zip(size, strides)):
        raise ConfigError(
            f"input_size must be divisible by {strides} (D, H, W) for resolution_mode {mode}, got {size}."
        )
    for i, heads in enumerate(cfg["num_heads"]):
        if cfg["feature_chns"][i + 2] % heads:
            raise ConfigError(
                f"feature_chns[{i + 2}] must be divisible by num_heads[{i}] = {heads}, "
                f"got {cfg['feature_chns'][i + 2]}."
            )


def _validated_config(**cfg: Any) -> dict[str, Any]:
    """Check every constructor argument (ConfigError naming it); return them with lists for sequences."""
    _check_scalars(cfg)
    lengths = {"input_size": 3, "feature_chns": 5, "depths": 3, "num_heads": 3, "window_sizes": 3}
    for name, length in lengths.items():
        cfg[name] = _int_list(name, cfg[name], length)
    cfg["dropout"] = _check_dropout(cfg["dropout"])
    _check_sizes(cfg)
    return cfg


# --------------------------------------------------------------------------------------------------
# Public API


class PCTNet(nn.Module):
    """PCT-Net of MIS-FM: a 3D U-Net whose three coarse levels add a Swin branch to the conv branch.

    The state dict has exactly the official layout (keys, order, shapes, buffers), so official
    PyMIC checkpoints load with ``load_state_dict``. The demo config (the defaults) has 684 entries
    and 45,287,730 parameters (45,289,554 with ``class_num=5``).

    ``resolution_mode`` sets the downsampling from the input to level 2: 0 -> (4, 4, 4) with 3D
    levels 0 and 1; 1 -> (2, 4, 4) with an in-plane (1x3x3) level 0; 2 -> (1, 4, 4) with in-plane
    levels 0 and 1. Levels 3 and 4 halve every axis again. All three embeddings and heads are
    built (their weights are in the checkpoints); only the selected one runs
    (see :meth:`unused_parameter_names`).

    The transformer blocks are built for one token grid, so the input must be exactly
    ``input_size``; pad smaller volumes with :func:`pad_to_input_size`.

    Args:
        in_chns: input channels C.
        class_num: output classes of every prediction head.
        input_size: (D, H, W) of every input; divisible by 4x the level-2 stride of the mode
            ((16, 16, 16), (8, 16, 16) or (4, 16, 16) for modes 0, 1, 2).
        feature_chns: channels of levels 0 to 4; levels 2-4 divisible by their ``num_heads``.
        dropout: dropout probability of levels 0 to 4 (conv branch, attention, projection, MLP
            and token dropout of the transformer levels). DropPath is 0.2 regardless.
        depths: Swin blocks at levels 2, 3, 4 (even blocks use regular windows, odd blocks windows
            shifted by ``window // 2``).
        num_heads: attention heads at levels 2, 3, 4.
        window_sizes: cubic window size at levels 2, 3, 4; a level whose grid is not larger than
            the window on some axis uses the smallest grid size as window, without shift.
        resolution_mode: 0, 1 or 2 (see above).
        multiscale_pred: return the predictions of all four levels instead of the finest only.

    Raises:
        ConfigError: an argument breaks the rule stated above (the message names it and its value).

    Example::

        >>> net = PCTNet(in_chns=1, class_num=5, input_size=[16, 32, 32],
        ...              feature_chns=[4, 8, 16, 32, 64], window_sizes=[3, 3, 3])
        >>> outs = net(torch.zeros(2, 1, 16, 32, 32))
        >>> [tuple(o.shape) for o in outs]
        [(2, 5, 16, 32, 32), (2, 5, 16, 16, 16), (2, 5, 8, 8, 8), (2, 5, 4, 4, 4)]
    """

    def __init__(
        self,
        *,
        in_chns: int = 1,
        class_num: int = 2,
        input_size: Sequence[int] = (64, 128, 128),
        feature_chns: Sequence[int] = (24, 48, 128, 256, 512),
        dropout: Sequence[float] = (0.0, 0.0, 0.2, 0.2, 0.2),
        depths: Sequence[int] = (2, 2, 2),
        num_heads: Sequence[int] = (4, 8, 16),
        window_sizes: Sequence[int] = (6, 6, 6),
        resolution_mode: int = 1,
        multiscale_pred: bool = True,
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = _validated_config(
            in_chns=in_chns, class_num=class_num, input_size=input_size, feature_chns=feature_chns,
            dropout=dropout, depths=depths, num_heads=num_heads, window_sizes=window_sizes,
            resolution_mode=resolution_mode, multiscale_pred=multiscale_pred
        )
        """The validated constructor arguments, under the official config keys (JSON-ready)."""
        cfg = self.config
        self.input_size: tuple[int, ...] = tuple(cfg["input_size"])
        self.resolution_mode: int = resolution_mode
        self.multiscale_pred: bool = multiscale_pred
        chns, dropout, classes = cfg["feature_chns"], cfg["dropout"], class_num
        res2 = tuple(n // s for n, s in zip(self.input_size, _level2_stride(resolution_mode)))
        self.embeddings = nn.ModuleList(_PatchEmbedding(in_chns, chns, dropout, m) for m in range(3))
        self.pyramid_ct = _PyramidConvTrans(
            chns, res2, classes, dropout, cfg["depths"], cfg["num_heads"], cfg["window_sizes"]
        )
        self.pred_heads = nn.ModuleList(_PredictionHead(chns, classes, dropout, m) for m in range(3))

    def unused_parameter_names(self) -> list[str]:
        """Names of the parameters that never get a gradient with this ``resolution_mode``.

        They are the embeddings and prediction heads of the other two modes, the ``norm_layer`` of
        every PCT block, and, without ``multiscale_pred``, the three coarse output heads. A
        DistributedDataParallel wrapper needs ``find_unused_parameters=True`` or these excluded.
        """
        mode = self.resolution_mode
        unused_prefixes = [f"embeddings.{m}." for m in range(3) if m != mode]
        unused_prefixes += [f"pred_heads.{m}." for m in range(3) if m != mode]
        if not self.multiscale_pred:
            unused_prefixes += ["pyramid_ct.out_conv2.", "pyramid_ct.out_conv3.", f"pred_heads.{mode}.out_conv1."]
        names = [name for name, _ in self.named_parameters()]
        return [n for n in names if n.startswith(tuple(unused_prefixes)) or ".norm_layer." in n]

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.config["in_chns"], *self.input_size)
        if x.dim() != 5 or tuple(x.shape[1:]) != expected:
            raise InputError(
                f"PCTNet input must have shape (N, {', '.join(map(str, expected))}) because input_size "
                f"{list(self.input_size)} is fixed at construction, got {tuple(x.shape)}; pad smaller "
                "volumes with ssl3d.nets.pctnet.pad_to_input_size."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Predict class scores (logits) for a batch.

        Args:
            x: (N, in_chns, D, H, W) with (D, H, W) == ``input_size``.

        Returns:
            With ``multiscale_pred`` (in training and in evaluation mode alike), a list of four
            (N, class_num, d, h, w) tensors, finest first: level 0 at the input size, then levels 1,
            2 and 3. For the demo config and a 64x128x128 input: 64x128x128, 64x64x64, 32x32x32,
            16x16x16. Without it, the level-0 tensor alone.

        Raises:
            InputError: ``x`` is not (N, in_chns, *input_size).
        """
        self._check_input(x)
        x0, x1, x2 = self.embeddings[self.resolution_mode](x)
        x_d2, out2, out3 = self.pyramid_ct(x2, predict=self.multiscale_pred)
        head = self.pred_heads[self.resolution_mode]
        x_d0, x_d1 = head(x0, x1, x_d2)
        out = head.out_conv0(x_d0)
        if not self.multiscale_pred:
            return out
        return [out, head.out_conv1(x_d1), out2, out3]


def pad_to_input_size(
    x: torch.Tensor, input_size: Sequence[int], value: float = 0.0
) -> tuple[torch.Tensor, tuple[slice, slice, slice]]:
    """Pad a (N, C, D, H, W) batch to the fixed ``input_size`` of a PCT-Net.

    Each axis gets half of its margin before and the rest after (as PyMIC's ``Pad``). The returned
    slices cut the original extent back out of a full-resolution output: ``out[..., d, h, w]``.

    Args:
        x: (N, C, D, H, W) with every spatial size <= the matching ``input_size``.
        input_size: target (D, H, W).
        value: fill value (the background intensity after normalisation).

    Returns:
        The padded (N, C, *input_size) tensor and the (D, H, W) slices of the original data in it.

    Raises:
        InputError: ``x`` is not 5D, or it is larger than ``input_size`` on some axis.

    Example::

        >>> padded, box = pad_to_input_size(torch.ones(1, 1, 60, 100, 128), [64, 128, 128])
        >>> tuple(padded.shape), box
        ((1, 1, 64, 128, 128), (slice(2, 62, None), slice(14, 114, None), slice(0, 128, None)))
    """
    target = tuple(int(n) for n in input_size)
    if x.dim() != 5 or len(target) != 3 or any(s > t for s, t in zip(x.shape[2:], target)):
        raise InputError(
            f"pad_to_input_size needs an (N, C, D, H, W) tensor no larger than input_size {list(target)}, "
            f"got shape {tuple(x.shape)}; crop or use sliding windows of exactly input_size."
        )
    before = [(t - s) // 2 for s, t in zip(x.shape[2:], target)]
    after = [t - s - b for s, t, b in zip(x.shape[2:], target, before)]
    padded = F.pad(x, (before[2], after[2], before[1], after[1], before[0], after[0]), value=value)
    box = tuple(slice(b, b + s) for b, s in zip(before, x.shape[2:]))
    return padded, box  # type: ignore[return-value]
