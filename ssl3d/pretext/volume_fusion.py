"""Volume Fusion (MIS-FM): fused samples, labels and crops, as batched torch operations.

Two generations, as in the official code:

* **v1** (MIS-FM paper; PyMIC a906dfc ``net_run/self_sup/util.py::volume_fusion``): ``fuse_v1``
  paints 10-40 random boxes of class 1..K per sample and fuses each sample with the previous one of
  the batch (``torch.roll(x, 1, 0)``). Its inputs come from ``normalize_hu`` and
  ``draw_crop_v1``/``apply_crop_v1`` (64x128x128 crops, flips on all axes).
* **v2** (VolF; PyMIC 8bcebd6 ``transform/crop4vf.py``, identical in v0.5.0 6dff55e): ``crop4vf``
  cuts two random resized crops of the same volume (flips, adaptive contrast, gamma, joint inversion)
  and ``fuse_v2`` fuses them with a block-grid label.

Both fuse as ``fused = alpha * fg + (1 - alpha) * bg`` with ``alpha = label / (classes - 1)``. Every
random draw comes from the ``torch.Generator`` passed in (``draw_*`` functions); ``apply``/``paint``
functions only compute. Tensors are (N, C, D, H, W); labels are uint8 (N, 1, D, H, W).
The loss and the class Dice are in :mod:`ssl3d.pretext.vf_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ConfigError, InputError

__all__ = [
    "Boxes", "Blocks", "CropV1", "Crop4VF",
    "draw_boxes_v1", "paint_boxes_v1", "fuse_v1",
    "draw_blocks_v2", "paint_blocks_v2", "fuse_v2", "fuse",
    "normalize_hu", "draw_crop_v1", "apply_crop_v1",
    "draw_crop4vf", "apply_crop4vf", "crop4vf",
    "percentile", "adaptive_contrast", "gamma_correction", "check_classes",
]

Size3 = Sequence[int]
PERCENTILE_METHODS = ("exact", "histogram")


# ----------------------------------------------------------------------------- validation helpers
def _triple(name: str, value: Size3, minimum: int = 1) -> tuple[int, int, int]:
    vals = tuple(value) if isinstance(value, (list, tuple)) else ()
    if len(vals) != 3 or not all(isinstance(v, int) and v >= minimum for v in vals):
        raise InputError(f"{name} must be 3 integers >= {minimum} (D, H, W), got {value!r}.")
    return vals  # type: ignore[return-value]


def _bounds(name_lo: str, lo: Size3, name_hi: str, hi: Size3) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a, b = _triple(name_lo, lo), _triple(name_hi, hi)
    if any(x > y for x, y in zip(a, b)):
        raise InputError(f"{name_lo} must be <= {name_hi} on every axis, got {a} and {b}.")
    return a, b


def _volume(name: str, x: object, channels: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 5 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{name} must be a floating tensor of shape (N, C, D, H, W), got {shape}.")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} must have {channels} channel(s), got shape {tuple(x.shape)}.")
    return x


def check_classes(classes: int) -> int:
    """``classes`` (K + 1 fusion classes, >= 2), or ConfigError."""
    if not isinstance(classes, int) or classes < 2:
        raise ConfigError(f"classes must be an integer >= 2, got {classes!r}.")
    return classes


def _range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise ConfigError(f"{name} must be (lo, hi) with {low} <= lo <= hi <= {high}, got {value!r}.")
    return float(value[0]), float(value[1])


def _device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _uniform(shape: Sequence[int], lo: Tensor | float, hi: Tensor | float, gen: torch.Generator | None) -> Tensor:
    """Uniform float64 draws in [lo, hi) (broadcast), on the generator's device."""
    u = torch.rand(tuple(shape), generator=gen, device=_device(gen), dtype=torch.float64)
    return u * (hi - lo) + lo


def _randint(shape: Sequence[int], lo: Tensor, hi: Tensor, gen: torch.Generator | None) -> Tensor:
    """Integers uniform in [lo, hi] inclusive (elementwise bounds, like ``random.randint``)."""
    u = torch.rand(tuple(shape), generator=gen, device=_device(gen), dtype=torch.float64)
    span = (hi - lo + 1).to(torch.float64)
    return torch.minimum(lo + (u * span).floor().long(), hi)


def _as_long(values: Sequence[int], gen: torch.Generator | None) -> Tensor:
    return torch.tensor(list(values), dtype=torch.long, device=_device(gen))


