"""Volume Fusion bundles: what a VF pretext bundle holds, loading one, and its fusion accuracy (released
MIS-FM PCT-Net checkpoints come in by :mod:`ssl3d.weights.misfm`).

A VF pretext bundle (``task: pretext``, ``pretext.method: vf``) holds the whole network with its
fusion head (``classes`` outputs, 5 for K = 4), the preset it was trained with (its ``fusion`` section
generates samples again) and the preprocessing. Labels 1..K name the fusion classes ("alpha 1/4", ...).

Example::

    model = load_vf_bundle("run/bundle", "cpu")
    x, label = fused_set(volumes, model.fusion, 8, seed=0)     # ssl3d.pretext.vf_samples
    logits = model.logits(x)                                    # (8, 5, D, H, W)
    fusion_accuracy(model, volumes, n=8, seed=0)["balanced_accuracy"]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..bundle import Bundle, as_bundle
from ..config import Preset, from_dict, to_dict
from ..errors import BundleError, ConfigError, InputError
from .vf_samples import class_names, fused_set, fusion_metrics, pad_volumes, percentile_method, predict_logits

__all__ = ["VFModel", "fusion_bundle_meta", "load_vf_bundle", "fusion_accuracy"]

# viridis samples for alpha 1/4 .. 1 (alpha 0, the background, has no label entry)
_COLORS = [(59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]


# ---------------------------------------------------------------------------------------------- bundle meta


def _labels(classes: int) -> list[dict]:
    names = class_names(classes)
    return [{"value": c, "name": names[c], "color": list(_COLORS[(c - 1) % len(_COLORS)])} for c in range(1, classes)]


def fusion_bundle_meta(preset: Preset, network: str, kwargs: dict, provenance: dict, metrics: dict) -> dict:
    """``bundle.json`` sections of a VF pretext bundle.

    Args:
        preset: the resolved VF preset (stored whole; its fusion section regenerates samples).
        network, kwargs: builder name and full kwargs (``in_channels``, ``out_channels`` = classes).
        provenance, metrics: the bundle's provenance and metrics sections.
    """
    classes = int(kwargs["out_channels"])
    fusion = preset.fusion
    head = {"present": True, "classes": classes, "fusion_classes": classes == fusion.classes, "alphas": [c / (classes - 1) for c in range(classes)]}
    return {
        "network": {"name": network, "kwargs": kwargs},
        "task": "pretext",
        "preprocessing": to_dict(preset.preprocess),
        "labels": _labels(classes),
        "pretext": {"method": "vf", "preset": preset.name, "version": fusion.version, "classes": fusion.classes, "heads": {"fusion": head}},
        "provenance": provenance,
        "metrics": metrics,
        "preset": to_dict(preset),
    }


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class VFModel:
    """A loaded VF pretext bundle: the network (eval mode, on ``device``) and the settings it came with."""

    network: nn.Module
    bundle: Bundle
    preset: Preset
    device: torch.device

    @property
    def fusion(self):
        """The :class:`~ssl3d.config.FusionConfig` the network was trained (or is assumed) with."""
        return self.preset.fusion

    @property
    def classes(self) -> int:
        return int(self.bundle.network["kwargs"]["out_channels"])

    @property
    def preprocessing(self):
        from ..data.preprocess import PreprocessConfig

        return PreprocessConfig(**self.bundle.meta["preprocessing"])

    @property
    def percentile_method(self) -> str:
        return percentile_method(self.preset)

    def logits(self, x: Tensor, chunk: int = 2) -> Tensor:
        """Full-resolution logits (N, classes, D, H, W) of x (N, 1, D, H, W), no gradients.

        Inputs are padded to what the network takes (PCT-Net: exactly its ``input_size``, with the
        batch minimum; UNet: multiples of 8; SwinUNETR: of 32) and the outputs cropped back.

        Raises:
            InputError: x is not (N, 1, D, H, W), or larger than a PCT-Net's fixed input size.
        """
        if x.dim() != 5 or x.shape[1] != 1:
            raise InputError(f"x must be (N, 1, D, H, W), got {tuple(x.shape)}.")
        padded, box = self._pad(x.to(self.device))
        with torch.no_grad():
            return predict_logits(self.network, padded, chunk)[(slice(None), slice(None), *box)]

    def _pad(self, x: Tensor) -> tuple[Tensor, tuple[slice, ...]]:
        kwargs = self.bundle.network["kwargs"]
        if self.bundle.network["name"] == "pctnet":
            from ..nets.pctnet import pad_to_input_size

            return pad_to_input_size(x, kwargs["input_size"], float(x.min()))
        from ..train.segmentation import pad_to_multiple

        from ..nets.builders import size_multiple

        return pad_to_multiple(x, size_multiple(self.bundle.network["name"], kwargs, default=8))


def load_vf_bundle(bundle: Bundle | str | Path, device: torch.device | str = "cpu") -> VFModel:
    """Load a VF pretext bundle (trained or imported) for inference.

    Args:
        bundle: a bundle folder or a loaded :class:`~ssl3d.bundle.Bundle`.
        device: where the network goes.

    Raises:
        BundleError: not a VF pretext bundle, no usable preset section, or weights that do not fit.
    """
    from ..infer.segment import load_model

    bundle = as_bundle(bundle)
    if bundle.task != "pretext" or bundle.meta.get("pretext", {}).get("method") != "vf":
        raise BundleError(f"{bundle.path}: not a Volume Fusion pretext bundle (task {bundle.task!r}, pretext {bundle.meta.get('pretext')!r}).")
    try:
        preset = from_dict(bundle.meta["preset"])
    except (KeyError, ConfigError) as exc:
        raise BundleError(f"{bundle.path}: bundle.json needs the 'preset' section of a vf preset ({exc}).") from None
    if preset.fusion is None:
        raise BundleError(f"{bundle.path}: the preset section {preset.name!r} has no fusion settings.")
    device = torch.device(device)
    return VFModel(load_model(bundle, device), bundle, preset, device)


def _model_space(volumes: Sequence[Any], model: VFModel) -> list[Tensor]:
    """Volumes (Volume, or tensors (1, D, H, W) / (D, H, W) already in model space) -> (1, D, H, W) tensors."""
    from ..data.preprocess import preprocess
    from ..io import Volume

    out = []
    for n, v in enumerate(volumes):
        if isinstance(v, Volume):
            v = preprocess(v, model.preprocessing)[0][0]
        if not isinstance(v, Tensor) or v.dim() not in (3, 4) or (v.dim() == 4 and v.shape[0] != 1):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise InputError(f"volumes[{n}] must be a Volume or a (1, D, H, W) / (D, H, W) tensor, got {shape}.")
        out.append((v if v.dim() == 4 else v[None]).float().to(model.device))
    return out


def fusion_accuracy(bundle: VFModel | Bundle | str | Path, volumes: Sequence[Any], n: int = 8, seed: int = 0,
                    device: torch.device | str | None = None) -> dict[str, Any]:
    """How well a VF bundle predicts the fusion class of a fixed seeded fused set.

    The set is made as in training (the bundle's ``fusion`` settings: v1 crops fused in a batch, v2
    crop4vf pairs), from ``volumes``; the same arguments give the same set.

    Args:
        bundle: a bundle folder, :class:`~ssl3d.bundle.Bundle` or :class:`VFModel`.
        volumes: :class:`~ssl3d.io.Volume` (preprocessed with the bundle's preprocessing) or
            model-space tensors (1, D, H, W) / (D, H, W).
        n: fused samples (>= 2 for v1).
        seed: seed of the set.
        device: where to run (a loaded VFModel keeps its own); default CPU.

    Returns:
        :func:`~ssl3d.pretext.vf_samples.fusion_metrics` (``balanced_accuracy``, ``per_class_recall``,
        ``dice``, ``fg_dice``, ``accuracy``, ``confusion``) plus ``n``, ``seed`` and ``class_names``.
        An all-background model scores balanced accuracy 1 / classes (0.2).

    Raises:
        BundleError: not a VF bundle, or its head does not have the fusion classes.
        InputError: no volumes or volumes of the wrong shape.
    """
    model = bundle if isinstance(bundle, VFModel) else load_vf_bundle(bundle, device or "cpu")
    if model.classes != model.fusion.classes:
        raise BundleError(f"{model.bundle.path}: the network has {model.classes} outputs, not the {model.fusion.classes} fusion classes.")
    if not volumes:
        raise InputError("fusion_accuracy needs at least one volume.")
    vols = _model_space(volumes, model)
    vols = pad_volumes(vols, model.fusion.patch, model.preprocessing.pad_mode) if model.fusion.version == 1 else vols
    x, label = fused_set(vols, model.fusion, n, seed, model.percentile_method)
    metrics = fusion_metrics(model.logits(x), label, model.classes)
    return {**metrics, "n": n, "seed": seed, "class_names": class_names(model.classes)}
