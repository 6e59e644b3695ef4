"""A small CPU-friendly 3D UNet whose encoder is its own module.

The encoder (:class:`UNetEncoder`) returns one feature map per level; VoCo's ``*-cpu`` presets use it as a
pooled multi-scale backbone (``cnn-small``), Volume Fusion and fine-tuning use the whole :class:`UNet`.
InstanceNorm everywhere, so results do not depend on how a batch is split across processes.

Example::

    net = UNet(in_channels=1, out_channels=7, channels=(8, 16, 32, 64))
    net(torch.zeros(2, 1, 32, 32, 32)).shape      # (2, 7, 32, 32, 32)
    [f.shape[1] for f in net.encoder(torch.zeros(1, 1, 32, 32, 32))]   # [8, 16, 32, 64]
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["UNet", "UNetEncoder"]


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class UNetEncoder(nn.Module):
    """Levels of two 3x3x3 convs; each level after the first halves the size (strided conv).

    Args:
        in_channels: input channels.
        channels: feature channels per level, e.g. (8, 16, 32, 64); at least 2 levels.

    Input (N, C, D, H, W) with D, H, W divisible by 2^(levels-1); output: list of (N, channels[l], ...).
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (8, 16, 32, 64)) -> None:
        super().__init__()
        if len(channels) < 2 or any(c < 1 for c in channels):
            raise ConfigError(f"channels must list >= 2 positive widths, got {list(channels)}.")
        self.channels = tuple(int(c) for c in channels)
        widths = (in_channels, *self.channels)
        self.levels = nn.ModuleList(_block(widths[n], widths[n + 1], stride=1 if n == 0 else 2) for n in range(len(self.channels)))

    @property
    def out_dim(self) -> int:
        """Width of the pooled multi-scale feature (sum of the level widths)."""
        return sum(self.channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        factor = 2 ** (len(self.channels) - 1)
        if any(s % factor for s in x.shape[2:]):
            raise ConfigError(f"input sides must be divisible by {factor}, got {tuple(x.shape[2:])}.")
        features = []
        for level in self.levels:
            x = level(x)
            features.append(x)
        return features


class UNet(nn.Module):
    """Encoder + decoder with skip connections; optional deep-supervision outputs.

    Args:
        in_channels, out_channels: input and output channels.
        channels: encoder widths per level.
        deep_supervision: in training mode return a list [full, 1/2, 1/4, ...] of logits (all but the
            coarsest level), as Volume Fusion's multi-scale loss expects; one tensor otherwise.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 2, channels: Sequence[int] = (8, 16, 32, 64), deep_supervision: bool = False) -> None:
        super().__init__()
        self.encoder = UNetEncoder(in_channels, channels)
        widths = self.encoder.channels
        self.deep_supervision = deep_supervision
        self.up = nn.ModuleList(nn.ConvTranspose3d(widths[n + 1], widths[n], 2, stride=2) for n in reversed(range(len(widths) - 1)))
        self.decode = nn.ModuleList(_block(2 * widths[n], widths[n]) for n in reversed(range(len(widths) - 1)))
        # one head per decoder level with deep supervision, else only the full-resolution one (no unused parameters under DDP)
        self.heads = nn.ModuleList(nn.Conv3d(widths[n], out_channels, 1) for n in range(len(widths) - 1 if deep_supervision else 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        skips = self.encoder(x)
        x = skips[-1]
        outputs = []
        for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1])):
            x = decode(torch.cat([up(x), skip], dim=1))
            outputs.append(x)
        # outputs run coarse -> fine; heads are indexed by level (0 = full resolution)
        full = self.heads[0](outputs[-1])
        if not (self.deep_supervision and self.training):
            return full
        coarse = [self.heads[len(outputs) - 1 - n](outputs[n]) for n in range(len(outputs) - 1)]
        return [full, *reversed(coarse)]