# ----------------------------------------------------------------------------- v1: random boxes
@dataclass(frozen=True)
class Boxes:
    """v1 boxes of N samples; slot b of sample n is painted iff b < counts[n], in slot order."""

    counts: Tensor  # (N,) int64 boxes per sample
    starts: Tensor  # (N, B, 3) int64 first voxel (D, H, W), clipped to the crop
    stops: Tensor  # (N, B, 3) int64 one past the last voxel, clipped to the crop
    classes: Tensor  # (N, B) int64 class 1..K of each box, 0 in unused slots


def draw_boxes_v1(n: int, spatial: Size3, generator: torch.Generator | None = None,
                  block_range: Sequence[int] = (10, 40), size_min: Size3 = (8, 8, 8),
                  size_max: Size3 = (40, 80, 80), classes: int = 5) -> Boxes:
    """Draw the v1 boxes: count ~ U{lo..hi}, size_i ~ U{min_i..max_i}, centre ~ U{0..S_i-1}, class ~ U{1..K}.

    A box covers ``[c - s // 2, c - s // 2 + s)`` on each axis, clipped to the crop.

    Example:
        >>> b = draw_boxes_v1(2, (64, 128, 128), torch.Generator().manual_seed(0))
        >>> b.starts.shape, bool((b.counts >= 10).all())
        (torch.Size([2, 40, 3]), True)
    """
    spatial = _triple("spatial", spatial)
    smin, smax = _bounds("size_min", size_min, "size_max", size_max)
    if len(block_range) != 2 or not 1 <= block_range[0] <= block_range[1]:
        raise ConfigError(f"block_range must be (lo, hi) with 1 <= lo <= hi, got {tuple(block_range)!r}.")
    k, slots = check_classes(classes) - 1, int(block_range[1])
    counts = _randint((n,), _as_long([block_range[0]], generator), _as_long([slots], generator), generator)
    sizes = _randint((n, slots, 3), _as_long(smin, generator), _as_long(smax, generator), generator)
    shape = _as_long(spatial, generator)
    centres = _randint((n, slots, 3), torch.zeros_like(shape), shape - 1, generator)
    cls = torch.randint(1, k + 1, (n, slots), generator=generator, device=_device(generator))
    starts = centres - sizes // 2
    stops = torch.minimum(starts + sizes, shape)
    used = torch.arange(slots, device=counts.device) < counts[:, None]
    return Boxes(counts, starts.clamp(min=0), stops, cls * used)


def paint_boxes_v1(boxes: Boxes, spatial: Size3, device: torch.device | str | None = None) -> Tensor:
    """Paint the boxes in order (later boxes overwrite earlier ones) into a uint8 label (N, 1, D, H, W).

    One slice fill per box: ~24 fills of <= 40x80x80 voxels per sample beat any per-voxel formulation
    (see ``benchmarks/vf_samples.py``).

    Example:
        >>> b = draw_boxes_v1(2, (32, 32, 32), torch.Generator().manual_seed(0), size_max=(16, 16, 16))
        >>> paint_boxes_v1(b, (32, 32, 32)).shape
        torch.Size([2, 1, 32, 32, 32])
    """
    spatial = _triple("spatial", spatial)
    n = boxes.counts.shape[0]
    label = torch.zeros((n, 1, *spatial), dtype=torch.uint8, device=device)
    counts, starts, stops, cls = (t.tolist() for t in (boxes.counts, boxes.starts, boxes.stops, boxes.classes))
    for i in range(n):
        for (d0, h0, w0), (d1, h1, w1), c in zip(starts[i][: counts[i]], stops[i], cls[i]):
            label[i, 0, d0:d1, h0:h1, w0:w1] = c
    return label


def fuse(fg: Tensor, bg: Tensor, label: Tensor, classes: int = 5) -> Tensor:
    """Fuse ``alpha * fg + (1 - alpha) * bg``, ``alpha = label / (classes - 1)``: fg, bg (N, C, D, H, W),
    label (N, 1, D, H, W) integer -> (N, C, D, H, W) in bg's dtype (``torch.lerp``, exact at 0 and 1).

    Example:
        >>> x = torch.zeros(1, 1, 2, 2, 2); y = torch.ones(1, 1, 2, 2, 2)
        >>> fuse(y, x, torch.full((1, 1, 2, 2, 2), 2, dtype=torch.uint8))[0, 0, 0, 0, 0].item()
        0.5
    """
    _volume("bg", bg)
    if _volume("fg", fg).shape != bg.shape or label.shape != (bg.shape[0], 1, *bg.shape[2:]):
        raise InputError(f"fg, bg and label must be (N, C, D, H, W), (N, C, D, H, W), (N, 1, D, H, W); "
                         f"got {tuple(fg.shape)}, {tuple(bg.shape)}, {tuple(label.shape)}.")
    return _lerp_batch(lambda i: fg[i].to(bg.dtype), bg, label, check_classes(classes) - 1)


