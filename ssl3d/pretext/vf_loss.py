"""The Volume Fusion loss and score, as PyMIC computes them: ``fusion_loss`` is 0.5 * Dice + 0.5 * CE with the
CE of either generation (``CE_FORMS``: the clamped log of PyMIC up to v0.5.0 / a906dfc, the plain log of
8bcebd6) on one output or over deep-supervision outputs; ``class_dice`` is the hard per-class Dice PyMIC logs.

Example::

    losses = fusion_loss(network(x), label, classes=5, weights="halving", ce="clamped")   # {"dice", "ce", "total"}
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from .volume_fusion import check_classes

__all__ = ["DS_WEIGHTS", "CE_FORMS", "fusion_loss", "class_dice"]

DS_WEIGHTS = ("off", "equal", "halving")
"""Deep supervision: "off" (the full-resolution output only, as the official VF configs' ``multiscale_pred =
False``), "equal" (PyMIC's weights before 2024-09-30) or "halving" (1/2^i, PyMIC since 9cc16a6)."""
CE_FORMS = ("clamped", "plain")
"""Cross-entropy: "clamped" ``-y log(0.999 p + 5e-4)`` (PyMIC 2022 to v0.5.0, a906dfc; MIS-FM and VolF were trained
with it) or "plain" ``-y log p`` (PyMIC 8bcebd6, after 4baccae), computed as ``log_softmax``: equal to the official
value wherever that is finite, and finite where the official softmax underflows to 0 and gives NaN (0 * log 0)."""


def _ds_weights(weights: str | Sequence[float], count: int) -> list[float]:
    if isinstance(weights, str):
        if weights not in DS_WEIGHTS:
            raise ConfigError(f"weights must be one of {DS_WEIGHTS} or a list of floats, got {weights!r}.")
        return [1.0] * count if weights in ("off", "equal") else [0.5 ** i for i in range(count)]
    w = [float(v) for v in weights]
    if len(w) != count or min(w) < 0 or sum(w) <= 0:
        raise ConfigError(f"weights must be {count} non-negative floats with a positive sum, got {w}.")
    return w


def _pooled_onehot(label: Tensor, classes: int, sizes: list[tuple[int, ...]]) -> dict[tuple[int, ...], Tensor]:
    """Average-pooled one-hot of ``label`` at each size, class by class (no full one-hot is kept)."""
    full, order = tuple(label.shape[2:]), sorted(set(sizes), key=lambda s: -s[0] * s[1] * s[2])
    out: dict[tuple[int, ...], list[Tensor]] = {s: [] for s in order}
    for c in range(classes):
        ind = (label == c).float()
        prev = ind
        for s in order:
            nested = all(f % p == 0 and p % t == 0 for f, p, t in zip(full, prev.shape[2:], s))
            prev = F.adaptive_avg_pool3d(prev if nested else ind, s)
            out[s].append(prev)
    return {s: torch.cat(v, 1) for s, v in out.items()}


def _terms_hard(prob: Tensor, log_prob: Tensor | None, label: Tensor, classes: int) -> tuple[Tensor, Tensor]:
    idx = label.long()
    if label.is_signed() and bool((idx < 0).any()):
        raise InputError(f"label values must lie in 0..{classes - 1}, got {int(idx.min())}.")
    count = torch.bincount(idx.reshape(-1), minlength=classes)
    if count.numel() != classes:
        raise InputError(f"label values must lie in 0..{classes - 1}, got up to {count.numel() - 1}.")
    p_true = prob.gather(1, idx)
    inter = prob.new_zeros(classes).index_add(0, idx.reshape(-1), p_true.reshape(-1))
    dice = (2 * inter + 1e-5) / (count.to(prob.dtype) + prob.sum((0, 2, 3, 4)) + 1e-5)
    log_true = torch.log(0.999 * p_true + 5e-4) if log_prob is None else log_prob.gather(1, idx)
    return (1 - dice).mean(), -log_true.mean()


def _terms_soft(prob: Tensor, log_prob: Tensor | None, gt: Tensor) -> tuple[Tensor, Tensor]:
    dims = (0, 2, 3, 4)
    dice = (2 * (prob * gt).sum(dims) + 1e-5) / (gt.sum(dims) + prob.sum(dims) + 1e-5)
    log_p = torch.log(0.999 * prob + 5e-4) if log_prob is None else log_prob
    return (1 - dice).mean(), -(gt * log_p).sum(1).mean()


def fusion_loss(outputs: Tensor | Sequence[Tensor], label: Tensor, classes: int = 5,
                weights: str | Sequence[float] = "halving", ce: str = "clamped") -> dict[str, Tensor]:
    """PyMIC's segmentation loss of VF: 0.5 * Dice + 0.5 * CE, on one output or deep-supervised.

    Per output i: p = softmax (one softmax shared by both terms, computed in float32); the target is
    the one-hot label, average-pooled to the output's size when smaller (deep_supervise_mode 2).
    Dice is a batch Dice over all classes, background included: mean_c 1 - (2 sum p y + 1e-5) /
    (sum y + sum p + 1e-5). CE is mean_voxels sum_c -y log(0.999 p + 5e-4) ("clamped") or -y log p
    ("plain", see :data:`CE_FORMS`). Terms are combined as sum_i w_i L_i / sum_i w_i.

    Args:
        outputs: logits (N, classes, d, h, w), or a list of them, full resolution first.
        label: (N, 1, D, H, W) integer (uint8) 0..classes-1 at full resolution.
        weights: "off" (the first output only, as PyMIC without ``deep_supervise``), "equal" (PyMIC before
            2024-09-30), "halving" (1/2^i, PyMIC since) or floats; see :data:`DS_WEIGHTS`.
        ce: "clamped" (PyMIC up to v0.5.0, VF v1) or "plain" (PyMIC 8bcebd6, VolF v2).

    Returns:
        ``{"dice", "ce", "total"}`` scalar tensors; total = 0.5 * dice + 0.5 * ce.

    Example:
        >>> label = torch.randint(0, 5, (2, 1, 8, 16, 16), dtype=torch.uint8)
        >>> outs = [torch.randn(2, 5, 8, 16, 16), torch.randn(2, 5, 8, 8, 8)]
        >>> sorted(fusion_loss(outs, label, weights="equal"))
        ['ce', 'dice', 'total']
    """
    outs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    classes = check_classes(classes)
    if label.dim() != 5 or label.shape[1] != 1 or label.is_floating_point():
        raise InputError(f"label must be an integer tensor (N, 1, D, H, W), got {label.dtype} {tuple(label.shape)}.")
    full = tuple(label.shape[2:])
    for i, o in enumerate(outs):
        if o.dim() != 5 or o.shape[:2] != (label.shape[0], classes) or any(
                s > f for s, f in zip(o.shape[2:], full)):
            raise InputError(f"outputs[{i}] must be (N={label.shape[0]}, {classes}, d, h, w) with d, h, w "
                             f"<= {full}, got {tuple(o.shape)}.")
    if ce not in CE_FORMS:
        raise ConfigError(f"ce must be one of {CE_FORMS}, got {ce!r}.")
    if isinstance(weights, str) and weights == "off":
        outs = outs[:1]  # PyMIC without deep_supervise: the losses see the first output only
    plain = ce == "plain"
    w = _ds_weights(weights, len(outs))
    pooled = _pooled_onehot(label, classes, [tuple(o.shape[2:]) for o in outs if tuple(o.shape[2:]) != full])
    dice = ce = outs[0].new_zeros((), dtype=torch.float32)
    for wi, o in zip(w, outs):
        prob = torch.softmax(o.float(), dim=1)
        log_prob = torch.log_softmax(o.float(), dim=1) if plain else None
        size = tuple(o.shape[2:])
        d, c = _terms_hard(prob, log_prob, label, classes) if size == full else _terms_soft(prob, log_prob, pooled[size])
        dice, ce = dice + wi * d, ce + wi * c
    dice, ce = dice / sum(w), ce / sum(w)
    return {"dice": dice, "ce": ce, "total": 0.5 * dice + 0.5 * ce}


def class_dice(logits: Tensor, label: Tensor, classes: int = 5) -> Tensor:
    """Hard (argmax) batch Dice per class, (2 |P and Y| + 1e-5) / (|P| + |Y| + 1e-5), as PyMIC logs it:
    logits (N, classes, D, H, W), label (N, 1, D, H, W) -> (classes,); ``[1:].mean()`` is ``avg_fg_dice``.

    Example:
        >>> lab = torch.randint(0, 5, (1, 1, 4, 4, 4), dtype=torch.uint8)
        >>> class_dice(F.one_hot(lab[:, 0].long(), 5).permute(0, 4, 1, 2, 3).float(), lab).tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0]
    """
    pred, lab = logits.argmax(1).reshape(-1), label.reshape(-1).long()
    hit = torch.bincount(lab[pred == lab], minlength=classes)[:classes].float()
    n_pred = torch.bincount(pred, minlength=classes)[:classes].float()
    n_lab = torch.bincount(lab, minlength=classes)[:classes].float()
    return (2 * hit + 1e-5) / (n_pred + n_lab + 1e-5)
