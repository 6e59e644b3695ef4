"""Start a fine-tuning network from a pretext bundle: matching by name and shape, with a load report.

VoCo bundles give their backbone (the v1 EMA teacher or the v2 shared backbone, as the official releases
export them); Volume Fusion bundles give the whole network except the class head. A bundle that does not
fit the requested network (an encoder tensor with no counterpart of the same shape) is a BundleError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..bundle import Bundle, as_bundle
from ..config import NetworkConfig
from ..errors import BundleError

__all__ = ["LoadReport", "finetune_network", "load_pretext_weights", "preset_for_init"]


@dataclass
class LoadReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # pretext tensors not used (heads)
    fresh: list[str] = field(default_factory=list)  # target tensors left at their initialisation

    def summary(self) -> str:
        return f"initialised {len(self.loaded)} of {len(self.loaded) + len(self.fresh)} tensors from {self.source} ({len(self.skipped)} pretext tensors unused)"

    def to_dict(self) -> dict:
        return {"source": self.source, "loaded": len(self.loaded), "fresh": len(self.fresh), "skipped": self.skipped[:50], "loaded_names": self.loaded}


def _pretext(bundle: Bundle) -> str:
    if bundle.task != "pretext":
        raise BundleError(f"{bundle.path}: --init needs a pretext bundle (VoCo or Volume Fusion), this one is a {bundle.task!r} bundle.")
    return bundle.meta["pretext"]["method"]


def finetune_network(bundle: Bundle | str | Path, requested: str | None) -> NetworkConfig:
    """The fine-tuning network that fits a pretext bundle (``requested`` may name it explicitly)."""
    bundle = as_bundle(bundle)
    _pretext(bundle)
    name = bundle.network["name"]
    kwargs = {k: v for k, v in bundle.network["kwargs"].items() if k not in ("in_channels", "out_channels")}
    if name == "cnn-small":  # VoCo's CPU backbone is the small UNet's encoder
        name = "unet-small"
    if requested and requested not in (name, "unet" if name == "unet-small" else name):
        raise BundleError(f"{bundle.path}: holds a {name!r} network; it cannot initialise --network {requested!r}.")
    kwargs.pop("deep_supervision", None)
    return NetworkConfig(name, kwargs)


def preset_for_init(preset, bundle: Bundle | str | Path, requested: str | None = None):
    """``preset`` (changed in place and returned) with the network and intensity that fit a pretext bundle;
    spacing stays the fine-tune preset's (never a whole-volume resize)."""
    bundle = as_bundle(bundle)
    preset.network = finetune_network(bundle, requested)
    preset.preprocess.intensity = bundle.meta["preprocessing"].get("intensity", preset.preprocess.intensity)
    return preset


def _source_state(bundle: Bundle) -> tuple[dict[str, torch.Tensor], str]:
    """Pretext tensors under the target network's names, and what a missing key means."""
    if _pretext(bundle) == "voco":
        from ..pretext.voco_bundle import voco_backbone_state

        network, state = voco_backbone_state(bundle)
        prefix = "encoder." if network["name"] == "cnn-small" else ""
        return {prefix + k: v for k, v in state.items()}, "backbone"
    return dict(bundle.state_dict()), "network"


def load_pretext_weights(model: nn.Module, bundle: Bundle | str | Path) -> LoadReport:
    """Copy matching pretext tensors into ``model`` (in place) and report what was loaded."""
    bundle = as_bundle(bundle)
    source, part = _source_state(bundle)
    target = model.state_dict()
    report = LoadReport(str(bundle.path))
    misfits = []
    for key, value in source.items():
        if key in target and tuple(target[key].shape) == tuple(value.shape):
            target[key] = value.to(target[key].dtype)
            report.loaded.append(key)
        elif key in target and part == "network" and value.ndim >= 1 and target[key].shape[1:] == value.shape[1:]:
            report.skipped.append(key)  # the class head: another number of classes
        elif key in target or part == "backbone":
            misfits.append(f"{key} {tuple(value.shape)} vs {tuple(target[key].shape) if key in target else 'absent'}")
        else:
            report.skipped.append(key)
    if misfits or not report.loaded:
        detail = "; ".join(misfits[:3]) or "no tensor matched"
        raise BundleError(f"{bundle.path}: the pretext {part} does not fit the fine-tuning network ({detail}).")
    model.load_state_dict(target)
    report.fresh = [k for k in target if k not in set(report.loaded)]
    return report
