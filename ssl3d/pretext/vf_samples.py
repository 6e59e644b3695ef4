"""Volume Fusion samples and scores from cached volumes: padding, fused batches (v1 batch fusion, v2
crop4vf pairs) drawn from per-sample generators, a fixed seeded fused set, and the fusion-class metrics.

Pure functions on tensors (the fusion itself is :mod:`ssl3d.pretext.volume_fusion`); the training task
(:mod:`ssl3d.pretext.vf_task`) and the bundle's scoring (:mod:`ssl3d.pretext.vf_bundle`) both use them.

Example::

    x, label = fused_set(volumes, preset.fusion, n=8, seed=0)     # the same set for the same arguments
    fusion_metrics(model_logits, label, preset.fusion.classes)["balanced_accuracy"]
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..nets.builders import main_output
from . import volume_fusion as vf
from .vf_loss import class_dice

if TYPE_CHECKING:
    from ..config import FusionConfig, Preset

__all__ = ["percentile_method", "pad_volumes", "fused_batch", "fused_set", "predict_logits", "class_names", "fusion_metrics"]

_VAL_SALT = 0x5646  # seeds of the fixed validation set ("VF")


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
    (starts,) = crop.starts.tolist()  # only the crop is read (a MappedVolume reads it from disk)
    region = volume[(slice(None), *(slice(a, a + n) for a, n in zip(starts, crop.size)))]
    return vf.apply_crop_v1(region[None], replace(crop, starts=torch.zeros_like(crop.starts)))


def _pair_v2(volumes: Sequence[Tensor], fusion: FusionConfig, g: torch.Generator, method: str) -> tuple[Tensor, Tensor]:
    volume = _pick(volumes, g)
    lo, hi = fusion.scale
    params = vf.draw_crop4vf(1, tuple(volume.shape[1:]), g, fusion.patch, scale_lower=(lo,) * 3, scale_upper=(hi,) * 3,
                             gamma_range=fusion.gamma, invert_p=fusion.inversion_p)
    fg, bg = vf.apply_crop4vf([volume], params, method)  # reads the two crops only
    return vf.fuse_v2(fg, bg, g, fusion.classes, fusion.foreground_ratio, fusion.block_min, fusion.block_max)


def fused_batch(volumes: Sequence[Tensor], fusion: FusionConfig, generators: Sequence[torch.Generator],
                fuse_generator: torch.Generator, method: str = "exact") -> tuple[Tensor, Tensor]:
    """One fused batch from cached volumes, on their device.

    Args:
        volumes: (1, D, H, W) float volumes (v1: at least ``fusion.patch``, see :func:`pad_volumes`): tensors,
            or :class:`~ssl3d.data.mapped.MappedVolume` (each sample reads only its crops, the same values).
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
        outs.append(main_output(out))
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
    dice = torch.stack([class_dice(logits[i:i + 1], label[i:i + 1], classes) for i in range(logits.shape[0])]).mean(0).cpu()
    return {
        "fg_dice": float(dice[1:].mean()),
        "dice": [float(d) for d in dice],
        "balanced_accuracy": float(recall[support > 0].mean()),
        "per_class_recall": [float(r) for r in recall],
        "accuracy": float(confusion.diagonal().sum() / confusion.sum()),
        "confusion": confusion.long().tolist(),
    }
