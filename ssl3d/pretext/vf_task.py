"""Volume Fusion pretraining on the one training loop: fused batches on the device, the deep-supervised
Dice+CE loss, validation on a fixed seeded fused set, and a pretext bundle at the end.

Per step and per sample ``i`` (global index) the generator ``ctx.generator(step, i)`` draws everything:

* **v1** (MIS-FM paper): a volume, a ``fusion.patch`` crop and flips on all three axes
  (``draw_crop_v1``); then ``fuse_v1`` fuses this rank's batch (the foreground of sample n is sample
  n-1, cyclic) with a generator keyed by the step and the rank's first index. A per-rank batch below 2
  is a :class:`~ssl3d.errors.ConfigError`.
* **v2** (VolF): a volume, two resized crops of it with flips, adaptive contrast, gamma and a joint
  inversion (``crop4vf``), fused by ``fuse_v2`` with the same generator, so every sample is the same
  whatever the number of processes.

Labels are uint8 (N, 1, D, H, W) fusion classes 0..K (alpha = class / K, K = classes - 1).

The cache is read through its memory maps (:meth:`~ssl3d.data.datasets.VolumeCache.mapped`): each sample
reads only its crops (v1 pads them as ``pad_volumes`` pads a whole volume), so memory does not grow with the
number of cached volumes.

Example::

    preset = apply_network_choice(get_preset("vf-v1-cpu"), "unet", None)
    outputs = train(FusionTask("phantoms/", Path("run/cache")), preset, "run", torch.device("cpu"))
    report = fusion_accuracy(outputs["bundle"], volumes, n=8, seed=0)   # balanced_accuracy, dice, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from ..config import FusionConfig, Preset, apply_overrides, look_up
from ..errors import ConfigError, DatasetError
from ..nets.builders import size_multiple
from ..train.loop import Task, TrainContext
from .vf_loss import CE_FORMS, DS_WEIGHTS, fusion_loss
from .vf_bundle import fusion_bundle_meta
from .vf_samples import class_names, fused_batch, fused_set, fusion_metrics, percentile_method, predict_logits

__all__ = ["FusionTask", "NETWORK_CHOICES", "apply_network_choice", "network_spec"]

NETWORK_CHOICES = ("pctnet", "unet", "swinunetr")
"""``--network`` values of ``ssl3d pretrain --method vf`` ("unet" is unet-small)."""

_FUSION_SALT = 1  # ctx.generator salt of the v1 batch fusion (crops use salt 0)


# ---------------------------------------------------------------------------------------------- presets


def apply_network_choice(preset: Preset, network: str | None, feature_size: int | None = None) -> Preset:
    """Put ``--network`` / ``--feature-size`` onto a VF preset's network (a new preset).

    Args:
        preset: a ``vf-*`` preset.
        network: None (keep the preset's), "pctnet" (resolution_mode 1, input size = ``fusion.patch``),
            "unet" (unet-small; the preset's channels when it already is one) or
            "swinunetr" (MONAI SwinUNETR-v2, feature size 48 unless ``feature_size``).
        feature_size: SwinUNETR feature size (a multiple of 12); only with swinunetr.

    Raises:
        ConfigError: unknown network (with "did you mean"), or ``feature_size`` for another network.

    Example::

        apply_network_choice(get_preset("vf-v1"), "unet", None).network
        # NetworkConfig(name='unet-small', kwargs={'channels': [8, 16, 32, 64]})
    """
    current = preset.network
    if network is None:
        if feature_size is not None and current.name != "swinunetr":
            raise ConfigError(f"--feature-size applies to --network swinunetr only; preset {preset.name} uses {current.name}.")
        kwargs = {**current.kwargs, "feature_size": feature_size} if feature_size is not None else current.kwargs
        return apply_overrides(preset, {"network.kwargs": kwargs})
    choice = look_up(network, NETWORK_CHOICES, "--network value")
    if feature_size is not None and choice != "swinunetr":
        raise ConfigError(f"--feature-size applies to --network swinunetr only, got --network {choice}.")
    if choice == "pctnet":
        name, kwargs = "pctnet", dict(current.kwargs) if current.name == "pctnet" else {"resolution_mode": 1}
    elif choice == "unet":
        channels = current.kwargs.get("channels", [8, 16, 32, 64]) if current.name == "unet-small" else [8, 16, 32, 64]
        name, kwargs = "unet-small", {"channels": list(channels)}
    else:
        name, kwargs = "swinunetr", {"feature_size": feature_size or 48, "use_v2": True}
    return apply_overrides(preset, {"network.name": name, "network.kwargs": kwargs})


def network_spec(preset: Preset) -> tuple[str, dict]:
    """The builder name and full kwargs (``in_channels``, ``out_channels`` = classes included) of a VF
    preset's network, with what VF needs filled in: PCT-Net ``input_size`` = ``fusion.patch``; PCT-Net's
    ``multiscale_pred`` and unet-small's ``deep_supervision`` from ``fusion.deep_supervision`` (one output
    when "off", four deep-supervised outputs otherwise).

    Raises:
        ConfigError: not a VF preset; a network VF cannot train; a patch the network cannot take; network
            kwargs that contradict ``fusion.deep_supervision``.
    """
    fusion = _fusion(preset)
    name, kwargs = preset.network.name, dict(preset.network.kwargs)
    patch = list(fusion.patch)
    several = fusion.deep_supervision != "off"
    if name == "pctnet":
        kwargs.setdefault("input_size", patch)
        _outputs_agree(kwargs, "multiscale_pred", several, fusion.deep_supervision)
        if list(kwargs["input_size"]) != patch:
            raise ConfigError(f"PCT-Net input_size {list(kwargs['input_size'])} must equal fusion.patch {patch} (its input size is fixed).")
    elif name == "unet-small":
        _outputs_agree(kwargs, "deep_supervision", several, fusion.deep_supervision)
        _divisible(patch, size_multiple(name, kwargs), "unet-small")
    elif name == "swinunetr":
        _divisible(patch, size_multiple(name, kwargs), "swinunetr")
    else:
        raise ConfigError(f"network {name!r} cannot be trained with Volume Fusion; use one of pctnet, unet-small, swinunetr.")
    return name, {"in_channels": 1, "out_channels": fusion.classes, **kwargs}


def _outputs_agree(kwargs: dict, key: str, several: bool, choice: str) -> None:
    """Set the network's multi-output switch from the loss's choice; refuse a network.kwargs that says otherwise."""
    if kwargs.setdefault(key, several) != several:
        raise ConfigError(f"network.kwargs.{key}={kwargs[key]!r} contradicts fusion.deep_supervision={choice!r}; "
                          f"set fusion.deep_supervision to {'equal or halving' if kwargs[key] else 'off'} instead.")


def _divisible(patch: list[int], factor: int, name: str) -> None:
    if any(p % factor for p in patch):
        raise ConfigError(f"fusion.patch {patch} must be divisible by {factor} on every axis for {name}.")


def _fusion(preset: Preset) -> FusionConfig:
    if preset.fusion is None or preset.method != "vf":
        raise ConfigError(f"preset {preset.name!r} is not a Volume Fusion preset (method {preset.method!r}); use vf-v1, vf-v2, vf-v1-cpu or vf-v2-cpu.")
    if preset.fusion.version not in (1, 2):
        raise ConfigError(f"fusion.version must be 1 or 2, got {preset.fusion.version!r}.")
    look_up(preset.fusion.deep_supervision, DS_WEIGHTS, "fusion.deep_supervision value")
    look_up(preset.fusion.ce, CE_FORMS, "fusion.ce value")
    return preset.fusion


# ---------------------------------------------------------------------------------------------- the task


class FusionTask(Task):
    """Volume Fusion (MIS-FM v1 / VolF v2) on the one training loop.

    Args:
        data: folder, imagesTr/ folder, dataset.json or volume (images only).
        cache_dir: where preprocessed volumes are cached.
        strict: fail on an unreadable volume instead of skipping it.
        val_fraction: share of volumes held out for validation (at least one when there are two or
            more; with one volume the validation set is cut from it).
        val_samples: size of the fixed, seeded fused validation set.
    """

    name = "vf"

    def __init__(self, data: str | Path, cache_dir: Path, strict: bool = False, val_fraction: float = 0.2, val_samples: int = 8) -> None:
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}.")
        self.data, self.cache_dir, self.strict = data, Path(cache_dir), strict
        self.val_fraction, self.val_samples = val_fraction, val_samples

    def setup(self, ctx: TrainContext) -> None:
        from ..data.datasets import VolumeCache, find_cases
        from ..nets.builders import build_network

        preset = ctx.preset
        self.fusion, self.method = _fusion(preset), percentile_method(preset)
        if self.fusion.version == 1 and preset.train.batch_size < 2:
            raise ConfigError(
                f"Volume Fusion v1 fuses each sample with the previous one of the batch: --batch-size must be >= 2 "
                f"per process, got {preset.train.batch_size}."
            )
        name, kwargs = network_spec(preset)
        cache = VolumeCache(find_cases(self.data, labels=False), preset.preprocess, self.cache_dir, self.strict, ctx.logger)
        ctx.build_cache(cache)
        self.cache_info = cache.info()
        volumes = cache.mapped(ctx.device)  # memory maps: each sample reads its crops only
        if self.fusion.version == 1:  # v2 resizes its crops; v1 pads per read, as pad_volumes would
            volumes = [v.padded(self.fusion.patch, preset.preprocess.pad_mode) for v in volumes]
        self.train_set, held_out = self._split(volumes, cache.weights, ctx.seed)
        self.val = fused_set(held_out, self.fusion, self.val_samples, ctx.seed, self.method)
        self.network_name, self.network_kwargs = name, kwargs
        self.model = build_network(name, **kwargs).to(ctx.device)
        ctx.find_unused = name == "pctnet"  # PCT-Net's other embeddings and heads get no gradient
        self.forward = ctx.wrap(self.model)

    def _split(self, volumes: list[Tensor], weights: list[int], seed: int) -> tuple[list[Tensor], list[Tensor]]:
        """(training list, held-out volumes); a volume of datalist weight N is in the training list N times
        (references, not copies), so uniform draws from it are weighted."""
        if not volumes:
            raise DatasetError(f"{self.data}: no volumes to pretrain on.")
        order = np.random.default_rng(seed).permutation(len(volumes))
        n_val = max(1, int(round(len(volumes) * self.val_fraction))) if len(volumes) > 1 and self.val_fraction > 0 else 0
        train = [volumes[i] for i in order[n_val:] for _ in range(weights[i])]
        held_out = [volumes[i] for i in order[:n_val]] or [volumes[i] for i in order[n_val:]]
        return train, held_out

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def batch(self, ctx: TrainContext, step: int, indices: range) -> tuple[Tensor, Tensor]:
        generators = [ctx.generator(step, i) for i in indices]
        return fused_batch(self.train_set, self.fusion, generators, ctx.generator(step, indices.start, _FUSION_SALT), self.method)

    def losses(self, ctx: TrainContext, batch: tuple[Tensor, Tensor], step: int) -> dict[str, Tensor]:
        x, label = batch
        return fusion_loss(self.forward(x), label, self.fusion.classes, self.fusion.deep_supervision, self.fusion.ce)

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        x, label = self.val
        m = fusion_metrics(predict_logits(self.model, x, ctx.preset.train.batch_size), label, self.fusion.classes)
        per_class = dict(zip(class_names(self.fusion.classes)[1:], m["dice"][1:]))
        return {"score": m["fg_dice"], "fg_dice": m["fg_dice"], "balanced_accuracy": m["balanced_accuracy"],
                "accuracy": m["accuracy"], "per_class": per_class}

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        from ..bundle import write_bundle

        provenance = {"data": str(self.data), "steps": int(checkpoint["step"]), "cache": self.cache_info}
        metrics = {"validation": checkpoint.get("best", {})}
        meta = fusion_bundle_meta(ctx.preset, self.network_name, self.network_kwargs, provenance, metrics)
        bundle = write_bundle(ctx.run_dir / "bundle", checkpoint["modules"]["model"], meta)
        return {"bundle": bundle.path}
