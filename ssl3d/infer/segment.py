"""Whole-volume segmentation with a segmentation bundle, and the files it writes.

Pipeline (:func:`segment`)::

    Volume (k, j, i) --preprocess (the bundle's PreprocessConfig)--> x (1, 1, D, H, W), GridMapping
      --sliding windows, Gaussian blending (window = the bundle's training patch)--> float32 logits,
        one finished slab of slices at a time
      --argmax per slab--> uint8 labels (D, H, W) at model resolution
      --GridMapping.to_input_grid (nearest)--> label Volume with the input's exact shape and geometry

Sliding windows (:func:`sliding_window_slabs`): the window positions (``monai.data.utils.dense_patch_slices``
with the scan interval of ``sliding_window_inference``) and the importance map
(``compute_importance_map``, Gaussian, sigma = 0.125 x window) are MONAI's, so the float32 logits equal
``sliding_window_inference(x, window, sw_batch, model, overlap, mode="gaussian")`` to rounding
(``benchmarks/segment_speed.py``). What differs is memory: windows run row by row along D, and once a
row is done every slice before the next row's start is final, so it is normalised, reduced (argmax;
softmax when probabilities are asked for) and dropped. The blend buffers hold C x window_D x H x W
float32 values instead of C x D x H x W: for a 512x512x600 CT of 0.8 x 0.8 x 1 mm at 1.5 mm
(400x273x273 model voxels, 7 classes, 32^3 windows) 67 MB instead of 0.83 GB; the labels leave as uint8.
A window of one constant value (air after the intensity window) runs the network once per value and
its logits are reused: equal up to float rounding, since a window's logits depend on its content
alone. On CUDA the forward passes run under float16 autocast (AMP) by default; blending stays float32.

Outputs (:func:`write_outputs`): ``.seg.nrrd`` is a Slicer segmentation (slicerio) whose segments carry
the bundle's names and colours; ``.nii.gz``/``.nii``/``.nrrd``/``.mha`` is a plain label map with a Slicer
colour table beside it (``seg.nii.gz`` -> ``seg.ctbl``, lines ``value name r g b a``). Probabilities, when
asked for, are one float32 volume per foreground class on the input grid (linear interpolation),
named ``FILE_<value>_<name>.<ext>``: a Volume is 3D, and one file per class opens directly in Slicer.
All files of one call are written to temporary names and renamed together at the end.

Example::

    result = segment("runs/liver/bundle", read_volume("ct.nii.gz"), device="auto")
    result.labels.same_grid(read_volume("ct.nii.gz"))      # True
    write_outputs(result, "ct_seg.seg.nrrd")
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..bundle import Bundle, as_bundle, mismatch_details
from ..device import DeviceChoice
from ..errors import BundleError, ConfigError, InputError
from ..filemodes import give_umask_mode
from ..io import LPS_TO_RAS, Volume, volume_suffix, write_volume
from ..nets.builders import main_output
from ..progress import Progress
from .windows import CONSTANT_CACHE_SIZE, network_multiple, padded_shape, window_size

__all__ = [
    "LABEL_SUFFIXES",
    "PROBABILITY_SUFFIXES",
    "SegmentResult",
    "check_segmentation_bundle",
    "load_model",
    "scan_interval",
    "sliding_window_slabs",
    "sliding_window_logits",
    "label_map",
    "segment",
    "segment_volume",
    "label_entries",
    "check_output_path",
    "color_table_path",
    "probability_paths",
    "write_outputs",
]

#: Endings ``ssl3d segment --output`` accepts (``.mhd`` is left out: its two files cannot be renamed atomically).
LABEL_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")
#: Endings ``ssl3d segment --probabilities`` accepts (one file per class; a .seg.nrrd holds labels only).
PROBABILITY_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha")
SIGMA_SCALE = 0.125  # MONAI's default Gaussian width, a fraction of the window
CPU_AMP_WARNING = ("--amp on runs the windows in bfloat16 on the CPU, which most CPUs compute far slower than float32 "
                   "(measured: over 8 min where float32 takes 40 s); --amp auto uses float32 on the CPU")


# ---------------------------------------------------------------------------------------------- model


def check_segmentation_bundle(bundle: Bundle) -> None:
    """BundleError unless ``bundle`` is a segmentation bundle (checked before any volume is read)."""
    if bundle.task != "segmentation":
        raise BundleError(
            f"{bundle.path}: task is {bundle.task!r}; whole-volume segmentation needs a segmentation bundle "
            "(made by 'ssl3d finetune' or 'ssl3d import-weights --format swinunetr-seg')."
        )


def load_model(bundle: Bundle | str | os.PathLike, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Build the bundle's network and load its weights (strict), in eval mode on ``device``."""
    from ..nets.builders import build_network

    bundle = as_bundle(bundle)
    try:
        model = build_network(bundle.network["name"], **dict(bundle.network.get("kwargs", {})))
    except ConfigError as exc:
        raise bundle.network_error(exc) from None
    try:
        model.load_state_dict(bundle.state_dict())
    except RuntimeError as exc:
        raise BundleError(f"{bundle.path}: the weights do not fit network {bundle.network['name']!r} ({mismatch_details(exc)}).") from None
    return model.to(device).eval()


