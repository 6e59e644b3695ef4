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

Example::

    preset = apply_network_choice(get_preset("vf-v1-cpu"), "unet", None)
    outputs = train(FusionTask("phantoms/", Path("run/cache")), preset, "run", torch.device("cpu"))
    report = fusion_accuracy(outputs["bundle"], volumes, n=8, seed=0)   # balanced_accuracy, dice, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FusionConfig, Preset, apply_overrides, look_up
from ..errors import ConfigError, DatasetError
from ..nets.builders import size_multiple
from ..train.loop import Task, TrainContext
from . import volume_fusion as vf

__all__ = [
    "FusionTask",
    "NETWORK_CHOICES",
    "apply_network_choice",
    "network_spec",
    "percentile_method",
    "pad_volumes",
    "fused_batch",
    "fused_set",
    "predict_logits",
    "class_names",
    "fusion_metrics",
    "import_misfm_weights",
    "load_vf_bundle",
    "fusion_accuracy",
    "demo_stage",
]

NETWORK_CHOICES = ("pctnet", "unet", "swinunetr")
"""``--network`` values of ``ssl3d pretrain --method vf`` ("unet" is unet-small)."""

_FUSION_SALT = 1  # ctx.generator salt of the v1 batch fusion (crops use salt 0)
_VAL_SALT = 0x5646  # seeds of the fixed validation set ("VF")


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
    look_up(preset.fusion.deep_supervision, vf.DS_WEIGHTS, "fusion.deep_supervision value")
    look_up(preset.fusion.ce, vf.CE_FORMS, "fusion.ce value")
    return preset.fusion


def percentile_method(preset: Preset) -> str:
    """"histogram" when the named departure ``options.histogram_percentile`` is on, else "exact"."""
    return "histogram" if preset.options.histogram_percentile else "exact"


# ---------------------------------------------------------------------------------------------- samples


def pad_volumes(volumes: Sequence[Tensor], patch: Sequence[int], mode: str = "minimum") -> list[Tensor]:
    """Pad (1, D, H, W) volumes smaller than ``patch`` on some axis, half before and half after, with a
    :data:`~ssl3d.data.preprocess.PAD_MODES` fill (``preprocess.pad_mode``: each volume's minimum, air after
    a CT window; 0; or reflect, as PyMIC's LUNA preprocessing); larger axes are left alone.

    Example::

        pad_volumes([torch.zeros(1, 10, 40, 40)], (16, 32, 32))[0].shape   # (1, 16, 40, 40)
    """
    from ..data.preprocess import pad_array

    out = []
    for v in volumes:
        margin = [max(0, p - s) for p, s in zip(patch, v.shape[1:])]
        if not any(margin):
            out.append(v)
            continue
        widths = [(0, 0)] + [(m // 2, m - m // 2) for m in margin]  # once per volume at load: numpy is fine
        out.append(torch.from_numpy(pad_array(v.cpu().numpy(), widths, mode)).to(v.device))
    return out


def _pick(volumes: Sequence[Tensor], g: torch.Generator) -> Tensor:
    return volumes[int(torch.randint(len(volumes), (1,), generator=g))]


def _crop_v1(volumes: Sequence[Tensor], fusion: FusionConfig, g: torch.Generator) -> Tensor:
    volume = _pick(volumes, g)
    crop = vf.draw_crop_v1(1, tuple(volume.shape[1:]), g, size=fusion.patch)
    return vf.apply_crop_v1(volume[None], crop)


def _pair_v2(volumes: Sequence[Tensor], fusion: FusionConfig, g: torch.Generator, method: str) -> tuple[Tensor, Tensor]:
    volume = _pick(volumes, g)
    lo, hi = fusion.scale
    fg, bg = vf.crop4vf(volume[None], g, fusion.patch, percentile_method=method, scale_lower=(lo,) * 3,
                        scale_upper=(hi,) * 3, gamma_range=fusion.gamma, invert_p=fusion.inversion_p)
    return vf.fuse_v2(fg, bg, g, fusion.classes, fusion.foreground_ratio, fusion.block_min, fusion.block_max)


def fused_batch(volumes: Sequence[Tensor], fusion: FusionConfig, generators: Sequence[torch.Generator],
                fuse_generator: torch.Generator, method: str = "exact") -> tuple[Tensor, Tensor]:
    """One fused batch from cached volumes, on their device.

    Args:
        volumes: (1, D, H, W) float volumes (v1: at least ``fusion.patch``, see :func:`pad_volumes`).
        fusion: the preset's fusion settings (version 1 or 2).
        generators: one CPU generator per sample (volume, crop, flips; v2 also contrast, gamma and blocks).
        fuse_generator: v1: the generator of ``fuse_v1`` over the batch (unused in v2).
        method: v2 percentile method, "exact" or "histogram".

    Returns:
        ``(x, label)``: (N, 1, *patch) float and (N, 1, *patch) uint8 classes 0..classes-1.

    Example::

        x, y = fused_batch([torch.rand(1, 32, 48, 48)], FusionConfig(1, (16, 32, 32), block_range=(3, 8),
                           size_min=(2, 4, 4), size_max=(10, 20, 20)), [gen(0), gen(1)], gen(2))
        x.shape, y.dtype      # (2, 1, 16, 32, 32), torch.uint8
    """
    if fusion.version == 1:
        crops = torch.cat([_crop_v1(volumes, fusion, g) for g in generators])
        return vf.fuse_v1(crops, fuse_generator, fusion.block_range, fusion.size_min, fusion.size_max, fusion.classes)
    pairs = [_pair_v2(volumes, fusion, g, method) for g in generators]
    return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])


