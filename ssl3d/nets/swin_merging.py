"""The 3-D token merge of MONAI SwinUNETR as the released VoCo / SwinUNETR weights were trained with it.

MONAI up to 1.4 (the official VoCo code pins 1.3.0) concatenated the 2x2x2 neighbours of ``PatchMerging``
as the slices (0,0,0), (1,0,0), (0,1,0), (0,0,1), (1,0,1), (0,1,0), (0,0,1), (1,1,1): two neighbours
repeated, two never used (kept on purpose for pretrained models, MONAI PR #4793). MONAI 1.5 (PR #8285)
takes the eight distinct ones. Keys and shapes are equal, so weights load either way but give other
features. Variants (the ``merging`` kwarg of the ``swinunetr`` network, recorded in bundles):
``"v1.3"`` (:class:`PatchMergingV13`) and ``"distinct"`` (MONAI's current ``PatchMerging``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMerging
from torch import Tensor

from ..errors import ConfigError

__all__ = ["MERGING_VARIANTS", "PatchMergingV13", "merging_class"]

# (depth, height, width) offsets in MONAI 1.3.0's order, duplicates included
_V13_OFFSETS = ((0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 0), (0, 0, 1), (1, 1, 1))


class PatchMergingV13(PatchMerging):
    """MONAI 1.3.0's 3-D ``PatchMerging``: same parameters as MONAI's, its neighbour order (see module doc).

    Shapes: ``(B, D, H, W, C) -> (B, ceil(D/2), ceil(H/2), ceil(W/2), 2C)``; 2-D input as MONAI's.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 5:
            return super().forward(x)
        _, d, h, w, _ = x.shape
        if d % 2 or h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x = torch.cat([x[:, i::2, j::2, k::2, :] for i, j, k in _V13_OFFSETS], -1)
        return self.reduction(self.norm(x))


MERGING_VARIANTS: dict[str, type[PatchMerging]] = {"v1.3": PatchMergingV13, "distinct": PatchMerging}
"""``merging`` kwarg -> class passed as SwinUNETR's ``downsample``. Bundles without it: ``"distinct"``."""


def merging_class(variant: str) -> type[PatchMerging]:
    """The ``downsample`` class for a merge variant; a ConfigError naming the choices otherwise."""
    if variant not in MERGING_VARIANTS:
        raise ConfigError(f"swinunetr merging must be one of {sorted(MERGING_VARIANTS)}, got {variant!r}.")
    return MERGING_VARIANTS[variant]
