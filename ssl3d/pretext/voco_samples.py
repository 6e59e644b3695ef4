"""VoCo sample generation on the device: cached base crops, batched random crops, per-crop augmentation.

The official pipelines cut, resize and augment every crop in its own MONAI ``Compose`` on the CPU
(18 chains per volume in v1). Here, for a preprocessed volume already on the device:

1. the ``grid x grid`` base crops are cut and resized **once per volume** (:func:`base_crops`, cached by
   :class:`BaseCropCache`); this is exact because the official augmentation comes after the resize;
2. per step, the random draws come first (:func:`draw_samples`: centres, flips, rot90, shifts and the
   closed-form labels, from a CPU ``torch.Generator`` the caller owns), then
3. :func:`cut_samples` slices the random crops, resizes them in one batched ``F.interpolate``
   (trilinear, ``align_corners=True`` like the official ``Resized``), copies the cached base crops
   into the same batch tensor and augments only the crops the draws select.

Axes: volumes are ``(1, D, H, W)`` = (z, y, x) in model space (DESIGN.md "VoCo's grid"); a crop centre
``(cx, cy)`` indexes x (W) and y (H); base cell ``k = ix*grid + iy``; crops span the full depth.
Augmentation per crop, in the official order (MONAI on ``(C, x, y, z)`` arrays): flip x, flip y, flip z
(each with ``flip_p``), rot90 by k in {1, 2, 3} from x towards y (``rot90_p``), intensity shift by
U(-offset, offset) (``shift_p``). Labels are not changed by augmentation (as official).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError
from .voco import position_labels

__all__ = [
    "SampleSpec",
    "V1_SAMPLES",
    "V2_SAMPLES",
    "SampleDraws",
    "VocoBatch",
    "base_crops",
    "base_crop_views",
    "random_cuts",
    "draw_samples",
    "augment_into",
    "apply_augment",
    "cut_samples",
    "assemble_samples",
    "BaseCropCache",
    "VocoSampler",
]

_W, _H, _D = -1, -2, -3  # x, y, z dims of a (..., D, H, W) crop


@dataclass(frozen=True)
class SampleSpec:
    """Sizes and augmentation probabilities of VoCo sample generation (all sizes in voxels).

    The volume must be ``(1, depth, grid*base, grid*base)``. Base crops are ``(depth, base, base)`` and
    random crops ``(depth, crop, crop)``; both are resized to ``out**3`` (skipped when already that size).

    Args:
        grid: base crops per side (v1 4, v2 3).
        base: base crop edge in x and y (v1 96, v2 64).
        crop: random crop edge in x and y (v1 96, v2 64).
        out: crop edge after resize (64 in both; e.g. 16 for a CPU preset).
        depth: volume depth D, shared by every crop (v1 96, v2 64).
        n_random: random crops per volume (official ``sw_batch_size`` 2).
        flip_p: probability of each of the three flips (0.2).
        rot90_p: probability of a rot90 in the x-y plane (0.2).
        shift_p: probability of the intensity shift (v1 0.1, v2 0.5).
        shift_offset: the shift is drawn from U(-shift_offset, shift_offset) (0.1).

    Example (CPU preset): ``SampleSpec(grid=3, base=32, crop=32, out=16, depth=32)`` on a 96x96x32 volume.
    """

    grid: int = 4
    base: int = 96
    crop: int = 96
    out: int = 64
    depth: int = 96
    n_random: int = 2
    flip_p: float = 0.2
    rot90_p: float = 0.2
    shift_p: float = 0.1
    shift_offset: float = 0.1

    def __post_init__(self) -> None:
        for name in ("grid", "base", "crop", "out", "depth", "n_random"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"SampleSpec.{name} must be a positive integer, got {value!r}.")
        if self.crop > self.size:
            raise ConfigError(f"SampleSpec.crop must be <= grid*base = {self.size}, got {self.crop}.")
        for name in ("flip_p", "rot90_p", "shift_p"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"SampleSpec.{name} must be a probability in [0, 1], got {value}.")
        if self.shift_offset < 0:
            raise ConfigError(f"SampleSpec.shift_offset must be >= 0, got {self.shift_offset}.")

    @property
    def size(self) -> int:
        """Extent of the volume in x and y: ``grid * base``."""
        return self.grid * self.base

    @property
    def n_base(self) -> int:
        return self.grid * self.grid

    @property
    def volume_shape(self) -> tuple[int, int, int, int]:
        """Expected volume shape ``(1, D, H, W)``."""
        return (1, self.depth, self.size, self.size)

    @property
    def centre_range(self) -> tuple[int, int]:
        """Centres are drawn in ``[low, high)`` on x and y, as the official ``randint(crop//2, size - crop//2)``."""
        return (self.crop // 2, self.size - self.crop // 2)


V1_SAMPLES = SampleSpec(grid=4, base=96, crop=96, out=64, depth=96, shift_p=0.1)
"""VoCo v1 "10k": 384x384x96 volume, 4x4 grid of 96³ crops resized to 64³, centres in [48, 336)."""

V2_SAMPLES = SampleSpec(grid=3, base=64, crop=64, out=64, depth=64, shift_p=0.5)
"""VoCo v2: 192x192x64 window, 3x3 grid of 64³ crops (no resize), centres in [32, 160)."""


@dataclass(frozen=True)
class SampleDraws:
    """Every random choice of one batch of samples (crop order per volume: random crops, then base crops).

    Attributes:
        centres: ``(B, n_random, 2)`` int64 ``(cx, cy)``.
        labels: ``(B, n_random, n_base)`` float64 overlap fractions of the centres.
        flips: ``(B, n_crops, 3)`` bool, flip along (x, y, z).
        rot_k: ``(B, n_crops)`` int64 in 0..3 (0 = no rotation).
        shift: ``(B, n_crops)`` float32 intensity offsets (0 where not drawn).
    """

    centres: np.ndarray
    labels: np.ndarray
    flips: np.ndarray
    rot_k: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class VocoBatch:
    """One batch of VoCo crops in the official layout of ``cat([img, crops])``.

    Attributes:
        crops: ``(B*(n_random + n_base), 1, out, out, out)``: random crop ``s`` of volume ``b`` at
            ``b*n_random + s``, then base crop ``k`` of volume ``b`` at ``B*n_random + b*n_base + k``.
        labels: ``(B, n_random, n_base)`` float64 on the crops' device.
        draws: the draws that made the batch.
    """

    crops: Tensor
    labels: Tensor
    draws: SampleDraws

    @property
    def n_random_total(self) -> int:
        return int(self.draws.centres.shape[0] * self.draws.centres.shape[1])

    @property
    def random(self) -> Tensor:
        """``(B*n_random, 1, out, out, out)`` view of the random crops."""
        return self.crops[: self.n_random_total]

    @property
    def base(self) -> Tensor:
        """``(B*n_base, 1, out, out, out)`` view of the base crops."""
        return self.crops[self.n_random_total :]


def _as_batch(volumes: Tensor, spec: SampleSpec) -> Tensor:
    if volumes.ndim == 4:
        volumes = volumes.unsqueeze(0)
    if volumes.ndim != 5 or tuple(volumes.shape[1:]) != spec.volume_shape:
        raise InputError(
            f"volumes must be (1, D, H, W) or (B, 1, D, H, W) with (1, D, H, W) = {spec.volume_shape} "
            f"(depth, grid*base, grid*base), got shape {tuple(volumes.shape)}."
        )
    if not volumes.is_floating_point():
        raise InputError(f"volumes must be a floating-point tensor (preprocessed, windowed), got {volumes.dtype}.")
    return volumes


def _as_list(volumes: Tensor | Sequence[Tensor], spec: SampleSpec) -> list[Tensor]:
    """Volumes as a list of ``(1, D, H, W)`` views (a list input is not stacked, to avoid a copy)."""
    if isinstance(volumes, Tensor):
        return list(_as_batch(volumes, spec))
    return [_as_batch(v, spec)[0] for v in volumes]


def _resize(crops: Tensor, out: int) -> Tensor:
    if tuple(crops.shape[2:]) == (out, out, out):
        return crops
    return F.interpolate(crops, size=(out, out, out), mode="trilinear", align_corners=True)


def base_crops(volume: Tensor, spec: SampleSpec) -> Tensor:
    """Cut the ``grid x grid`` base crops and resize them to ``out**3`` in one batched interpolation.

    Args:
        volume: ``(1, D, H, W)`` or ``(B, 1, D, H, W)`` with ``(D, H, W) = (depth, grid*base, grid*base)``.
        spec: the sample sizes.

    Returns:
        ``(n_base, 1, out, out, out)`` (or ``(B, n_base, 1, out, out, out)``), cell ``k = ix*grid + iy``
        covering x in ``[ix*base, (ix+1)*base)`` and y in ``[iy*base, (iy+1)*base)``.
        v1: ``(1, 96, 384, 384) -> (16, 1, 64, 64, 64)``.
    """
    single = volume.ndim == 4
    vol = _as_batch(volume, spec)
    b, g, s = vol.shape[0], spec.grid, spec.base
    cells = vol.reshape(b, 1, spec.depth, g, s, g, s)  # (b, c, z, iy, y, ix, x)
    cells = cells.permute(0, 5, 3, 1, 2, 4, 6).reshape(b * g * g, 1, spec.depth, s, s)
    crops = _resize(cells, spec.out).reshape(b, g * g, 1, spec.out, spec.out, spec.out)
    return crops[0] if single else crops


def base_crop_views(volume: Tensor, spec: SampleSpec) -> list[Tensor]:
    """The ``grid x grid`` base crops of one volume as views (no copy), for specs without a resize.

    v2 cuts new base crops from every random window; as views they are copied once, straight into the
    batch (:func:`assemble_samples`), instead of being stacked, permuted and copied again.

    Args:
        volume: ``(1, D, H, W)`` with ``(D, H, W) = (depth, grid*base, grid*base)``.
        spec: sample sizes with ``(depth, base, base) == (out, out, out)``.

    Returns:
        ``n_base`` views ``(1, out, out, out)`` in cell order ``k = ix*grid + iy`` (the values of :func:`base_crops`).
    """
    vol = _as_batch(volume, spec)[0]
    if (spec.depth, spec.base) != (spec.out, spec.out):
        raise InputError(f"base crop views need base = depth = out (no resize), got base {spec.base}, depth {spec.depth}, out {spec.out}.")
    b = spec.base
    return [vol[:, :, iy * b : (iy + 1) * b, ix * b : (ix + 1) * b] for ix in range(spec.grid) for iy in range(spec.grid)]


def draw_samples(spec: SampleSpec, batch: int, generator: torch.Generator) -> SampleDraws:
    """Draw crop centres, augmentations and labels for ``batch`` volumes.

    Args:
        spec: the sample sizes and probabilities.
        batch: number of volumes ``B``.
        generator: a CPU ``torch.Generator`` owned by the caller (saved in checkpoints).

    Returns:
        :class:`SampleDraws`; v1 with ``batch=2``: centres ``(2, 2, 2)``, labels ``(2, 2, 16)``.
    """
    if not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch!r}.")
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise InputError(f"generator must be a CPU torch.Generator, got {generator!r}.")
    n, n_crops = spec.n_random, spec.n_random + spec.n_base
    low, high = spec.centre_range
    centres = torch.randint(low, high, (batch, n, 2), generator=generator).numpy().astype(np.int64)
    flips = (torch.rand((batch, n_crops, 3), generator=generator) < spec.flip_p).numpy()
    rotate = torch.rand((batch, n_crops), generator=generator) < spec.rot90_p
    k = torch.randint(1, 4, (batch, n_crops), generator=generator)
    shifted = torch.rand((batch, n_crops), generator=generator) < spec.shift_p
    offset = (torch.rand((batch, n_crops), generator=generator) * 2 - 1) * spec.shift_offset
    labels = position_labels(centres.reshape(-1, 2), spec.crop, spec.base, spec.grid)
    return SampleDraws(
        centres=centres,
        labels=labels.reshape(batch, n, spec.n_base),
        flips=flips,
        rot_k=torch.where(rotate, k, 0).numpy().astype(np.int64),
        shift=torch.where(shifted, offset, 0.0).numpy(),
    )


def _flip_transpose(flips: np.ndarray, k: int) -> tuple[tuple[int, ...], bool]:
    """Flips (x, y, z) then rot90 by k from x to y, as one flip set plus an optional H-W transpose.

    ``rot90(t, k, dims=(W, H))`` is ``flip(H).transpose`` for k=1, ``flip(W, H)`` for k=2 and
    ``flip(W).transpose`` for k=3; flips compose by parity.
    """
    parity = {_W: bool(flips[0]), _H: bool(flips[1]), _D: bool(flips[2])}
    extra = {0: (), 1: (_H,), 2: (_W, _H), 3: (_W,)}[k]
    for dim in extra:
        parity[dim] = not parity[dim]
    return tuple(dim for dim in (_D, _H, _W) if parity[dim]), k in (1, 3)


def _check_draws(n: int, flips: np.ndarray, rot_k: np.ndarray, shift: np.ndarray) -> None:
    if flips.shape != (n, 3) or rot_k.shape != (n,) or shift.shape != (n,):
        raise InputError(
            f"flips, rot_k, shift must be (N, 3), (N,), (N,) for N = {n}, "
            f"got {flips.shape}, {rot_k.shape}, {shift.shape}."
        )


def _transform_into(dst: Tensor, src: Tensor, flips: np.ndarray, k: int, shift: float) -> None:
    """``dst = rot90(flip(src), k) + shift`` in at most two passes over the crop (one when only copied)."""
    dims, transpose = _flip_transpose(flips, k)
    moved = src.flip(dims) if dims else src
    if transpose:
        moved = moved.transpose(_W, _H)
        if not dims and src.data_ptr() == dst.data_ptr():
            moved = moved.clone()  # a transposed view of dst itself cannot be copied onto dst
    if shift:
        torch.add(moved, shift, out=dst)
    elif not (moved is src and src.data_ptr() == dst.data_ptr()):
        dst.copy_(moved)


def augment_into(
    dst: Tensor, src: Tensor | Sequence[Tensor], flips: np.ndarray, rot_k: np.ndarray, shift: np.ndarray
) -> Tensor:
    """Write augmented crops into ``dst``: flips (x, y, z), rot90 in the x-y plane, then the intensity shift.

    Args:
        dst: ``(N, C, d, h, w)`` with ``h == w``, written in place and returned.
        src: the ``N`` source crops ``(C, d, h, w)`` (a tensor like ``dst``, which may be ``dst`` itself,
            or a list of views, e.g. slices of a volume or a cache); crops that drew nothing are copied.
        flips: ``(N, 3)`` bool, flip along x (W), y (H), z (D).
        rot_k: ``(N,)`` ints in 0..3, quarter turns from x towards y.
        shift: ``(N,)`` intensity offsets (0 = none).
    """
    if dst.ndim != 5 or dst.shape[-1] != dst.shape[-2]:
        raise InputError(f"crops must be (N, C, d, h, w) with h == w, got shape {tuple(dst.shape)}.")
    _check_draws(dst.shape[0], flips, rot_k, shift)
    if len(src) != dst.shape[0]:
        raise InputError(f"src must hold {dst.shape[0]} crops, got {len(src)}.")
    for i in range(dst.shape[0]):
        _transform_into(dst[i], src[i], flips[i], int(rot_k[i]), float(shift[i]))
    return dst


def apply_augment(crops: Tensor, flips: np.ndarray, rot_k: np.ndarray, shift: np.ndarray) -> Tensor:
    """Augment ``(N, C, d, h, w)`` crops in place (see :func:`augment_into`); crops that drew nothing are untouched."""
    return augment_into(crops, crops, flips, rot_k, shift)


def random_cuts(volumes: Tensor | Sequence[Tensor], centres: np.ndarray, spec: SampleSpec) -> list[Tensor]:
    """The random crops of drawn centres as views ``(1, D, crop, crop)`` of the volumes, in batch order.

    Args:
        volumes: ``B`` volumes ``(1, D, H, W)`` (a list or a ``(B, 1, D, H, W)`` tensor), on any device.
        centres: ``(B, n_random, 2)`` ``(cx, cy)`` from :func:`draw_samples`.
        spec: the sample sizes.

    Returns:
        ``B * n_random`` views, crop ``s`` of volume ``b`` at ``b*n_random + s``; x along W, y along H.
    """
    vols = _as_list(volumes, spec)
    if np.shape(centres) != (len(vols), spec.n_random, 2):
        raise InputError(f"centres must be (B={len(vols)}, n_random={spec.n_random}, 2), got shape {np.shape(centres)}.")
    half, c = spec.crop // 2, spec.crop
    return [
        vol[:, :, cy - half : cy - half + c, cx - half : cx - half + c]
        for vol, pairs in zip(vols, np.asarray(centres).tolist())
        for cx, cy in pairs
    ]


def cut_samples(
    volumes: Tensor | Sequence[Tensor],
    bases: Tensor | Sequence[Tensor],
    draws: SampleDraws,
    spec: SampleSpec,
    out: Tensor | None = None,
) -> VocoBatch:
    """Build one batch from drawn samples: cut + resize random crops, augment them and the cached base crops.

    Args:
        volumes: ``(B, 1, D, H, W)``, ``(1, D, H, W)`` for B = 1, or a list of ``B`` ``(1, D, H, W)``
            tensors, on the device.
        bases: the cached :func:`base_crops` of the same volumes: ``(B, n_base, 1, out, out, out)`` or a
            list of ``B`` ``(n_base, 1, out, out, out)`` tensors (or of :func:`base_crop_views` lists).
        draws: :func:`draw_samples` for ``B`` volumes.
        spec: the sample sizes.
        out: optional ``(B*(n_random + n_base), 1, out, out, out)`` buffer to fill (reused between steps
            on CPU it avoids page-faulting a fresh allocation of more than 32 MB each step).

    Returns:
        :class:`VocoBatch` with ``crops`` on the volumes' device; v1, B = 2: ``(36, 1, 64, 64, 64)``.
    """
    vols = _as_list(volumes, spec)
    return assemble_samples(random_cuts(vols, draws.centres, spec), bases, draws, spec, out)  # random_cuts checks the draws


def assemble_samples(
    cuts: Tensor | Sequence[Tensor],
    bases: Tensor | Sequence[Tensor | Sequence[Tensor]],
    draws: SampleDraws,
    spec: SampleSpec,
    out: Tensor | None = None,
) -> VocoBatch:
    """Resize the cut random crops (one batched interpolation), then augment them and the base crops into ``out``.

    Args:
        cuts: the ``B*n_random`` random crops ``(1, D, crop, crop)`` (:func:`random_cuts`, or a
            ``(B*n_random, 1, D, crop, crop)`` tensor, e.g. cut on the host and moved to the device at once).
        bases: per volume ``n_base`` crops ``(1, out, out, out)``: a ``(n_base, 1, out, out, out)`` tensor
            (:func:`base_crops`) or a list of views (:func:`base_crop_views`); or one ``(B, n_base, ...)`` tensor.
        draws, spec, out: as in :func:`cut_samples`.
    """
    n, k, o = spec.n_random, spec.n_base, spec.out
    b = int(draws.centres.shape[0])
    base_list = list(bases) if not isinstance(bases, Tensor) or bases.ndim == 6 else [bases]
    if len(base_list) != b or any(len(x) != k or any(tuple(c.shape) != (1, o, o, o) for c in x) for x in base_list):
        shapes = [tuple(x.shape) if isinstance(x, Tensor) else [tuple(c.shape) for c in x][:1] for x in base_list]
        raise InputError(f"bases must be {b} sets of {k} crops (1, out³) = {(1, o, o, o)}, got {shapes}.")
    if len(cuts) != b * n:
        raise InputError(f"cuts must hold B*n_random = {b * n} random crops, got {len(cuts)}.")
    device = cuts[0].device
    shape = (b * (n + k), 1, o, o, o)
    if out is None:
        out = torch.empty(shape, dtype=cuts[0].dtype, device=device)
    elif tuple(out.shape) != shape or out.device != device:
        raise InputError(f"out must be a {shape} tensor on {device}, got {tuple(out.shape)} on {out.device}.")
    if (spec.depth, spec.crop, spec.crop) != (o, o, o):
        cuts = _resize(cuts if isinstance(cuts, Tensor) else torch.stack(list(cuts)), o)
    sources = list(cuts) + [crop for cached in base_list for crop in cached]
    augment_into(out, sources, *_batch_layout(draws, b, n, k))
    labels = torch.as_tensor(draws.labels, dtype=torch.float64, device=out.device)
    return VocoBatch(crops=out, labels=labels, draws=draws)


def _batch_layout(draws: SampleDraws, b: int, n: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-volume draws (random then base crops) reordered to the batch layout (all random, then all base)."""

    def layout(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a[:, :n].reshape(b * n, *a.shape[2:]), a[:, n:].reshape(b * k, *a.shape[2:])])

    return layout(draws.flips), layout(draws.rot_k), layout(draws.shift)


class BaseCropCache:
    """Resized base crops per volume, kept on the volume's device; least recently used dropped first.

    Bounded by entries and/or bytes, so the device memory it holds does not grow with the dataset
    (v1: 16 x 64³ float32 = 16 MiB per volume; 10k volumes would need 160 GiB). A dropped volume's crops
    are recomputed, with the same values, on its next visit.

    Args:
        spec: the sample sizes.
        max_volumes: entries kept; ``None``: no limit by count.
        max_bytes: bytes of crops kept; ``None``: no limit by size. An entry larger than this is not kept.
    """

    def __init__(self, spec: SampleSpec, max_volumes: int | None = None, max_bytes: int | None = None) -> None:
        if max_volumes is not None and (isinstance(max_volumes, bool) or not isinstance(max_volumes, int) or max_volumes < 1):
            raise ConfigError(f"max_volumes must be an integer >= 1 or None, got {max_volumes!r}.")
        if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
            raise ConfigError(f"max_bytes must be an integer >= 0 or None, got {max_bytes!r}.")
        self.spec = spec
        self.max_volumes = max_volumes
        self.max_bytes = max_bytes
        self.nbytes = 0  # bytes of the crops held now
        self._items: OrderedDict[Hashable, Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def get(self, key: Hashable, volume: Tensor | Callable[[], Tensor]) -> Tensor:
        """Base crops ``(n_base, 1, out, out, out)`` of ``volume`` ``(1, D, H, W)``, computed on first use.

        ``volume`` may be a function returning the volume, so a hit never reads (or moves) it.
        """
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        crops = base_crops(volume() if callable(volume) else volume, self.spec)
        size = crops.numel() * crops.element_size()
        if self.max_bytes is not None and size > self.max_bytes:
            return crops
        self._items[key] = crops
        self.nbytes += size
        while (self.max_volumes is not None and len(self._items) > self.max_volumes) or (
            self.max_bytes is not None and self.nbytes > self.max_bytes
        ):
            _, dropped = self._items.popitem(last=False)
            self.nbytes -= dropped.numel() * dropped.element_size()
        return crops


class VocoSampler:
    """Draw-then-cut VoCo batches from preprocessed volumes on the device.

    Args:
        spec: sample sizes and augmentation probabilities (:data:`V1_SAMPLES`, :data:`V2_SAMPLES`, ...).
        generator: CPU generator owned by the job.
        cache: base-crop cache; a fresh unbounded one by default.

    Example::

        sampler = VocoSampler(V1_SAMPLES, torch.Generator().manual_seed(0))
        batch = sampler(volumes, keys=["case_003", "case_118"])   # volumes (2, 1, 96, 384, 384)
        batch.crops.shape                                          # (36, 1, 64, 64, 64)
    """

    def __init__(self, spec: SampleSpec, generator: torch.Generator, cache: BaseCropCache | None = None) -> None:
        self.spec = spec
        self.generator = generator
        self.cache = cache if cache is not None else BaseCropCache(spec)

    def __call__(self, volumes: Tensor | Sequence[Tensor], keys: Sequence[Hashable] | None = None) -> VocoBatch:
        """Sample one batch; ``keys`` name the volumes for the base-crop cache (``None``: no caching)."""
        vols = _as_list(volumes, self.spec)
        if keys is None:
            bases = [base_crops(v, self.spec) for v in vols]
        elif len(keys) != len(vols):
            raise InputError(f"keys must name each of the {len(vols)} volumes, got {len(keys)} keys.")
        else:
            bases = [self.cache.get(key, v) for key, v in zip(keys, vols)]
        draws = draw_samples(self.spec, len(vols), self.generator)
        return cut_samples(vols, bases, draws, self.spec)