def _lerp_batch(fg_of: Callable[[int], Tensor], bg: Tensor, label: Tensor, k: int) -> Tensor:
    """Sample by sample ``lerp(bg, fg, label / k)``: small temporaries instead of batch-sized ones."""
    out = torch.empty_like(bg)
    for i in range(bg.shape[0]):
        torch.lerp(bg[i], fg_of(i), label[i].to(bg.dtype).div_(k), out=out[i])
    return out


def fuse_v1(x: Tensor, generator: torch.Generator | None = None, block_range: Sequence[int] = (10, 40),
            size_min: Size3 = (8, 8, 8), size_max: Size3 = (40, 80, 80), classes: int = 5
            ) -> tuple[Tensor, Tensor]:
    """MIS-FM v1 fusion of a batch: the foreground of sample n is sample n-1 (``torch.roll(x, 1, 0)``).

    Args:
        x: (N, C, D, H, W) floating crops, N >= 2 (the background of sample n is sample n).
        generator: source of every draw (``draw_boxes_v1``); None uses torch's global CPU generator.
        block_range: inclusive range of the box count per sample.
        size_min, size_max: inclusive box size range (D, H, W).
        classes: fusion classes (K = classes - 1 non-zero coefficients).

    Returns:
        ``(fused, label)``: (N, C, D, H, W) in x's dtype and (N, 1, D, H, W) uint8 on x's device.

    Raises:
        InputError: x is not 5-D floating or has N < 2; bad sizes. ConfigError: bad block_range/classes.

    Example:
        >>> fused, label = fuse_v1(torch.rand(2, 1, 64, 128, 128), torch.Generator().manual_seed(0))
        >>> fused.shape, label.dtype
        (torch.Size([2, 1, 64, 128, 128]), torch.uint8)
    """
    _volume("x", x)
    if x.shape[0] < 2:
        raise InputError(f"x must hold N >= 2 samples (the foreground of sample n is sample n-1 of the "
                         f"batch, torch.roll(x, 1, 0)), got N={x.shape[0]}.")
    spatial = tuple(x.shape[2:])
    boxes = draw_boxes_v1(x.shape[0], spatial, generator, block_range, size_min, size_max, classes)
    label = paint_boxes_v1(boxes, spatial, x.device)
    return _lerp_batch(lambda i: x[i - 1], x, label, classes - 1), label  # x[i - 1]: no rolled copy


# ----------------------------------------------------------------------------- v2: block grid
@dataclass(frozen=True)
class Blocks:
    """v2 block grids of N samples; exactly int(ratio * prod(counts[n])) blocks of sample n are non-zero."""

    sizes: Tensor  # (N, 3) int64 block size (D, H, W), one per sample
    offsets: Tensor  # (N, 3) int64 grid offset, uniform in 0..S % size
    counts: Tensor  # (N, 3) int64 whole blocks per axis, S // size
    classes: Tensor  # (N, Gd, Gh, Gw) uint8 class of each block; 0 outside counts


