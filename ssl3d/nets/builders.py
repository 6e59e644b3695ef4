"""Network builders by name + kwargs (what presets and bundles store).

Names: ``unet-small`` (:class:`~ssl3d.nets.unet.UNet`), ``cnn-small`` (its encoder alone),
``swinunetr`` (MONAI SwinUNETR, ``use_v2`` as given, ``merging`` ``"v1.3"`` | ``"distinct"``), ``pctnet`` (:class:`~ssl3d.nets.pctnet.PCTNet`).
Aliases for SwinUNETR sizes used by VoCo: ``swin-b`` (feature size 48), ``swin-l`` (96), ``swin-h`` (192).
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..config import look_up
from ..errors import ConfigError

__all__ = ["build_network", "size_multiple", "main_output", "NETWORKS", "SWIN_SIZES"]

SWIN_SIZES = {"swin-b": 48, "swin-l": 96, "swin-h": 192}


def _unet(in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> nn.Module:
    from .unet import UNet

    return UNet(in_channels, out_channels, **kwargs)


def _cnn(in_channels: int = 1, out_channels: int | None = None, **kwargs: Any) -> nn.Module:
    from .unet import UNetEncoder

    return UNetEncoder(in_channels, **kwargs)


def _swinunetr(in_channels: int = 1, out_channels: int = 2, feature_size: int = 48, use_v2: bool = True,
               merging: str = "distinct", **kwargs: Any) -> nn.Module:
    """SwinUNETR; ``merging`` picks the 3-D token merge (``"v1.3"``: MONAI <= 1.4, what released VoCo and
    SwinUNETR weights expect; ``"distinct"``: MONAI >= 1.5, the default of bundles that record none)."""
    from monai.networks.nets import SwinUNETR

    from .swin_merging import merging_class

    if feature_size % 12:
        raise ConfigError(f"swinunetr feature_size must be a multiple of 12, got {feature_size}.")
    return SwinUNETR(in_channels=in_channels, out_channels=out_channels, feature_size=feature_size, use_v2=use_v2,
                     downsample=merging_class(merging), **kwargs)


def _pctnet(in_channels: int = 1, out_channels: int = 2, **kwargs: Any) -> nn.Module:
    from .pctnet import PCTNet

    return PCTNet(in_chns=in_channels, class_num=out_channels, **kwargs)


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "unet-small": _unet,
    "cnn-small": _cnn,
    "swinunetr": _swinunetr,
    "pctnet": _pctnet,
}


def main_output(out: Any) -> Any:
    """The full-resolution output of a network that may return a deep-supervision list (its first item)."""
    return out[0] if isinstance(out, (list, tuple)) else out


def size_multiple(name: str, kwargs: dict, default: int = 1) -> int:
    """What every spatial side of the network's input must be divisible by (its total downsampling).

    unet-small / cnn-small: 2^(levels - 1); SwinUNETR: 32; other networks (PCT-Net has a fixed input size
    instead): ``default``.
    """
    if name in ("unet-small", "cnn-small"):
        return 2 ** (len(kwargs.get("channels", (8, 16, 32, 64))) - 1)
    if name == "swinunetr" or name in SWIN_SIZES:
        return 32
    return default


def build_network(name: str, in_channels: int = 1, out_channels: int | None = 2, **kwargs: Any) -> nn.Module:
    """Build a network; unknown names get "did you mean"; bad kwargs a ConfigError naming them."""
    if name in SWIN_SIZES:
        kwargs.setdefault("feature_size", SWIN_SIZES[name])
        name = "swinunetr"
    look_up(name, [*NETWORKS, *SWIN_SIZES], "network")
    try:
        return NETWORKS[name](in_channels=in_channels, out_channels=out_channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"network {name!r}: {exc}.") from None
