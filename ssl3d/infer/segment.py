"""Whole-volume segmentation with a segmentation bundle: preprocessing from the bundle, MONAI sliding
windows with Gaussian blending, the label map pasted back onto the input grid exactly."""

from __future__ import annotations

import torch

from ..bundle import Bundle, as_bundle
from ..errors import BundleError
from ..io import Volume

__all__ = ["load_model", "segment_volume"]


def load_model(bundle: Bundle | str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build the bundle's network and load its weights (strict), in eval mode on ``device``."""
    from ..nets.builders import build_network

    bundle = as_bundle(bundle)
    network = dict(bundle.network["kwargs"])
    model = build_network(bundle.network["name"], **network)
    try:
        model.load_state_dict(bundle.state_dict())
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path}: the weights do not fit network {bundle.network['name']!r} ({str(exc).splitlines()[0]}).") from None
    return model.to(device).eval()


def segment_volume(bundle: Bundle | str, volume: Volume, device: str | torch.device = "cpu", overlap: float = 0.5, sw_batch: int = 2, model: torch.nn.Module | None = None) -> Volume:
    """Label map (uint8) of ``volume`` on its own grid.

    The window is the bundle's training patch (``preset.train.patch``), else the whole (padded) volume.
    """
    from monai.inferers import sliding_window_inference

    from ..data.preprocess import PreprocessConfig, preprocess
    from ..train.segmentation import pad_to_multiple

    bundle = as_bundle(bundle)
    if bundle.task != "segmentation":
        raise BundleError(f"{bundle.path}: task is {bundle.task!r}; whole-volume segmentation needs a segmentation bundle.")
    device = torch.device(device)
    model = model or load_model(bundle, device)
    x, mapping = preprocess(volume, PreprocessConfig(**bundle.meta["preprocessing"]))
    channels = bundle.network["kwargs"].get("channels", (8, 16, 32, 64))
    x, crop = pad_to_multiple(x.to(device), 2 ** (len(channels) - 1))
    patch = (bundle.meta.get("preset", {}).get("train", {}) or {}).get("patch")
    roi = tuple(min(p, s) for p, s in zip(patch, x.shape[2:])) if patch else tuple(x.shape[2:])
    with torch.no_grad():
        logits = sliding_window_inference(x, roi, sw_batch, model, overlap=overlap, mode="gaussian")
    labels = logits[(0, slice(None), *crop)].argmax(0).to(torch.uint8).cpu()
    return mapping.to_input_grid(labels, label=True)