def draw_blocks_v2(n: int, spatial: Size3, generator: torch.Generator | None = None, classes: int = 5,
                   foreground_ratio: float = 0.7, block_min: Size3 = (5, 8, 8),
                   block_max: Size3 = (20, 32, 32)) -> Blocks:
    """Draw v2 grids: size_i ~ U{min_i..max_i}, offset_i ~ U{0..S_i % size_i}, a random subset of exactly
    ``int(n_blocks * foreground_ratio)`` blocks with class ~ U{1..K}, the rest class 0.

    Example:
        >>> b = draw_blocks_v2(2, (64, 128, 128), torch.Generator().manual_seed(0))
        >>> b.classes.shape
        torch.Size([2, 12, 16, 16])
    """
    spatial = _triple("spatial", spatial)
    bmin, bmax = _bounds("block_min", block_min, "block_max", block_max)
    if not 0.0 <= foreground_ratio <= 1.0:
        raise ConfigError(f"foreground_ratio must lie in [0, 1], got {foreground_ratio!r}.")
    k, shape = check_classes(classes) - 1, _as_long(spatial, generator)
    sizes = _randint((n, 3), _as_long(bmin, generator), _as_long(bmax, generator), generator)
    offsets = _randint((n, 3), torch.zeros_like(sizes), shape % sizes, generator)
    counts = shape // sizes
    grid = tuple(max(s // b, 1) for s, b in zip(spatial, bmin))
    axes = [torch.arange(g, device=shape.device) for g in grid]
    inside = ((axes[0][None, :, None, None] < counts[:, 0, None, None, None])
              & (axes[1][None, None, :, None] < counts[:, 1, None, None, None])
              & (axes[2][None, None, None, :] < counts[:, 2, None, None, None])).reshape(n, -1)
    keys = torch.rand(inside.shape, generator=generator, device=shape.device, dtype=torch.float64)
    order = keys.masked_fill(~inside, 2.0).argsort(dim=1)  # a shuffle of the real blocks, padding last
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                            .expand_as(order).contiguous())
    n_fg = (counts.prod(1).to(torch.float64) * foreground_ratio).floor().long()
    cls = torch.randint(1, k + 1, inside.shape, generator=generator, device=shape.device)
    table = (cls * (rank < n_fg[:, None])).to(torch.uint8).reshape(n, *grid)
    return Blocks(sizes, offsets, counts, table)


def paint_blocks_v2(blocks: Blocks, spatial: Size3, device: torch.device | str | None = None) -> Tensor:
    """Expand the block classes to a uint8 label (N, 1, D, H, W); voxels outside the grid are 0.

    Example:
        >>> b = draw_blocks_v2(1, (20, 32, 32), torch.Generator().manual_seed(0))
        >>> paint_blocks_v2(b, (20, 32, 32)).shape
        torch.Size([1, 1, 20, 32, 32])
    """
    spatial = _triple("spatial", spatial)
    n = blocks.sizes.shape[0]
    label = torch.zeros((n, 1, *spatial), dtype=torch.uint8, device=device)
    table = blocks.classes.to(label.device)
    for i, ((bd, bh, bw), (od, oh, ow), (gd, gh, gw)) in enumerate(
            zip(blocks.sizes.tolist(), blocks.offsets.tolist(), blocks.counts.tolist())):
        t = table[i, :gd, :gh, :gw]
        full = t[:, None, :, None, :, None].expand(gd, bd, gh, bh, gw, bw).reshape(gd * bd, gh * bh, gw * bw)
        label[i, 0, od:od + gd * bd, oh:oh + gh * bh, ow:ow + gw * bw] = full
    return label


def fuse_v2(fg: Tensor, bg: Tensor, generator: torch.Generator | None = None, classes: int = 5,
            foreground_ratio: float = 0.7, block_min: Size3 = (5, 8, 8), block_max: Size3 = (20, 32, 32)
            ) -> tuple[Tensor, Tensor]:
    """VolF (v2) fusion of two patch batches with a block-grid label (one block size per sample).

    Args:
        fg, bg: (N, C, D, H, W) floating patches (``crop4vf`` gives patch 1 and patch 2).
        generator: source of every draw (``draw_blocks_v2``).
        classes: fusion classes; foreground_ratio: share of grid blocks with a non-zero class.
        block_min, block_max: inclusive block size range (D, H, W).

    Returns:
        ``(fused, label)``: (N, C, D, H, W) and uint8 (N, 1, D, H, W), label constant on each grid block.

    Example:
        >>> a, b = torch.rand(2, 1, 1, 64, 128, 128)
        >>> fused, label = fuse_v2(a, b, torch.Generator().manual_seed(0))
        >>> int(label.max()) <= 4
        True
    """
    _volume("bg", bg)
    if _volume("fg", fg).shape != bg.shape:
        raise InputError(f"fg and bg must have the same shape, got {tuple(fg.shape)} and {tuple(bg.shape)}.")
    spatial = tuple(bg.shape[2:])
    blocks = draw_blocks_v2(bg.shape[0], spatial, generator, classes, foreground_ratio, block_min, block_max)
    label = paint_blocks_v2(blocks, spatial, bg.device)
    return fuse(fg, bg, label, classes), label


# ----------------------------------------------------------------------------- v1 preprocessing
def normalize_hu(x: Tensor, low: float = -1000.0, high: float = 1000.0) -> Tensor:
    """Clip to [low, high] (HU) and map linearly to [-1, 1] (PyMIC LUNA preprocessing of v1).

    Example:
        >>> normalize_hu(torch.tensor([-2000.0, 0.0, 500.0])).tolist()
        [-1.0, 0.0, 0.5]
    """
    if not high > low:
        raise ConfigError(f"normalize_hu needs high > low, got low={low}, high={high}.")
    return (x.clamp(low, high) - (low + high) / 2.0).div_((high - low) / 2.0)


@dataclass(frozen=True)
class CropV1:
    """v1 random crops: starts (N, 3) int64 corner, flips (N, 3) bool per axis, size (D, H, W)."""

    starts: Tensor
    flips: Tensor
    size: tuple[int, int, int]


def draw_crop_v1(n: int, spatial: Size3, generator: torch.Generator | None = None,
                 size: Size3 = (64, 128, 128), flip_p: float = 0.5) -> CropV1:
    """Draw v1 crops (corner ~ U{0..S_i - size_i}) and flips (each axis with probability flip_p).

    Raises:
        InputError: the volume is smaller than the crop on some axis (pad it first; PyMIC fails too).

    Example:
        >>> draw_crop_v1(2, (96, 192, 192), torch.Generator().manual_seed(0)).starts.shape
        torch.Size([2, 3])
    """
    spatial, size = _triple("spatial", spatial), _triple("size", size)
    if any(c > s for c, s in zip(size, spatial)):
        raise InputError(f"volume {spatial} is smaller than the crop size {size}; pad it first.")
    margin = _as_long([s - c for s, c in zip(spatial, size)], generator)
    starts = _randint((n, 3), torch.zeros_like(margin), margin, generator)
    flips = torch.rand((n, 3), generator=generator, device=_device(generator)) < flip_p
    return CropV1(starts, flips, size)


def apply_crop_v1(x: Tensor, crop: CropV1) -> Tensor:
    """Cut and flip: x (N, C, D, H, W) -> (N, C, *crop.size), a new tensor.

    Example:
        >>> x = torch.rand(2, 1, 96, 192, 192)
        >>> apply_crop_v1(x, draw_crop_v1(2, x.shape[2:])).shape
        torch.Size([2, 1, 64, 128, 128])
    """
    _volume("x", x)
    (d, h, w), out = crop.size, []
    for i, ((s0, s1, s2), flips) in enumerate(zip(crop.starts.tolist(), crop.flips.tolist())):
        if s0 + d > x.shape[2] or s1 + h > x.shape[3] or s2 + w > x.shape[4]:
            raise InputError(f"crop at {(s0, s1, s2)} of size {crop.size} exceeds x {tuple(x.shape)}.")
        patch = x[i, :, s0:s0 + d, s1:s1 + h, s2:s2 + w]  # (C, d, h, w)
        dims = [1 + a for a in range(3) if flips[a]]
        out.append(patch.flip(dims) if dims else patch)
    return torch.stack(out)


# ----------------------------------------------------------------------------- v2 crops and intensity
@dataclass(frozen=True)
class Crop4VF:
    """Draws of ``crop4vf`` for N volumes, two patches each (index 0: patch 1 = fg, 1: patch 2 = bg)."""

    starts: Tensor  # (N, 2, 3) int64 crop corner (D, H, W) in the input volume
    sizes: Tensor  # (N, 2, 3) int64 crop size
    flips: Tensor  # (N, 2, 3) bool flip of each axis
    p_low: Tensor  # (N, 2) float64 lower contrast percentile
    p_high: Tensor  # (N, 2) float64 upper contrast percentile
    gamma: Tensor  # (N, 2) float64
    invert: Tensor  # (N,) bool: both patches become 1 - x
    output_size: tuple[int, int, int]
    intensity: bool  # contrast, gamma and inversion apply (aug_mode 1 or 3)


def draw_crop4vf(n: int, spatial: Size3, generator: torch.Generator | None = None,
                 output_size: Size3 = (64, 128, 128), scale_lower: Sequence[float] = (0.7, 0.7, 0.7),
                 scale_upper: Sequence[float] = (1.5, 1.5, 1.5), aug_mode: int = 3,
                 p_low_range: Sequence[float] = (0.1, 2.0), p_high_range: Sequence[float] = (98.0, 99.9),
                 gamma_range: Sequence[float] = (0.7, 1.5), invert_p: float = 0.25) -> Crop4VF:
    """Draw ``Crop4VolumeFusion`` parameters: per patch s_i ~ U(lower_i, upper_i),
    crop_i = min(int(out_i * s_i), S_i), corner ~ U{0..S_i - crop_i}; flips p = 0.5 (aug_mode >= 2);
    p_low, p_high, gamma uniform and one joint inversion with p = invert_p (aug_mode 1 or 3).
    aug_mode 0 and 1 use scale 1, as the official code does.

    Example:
        >>> p = draw_crop4vf(2, (128, 256, 256), torch.Generator().manual_seed(0))
        >>> p.sizes.shape, p.invert.shape
        (torch.Size([2, 2, 3]), torch.Size([2]))
    """
    spatial, out = _triple("spatial", spatial), _triple("output_size", output_size)
    if aug_mode not in (0, 1, 2, 3):
        raise ConfigError(f"aug_mode must be 0 (none), 1 (intensity), 2 (spatial) or 3 (both), got {aug_mode!r}.")
    if len(scale_lower) != 3 or len(scale_upper) != 3 or any(
            not 0 < a <= b or int(o * a) < 1 for a, b, o in zip(scale_lower, scale_upper, out)):
        raise ConfigError(f"scale_lower/scale_upper must be 3 values with 0 < lower <= upper and "
                          f"int(output_size * lower) >= 1, got {tuple(scale_lower)}, {tuple(scale_upper)}.")
    pl, ph = _range("p_low_range", p_low_range, 0, 100), _range("p_high_range", p_high_range, 0, 100)
    if pl[1] > ph[0]:
        raise ConfigError(f"p_low_range must end below p_high_range, got {tuple(pl)} and {tuple(ph)}.")
    g = _range("gamma_range", gamma_range, 1e-6, 1e6)
    if not 0.0 <= invert_p <= 1.0:
        raise ConfigError(f"invert_p must lie in [0, 1], got {invert_p!r}.")
    dev = _device(generator)
    lo, hi = (torch.tensor(list(v), dtype=torch.float64, device=dev) for v in (scale_lower, scale_upper))
    if aug_mode < 2:
        lo = hi = torch.ones(3, dtype=torch.float64, device=dev)
    scale = _uniform((n, 2, 3), lo, hi, generator)
    sizes = torch.minimum((scale * _as_long(out, generator)).floor().long(), _as_long(spatial, generator))
    starts = _randint((n, 2, 3), torch.zeros_like(sizes), _as_long(spatial, generator) - sizes, generator)
    flips = (torch.rand((n, 2, 3), generator=generator, device=dev) < 0.5) & (aug_mode >= 2)
    p_low, p_high = _uniform((n, 2), *pl, generator), _uniform((n, 2), *ph, generator)
    gamma = _uniform((n, 2), *g, generator)
    invert = torch.rand((n,), generator=generator, device=dev, dtype=torch.float64) < invert_p
    return Crop4VF(starts, sizes, flips, p_low, p_high, gamma, invert, out, aug_mode in (1, 3))


def apply_crop4vf(volume: Tensor | Sequence[Any], params: Crop4VF, percentile_method: str = "exact") -> tuple[Tensor, Tensor]:
    """Cut, flip and resize (trilinear, corners aligned: ``scipy.ndimage.zoom(order=1)``) both patches,
    then adaptive contrast, gamma and the joint inversion.

    Args:
        volume: (N, 1, D, H, W) floating; patch pair n is cut from volume n. Or N volumes that slice as
            (1, D, H, W) floating tensors (e.g. :class:`~ssl3d.data.mapped.MappedVolume`: only the crops are read).
        params: from ``draw_crop4vf`` for these N volumes.
        percentile_method: "exact" (numpy's linear percentiles, default) or "histogram" (approximate,
            a named option; slower than "exact" on CPU, see ``benchmarks/vf_samples.py``).

    Returns:
        ``(fg, bg)``, each (N, 1, *output_size) in the volume's dtype; in [0, 1] when intensity applies.

    Example:
        >>> v = torch.rand(1, 1, 80, 160, 160)
        >>> fg, bg = apply_crop4vf(v, draw_crop4vf(1, v.shape[2:], output_size=(32, 64, 64)))
        >>> fg.shape
        torch.Size([1, 1, 32, 64, 64])
    """
    if isinstance(volume, Tensor):
        _volume("volume", volume, channels=1)
    n, out = len(volume), params.output_size
    if n == 0 or params.sizes.shape[0] != n:
        raise InputError(f"params were drawn for {params.sizes.shape[0]} volumes, volume has N={n}.")
    patches: Tensor | None = None
    for i, (starts, sizes, flips) in enumerate(zip(params.starts.tolist(), params.sizes.tolist(),
                                                   params.flips.tolist())):
        for j in range(2):
            (s0, s1, s2), (c0, c1, c2) = starts[j], sizes[j]
            crop = volume[i][:, s0:s0 + c0, s1:s1 + c1, s2:s2 + c2][None]
            if patches is None:
                patches = crop.new_empty((2, n, 1, *out))
            dims = [2 + a for a in range(3) if flips[j][a]]
            crop = crop.flip(dims) if dims else crop
            same = tuple(sizes[j]) == out
            patches[j, i] = crop[0] if same else F.interpolate(crop, size=out, mode="trilinear",
                                                                align_corners=True)[0]
    if params.intensity:  # rows are (patch j, volume i): draws (N, 2) are read transposed
        rows = patches.view(2 * n, -1)
        p_low, p_high, gamma = (t.T.reshape(-1) for t in (params.p_low, params.p_high, params.gamma))
        _contrast_rows(rows, p_low, p_high, percentile_method)
        _gamma_rows(rows, gamma, params.invert.repeat(2))
    return patches[0], patches[1]


def crop4vf(volume: Tensor, generator: torch.Generator | None = None, output_size: Size3 = (64, 128, 128),
            aug_mode: int = 3, percentile_method: str = "exact", **draw_kwargs: object) -> tuple[Tensor, Tensor]:
    """``Crop4VolumeFusion`` on the device: ``apply_crop4vf(volume, draw_crop4vf(...))``.

    Example:
        >>> fg, bg = crop4vf(torch.rand(2, 1, 128, 256, 256), torch.Generator().manual_seed(0))
        >>> fused, label = fuse_v2(fg, bg, torch.Generator().manual_seed(1))
        >>> fused.shape
        torch.Size([2, 1, 64, 128, 128])
    """
    _volume("volume", volume, channels=1)
    params = draw_crop4vf(volume.shape[0], tuple(volume.shape[2:]), generator, output_size,
                          aug_mode=aug_mode, **draw_kwargs)  # type: ignore[arg-type]
    return apply_crop4vf(volume, params, percentile_method)


def _tails(row: Tensor, need_low: int, need_high: int) -> tuple[Tensor, Tensor]:
    """The ``need_low`` smallest and ``need_high`` largest values of a 1-D tensor (at least; unsorted),
    exactly: thresholds come from a strided sample, and a single masked pass selects both tails."""
    m = row.numel()
    sub = row[:: max(1, m // 16384)]
    ns, slack = sub.numel(), 4.0 * sub.numel() ** 0.5 + 8.0
    while max(need_low, need_high) <= m // 8 and slack < ns:
        k_low = min(ns, int(need_low / m * ns + slack)) if need_low else 0
        k_high = min(ns, int(need_high / m * ns + slack)) if need_high else 0
        t_low = sub.kthvalue(k_low).values if k_low else row.new_tensor(float("-inf"))
        t_high = sub.kthvalue(ns + 1 - k_high).values if k_high else row.new_tensor(float("inf"))
        if t_low < t_high:
            picked = row[(row <= t_low) | (row >= t_high)]
            small, large = picked[picked <= t_low], picked[picked >= t_high]
            if small.numel() >= need_low and large.numel() >= need_high:
                return small, large
        slack *= 4.0
    return row, row


def _order_stats(row: Tensor, ranks: list[int]) -> dict[int, Tensor]:
    """Exact order statistics (0-based ranks, ascending) of a 1-D tensor."""
    m = row.numel()
    low, high = [k for k in ranks if k < m // 2], [k for k in ranks if k >= m // 2]
    small, large = _tails(row, max(low) + 1 if low else 0, m - min(high) if high else 0)
    vals = {k: small.kthvalue(k + 1).values for k in low}
    vals.update({k: large.kthvalue(k + 1 - (m - large.numel())).values for k in high})
    return vals


def _exact_rows(rows: Tensor, q: Tensor) -> Tensor:
    m = rows.shape[1]
    pos = q / 100.0 * (m - 1)
    lo = pos.floor().long().clamp(0, m - 1)
    hi, frac = (lo + 1).clamp(max=m - 1), pos - lo
    out = torch.empty_like(q)
    for r in range(rows.shape[0]):
        vals = _order_stats(rows[r], sorted(set(lo[r].tolist() + hi[r].tolist())))
        a = torch.stack([vals[k] for k in lo[r].tolist()]).double()
        b = torch.stack([vals[k] for k in hi[r].tolist()]).double()
        out[r] = torch.lerp(a, b, frac[r])
    return out


def _histogram_rows(rows: Tensor, q: Tensor, bins: int) -> Tensor:
    n, m = rows.shape
    vmin, vmax = torch.stack([torch.stack(torch.aminmax(row)) for row in rows]).T
    width = ((vmax - vmin).double() / bins).clamp_min(1e-30)
    idx = ((rows - vmin[:, None]) / width[:, None].to(rows.dtype)).long().clamp_(0, bins - 1)
    idx += torch.arange(n, device=rows.device)[:, None] * bins
    cdf = torch.bincount(idx.view(-1), minlength=n * bins).view(n, bins).cumsum(1).double()
    pos = q / 100.0 * (m - 1) + 0.5  # rank (0-based) -> count of values up to it, mid-point
    b = torch.searchsorted(cdf, pos).clamp(max=bins - 1)
    before = torch.where(b > 0, cdf.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(pos))
    inside = (cdf.gather(1, b) - before).clamp_min(1.0)
    return vmin[:, None].double() + (b + (pos - before) / inside) * width[:, None]


def percentile(x: Tensor, q: Tensor, method: str = "exact", bins: int = 4096) -> Tensor:
    """Per-sample percentiles over all voxels, numpy's default (linear) definition: x (N, ...), q (N, K)
    percents -> (N, K) float64. ``method`` "exact" (order statistics, equal to ``np.percentile``) or
    "histogram" (``bins`` bins between min and max, linear inside a bin: an approximation).

    Example:
        >>> percentile(torch.arange(101.0)[None], torch.tensor([[2.0, 98.5]])).tolist()
        [[2.0, 98.5]]
    """
    if method not in PERCENTILE_METHODS:
        raise ConfigError(f"percentile method must be one of {PERCENTILE_METHODS}, got {method!r}.")
    rows, q = x.reshape(x.shape[0], -1), q.to(device=x.device, dtype=torch.float64)
    if q.dim() != 2 or q.shape[0] != rows.shape[0] or bool(((q < 0) | (q > 100)).any()):
        raise InputError(f"q must be (N, K) percents in [0, 100] with N={rows.shape[0]}, got {tuple(q.shape)}.")
    return _exact_rows(rows, q) if method == "exact" else _histogram_rows(rows, q, bins)


def _ramp_sum(row: Tensor, knots: list[float], heights: Sequence[float]) -> Tensor:
    """sum_j heights[j] * clamp((x - k_j) / (k_{j+1} - k_j), 0, 1): a monotone piecewise-linear map of a
    1-D tensor (Python scalars: per-row loops beat broadcast (R, 1) operands on CPU)."""
    tiny, out = torch.finfo(row.dtype).tiny, None
    for j, h in enumerate(heights):
        r = (row - knots[j]).mul_(h / max(knots[j + 1] - knots[j], tiny)).clamp_(0.0, h)
        out = r if out is None else out.add_(r)
    return out  # type: ignore[return-value]


def _contrast_rows(rows: Tensor, p_low: Tensor, p_high: Tensor, method: str) -> None:
    v = percentile(rows, torch.stack([p_low, p_high], 1), method).tolist()
    for r, (v0, v1) in enumerate(v):
        vmin, vmax = (float(t) for t in torch.aminmax(rows[r]))
        rows[r] = _ramp_sum(rows[r], [vmin, v0, v1, vmax], (0.1, 0.8, 0.1))


def _gamma_rows(rows: Tensor, gamma: Tensor, invert: Tensor | None) -> None:
    flags = invert.tolist() if invert is not None else [False] * rows.shape[0]
    for r, (g, inv) in enumerate(zip(gamma.tolist(), flags)):
        row = rows[r]
        ymin, ymax = (float(t) for t in torch.aminmax(row))
        if ymax > ymin:  # after adaptive_contrast ymin is exactly 0 and the shifts are skipped
            if ymin:
                row.sub_(ymin)
            row.mul_(1.0 / (ymax - ymin)).pow_(g).mul_(ymax - ymin)
            if ymin:
                row.add_(ymin)
        if inv:  # joint inversion of both patches: 1 - x
            row.neg_().add_(1.0)


def adaptive_contrast(x: Tensor, p_low: Tensor, p_high: Tensor, method: str = "exact") -> Tensor:
    """PyMIC's adaptive contrast of x (N, ...) with percents p_low, p_high (N,): per sample, [min, P(p_low)]
    -> [0, 0.1], [P(p_low), P(p_high)] -> [0.1, 0.9], [P(p_high), max] -> [0.9, 1], piecewise linear. An
    empty segment maps to its end (the official code divides by zero when P(p_low) == P(p_high)).

    Example:
        >>> y = adaptive_contrast(torch.randn(2, 1, 8, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([99.0, 98.0]))
        >>> float(y.min()), float(y.max())
        (0.0, 1.0)
    """
    if p_low.shape != (x.shape[0],) or p_high.shape != p_low.shape or bool((p_low > p_high).any()):
        raise InputError(f"p_low, p_high must be (N={x.shape[0]},) with p_low <= p_high, got "
                         f"{p_low.tolist()} and {p_high.tolist()}.")
    rows = x.reshape(x.shape[0], -1).clone()
    _contrast_rows(rows, p_low, p_high, method)
    return rows.view_as(x)


def gamma_correction(x: Tensor, gamma: Tensor) -> Tensor:
    """Per sample ``((x - min) / (max - min)) ** gamma * (max - min) + min``; constant samples unchanged.

    Example:
        >>> gamma_correction(torch.tensor([[0.0, 0.25, 1.0]]), torch.tensor([0.5])).tolist()
        [[0.0, 0.5, 1.0]]
    """
    rows = x.reshape(x.shape[0], -1).clone()
    _gamma_rows(rows, gamma, None)
    return rows.view_as(x)
