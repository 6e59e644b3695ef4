"""The window and size rules of inference: which window a bundle's network runs on, and what sizes its input
is padded to.

Whole-volume segmentation (:mod:`.segment`), click sessions (:mod:`.interactive`) and the GPU-memory
estimates (:mod:`.memory`) must apply the same rules, or an estimate would describe another run than the one
it guards; the rules live here, a leaf that imports nothing of ``ssl3d.infer``, so the three import it and
not each other.

Example: a UNet of 4 levels (multiple 8) trained on 32^3 patches slides a (32, 32, 32) window over a model
volume of (40, 20, 64), padded to (40, 32, 64); without a patch it runs on the whole volume, padded to
(40, 24, 64).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from ..bundle import Bundle

__all__ = ["CONSTANT_CACHE_SIZE", "window_size", "network_multiple", "round_up", "padded_shape", "click_window"]

#: Distinct constant windows whose logits whole-volume segmentation remembers (air, padding, a saturated window).
CONSTANT_CACHE_SIZE = 8


def window_size(bundle: "Bundle") -> tuple[int, int, int] | None:
    """(D, H, W) sliding window: a fixed ``input_size`` of the network, else ``preset.train.patch``, else None (whole volume)."""
    fixed = bundle.network.get("kwargs", {}).get("input_size")
    if fixed:
        return tuple(int(s) for s in fixed)  # type: ignore[return-value]
    patch = ((bundle.meta.get("preset") or {}).get("train") or {}).get("patch")
    return tuple(int(s) for s in patch) if patch else None  # type: ignore[return-value]


def network_multiple(network: dict) -> int:
    """Sides a whole-volume input must be divisible by (the network's total downsampling; 1 for PCT-Net)."""
    from ..nets.builders import size_multiple

    return size_multiple(network["name"], network.get("kwargs", {}))


def round_up(sizes: Sequence[int], multiple: int) -> tuple[int, ...]:
    """Each side rounded up to a multiple of ``multiple``: (40, 20, 63), 8 -> (40, 24, 64)."""
    return tuple(-(-int(s) // multiple) * multiple for s in sizes)


def padded_shape(shape: Sequence[int], window: Sequence[int] | None, multiple: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(padded shape, window) of a model volume: every side at least the window's; without a window the whole
    volume is one window, rounded up to the network's multiple. Padding goes at the far end of each axis."""
    if window is None:
        target = round_up(shape, multiple)
        return target, target
    window = tuple(int(w) for w in window)
    return tuple(max(int(s), w) for s, w in zip(shape, window)), window


def click_window(bundle: "Bundle") -> tuple[tuple[int, int, int], int, bool]:
    """(window (D, H, W), size multiple, fixed-size network) of a click session, from the bundle's network and
    training patch: PCT-Net slides its fixed input size; other networks take the patch (default 64^3) rounded
    up to their multiple (the training rule of :func:`ssl3d.train.interactive.size_multiple`)."""
    from ..train.interactive import size_multiple

    name, kwargs = bundle.network["name"], bundle.network.get("kwargs", {})
    if name == "pctnet":
        return tuple(int(v) for v in kwargs.get("input_size", (64, 128, 128))), 1, True  # type: ignore[return-value]
    multiple = size_multiple(name, kwargs)
    patch = (bundle.meta.get("preset", {}).get("train", {}) or {}).get("patch") or (64, 64, 64)
    window = tuple(max(multiple, w) for w in round_up(patch, multiple))
    return window, multiple, False  # type: ignore[return-value]