def _seeded(*entropy: int) -> torch.Generator:
    seed = int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)


def fused_set(volumes: Sequence[Tensor], fusion: FusionConfig, n: int, seed: int, method: str = "exact") -> tuple[Tensor, Tensor]:
    """A fixed fused set of ``n`` samples: the same volumes, settings and seed give the same tensors.

    v1 fuses all ``n`` crops as one batch (the foreground of sample k is crop k-1), so ``n`` >= 2.

    Returns:
        ``(x, label)`` as :func:`fused_batch`, N = n.

    Raises:
        ConfigError: ``n`` < 1, or < 2 for v1.
    """
    if n < (2 if fusion.version == 1 else 1):
        raise ConfigError(f"a Volume Fusion v{fusion.version} sample set needs n >= {2 if fusion.version == 1 else 1}, got {n}.")
    generators = [_seeded(seed, k, _VAL_SALT) for k in range(n)]
    return fused_batch(volumes, fusion, generators, _seeded(seed, n, _VAL_SALT + 1), method)


# ---------------------------------------------------------------------------------------------- metrics


def predict_logits(model: nn.Module, x: Tensor, chunk: int = 2) -> Tensor:
    """Full-resolution logits (N, classes, D, H, W) of a VF network, ``chunk`` samples at a time
    (the first output of deep-supervision / multi-scale networks)."""
    outs = []
    for start in range(0, x.shape[0], chunk):
        out = model(x[start:start + chunk])
        outs.append(out[0] if isinstance(out, (list, tuple)) else out)
    return torch.cat(outs)


def class_names(classes: int) -> list[str]:
    """Fusion class names: ``"alpha 0"``, ``"alpha 1/4"``, ..., ``"alpha 1"`` for 5 classes."""
    from fractions import Fraction

    return [f"alpha {Fraction(c, classes - 1)}" for c in range(classes)]


