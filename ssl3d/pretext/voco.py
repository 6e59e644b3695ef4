"""VoCo (volume contrast): position labels, losses, scores, heads, pooled features and the EMA teacher.

Everything here is pure torch (plus numpy for the closed-form labels) and written from the facts of the
official code (``Luffy03/VoCo`` for v1, ``Luffy03/Large-Scale-Medical`` for v2); parity with the official
functions is pinned by ``Testing/pretext/test_voco_*.py``.

Layouts (DESIGN.md "VoCo's grid"): the base crops form a ``grid x grid`` lattice in the axial plane,
cell ``k = ix*grid + iy`` with ``ix`` along x (W) and ``iy`` along y (H). Embeddings after a head are
batched per volume: random crops ``(B, n_random, D)``, base crops ``(B, n_base, D)``.

Dtype behaviour of the losses (chosen to equal the official values): embeddings are computed in at least
float32 (float16/bfloat16 inputs are promoted, and autocast is switched off inside the losses and
:func:`cosine_matrix`, as autocast runs the official ``cosine_similarity`` in float32); the
positive term is computed in the dtype of ``labels`` promoted with it, so the official float64 labels
give a float64 ``pos``/``intra``; the other terms stay in the embeddings' dtype. ``total`` is a 0-d tensor
in the embeddings' dtype, computed as ``float32(pos + neg) + reg`` exactly as the official type promotion
does (the official total is the same float32 value with shape ``(1,)``).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError, InputError

__all__ = [
    "position_labels",
    "cosine_matrix",
    "position_scores_v1",
    "position_scores_v2",
    "voco_v1_loss",
    "voco_v2_loss",
    "ProjectionHead",
    "CropDropout",
    "crop_dropout",
    "pooled_features",
    "swin_feature_dim",
    "swinunetr_encoder_outputs",
    "SwinPooledEncoder",
    "freeze_teacher",
    "ema_update",
]

_EPS = 1e-6  # the official 1e-6 inside the logs and denominators
_COS_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default


# ----------------------------------------------------------------------------------------------- labels


def position_labels(centers: np.ndarray | Sequence[Sequence[int]], crop: int, base: int, grid: int) -> np.ndarray:
    """Overlap fractions of random crops with the base crops, in closed form (the official labels exactly).

    A random crop with centre ``(cx, cy)`` covers ``[cx - crop//2, cx - crop//2 + crop)`` on x and the same
    on y (and the full depth); base cell ``(ix, iy)`` covers ``[ix*base, (ix+1)*base)`` on x and
    ``[iy*base, (iy+1)*base)`` on y. The label of cell ``k = ix*grid + iy`` is the overlap area divided
    by ``crop**2`` (integer area, then one float64 division: bitwise equal to the official function).

    Args:
        centers: ``(n, 2)`` integer centres ``(cx, cy)`` in voxels of the x-y plane of the volume the
            crops are cut from (before any resize). v1 draws them in ``[48, 336)``, v2 in ``[32, 160)``.
        crop: random crop edge in voxels (v1 96, v2 64).
        base: base crop edge in voxels (v1 96, v2 64).
        grid: base crops per side (v1 4, v2 3).

    Returns:
        float64 array ``(n, grid*grid)``; each row sums to 1 when the crop lies inside the grid.

    Raises:
        InputError: non-integer or wrongly shaped ``centers``; non-positive sizes.

    Example::

        position_labels([[48, 48]], crop=96, base=96, grid=4)[0, 0]   # 1.0: exactly base cell 0
    """
    for name, value in (("crop", crop), ("base", base), ("grid", grid)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}.")
    c = np.asarray(centers)
    if c.ndim != 2 or c.shape[1] != 2:
        raise InputError(f"centers must have shape (n, 2) as (cx, cy), got shape {c.shape}.")
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise InputError(f"centers must be integer voxel positions, got dtype {c.dtype}.")
    c = c.astype(np.int64)
    lo = c - crop // 2
    hi = lo + crop
    starts = np.arange(grid, dtype=np.int64) * base
    ox = np.clip(np.minimum(starts + base, hi[:, :1]) - np.maximum(starts, lo[:, :1]), 0, None)
    oy = np.clip(np.minimum(starts + base, hi[:, 1:]) - np.maximum(starts, lo[:, 1:]), 0, None)
    area = ox[:, :, None] * oy[:, None, :]  # (n, ix, iy)
    return area.reshape(len(c), grid * grid) / float(crop * crop)


# ----------------------------------------------------------------------------------------------- scores


def _work_dtype(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def cosine_matrix(a: Tensor, b: Tensor) -> Tensor:
    """Cosine similarity of every row of ``a`` with every row of ``b``, batched.

    Args:
        a: ``(..., n, D)``.
        b: ``(..., m, D)``.

    Returns:
        ``(..., n, m)`` in at least float32; norms are clamped at 1e-8 like ``F.cosine_similarity``.
    """
    with _no_autocast(a):  # under AMP the matmul would run in float16/bfloat16 (cosine error 3e-5 vs 1e-8)
        a = F.normalize(a.to(_work_dtype(a)), dim=-1, eps=_COS_EPS)
        b = F.normalize(b.to(_work_dtype(b)), dim=-1, eps=_COS_EPS)
        return a @ b.transpose(-1, -2)


def _no_autocast(x: Tensor) -> torch.autocast:
    """Autocast switched off on ``x``'s device: the losses run in (at least) float32 inside an AMP step."""
    return torch.autocast(device_type=x.device.type, enabled=False)


def position_scores_v1(x_s: Tensor, x_t: Tensor, b_s: Tensor, b_t: Tensor) -> Tensor:
    """VoCo v1 position prediction ``0.5 * (relu cos(x_s, b_t) + relu cos(x_t, b_s))``.

    Args:
        x_s, x_t: student / teacher random-crop embeddings ``(B, n_random, D)`` (or ``(n_random, D)``).
        b_s, b_t: student / teacher base-crop embeddings ``(B, n_base, D)`` (or ``(n_base, D)``).

    Returns:
        ``(B, n_random, n_base)`` scores in [0, 1], comparable with :func:`position_labels`.
    """
    return 0.5 * (F.relu(cosine_matrix(x_s, b_t)) + F.relu(cosine_matrix(x_t, b_s)))


def position_scores_v2(x_s: Tensor, b_t: Tensor) -> Tensor:
    """VoCo v2 position prediction ``relu cos(x_s, b_t)``.

    Shapes: ``x_s (B, n_random, D)``, ``b_t (B, n_base, D) -> (B, n_random, n_base)``.
    """
    return F.relu(cosine_matrix(x_s, b_t))


# ----------------------------------------------------------------------------------------------- losses


def _check_loss_inputs(x_s: Tensor, x_t: Tensor, b_s: Tensor, b_t: Tensor, labels) -> Tensor:
    if x_s.ndim != 3 or b_s.ndim != 3:
        raise InputError(
            f"x_s and b_s must be (B, n_random, D) and (B, n_base, D), got shapes "
            f"{tuple(x_s.shape)} and {tuple(b_s.shape)}."
        )
    if tuple(x_t.shape) != tuple(x_s.shape):
        raise InputError(f"x_t must have the shape of x_s {tuple(x_s.shape)}, got {tuple(x_t.shape)}.")
    if tuple(b_t.shape) != tuple(b_s.shape):
        raise InputError(f"b_t must have the shape of b_s {tuple(b_s.shape)}, got {tuple(b_t.shape)}.")
    (bsz, n, d), (bsz2, k, d2) = x_s.shape, b_s.shape
    if bsz2 != bsz or d2 != d:
        raise InputError(f"b_s must be (B={bsz}, n_base, D={d}), got {tuple(b_s.shape)}.")
    labels = torch.as_tensor(labels, device=x_s.device)
    if tuple(labels.shape) != (bsz, n, k):
        raise InputError(f"labels must have shape (B, n_random, n_base) = {(bsz, n, k)}, got {tuple(labels.shape)}.")
    if not labels.is_floating_point():
        labels = labels.to(torch.float64)
    return labels


def _pos_term(y: Tensor, p: Tensor) -> Tensor:
    """Per-volume ``-sum y log(1 - |y - p| + 1e-6) / (sum y + 1e-6)``: ``(B, n, K) -> (B,)``."""
    dtype = torch.promote_types(y.dtype, p.dtype)
    y, p = y.to(dtype), p.to(dtype)
    return -(y * torch.log(1 - (y - p).abs() + _EPS)).sum((1, 2)) / (y.sum((1, 2)) + _EPS)


def _zero_mean(values: Tensor, y: Tensor) -> Tensor:
    """Per-volume mean of ``values`` over the entries where ``y == 0``: ``(B, n, K) -> (B,)``."""
    zero = (y == 0).to(values.dtype)
    return (values * zero).sum((1, 2)) / (zero.sum((1, 2)) + _EPS)


@functools.lru_cache(maxsize=16)
def _pairs(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column indices of the strict upper triangle of a ``k x k`` matrix, row-major (built once)."""
    rows, cols = torch.triu_indices(k, k, offset=1, device=device)
    return rows, cols


def _reg_term(b_s: Tensor) -> Tensor:
    """Per-volume mean over pairs i < j of ``relu(cos(b_i, b_j.detach()))**2``: ``(B, K, D) -> (B,)``."""
    gram = cosine_matrix(b_s, b_s.detach())  # row i carries the gradient, column j is constant
    rows, cols = _pairs(b_s.shape[1], b_s.device)  # index tensors, not a boolean mask: no device sync
    return (F.relu(gram[:, rows, cols]) ** 2).mean(1)


def _total(first: Tensor, second: Tensor, reg: Tensor) -> Tensor:
    return (first + second).to(reg.dtype) + reg


def voco_v1_loss(x_s: Tensor, x_t: Tensor, b_s: Tensor, b_t: Tensor, labels: Tensor | np.ndarray) -> dict[str, Tensor]:
    """VoCo v1 ("10k" recipe) loss: ``pos + neg + reg``, each averaged over the volumes of the batch.

    ``p = 0.5 * (relu cos(x_s, b_t) + relu cos(x_t, b_s))``; ``pos = -sum y log(1 - |y - p| + 1e-6) /
    (sum y + 1e-6)``; ``neg`` = mean of ``p**2`` where ``y == 0``; ``reg`` = mean over base pairs i < j of
    ``relu(cos(b_s[i], b_s[j].detach()))**2``. Teacher tensors are treated as constants (detached); the
    gradient reaches ``x_s`` through the first cosine and ``b_s`` through the second and ``reg``.

    Args:
        x_s, x_t: student / teacher random-crop embeddings ``(B, n_random, D)`` (v1: ``(B, 2, 2048)``).
        b_s, b_t: student / teacher base-crop embeddings ``(B, n_base, D)`` (v1: ``(B, 16, 2048)``).
        labels: ``(B, n_random, n_base)`` overlap fractions (float64 as the official collation gives).

    Returns:
        ``{"pos", "neg", "reg", "total"}`` 0-d tensors; ``total`` is differentiable (see the module
        docstring for dtypes).

    Raises:
        InputError: inconsistent shapes.
    """
    y = _check_loss_inputs(x_s, x_t, b_s, b_t, labels)
    with _no_autocast(x_s):
        p = position_scores_v1(x_s, x_t.detach(), b_s, b_t.detach())
        pos = _pos_term(y, p).mean()
        neg = _zero_mean(p**2, y).mean()
        reg = _reg_term(b_s).mean()
    return {"pos": pos, "neg": neg, "reg": reg, "total": _total(pos, neg, reg)}


def _ce_v2(y: Tensor, p: Tensor) -> Tensor:
    """Per-volume v2 ``ce_loss``: the v1 positive term plus ``-mean log(1 - p + 1e-6)`` where ``y == 0``."""
    return _pos_term(y, p) + _zero_mean(-torch.log(1 - p + _EPS), y)


def voco_v2_loss(x_s: Tensor, x_t: Tensor, b_s: Tensor, b_t: Tensor, labels: Tensor | np.ndarray) -> dict[str, Tensor]:
    """VoCo v2 (large-scale) loss: ``intra + inter + reg``, each averaged over the volumes of the batch.

    ``intra = ce(labels, relu cos(x_s, b_t))`` (teacher bases, so only ``x_s`` gets gradient);
    ``inter = ce(relu cos(x_t[b], b_t[j]).detach(), relu cos(x_s[b], b_s[j]))`` with the neighbour volume
    ``j = (b + 1) % B`` (soft targets; the "negative" set is where the target is exactly 0);
    ``reg`` as in :func:`voco_v1_loss`. ``ce(y, p) = -sum y log(1 - |y - p| + 1e-6) / (sum y + 1e-6)
    - sum_{y=0} log(1 - p + 1e-6) / (#{y=0} + 1e-6)``.

    Args:
        x_s, x_t: student / teacher random-crop embeddings ``(B, n_random, D)`` (v2: ``(B, 2, 1024)``).
        b_s, b_t: student / teacher base-crop embeddings ``(B, n_base, D)`` (v2: ``(B, 9, 1024)``).
        labels: ``(B, n_random, n_base)`` overlap fractions.

    Returns:
        ``{"intra", "inter", "reg", "total"}`` 0-d tensors.

    Raises:
        InputError: inconsistent shapes.
    """
    y = _check_loss_inputs(x_s, x_t, b_s, b_t, labels)
    with _no_autocast(x_s):
        intra = _ce_v2(y, position_scores_v2(x_s, b_t.detach())).mean()
        target = position_scores_v2(x_t.detach(), b_t.detach().roll(-1, dims=0))  # roll(-1)[b] = b_t[(b+1) % B]
        inter = _ce_v2(target, position_scores_v2(x_s, b_s.roll(-1, dims=0))).mean()
        reg = _reg_term(b_s).mean()
    return {"intra": intra, "inter": inter, "reg": reg, "total": _total(intra, inter, reg)}


# ----------------------------------------------------------------------------------------------- heads


class ProjectionHead(nn.Sequential):
    """The official VoCo projection head: Linear-BN-ReLU-Linear-BN-ReLU-Linear.

    BatchNorm1d has ``affine=False`` and ``track_running_stats=False``, so it always normalises with the
    statistics of the batch it is given, in training and in eval: feed all crops of a step (random and
    base crops of every volume, ``B * (n_random + n_base)`` rows) in one call, as the official
    ``cat([img, crops])`` does. v1: ``ProjectionHead(1152, 2048, 2048)``; v2: ``ProjectionHead(1152, 1024, 1024)``
    (the same head function with width 1024).

    Args:
        in_dim: pooled feature width (``24 * feature_size`` for the Swin encoder).
        hidden_dim: width of the two hidden layers.
        out_dim: embedding width.

    Shapes: ``(N, in_dim) -> (N, out_dim)``, ``N >= 2`` in training (batch statistics).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim, affine=False, track_running_stats=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )


def crop_dropout(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Zero whole rows (crop embeddings) of ``x`` with probability ``p``; scale the others by ``1/(1-p)``.

    This is what the official v2 ``nn.Dropout1d(0.2)`` does to a 2-D ``(N, C)`` tensor: PyTorch reads it
    as one unbatched ``(C=N, L=C)`` input and drops whole "channels", i.e. whole crops.

    Args:
        x: ``(N, C)`` embeddings.
        p: drop probability in ``[0, 1]``.
        generator: optional generator on ``x``'s device for the draws.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"dropout p must be in [0, 1], got {p}.")
    if x.ndim != 2:
        raise InputError(f"crop_dropout expects (N, C) embeddings, got shape {tuple(x.shape)}.")
    if p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    keep = torch.empty((x.shape[0], 1), dtype=x.dtype, device=x.device).bernoulli_(1.0 - p, generator=generator)
    return x * keep / (1.0 - p)


class CropDropout(nn.Module):
    """Module form of :func:`crop_dropout` (v2: ``p=0.2`` on the student's embeddings), active in training mode.

    The official code builds the dropout inside ``forward``, so it is active whenever the SSL forward
    runs, which is always in training mode; here it follows ``self.training`` like any dropout.

    Args:
        p: drop probability (official 0.2).
        generator: optional generator on the embeddings' device (a job-owned generator for resumable runs).
    """

    def __init__(self, p: float = 0.2, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"dropout p must be in [0, 1], got {p}.")
        self.p = p
        self.generator = generator

    def forward(self, x: Tensor) -> Tensor:
        return crop_dropout(x, self.p, self.generator) if self.training else x

    def extra_repr(self) -> str:
        return f"p={self.p}"


# ----------------------------------------------------------------------------------------------- features


def pooled_features(encoder_outputs: Sequence[Tensor]) -> Tensor:
    """Global-average-pool each encoder output and concatenate the channels.

    Args:
        encoder_outputs: tensors ``(N, C_i, D_i, H_i, W_i)`` (any number of spatial dims, same ``N``).

    Returns:
        ``(N, sum C_i)``. For the Swin encoder at 64³ and feature size 48:
        ``[48@64³, 48@32³, 96@16³, 192@8³, 768@2³] -> (N, 1152)``.
    """
    if len(encoder_outputs) == 0:
        raise InputError("encoder_outputs must hold at least one tensor, got an empty list.")
    n = encoder_outputs[0].shape[0]
    for i, out in enumerate(encoder_outputs):
        if out.ndim < 3 or out.shape[0] != n:
            raise InputError(f"encoder_outputs[{i}] must be (N={n}, C, *spatial), got shape {tuple(out.shape)}.")
    return torch.cat([out.mean(dim=tuple(range(2, out.ndim))) for out in encoder_outputs], dim=1)


def swin_feature_dim(feature_size: int) -> int:
    """Width of the pooled Swin feature: ``fs + fs + 2fs + 4fs + 16fs = 24 * feature_size`` (48 -> 1152)."""
    return 24 * feature_size


_SWIN_PARTS = ("swinViT", "encoder1", "encoder2", "encoder3", "encoder4", "encoder10")


def swinunetr_encoder_outputs(net: nn.Module, x: Tensor) -> list[Tensor]:
    """The five encoder outputs VoCo pools, from a MONAI ``SwinUNETR`` (or any module with its names).

    ``h = swinViT(x, normalize)``; returns ``[encoder1(x), encoder2(h0), encoder3(h1), encoder4(h2),
    encoder10(h4)]`` (``h3`` is unused, as in SwinUNETR and the official VoCo backbone).

    Args:
        net: module with attributes ``swinViT, encoder1, encoder2, encoder3, encoder4, encoder10``.
        x: ``(N, C, D, H, W)`` crops, each spatial size divisible by 32 (e.g. ``(36, 1, 64, 64, 64)``).
    """
    missing = [name for name in _SWIN_PARTS if not hasattr(net, name)]
    if missing:
        raise InputError(f"net must have the SwinUNETR encoder parts {_SWIN_PARTS}; missing {missing}.")
    if x.ndim != 5 or any(s % 32 for s in x.shape[2:]):
        raise InputError(f"x must be (N, C, D, H, W) with D, H, W divisible by 32, got shape {tuple(x.shape)}.")
    hidden = net.swinViT(x, getattr(net, "normalize", True))
    return [
        net.encoder1(x),
        net.encoder2(hidden[0]),
        net.encoder3(hidden[1]),
        net.encoder4(hidden[2]),
        net.encoder10(hidden[4]),
    ]


class SwinPooledEncoder(nn.Module):
    """A SwinUNETR encoder as VoCo's backbone: crops -> pooled multi-scale feature.

    The wrapped network keeps its SwinUNETR key names (``net.swinViT.*``, ``net.encoder*``), so released
    VoCo weights load into ``self.net``; its decoders, if any, are simply not called.

    Args:
        net: a MONAI ``SwinUNETR(..., use_v2=True)`` or a module with the same encoder attributes.
        outputs: the function turning ``(net, x)`` into the list of encoder outputs to pool.

    Shapes: ``(N, 1, 64, 64, 64) -> (N, 24 * feature_size)``, e.g. ``(N, 1152)`` for feature size 48.
    """

    def __init__(
        self,
        net: nn.Module,
        outputs: Callable[[nn.Module, Tensor], list[Tensor]] = swinunetr_encoder_outputs,
    ) -> None:
        super().__init__()
        self.net = net
        self._outputs = outputs

    def forward(self, x: Tensor) -> Tensor:
        return pooled_features(self._outputs(self.net, x))


# ----------------------------------------------------------------------------------------------- teacher


def freeze_teacher(teacher: nn.Module) -> nn.Module:
    """Mark every parameter of ``teacher`` as not requiring gradients (it only moves by EMA); returns it."""
    for param in teacher.parameters():
        param.requires_grad_(False)
    return teacher


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``theta_t <- momentum * theta_t + (1 - momentum) * theta_s`` over parameters (not buffers).

    The official recipes use a constant momentum of 0.9, applied after the student forward and before
    the optimizer step (v1: the whole network; v2: the projection head only).

    Args:
        teacher: module updated in place; its parameters get no gradient.
        student: module with the same parameter names and shapes.
        momentum: in ``[0, 1]``.

    Raises:
        ConfigError: momentum out of range. InputError: the two modules' parameters differ.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ConfigError(f"EMA momentum must be in [0, 1], got {momentum}.")
    t_named, s_named = list(teacher.named_parameters()), list(student.named_parameters())
    t_shapes = [(n, tuple(p.shape)) for n, p in t_named]
    s_shapes = [(n, tuple(p.shape)) for n, p in s_named]
    if t_shapes != s_shapes:
        diff = next((a, b) for a, b in zip(t_shapes + [None], s_shapes + [None]) if a != b)
        raise InputError(f"teacher and student parameters differ: teacher {diff[0]} vs student {diff[1]}.")
    t_params = [p for _, p in t_named]
    s_params = [p.detach() for _, p in s_named]
    if t_params:
        torch._foreach_mul_(t_params, momentum)
        torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
