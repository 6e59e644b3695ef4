"""GPU memory a bundle's inference needs, estimated without a GPU, and the device chosen from it.

How: the network runs once on PyTorch's ``meta`` device (shapes and dtypes, no data, no arithmetic) at the
real window and batch, while a dispatch mode follows every tensor the forward pass creates until it is
freed. The peak of live bytes is what eager execution holds at once on a GPU too: the same ops with the
same lifetimes. Assumptions: activations are counted in float32, although AMP runs most of them in
float16 (autocast keeps norms, softmax and the blending in float32), so this is a bound rather than a
guess; cuDNN workspaces and the caching allocator's rounding are what :data:`MARGIN` covers. Probes are
cached per network, batch and window: a UNet takes milliseconds, a SwinUNETR about half a second (its
constructor reads values, so it is built on the CPU first).

The parts of a :class:`MemoryEstimate`:

- parameters: weights and buffers (float32), plus the float16 copies autocast keeps under AMP;
- activations: the forward pass's peak for one batch of ``sw_batch`` windows (clicks: the largest ROI);
- buffers: what else lives on the device (:mod:`ssl3d.infer.segment` keeps the preprocessed volume there,
  float32 accumulators of C x window_D x H x W, a finished slab and its argmax, the batch of windows and
  its float32 logits, the logits of constant windows);
- context: :data:`ssl3d.device.CUDA_CONTEXT_BYTES`.

``total = context + (parameters + activations + buffers) * (1 + MARGIN)``.

Example::

    choice = device_for_bundle("runs/abdomen/bundle", "auto", sw_batch=2, volume=read_volume("ct.nii.gz"))
    torch.device(choice.device), choice.message
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import weakref
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..bundle import Bundle, as_bundle
from ..device import CUDA_CONTEXT_BYTES, DeviceChoice, choose_device
from ..errors import ConfigError
from ..io import Volume
from ..nets.builders import main_output
from .windows import CONSTANT_CACHE_SIZE, click_window, network_multiple, padded_shape, round_up, window_size

__all__ = ["MARGIN", "MemoryEstimate", "device_for_bundle", "estimate_click_memory", "estimate_segment_memory", "forward_peak_bytes"]

#: Share added to parameters, activations and buffers: allocator rounding and fragmentation, cuDNN/cuBLAS workspaces.
MARGIN = 0.2
_FLOAT = 4  # bytes of the float32 buffers of segment and the session
_WHOLE_VOLUME = 128  # side assumed for a bundle without a window when the volume is not known


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of GPU memory by part (module docstring); ``total`` is what to compare with free memory."""

    parameters: int
    activations: int
    buffers: int
    context: int = CUDA_CONTEXT_BYTES

    @property
    def total(self) -> int:
        return self.context + math.ceil((self.parameters + self.activations + self.buffers) * (1 + MARGIN))


# ---------------------------------------------------------------------------------------------- forward peak


class _LiveBytes(TorchDispatchMode):
    """Follows each tensor an op creates until it is freed, by storage (views and in-place results share one)."""

    def __init__(self, external: set[int]) -> None:
        super().__init__()
        self.external = external  # storages that exist already: parameters, buffers, the input
        self.live: dict[int, list[int]] = {}  # storage -> [bytes, tensors alive]
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor):
                self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self.external:
            return
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.now += entry[0]
            self.peak = max(self.peak, self.now)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.live[key]
            self.now -= entry[0]


def forward_peak_bytes(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, tuple[int, ...]]:
    """Peak bytes of the tensors ``model(x)`` holds at once under no_grad, and the output's shape.

    Parameters, buffers and ``x`` are not counted (they exist before); a list output counts as its first
    item. Any device works; on ``meta`` nothing is computed. Example: Conv3d(1, 4, 3) -> ReLU on
    (1, 1, 8, 8, 8) float32 peaks at 2 x 4 x 512 x 4 = 16384 bytes (the conv's output and the ReLU's).
    """
    held = itertools.chain(model.parameters(), model.buffers(), [x])
    tracker = _LiveBytes({t.untyped_storage()._cdata for t in held})
    with torch.no_grad(), tracker:
        out = main_output(model(x))
        shape = tuple(int(s) for s in out.shape)
        del out
    return tracker.peak, shape