def fusion_metrics(logits: Tensor, label: Tensor, classes: int) -> dict[str, Any]:
    """Fusion-class metrics of predictions against labels.

    Args:
        logits: (N, classes, D, H, W) full-resolution scores.
        label: (N, 1, D, H, W) integer classes.
        classes: number of fusion classes.

    Returns:
        ``fg_dice`` (PyMIC's ``avg_fg_dice``: hard Dice per sample and class, averaged over samples,
        then over classes 1..K), ``dice`` (per class, list), ``balanced_accuracy`` (mean recall over
        the classes present), ``per_class_recall`` (list, NaN for absent classes), ``accuracy`` and
        ``confusion`` (classes x classes voxel counts, rows = truth).
    """
    pred, truth = logits.argmax(1).reshape(-1).long(), label.reshape(-1).long()
    confusion = torch.bincount(truth * classes + pred, minlength=classes * classes).reshape(classes, classes).cpu().double()
    support = confusion.sum(1)
    recall = torch.where(support > 0, confusion.diagonal() / support.clamp_min(1), torch.full_like(support, float("nan")))
    dice = torch.stack([vf.class_dice(logits[i:i + 1], label[i:i + 1], classes) for i in range(logits.shape[0])]).mean(0).cpu()
    return {
        "fg_dice": float(dice[1:].mean()),
        "dice": [float(d) for d in dice],
        "balanced_accuracy": float(recall[support > 0].mean()),
        "per_class_recall": [float(r) for r in recall],
        "accuracy": float(confusion.diagonal().sum() / confusion.sum()),
        "confusion": confusion.long().tolist(),
    }


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
        volumes = cache.load_all(ctx.device)
        if self.fusion.version == 1:  # v2 resizes its crops
            volumes = pad_volumes(volumes, self.fusion.patch, preset.preprocess.pad_mode)
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
        return vf.fusion_loss(self.forward(x), label, self.fusion.classes, self.fusion.deep_supervision, self.fusion.ce)

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        x, label = self.val
        m = fusion_metrics(predict_logits(self.model, x, ctx.preset.train.batch_size), label, self.fusion.classes)
        per_class = dict(zip(class_names(self.fusion.classes)[1:], m["dice"][1:]))
        return {"score": m["fg_dice"], "fg_dice": m["fg_dice"], "balanced_accuracy": m["balanced_accuracy"],
                "accuracy": m["accuracy"], "per_class": per_class}

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        from ..bundle import write_bundle
        from .vf_bundle import fusion_bundle_meta

        provenance = {"data": str(self.data), "steps": int(checkpoint["step"]), "cache": self.cache_info}
        metrics = {"validation": checkpoint.get("best", {})}
        meta = fusion_bundle_meta(ctx.preset, self.network_name, self.network_kwargs, provenance, metrics)
        bundle = write_bundle(ctx.run_dir / "bundle", checkpoint["modules"]["model"], meta)
        return {"bundle": bundle.path}


# ---------------------------------------------------------------------------------------------- re-exports


def import_misfm_weights(path: Path, preset_name: str, out_dir: Path, allow_partial: bool = False):
    """Turn a released MIS-FM PCT-Net checkpoint into a pretext bundle (see :mod:`ssl3d.pretext.vf_bundle`)."""
    from .vf_bundle import import_misfm_weights as run

    return run(path, preset_name, out_dir, allow_partial)


def load_vf_bundle(bundle, device: torch.device | str = "cpu"):
    """A VF pretext bundle's network, fusion settings and preprocessing (:class:`~ssl3d.pretext.vf_bundle.VFModel`)."""
    from .vf_bundle import load_vf_bundle as run

    return run(bundle, device)


def fusion_accuracy(bundle, volumes, n: int = 8, seed: int = 0, device: torch.device | str | None = None) -> dict:
    """Metrics of a VF bundle on a fixed fused set (see :func:`ssl3d.pretext.vf_bundle.fusion_accuracy`)."""
    from .vf_bundle import fusion_accuracy as run

    return run(bundle, volumes, n, seed, device)


def demo_stage(ctx) -> None:
    """Demo stage: a short VF v1 pretraining on phantoms (see :func:`ssl3d.pretext.vf_bundle.demo_stage`)."""
    from .vf_bundle import demo_stage as run

    run(ctx)