def _pad_for_window(x: torch.Tensor, window: Sequence[int] | None, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Zero-pad (1, C, D, H, W) at the far end to :func:`~ssl3d.infer.windows.padded_shape`; returns it and the window."""
    target, window = padded_shape(x.shape[2:], window, multiple)
    pad = [t - s for t, s in zip(target, x.shape[2:])]
    if any(pad):
        x = F.pad(x, [p for size in reversed(pad) for p in (0, size)])
    return x, window  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- sliding windows


def scan_interval(size: Sequence[int], window: Sequence[int], overlap: float) -> tuple[int, ...]:
    """Window step per axis, as MONAI's ``sliding_window_inference``: the window where it spans the axis,
    else ``int(window * (1 - overlap))`` (at least 1). Example: size (40, 48, 56), window (16, 24, 48),
    overlap 0.5 -> (8, 12, 24)."""
    return tuple(w if w == s else max(int(w * (1 - overlap)), 1) for s, w in zip(size, window))


def _check_windows(x: torch.Tensor, window: Sequence[int], overlap: float, sw_batch: int) -> None:
    if x.ndim != 5 or x.shape[0] != 1:
        raise InputError(f"sliding windows need a (1, C, D, H, W) tensor, got shape {tuple(x.shape)}.")
    if len(window) != 3 or any(w < 1 or w > s for w, s in zip(window, x.shape[2:])):
        raise InputError(f"window {tuple(window)} must be 3 sides between 1 and the input's {tuple(x.shape[2:])}.")
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}.")
    if sw_batch < 1:
        raise ConfigError(f"sw_batch must be >= 1, got {sw_batch}.")


def _predict(predictor: Callable, windows: list[torch.Tensor], amp: bool, cache: dict[float, torch.Tensor] | None) -> list[torch.Tensor]:
    """Logits of each window; a window of one constant value seen before reuses that window's logits.

    The network is a function of the window's content alone, so a window of air outside the body gives
    the same logits wherever it lies: it runs once. ``cache`` (None: no reuse) maps a constant to logits.
    """
    keys: list[float | None] = [None] * len(windows)
    if cache is not None:
        for n, window in enumerate(windows):
            low, high = torch.aminmax(window)
            keys[n] = float(low) if low == high else None
    todo, first = [], set()
    for n, key in enumerate(keys):
        if key is None or (key not in cache and key not in first):  # type: ignore[operator]
            todo.append(n)
            first.add(key)
    outputs: list[torch.Tensor | None] = [None] * len(windows)
    known = dict(cache or {})
    if todo:
        for n, logits in zip(todo, _forward(predictor, torch.cat([windows[n] for n in todo]), amp)):
            outputs[n] = logits
            if keys[n] is not None:
                known[keys[n]] = logits  # type: ignore[index]
                if len(cache) < CONSTANT_CACHE_SIZE:  # type: ignore[arg-type]
                    cache[keys[n]] = logits.clone()  # type: ignore[index]
    return [out if out is not None else known[keys[n]] for n, out in enumerate(outputs)]  # type: ignore[index]


def _forward(predictor: Callable, batch: torch.Tensor, amp: bool) -> torch.Tensor:
    device_type = batch.device.type
    dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    with torch.autocast(device_type, dtype=dtype, enabled=amp):
        out = main_output(predictor(batch))
    return out.float()


def sliding_window_slabs(
    x: torch.Tensor,
    window: Sequence[int],
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.5,
    sw_batch: int = 1,
    amp: bool = False,
    progress: Progress | None = None,
    reuse_constant: bool = True,
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Gaussian-blended window predictions, yielded slab by slab along D as soon as they are final.

    Args:
        x: (1, C_in, D, H, W) input; every side at least the window's.
        window: (wd, wh, ww) window size.
        predictor: (B, C_in, wd, wh, ww) -> (B, C, wd, wh, ww) logits (or a list whose first item is).
        overlap: fraction of a window shared with its neighbour, in [0, 1).
        sw_batch: windows per forward pass.
        amp: forward passes under autocast (float16 on CUDA, bfloat16 on CPU); blending stays float32.
        progress: called with (windows done, windows in all) after every forward pass.
        reuse_constant: run the network once per distinct constant window (e.g. all air after the
            intensity window) and reuse its logits (equal up to float rounding: logits depend on content only).

    Yields:
        (d0, d1, logits): float32 (C, d1 - d0, H, W) blended logits of slices d0 .. d1-1; the slabs come in
        order and cover 0 .. D. Example: x (1, 1, 40, 48, 56), window (16, 24, 32), overlap 0.5: window rows
        start at D = 0, 8, 16, 24, so the slabs are [0, 8), [8, 16), [16, 24), [24, 40).
    """
    from monai.data.utils import compute_importance_map, dense_patch_slices

    _check_windows(x, window, overlap, sw_batch)
    window = tuple(int(w) for w in window)
    size = tuple(int(s) for s in x.shape[2:])
    slices = dense_patch_slices(size, window, scan_interval(size, window, overlap))
    rows = [(int(start), list(group)) for start, group in itertools.groupby(slices, key=lambda s: s[0].start)]
    weight = compute_importance_map(window, mode="gaussian", sigma_scale=SIGMA_SCALE, device=x.device, dtype=torch.float32)
    depth = window[0]
    norm = torch.zeros((depth, *size[1:]), dtype=torch.float32, device=x.device)
    acc: torch.Tensor | None = None
    cache: dict[float, torch.Tensor] | None = {} if reuse_constant else None
    base, done = 0, 0
    for n, (_, row) in enumerate(rows):
        for first in range(0, len(row), sw_batch):
            part = row[first : first + sw_batch]
            out = _predict(predictor, [x[(slice(None), slice(None), *s)] for s in part], amp, cache)
            if acc is None:
                acc = torch.zeros((out[0].shape[0], depth, *size[1:]), dtype=torch.float32, device=x.device)
            for logits, s in zip(out, part):
                region = (slice(int(s[0].start) - base, int(s[0].stop) - base), s[1], s[2])
                acc[(slice(None), *region)].addcmul_(logits, weight)
                norm[region] += weight
            done += len(part)
            if progress is not None:
                progress(done, len(slices))
        end = rows[n + 1][0] if n + 1 < len(rows) else size[0]
        final = end - base
        yield base, end, acc[:, :final] / norm[:final]  # type: ignore[index]
        keep = depth - final
        if keep > 0:  # slide the buffers: slices end .. base+depth-1 move to the front
            acc[:, :keep] = acc[:, final:].clone()  # type: ignore[index]
            norm[:keep] = norm[final:].clone()
        acc[:, keep:] = 0  # type: ignore[index]
        norm[keep:] = 0
        base = end


def sliding_window_logits(
    x: torch.Tensor, window: Sequence[int], predictor: Callable, overlap: float = 0.5, sw_batch: int = 1, amp: bool = False, reuse_constant: bool = True
) -> torch.Tensor:
    """All blended logits (1, C, D, H, W) float32: :func:`sliding_window_slabs` gathered (for checks and benchmarks)."""
    out: torch.Tensor | None = None
    for d0, d1, slab in sliding_window_slabs(x, window, predictor, overlap, sw_batch, amp, reuse_constant=reuse_constant):
        if out is None:
            out = torch.empty((1, slab.shape[0], *x.shape[2:]), dtype=torch.float32, device=x.device)
        out[0, :, d0:d1] = slab
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------- segment


@dataclass
class SegmentResult:
    """A segmentation on the input grid, with the model-space pieces to paste more maps on demand.

    Attributes:
        labels: label map (uint8; uint16 beyond 256 classes) with the input volume's grid.
        entries: [(value, name, (r, g, b))] of every foreground class of the model, from the bundle.
        info: windows, window size, model shape, device, AMP and stage times in seconds.
    """

    labels: Volume
    entries: list[tuple[int, str, tuple[int, int, int]]]
    info: dict = field(default_factory=dict)
    _probabilities: torch.Tensor | None = None  # (C, D, H, W) float16, model space
    _mapping: object = None

    @property
    def has_probabilities(self) -> bool:
        return self._probabilities is not None

    def probability(self, value: int) -> Volume:
        """Softmax probability of class ``value`` (float32) on the input grid (0 outside the model grid)."""
        if self._probabilities is None:
            raise InputError("probabilities were not computed; call segment(..., probabilities=True).")
        if not 0 <= value < self._probabilities.shape[0]:
            raise InputError(f"class {value} is not an output of this model (0 .. {self._probabilities.shape[0] - 1}).")
        volume = self._mapping.to_input_grid(self._probabilities[value].float(), label=False)  # type: ignore[attr-defined]
        return Volume(volume.array.astype(np.float32, copy=False), volume.ijk_to_ras)


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from ..device import resolve_device

    return resolve_device(device)


def _choose_device(
    bundle: Bundle, device: str | torch.device, shape: Sequence[int], window: Sequence[int], sw_batch: int, amp: bool | None, probabilities: bool
) -> DeviceChoice:
    """A torch.device as given; a spec through the GPU-memory check of :mod:`ssl3d.infer.memory` (padded ``shape``)."""
    from ..device import choose_device
    from .memory import estimate_segment_memory

    if isinstance(device, torch.device):
        return DeviceChoice(str(device))
    need = lambda: estimate_segment_memory(bundle, sw_batch, window, shape, probabilities, amp is not False).total  # noqa: E731
    return choose_device(device, need)


def segment(
    bundle: Bundle | str | os.PathLike,
    volume: Volume,
    device: str | torch.device = "auto",
    overlap: float = 0.5,
    sw_batch: int = 2,
    amp: bool | None = None,
    probabilities: bool = False,
    model: torch.nn.Module | None = None,
    progress: Progress | None = None,
    log: Callable[..., None] | None = None,
) -> SegmentResult:
    """Segment ``volume`` with a segmentation bundle; the labels come back on the volume's own grid.

    Args:
        bundle: a segmentation bundle (folder or loaded).
        volume: the image; any orientation, spacing and size the bundle's preprocessing accepts.
        device: ``auto`` (CUDA when present and its free memory covers the estimate of
            :func:`~ssl3d.infer.memory.estimate_segment_memory`, else the CPU), ``cpu``, ``cuda[:N]`` (kept,
            with a note when it looks too small) or a torch.device (used as is, as with ``model``).
        overlap: sliding-window overlap in [0, 1).
        sw_batch: windows per forward pass.
        amp: half-precision forward passes; None: on CUDA only.
        probabilities: also keep the softmax probabilities (float16, model space) for
            :meth:`SegmentResult.probability`.
        model: the bundle's network already loaded (keeps a model warm between calls).
        progress: called with (windows done, windows in all).
        log: called with a one-line note before the windows run when the device choice has one (a fallback
            to the CPU, a GPU that may be too small; the note is also ``info["device_message"]``), and with
            ``(CPU_AMP_WARNING, "warning")`` when ``amp`` is on for the CPU.

    Raises:
        BundleError: not a segmentation bundle, or weights that do not fit the network.
        ConfigError: overlap or sw_batch out of range, or an unavailable device.
    """
    from ..data.preprocess import PreprocessConfig, preprocess

    bundle = as_bundle(bundle)
    check_segmentation_bundle(bundle)
    if not 0 <= overlap < 1:
        raise ConfigError(f"overlap must be in [0, 1), got {overlap}.")
    if sw_batch < 1:
        raise ConfigError(f"sw_batch must be >= 1, got {sw_batch}.")
    _resolve_device(device)  # a bad spec fails before any work
    times = {}
    start = time.perf_counter()
    x, mapping = preprocess(volume, PreprocessConfig(**bundle.meta["preprocessing"]))
    times["preprocess_s"] = time.perf_counter() - start
    shape = tuple(int(s) for s in x.shape[2:])
    x, window = _pad_for_window(x, window_size(bundle), network_multiple(bundle.network))
    padded = tuple(int(s) for s in x.shape[2:])
    if model is not None:  # a loaded model stays where it is
        device = _resolve_device(device)
    choice = _choose_device(bundle, device, padded, window, sw_batch, amp, probabilities)
    if choice.message and log is not None:
        log(choice.message)
    device = torch.device(choice.device)
    amp = device.type == "cuda" if amp is None else bool(amp)
    if amp and device.type == "cpu" and log is not None:
        log(CPU_AMP_WARNING, "warning")
    model = model if model is not None else load_model(bundle, device)
    windows_start = time.perf_counter()
    x = x.to(device)
    labels, probs, classes = label_map(x, window, model, overlap, sw_batch, amp, shape, probabilities, progress)
    del x
    times["windows_s"] = time.perf_counter() - windows_start
    paste_start = time.perf_counter()
    label_volume = mapping.to_input_grid(torch.from_numpy(labels), label=True)
    times["paste_s"] = time.perf_counter() - paste_start
    info = {
        "windows": _count_windows(padded, window, overlap),
        "window": list(window),
        "model_shape": list(shape),
        "device": str(device),
        "device_message": choice.message,
        "amp": amp,
        **{k: round(v, 3) for k, v in times.items()},
    }
    return SegmentResult(label_volume, label_entries(bundle, classes), info, probs, mapping)


def _count_windows(size: Sequence[int], window: Sequence[int], overlap: float) -> int:
    from monai.data.utils import dense_patch_slices

    return len(dense_patch_slices(size, window, scan_interval(size, window, overlap)))


def label_map(
    x: torch.Tensor,
    window: Sequence[int],
    predictor: Callable[[torch.Tensor], torch.Tensor],
    overlap: float = 0.5,
    sw_batch: int = 1,
    amp: bool = False,
    shape: Sequence[int] | None = None,
    probabilities: bool = False,
    progress: Progress | None = None,
    reuse_constant: bool = True,
) -> tuple[np.ndarray, torch.Tensor | None, int]:
    """Labels of a model-space input: :func:`sliding_window_slabs`, argmax of each finished slab.

    Args:
        x: (1, C_in, D, H, W) input, padded so every side is at least the window's.
        shape: the unpadded (D, H, W) to keep (default: all of x).
        probabilities: also return the softmax, (C, D, H, W) float16 on the CPU.
        the rest: as :func:`sliding_window_slabs`.

    Returns:
        (labels, probabilities or None, classes): labels (D, H, W) uint8 (uint16 beyond 256 classes).
        Example: x (1, 1, 96, 128, 128), window (32, 32, 32), shape (90, 120, 128) -> labels (90, 120, 128).
    """
    shape = tuple(int(s) for s in (shape or x.shape[2:]))
    labels: np.ndarray | None = None
    probs: torch.Tensor | None = None
    classes = 0
    with torch.inference_mode():
        for d0, d1, slab in sliding_window_slabs(x, window, predictor, overlap, sw_batch, amp, progress, reuse_constant):
            if d0 >= shape[0]:
                break
            d1 = min(d1, shape[0])
            slab = slab[:, : d1 - d0, : shape[1], : shape[2]]
            classes = int(slab.shape[0])
            if labels is None:
                labels = np.zeros(shape, dtype=np.uint8 if classes <= 256 else np.uint16)
            labels[d0:d1] = _argmax(slab).cpu().numpy()
            if probabilities:
                if probs is None:
                    probs = torch.empty((classes, *shape), dtype=torch.float16)
                probs[:, d0:d1] = torch.softmax(slab, 0).to(torch.float16).cpu()
    return labels, probs, classes  # type: ignore[return-value]


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    """argmax over the class axis of (C, ...) as uint8 (first maximum wins, as torch.argmax): one pass per
    class over contiguous memory, about 6x faster on a CPU than ``argmax(0)`` across the outer axis."""
    if logits.shape[0] > 256:
        return logits.argmax(0).to(torch.int32)
    best = logits[0].clone()
    index = torch.zeros(logits.shape[1:], dtype=torch.uint8, device=logits.device)
    for c in range(1, logits.shape[0]):
        index.masked_fill_(logits[c] > best, c)
        torch.maximum(best, logits[c], out=best)
    return index


def segment_volume(
    bundle: Bundle | str | os.PathLike,
    volume: Volume,
    device: str | torch.device = "cpu",
    overlap: float = 0.5,
    sw_batch: int = 2,
    model: torch.nn.Module | None = None,
    amp: bool | None = None,
) -> Volume:
    """Label map of ``volume`` on its own grid (:func:`segment`'s labels)."""
    return segment(bundle, volume, device, overlap, sw_batch, amp, model=model).labels


# ---------------------------------------------------------------------------------------------- outputs


def label_entries(bundle: Bundle, classes: int) -> list[tuple[int, str, tuple[int, int, int]]]:
    """[(value, name, rgb)] for classes 1 .. classes-1: the bundle's names and colours, else "label N" and a palette colour."""
    from ..pictures import DEFAULT_COLORS

    known = bundle.labels
    return [(v, *known.get(v, (f"label {v}", tuple(DEFAULT_COLORS[(v - 1) % len(DEFAULT_COLORS)])))) for v in range(1, classes)]


def check_output_path(path: str | os.PathLike, option: str = "--output", suffixes: Sequence[str] = LABEL_SUFFIXES) -> Path:
    """The output path if its ending is one of ``suffixes`` and its folder exists; else InputError naming it."""
    path = Path(path)
    name = path.name.lower()
    suffix = volume_suffix(path) or next((s for s in suffixes if name.endswith(s)), "")
    if suffix not in suffixes or name == suffix:
        raise InputError(f"{option} {path}: unknown file ending; use one of {', '.join(suffixes)}.")
    if not path.parent.is_dir():
        raise InputError(f"{option} {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise InputError(f"{option} {path}: is a folder; give a file name.")
    return path


def check_output_not_input(output: str | os.PathLike, source: str | os.PathLike, option: str = "--output") -> None:
    """InputError when ``output`` would overwrite ``source``: the same file after links, or a file in its DICOM folder."""
    output, source = Path(output).resolve(), Path(source).resolve()
    if output == source or (output.exists() and source.exists() and os.path.samefile(output, source)):
        raise InputError(f"{option} {output}: is the input volume; writing it would destroy the input. Give another file name.")
    if source.is_dir() and source in output.parents:
        raise InputError(f"{option} {output}: lies inside the DICOM input folder {source}; write it elsewhere.")


def _stem(path: Path) -> str:
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.stem


def color_table_path(path: str | os.PathLike) -> Path:
    """``seg.nii.gz`` -> ``seg.ctbl`` beside it."""
    path = Path(path)
    return path.with_name(_stem(path) + ".ctbl")


def probability_paths(path: str | os.PathLike, entries: Sequence[tuple[int, str, tuple]]) -> dict[int, Path]:
    """``probs.nii.gz`` -> {1: probs_1_liver.nii.gz, 2: probs_2_left_kidney.nii.gz, ...}."""
    path = Path(path)
    suffix = volume_suffix(path)
    return {v: path.with_name(f"{_stem(path)}_{v}_{_safe_name(name)}{suffix}") for v, name, _ in entries}


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip()).strip("_") or "label"


def write_outputs(result: SegmentResult, output: str | os.PathLike, probabilities: str | os.PathLike | None = None) -> dict[str, Path]:
    """Write the label map (and its colour table, and probabilities) all-or-nothing; returns {what: path}.

    Raises:
        InputError: an unknown ending or a missing folder (checked before anything is written).
    """
    output = check_output_path(output)
    targets: dict[str, tuple[Path, Callable[[Path], None]]] = {}
    if volume_suffix(output) == ".seg.nrrd":
        targets["segmentation"] = (output, lambda tmp: _write_seg_nrrd(result.labels, result.entries, tmp))
    else:
        targets["labels"] = (output, lambda tmp: write_volume(result.labels, tmp))
        targets["colour table"] = (color_table_path(output), lambda tmp: _write_color_table(tmp, result.entries, color_table_path(output).name))
    if probabilities is not None:
        check_output_path(probabilities, "--probabilities", PROBABILITY_SUFFIXES)
        for value, path in probability_paths(probabilities, result.entries).items():
            targets[f"probability {value}"] = (path, lambda tmp, v=value: write_volume(result.probability(v), tmp))
    return _commit(targets)


def _commit(targets: dict[str, tuple[Path, Callable[[Path], None]]]) -> dict[str, Path]:
    """Write every target to a temporary file beside it, then rename them all; on failure remove the temporaries."""
    staged: list[tuple[Path, Path]] = []
    try:
        for path, write in targets.values():
            suffix = volume_suffix(path) or path.suffix
            handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
            os.close(handle)
            staged.append((Path(tmp), path))
            write(Path(tmp))
            give_umask_mode(tmp)  # mkstemp's 0600 kept by writers that overwrite it in place (slicerio, the .ctbl)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                tmp.unlink()
    return {name: path for name, (path, _) in targets.items()}


def _write_color_table(path: Path, entries: Sequence[tuple[int, str, tuple[int, int, int]]], name: str) -> None:
    """Slicer's colour table format: ``value name r g b a`` (0-255), spaces in names as underscores.

    ``name``: the final file's name for the header (``path`` is a temporary one).
    """
    lines = [f"# Color table file {name}", f"# {len(entries) + 1} values", "0 Background 0 0 0 0"]
    lines += [f"{v} {'_'.join(name.split()) or f'label_{v}'} {r} {g} {b} 255" for v, name, (r, g, b) in entries]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_seg_nrrd(labels: Volume, entries: Sequence[tuple[int, str, tuple[int, int, int]]], path: Path) -> None:
    """A Slicer segmentation (one layer, label value = class value) with names, colours and extents."""
    import slicerio
    from scipy import ndimage

    boxes = ndimage.find_objects(labels.array, max_label=max((v for v, _, _ in entries), default=0))
    segments = []
    for value, name, rgb in entries:
        box = boxes[value - 1] if value - 1 < len(boxes) else None
        extent = [0, -1, 0, -1, 0, -1] if box is None else [n for s in reversed(box) for n in (s.start, s.stop - 1)]
        segments.append({
            "id": f"Segment_{value}", "name": name, "labelValue": value, "layer": 0, "extent": extent,
            "color": [round(c / 255.0, 6) for c in rgb], "nameAutoGenerated": False, "colorAutoGenerated": False,
        })
    segmentation = {
        "voxels": labels.array.transpose(2, 1, 0),  # (i, j, k), written in Fortran order as NRRD wants
        "ijkToLPS": LPS_TO_RAS @ labels.ijk_to_ras,
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
    }
    slicerio.write_segmentation(str(path), segmentation)