def _meta_network(network: dict) -> torch.nn.Module:
    from ..nets.builders import build_network

    kwargs = dict(network.get("kwargs", {}))
    try:
        with torch.device("meta"):
            model = build_network(network["name"], **kwargs)
    except (RuntimeError, NotImplementedError):  # a constructor that reads values (MONAI SwinUNETR: .item())
        model = build_network(network["name"], **kwargs).to("meta")
    return model.eval()


@functools.lru_cache(maxsize=32)
def _probe(network_json: str, batch: int, size: tuple[int, int, int]) -> tuple[int, int, tuple[int, ...]]:
    """(parameter and buffer bytes, forward peak bytes, output shape) of the network on (batch, C_in, *size)."""
    network = json.loads(network_json)
    model = _meta_network(network)
    weights = sum(t.numel() * t.element_size() for t in itertools.chain(model.parameters(), model.buffers()))
    x = torch.zeros((batch, _in_channels(network), *size), device="meta")
    peak, shape = forward_peak_bytes(model, x)
    return int(weights), int(peak), shape


def _in_channels(network: dict) -> int:
    return int(network.get("kwargs", {}).get("in_channels", 1))


def _network_key(bundle: Bundle) -> str:
    return json.dumps(bundle.network, sort_keys=True)


# ---------------------------------------------------------------------------------------------- estimates


def estimate_segment_memory(
    bundle: Bundle | str | os.PathLike,
    sw_batch: int = 2,
    window: Sequence[int] | None = None,
    shape: Sequence[int] | None = None,
    probabilities: bool = False,
    amp: bool = True,
) -> MemoryEstimate:
    """GPU memory of :func:`~ssl3d.infer.segment.segment` with this bundle.

    Args:
        bundle: the bundle (folder or loaded).
        sw_batch: windows per forward pass.
        window: (D, H, W) window; default the bundle's (:func:`~ssl3d.infer.windows.window_size`; without
            one the whole volume is one window).
        shape: the model-space (D, H, W) of the volume; None: one window's worth (the volume's own share of
            the buffers is then left out).
        probabilities: the softmax of each finished slab is kept too.
        amp: float16 forward passes (autocast keeps float16 copies of the weights).

    Example: the 3-level UNet of the tests (channels 4, 8, 16) with 16^3 windows and sw_batch 2 needs
    about 0.7 MB of activations; the total is then mostly the CUDA context.
    """
    bundle = as_bundle(bundle)
    window = window or window_size(bundle)
    # segment pads the volume to the window; without one it runs the whole volume, rounded up, at once
    shape, window = padded_shape(shape or window or (_WHOLE_VOLUME,) * 3, window, network_multiple(bundle.network))
    # segment batches the windows of one slab (one D start): a slab that is one window wide runs them one
    # by one whatever sw_batch says (whole-volume bundles, small volumes); wider slabs keep sw_batch
    single = shape[1] <= window[1] and shape[2] <= window[2]
    sw_batch = 1 if single else int(sw_batch)
    try:
        weights, peak, out = _probe(_network_key(bundle), sw_batch, window)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise bundle.network_error(exc) from None
    classes, inputs = out[1], _in_channels(bundle.network)
    voxels, plane, depth = math.prod(window), shape[1] * shape[2], window[0]
    buffers = _FLOAT * (
        inputs * math.prod(shape)  # the preprocessed volume
        + 2 * (classes + 1) * depth * plane  # accumulator and weight sums; a finished slab, its argmax, the slide
        + voxels  # the Gaussian importance map
        + sw_batch * (inputs + classes) * voxels  # the batch of windows and its float32 logits
        + CONSTANT_CACHE_SIZE * classes * voxels  # logits of constant windows
    )
    if probabilities:
        buffers += (_FLOAT + 2) * classes * depth * plane  # softmax of a slab and its float16 copy
    return MemoryEstimate(weights + (weights // 2 if amp else 0), peak, buffers)


def estimate_click_memory(
    bundle: Bundle | str | os.PathLike, max_roi: int = 3, shape: Sequence[int] | None = None, amp: bool = True
) -> MemoryEstimate:
    """GPU memory of an :class:`~ssl3d.infer.InteractiveSession`'s clicks at the largest ROI it grows to.

    The ROI reaches ``max_roi`` windows per axis (within the volume, ``shape`` = its model-space (D, H, W)
    when known) and runs as one forward pass; a fixed-size network (PCT-Net) slides its window over it
    instead. The volume itself (float32 on the device) is counted when ``shape`` is given.
    """
    bundle = as_bundle(bundle)
    window, multiple, fixed = click_window(bundle)
    roi = [m * max_roi for m in window]
    if shape is not None:
        roi = [min(r, max(int(s), w)) for r, s, w in zip(roi, shape, window)]
    roi = round_up(roi, multiple)  # the session pads to the network's multiple
    try:
        weights, peak, out = _probe(_network_key(bundle), 1, tuple(window) if fixed else roi)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise bundle.network_error(exc) from None
    classes, inputs = out[1], _in_channels(bundle.network)
    guidance = 2 if bundle.task == "interactive" else 0
    voxels = math.prod(roi)
    buffers = _FLOAT * voxels * (guidance + 2 * inputs + classes) + 8 * voxels  # inputs, logits, int64 argmax
    if fixed:  # MONAI's sliding windows keep an output and a count map of the ROI
        buffers += _FLOAT * (classes + 1) * voxels
    if shape is not None:
        buffers += _FLOAT * math.prod(int(s) for s in shape)
    return MemoryEstimate(weights + (weights // 2 if amp else 0), peak, buffers)


def device_for_bundle(
    bundle: Bundle | str | os.PathLike,
    requested: str = "auto",
    sw_batch: int = 2,
    volume: Volume | None = None,
    clicks: bool = False,
    max_roi: int = 3,
    other_process: bool = False,
) -> DeviceChoice:
    """Where to run a bundle: :func:`ssl3d.device.choose_device` with this module's estimate.

    Quick and GPU-free, so Slicer can call it on its main thread: nothing is estimated unless a GPU is in
    play, the estimate runs on the meta device (cached), and free memory comes from NVML, which creates
    no CUDA context.

    Args:
        bundle: the bundle (folder or loaded).
        requested: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        sw_batch: windows per forward pass of whole-volume segmentation.
        volume: the image; its model-space size comes from its geometry and the bundle's preprocessing
            (nothing is resampled). None leaves the volume's share out.
        clicks: estimate an interactive session's clicks (:func:`estimate_click_memory`) instead of
            whole-volume segmentation (:func:`estimate_segment_memory`).
        max_roi: the session's ``max_roi``.
        other_process: the bundle will run in another process (Slicer starting an ``ssl3d segment`` job):
            free memory then comes from NVML only, and no CUDA context is created here.

    Raises:
        ConfigError: an unknown device spec, or CUDA asked where there is none.
    """
    bundle = as_bundle(bundle)

    def need() -> int:
        shape = model_shape(volume, bundle.meta["preprocessing"]) if volume is not None else None
        if clicks:
            return estimate_click_memory(bundle, max_roi, shape).total
        return estimate_segment_memory(bundle, sw_batch, shape=shape).total

    return choose_device(requested, need, other_process)


def model_shape(volume: Volume, preprocessing: dict) -> tuple[int, int, int]:
    """Approximate model-space (D, H, W) of ``volume`` after ``preprocessing`` (a bundle's section), from its
    geometry alone: reorientation permutes the axes, resampling scales each by spacing / target spacing,
    then ``pad_to`` and ``resize``; the foreground crop is left out (so the size is an upper bound).

    Example: 512 x 512 x 100 voxels of 0.8 x 0.8 x 2.5 mm, axial, at 1.5 mm -> (167, 274, 274).
    """
    from ..data.preprocess import PreprocessConfig

    config = PreprocessConfig(**preprocessing)
    matrix = np.asarray(volume.ijk_to_ras, dtype=np.float64)[:3, :3]
    counts = np.asarray(volume.shape[::-1], dtype=np.float64)  # (i, j, k)
    spacing = np.linalg.norm(matrix, axis=0)
    order = np.argmax(np.abs(matrix), axis=0)  # the RAS axis each of i, j, k lies closest to
    if config.orientation and sorted(order) == [0, 1, 2]:
        counts[order], spacing[order] = counts.copy(), spacing.copy()
    if config.spacing is not None:
        counts = np.ceil(counts * spacing / np.asarray(config.spacing, dtype=np.float64) - 1e-6)
    if config.pad_to is not None:
        counts = np.maximum(counts, config.pad_to)
    if config.resize is not None:
        counts = np.asarray(config.resize, dtype=np.float64)
    return tuple(int(c) for c in counts[::-1])  # type: ignore[return-value]
