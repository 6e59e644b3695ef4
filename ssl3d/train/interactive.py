"""Click-to-segment training on the one loop: a class-agnostic network whose input is the image plus a
positive and a negative guidance channel, trained on clicks simulated as users make them.

Per sample (every draw from the sample's own generator, :meth:`TrainContext.generator`):

1. pick one labelled *structure*: a case, a label value of that case, then one connected component of
   that value (chosen in proportion to its size, so stray fragments are rare);
2. cut a training patch around a random voxel of it (jittered by up to a quarter patch), random flips;
3. place 1-2 positive clicks inside the object, biased to its interior (probability ~ distance to its
   border squared: :func:`interior_click`);
4. run 0..``max_rounds`` no-grad rounds of the model's own prediction; each adds one correction click in
   the largest error region (:func:`correction_click`): positive in a false negative, negative in a
   false positive;
5. the loss (Dice on the foreground + cross-entropy, two output channels) is taken with all clicks.

Guidance encoding (:func:`encode_clicks`): each click is a 3D Gaussian of peak 1 with ``sigma_mm`` at
the model's spacing (``sigma_voxels`` in model voxels along D, H, W), clicks of one sign combined by
maximum; ``encoding="disk"`` gives a binary ball of that radius instead. The encoding is stored in the
bundle (``provenance.guidance``) and :class:`ssl3d.infer.interactive.InteractiveSession` reads it from there.

Example::

    task = InteractiveTask("phantoms/", run_dir / "cache")
    outputs = train(task, get_preset("interactive-cpu"), run_dir, torch.device("cpu"))
    outputs["bundle"]        # an 'interactive' bundle: in_channels 3, out_channels 2
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..bundle import write_bundle
from ..errors import ConfigError, DatasetError
from ..nets.builders import main_output
from .loop import Task, TrainContext
from .segmentation import held_out_count, pad_to_multiple

__all__ = [
    "GuidanceConfig",
    "InteractiveTask",
    "encode_clicks",
    "interior_click",
    "correction_click",
    "widen_input",
    "size_multiple",
    "interactive_bundle_meta",
    "GUIDANCE_CHANNELS",
]

#: The network's input channels, in order.
GUIDANCE_CHANNELS = ("image", "positive", "negative")
Click = tuple[int, int, int, bool]  # (z, y, x, positive) in voxels of the grid the click lives on


@dataclass
class GuidanceConfig:
    """Click encoding and simulation settings (they change numbers, so they are stored in the bundle).

    Args:
        encoding: ``gaussian`` (peak 1, ``sigma_mm``) or ``disk`` (binary ball of radius ``sigma_mm``).
        sigma_mm: Gaussian sigma or disk radius in millimetres at the model's spacing.
        initial_clicks: (min, max) positive clicks placed inside the object before any correction.
        max_rounds: correction rounds per training sample are drawn from 0..max_rounds.
        val_clicks: validation Dice is measured after this many clicks (1 initial + corrections).
        min_voxels: connected components smaller than this (model voxels) are not used as structures.
    """

    encoding: str = "gaussian"
    sigma_mm: float = 5.0
    initial_clicks: tuple[int, int] = (1, 2)
    max_rounds: int = 3
    val_clicks: int = 3
    min_voxels: int = 8

    def __post_init__(self) -> None:
        if self.encoding not in ("gaussian", "disk"):
            raise ConfigError(f"guidance encoding must be 'gaussian' or 'disk', got {self.encoding!r}.")
        if not self.sigma_mm > 0:
            raise ConfigError(f"guidance sigma_mm must be > 0, got {self.sigma_mm}.")
        lo, hi = self.initial_clicks
        if not 1 <= lo <= hi:
            raise ConfigError(f"initial_clicks must be (min, max) with 1 <= min <= max, got {self.initial_clicks}.")
        if self.max_rounds < 0 or self.val_clicks < 1:
            raise ConfigError(f"max_rounds must be >= 0 and val_clicks >= 1, got {self.max_rounds}, {self.val_clicks}.")

    def sigma_voxels(self, spacing: Sequence[float] | None) -> list[float]:
        """Sigma in model voxels along (D, H, W); ``spacing`` is the preset's (x, y, z) mm (None: 1 mm)."""
        x, y, z = spacing if spacing is not None else (1.0, 1.0, 1.0)
        return [round(self.sigma_mm / s, 4) for s in (z, y, x)]


# ---------------------------------------------------------------------------------------------- clicks


def encode_clicks(clicks: Sequence[Click], shape: Sequence[int], sigma: float | Sequence[float], encoding: str = "gaussian", device: Any = None) -> torch.Tensor:
    """Positive and negative guidance maps of ``clicks`` on a (D, H, W) grid.

    Args:
        clicks: (z, y, x, positive) voxel positions; they may lie outside the grid (their tails still count).
        shape: (D, H, W).
        sigma: Gaussian sigma (or disk radius) in voxels, one value or one per axis (D, H, W).
        encoding: ``gaussian`` (peak 1 at the click) or ``disk`` (1 inside the ball).

    Returns:
        (2, D, H, W) float32: channel 0 positive, channel 1 negative; clicks of one sign combine by maximum.

    Example::

        encode_clicks([(2, 2, 2, True)], (5, 5, 5), 1.0)[0, 2, 2, 2]   # tensor(1.)
    """
    sig = torch.as_tensor(np.broadcast_to(np.asarray(sigma, dtype=np.float64), (3,)).copy(), dtype=torch.float32)
    out = torch.zeros((2, *shape), dtype=torch.float32, device=device)
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    for z, y, x, positive in clicks:
        d2 = [((a - c) / float(s)) ** 2 for a, c, s in zip(axes, (z, y, x), sig)]
        total = d2[0][:, None, None] + d2[1][None, :, None] + d2[2][None, None, :]
        blob = torch.exp(-0.5 * total) if encoding == "gaussian" else (total <= 1.0).float()
        channel = 0 if positive else 1
        out[channel] = torch.maximum(out[channel], blob)
    return out


def interior_click(mask: np.ndarray, generator: torch.Generator | None = None) -> tuple[int, int, int] | None:
    """A voxel inside ``mask``, biased to its interior; None for an empty mask.

    With a generator the voxel is drawn with probability ~ (distance to the mask's border)^2; without one
    it is the most interior voxel (the first maximum of the distance transform), as validation needs.
    """
    from scipy.ndimage import distance_transform_edt

    if not mask.any():
        return None
    dist = distance_transform_edt(mask)
    if generator is None:
        return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), mask.shape))  # type: ignore[return-value]
    flat = np.flatnonzero(mask)
    weights = torch.from_numpy(dist.ravel()[flat] ** 2)
    pick = int(torch.multinomial(weights, 1, generator=generator))
    return tuple(int(v) for v in np.unravel_index(int(flat[pick]), mask.shape))  # type: ignore[return-value]


def correction_click(prediction: np.ndarray, target: np.ndarray, generator: torch.Generator | None = None) -> Click | None:
    """A click in the largest error region: positive in a false negative, negative in a false positive.

    Args:
        prediction, target: boolean (D, H, W) arrays.

    Returns:
        (z, y, x, positive), or None when the prediction is exact.
    """
    from scipy.ndimage import label

    best, best_size, positive = None, 0, True
    for sign, error in ((True, target & ~prediction), (False, prediction & ~target)):
        if not error.any():
            continue
        components, count = label(error)
        sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
        n = int(np.argmax(sizes))
        if sizes[n] > best_size:
            best, best_size, positive = components == n + 1, int(sizes[n]), sign
    if best is None:
        return None
    z, y, x = interior_click(best, generator)  # type: ignore[misc]
    return z, y, x, positive


# ---------------------------------------------------------------------------------------------- networks


#: Modules that read the raw input, per network class (fnmatch patterns over ``named_modules``).
INPUT_READERS = {
    "UNet": ("encoder.levels.0.0",),
    "UNetEncoder": ("levels.0.0",),
    "SwinUNETR": ("swinViT.patch_embed.proj", "encoder1.layer.conv1.conv", "encoder1.layer.conv3.conv"),
    "PCTNet": ("embeddings.*.proj",),
}


def widen_input(module: nn.Module, new_in_channels: int) -> list[str]:
    """Widen every layer that reads the raw input to ``new_in_channels``, in place, keeping its features.

    The first ``old`` input channels keep their weights; the new ones get zero weights, so the output is
    unchanged until training moves them (and gradients reach them at once). Known networks:
    :data:`INPUT_READERS` (UNet's first conv; SwinUNETR's ``swinViT.patch_embed.proj`` and ``encoder1``;
    PCT-Net's ``embeddings.*.proj``).

    Returns:
        The names of the widened layers (empty when the network already has ``new_in_channels``).

    Raises:
        ConfigError: an unknown network class, or ``new_in_channels`` below its current input channels.

    Example::

        net = UNet(1, 2); widen_input(net, 3)     # ['encoder.levels.0.0']; net now takes (N, 3, D, H, W)
    """
    patterns = INPUT_READERS.get(type(module).__name__)
    if patterns is None:
        raise ConfigError(f"widen_input: unknown network {type(module).__name__}; known: {', '.join(INPUT_READERS)}.")
    readers = [(name, m) for name, m in module.named_modules() if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    readers = [(name, m) for name, m in readers if isinstance(m, nn.Conv3d)]
    if not readers:
        raise ConfigError(f"widen_input: no input layer {list(patterns)} found in {type(module).__name__}.")
    old = readers[0][1].in_channels
    if new_in_channels < old:
        raise ConfigError(f"widen_input: new_in_channels must be >= the current {old}, got {new_in_channels}.")
    if new_in_channels == old:
        return []
    for name, conv in readers:
        _replace(module, name, _widened(conv, new_in_channels))
    config = getattr(module, "config", None)
    if isinstance(config, dict) and "in_chns" in config:  # PCT-Net checks its input against its config
        config["in_chns"] = new_in_channels
    return [name for name, _ in readers]


def _widened(conv: nn.Conv3d, channels: int) -> nn.Conv3d:
    if conv.groups != 1:
        raise ConfigError(f"widen_input: grouped convolutions cannot be widened (groups={conv.groups}).")
    new = nn.Conv3d(
        channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
        bias=conv.bias is not None, padding_mode=conv.padding_mode,
    ).to(device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : conv.in_channels] = conv.weight
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def size_multiple(name: str, kwargs: dict) -> int:
    """What every spatial side of the network's input must be divisible by (16 for PCT-Net windows)."""
    from ..nets.builders import size_multiple as network_multiple

    return network_multiple(name, kwargs, default=16)


def interactive_bundle_meta(preset: Any, guidance: GuidanceConfig, provenance: dict | None = None, metrics: dict | None = None) -> dict:
    """bundle.json sections of an interactive model trained with ``preset`` (network kwargs: 3 in, 2 out)."""
    from ..config import to_dict

    network = preset.network
    return {
        "network": {"name": network.name, "kwargs": {**network.kwargs, "in_channels": len(GUIDANCE_CHANNELS), "out_channels": 2}},
        "task": "interactive",
        "preprocessing": to_dict(preset.preprocess),
        "provenance": {**(provenance or {}), "guidance": guidance_record(preset, guidance)},
        "metrics": metrics or {},
        "preset": to_dict(preset),
    }


def guidance_record(preset: Any, guidance: GuidanceConfig) -> dict:
    """The bundle's ``provenance.guidance``: channels, encoding, sigma in mm and in model voxels (D, H, W)."""
    return {"channels": list(GUIDANCE_CHANNELS), **asdict(guidance), "initial_clicks": list(guidance.initial_clicks),
            "sigma_voxels": guidance.sigma_voxels(preset.preprocess.spacing), "combine": "max"}


# ---------------------------------------------------------------------------------------------- task


@dataclass
class _Structure:
    """One connected component of one label value: its bounding box start and its mask in that box."""

    case: int
    value: int
    start: tuple[int, int, int]
    mask: np.ndarray  # bool, (d, h, w) of the bounding box

    @property
    def size(self) -> int:
        return int(self.mask.sum())

    def in_box(self, start: Sequence[int], shape: Sequence[int]) -> np.ndarray:
        """This structure's mask on the box ``start`` + ``shape`` of its case (False elsewhere)."""
        out = np.zeros(tuple(shape), dtype=bool)
        src, dst = [], []
        for s0, n, b0, m in zip(self.start, self.mask.shape, start, shape):
            lo, hi = max(s0, b0), min(s0 + n, b0 + m)
            if hi <= lo:
                return out
            src.append(slice(lo - s0, hi - s0))
            dst.append(slice(lo - b0, hi - b0))
        out[tuple(dst)] = self.mask[tuple(src)]
        return out


def find_structures(label: np.ndarray, case: int, min_voxels: int) -> list[_Structure]:
    """Every connected component (face connectivity) of every label value with >= ``min_voxels`` voxels."""
    from scipy.ndimage import find_objects
    from scipy.ndimage import label as connected

    found = []
    for value in (int(v) for v in np.unique(label) if v != 0):
        components, _ = connected(label == value)
        for n, box in enumerate(find_objects(components), 1):
            if box is None:
                continue
            mask = components[box] == n
            if mask.sum() >= min_voxels:
                found.append(_Structure(case, value, tuple(s.start for s in box), mask))
    return found


@dataclass
class _Sample:
    image: torch.Tensor  # (1, D, H, W) on the device
    target: np.ndarray  # (D, H, W) bool
    clicks: list
    rounds: int
    generator: torch.Generator


class InteractiveTask(Task):
    """Class-agnostic click-to-segment training (module docstring); exports an ``interactive`` bundle.

    Args:
        data: imagesTr/labelsTr folder or dataset.json (every connected labelled structure is an object).
        cache_dir: preprocessed-volume cache.
        strict, val_fraction: as :class:`~ssl3d.train.segmentation.SegmentationTask`.
        guidance: click encoding and simulation (:class:`GuidanceConfig`).
        network: a network to start from (e.g. initialised from a pretext bundle), built with 1 or 3 input
            channels and 2 outputs; a 1-channel one is widened with :func:`widen_input`. Default: the
            preset's network, randomly initialised.
    """

    name = "interactive"

    def __init__(self, data: str | Path, cache_dir: Path, strict: bool = False, val_fraction: float = 0.2,
                 guidance: GuidanceConfig | None = None, network: nn.Module | None = None) -> None:
        self.data, self.cache_dir, self.strict, self.val_fraction = data, cache_dir, strict, val_fraction
        self.guidance = guidance or GuidanceConfig()
        self.initial_network = network

    def setup(self, ctx: TrainContext) -> None:
        from monai.losses import DiceLoss

        from ..data.datasets import VolumeCache, find_cases

        cache = VolumeCache(find_cases(self.data, labels=True), ctx.preset.preprocess, self.cache_dir, self.strict, ctx.logger)
        ctx.build_cache(cache)
        self.cache_info = cache.info()
        images = cache.mapped(ctx.device)  # memory maps: a sample reads its patch, validation its window
        labels = lambda i: np.asarray(cache.label(i))  # one label map at a time, memory-mapped
        order = np.random.default_rng(ctx.seed).permutation(len(images))
        n_val = held_out_count(ctx, len(images), self.val_fraction)
        self.images = [images[i] for i in order[n_val:]]
        self.structures = [s for n, i in enumerate(order[n_val:]) for s in find_structures(labels(i), n, self.guidance.min_voxels)]
        self.val = [(images[i], _largest_per_value(find_structures(labels(i), 0, self.guidance.min_voxels))) for i in order[:n_val]]
        if not self.structures:
            raise DatasetError(f"{self.data}: the training labels hold no structure of >= {self.guidance.min_voxels} voxels.")
        self.by_case = _group(self.structures)
        self.model = self._build_network(ctx).to(ctx.device)
        self.forward = ctx.wrap(self.model)
        self.dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)
        network = ctx.preset.network
        self.multiple = size_multiple(network.name, network.kwargs)
        self.sigma = self.guidance.sigma_voxels(ctx.preset.preprocess.spacing)
        self.patch = tuple(ctx.preset.train.patch or (32, 32, 32))

    def _build_network(self, ctx: TrainContext) -> nn.Module:
        from ..nets.builders import build_network

        if self.initial_network is not None:
            widen_input(self.initial_network, len(GUIDANCE_CHANNELS))
            return self.initial_network
        kwargs = dict(ctx.preset.network.kwargs)
        channels = kwargs.pop("in_channels", len(GUIDANCE_CHANNELS))
        kwargs.pop("out_channels", None)
        if channels != len(GUIDANCE_CHANNELS):
            raise ConfigError(f"network.kwargs.in_channels must be {len(GUIDANCE_CHANNELS)} (image, positive, negative), got {channels}.")
        return build_network(ctx.preset.network.name, len(GUIDANCE_CHANNELS), 2, **kwargs)

    def modules(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    # -------------------------------------------------------------------------------------- samples

    def _pick(self, g: torch.Generator) -> _Structure:
        """Case uniformly, then a label value of it uniformly, then a component in proportion to its size."""
        cases = sorted(self.by_case)
        values = self.by_case[cases[int(torch.randint(len(cases), (1,), generator=g))]]
        keys = sorted(values)
        components = values[keys[int(torch.randint(len(keys), (1,), generator=g))]]
        sizes = torch.tensor([float(s.size) for s in components], dtype=torch.float64)
        return components[int(torch.multinomial(sizes, 1, generator=g))]

    def _sample(self, ctx: TrainContext, step: int, index: int) -> _Sample:
        g = ctx.generator(step, index)
        structure = self._pick(g)
        image = self.images[structure.case]
        inside = np.argwhere(structure.mask)
        centre = inside[int(torch.randint(len(inside), (1,), generator=g))] + np.asarray(structure.start)
        jitter = [int(torch.randint(-(p // 4), p // 4 + 1, (1,), generator=g)) for p in self.patch]
        start = [int(np.clip(c - p // 2 + j, 0, max(0, s - p))) for c, p, j, s in zip(centre, self.patch, jitter, image.shape[1:])]
        crop = image[(slice(None), *(slice(a, a + p) for a, p in zip(start, self.patch)))]
        crop = _pad_to(crop, self.patch)
        target = structure.in_box(start, self.patch)
        flips = [d for d in range(3) if torch.rand(1, generator=g).item() < 0.5]
        if flips:
            crop, target = crop.flip([d + 1 for d in flips]), np.flip(target, flips).copy()
        lo, hi = self.guidance.initial_clicks
        clicks = []
        for _ in range(int(torch.randint(lo, hi + 1, (1,), generator=g))):
            z, y, x = interior_click(target, g)  # type: ignore[misc]
            clicks.append((z, y, x, True))
        rounds = int(torch.randint(self.guidance.max_rounds + 1, (1,), generator=g))
        return _Sample(crop, target, clicks, rounds, g)

    def _inputs(self, samples: list[_Sample], device: torch.device) -> torch.Tensor:
        guidance = [encode_clicks(s.clicks, s.target.shape, self.sigma, self.guidance.encoding, device) for s in samples]
        return torch.stack([torch.cat([s.image, g]) for s, g in zip(samples, guidance)])

    def batch(self, ctx: TrainContext, step: int, indices: range) -> Any:
        samples = [self._sample(ctx, step, i) for i in indices]
        for n in range(max(s.rounds for s in samples)):
            with torch.no_grad(), torch.autocast(ctx.device.type, enabled=ctx.amp):
                x, crop = pad_to_multiple(self._inputs(samples, ctx.device), self.multiple)
                pred = main_output(self.model(x))[(slice(None), slice(None), *crop)].argmax(1).cpu().numpy().astype(bool)
            for s, p in zip(samples, pred):
                click = correction_click(p, s.target, s.generator) if s.rounds > n else None
                if click is not None:
                    s.clicks.append(click)
        x, _ = pad_to_multiple(self._inputs(samples, ctx.device), self.multiple)
        y = torch.stack([torch.from_numpy(s.target)[None] for s in samples]).to(ctx.device, torch.long)
        y, _ = pad_to_multiple(y, self.multiple)
        return x, y

    def losses(self, ctx: TrainContext, batch: Any, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        out = main_output(self.forward(x))
        dice, ce = self.dice(out, y), F.cross_entropy(out.float(), y[:, 0])
        return {"total": dice + ce, "dice": dice.detach(), "ce": ce.detach()}

    # -------------------------------------------------------------------------------------- validation

    def simulate(self, image: torch.Tensor, structure: _Structure, clicks: int) -> list[float]:
        """Dice of ``structure`` after 1..``clicks`` deterministic simulated clicks (the current model).

        The model sees a window around the structure (its bounding box plus a margin, at least one patch);
        the first click is the structure's most interior voxel, each next one the most interior voxel of
        the largest error region. Dice counts the whole structure, also what lies outside the window.
        """
        sizes = image.shape[1:]
        start, shape = _window_around(structure, self.patch, sizes)
        target = structure.in_box(start, shape)
        crop = image[(slice(None), *(slice(a, a + n) for a, n in zip(start, shape)))]
        z, y, x = interior_click(target)  # type: ignore[misc]
        sample = _Sample(crop, target, [(z, y, x, True)], 0, torch.Generator())
        scores = []
        for n in range(clicks):
            inputs, cut = pad_to_multiple(self._inputs([sample], image.device), self.multiple)
            pred = main_output(self.model(inputs))[(0, slice(None), *cut)].argmax(0).cpu().numpy().astype(bool)
            scores.append(2.0 * float((pred & target).sum()) / (float(pred.sum()) + structure.size))
            click = correction_click(pred, target) if n + 1 < clicks else None
            if click is not None:
                sample.clicks.append(click)
        return scores

    def validate(self, ctx: TrainContext, step: int) -> dict[str, Any] | None:
        runs = [(s.value, self.simulate(image, s, self.guidance.val_clicks)) for image, structures in self.val for s in structures]
        if not runs:
            return None
        per_value: dict[str, list[float]] = {}
        for value, scores in runs:
            per_value.setdefault(f"label {value}", []).append(scores[-1])
        final = float(np.mean([scores[-1] for _, scores in runs]))
        metrics = {
            "score": final,
            "dice": final,
            "dice_1click": float(np.mean([scores[0] for _, scores in runs])),
            "per_class": {name: float(np.mean(v)) for name, v in sorted(per_value.items())},
        }
        ctx.state["validation"] = {"step": step, "clicks": self.guidance.val_clicks, **metrics}  # saved with the checkpoint
        return metrics

    def export(self, ctx: TrainContext, checkpoint: dict) -> dict[str, Path]:
        provenance = {"data": str(self.data), "steps": int(checkpoint["step"]), "cache": self.cache_info,
                      "init": "given network" if self.initial_network is not None else "random"}
        metrics = {"validation": checkpoint.get("task", {}).get("validation", {})}
        meta = interactive_bundle_meta(ctx.preset, self.guidance, provenance, metrics)
        bundle = write_bundle(ctx.run_dir / "bundle", checkpoint["modules"]["model"], meta)
        return {"bundle": bundle.path}


# ---------------------------------------------------------------------------------------------- helpers


def _pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Pad (C, D, H, W) at the far end up to ``size`` with its minimum (volumes smaller than a patch)."""
    need = [max(0, p - s) for p, s in zip(size, x.shape[1:])]
    if not any(need):
        return x
    return F.pad(x, [v for n in reversed(need) for v in (0, n)], value=float(x.min()))


def _window_around(structure: _Structure, patch: Sequence[int], sizes: Sequence[int], margin: int = 4) -> tuple[list[int], list[int]]:
    """A box around ``structure``'s bounding box plus ``margin``, at least ``patch``, inside the volume."""
    start, shape = [], []
    for s0, n, p, size in zip(structure.start, structure.mask.shape, patch, sizes):
        lo, hi = s0 - margin, s0 + n + margin
        if hi - lo < p:
            lo -= (p - (hi - lo)) // 2
            hi = lo + p
        lo, hi = max(0, lo), min(size, hi)
        start.append(lo)
        shape.append(hi - lo)
    return start, shape


def _largest_per_value(structures: list[_Structure]) -> list[_Structure]:
    best: dict[int, _Structure] = {}
    for s in structures:
        if s.value not in best or s.size > best[s.value].size:
            best[s.value] = s
    return [best[v] for v in sorted(best)]


def _group(structures: list[_Structure]) -> dict[int, dict[int, list[_Structure]]]:
    """{case: {value: [components]}}."""
    grouped: dict[int, dict[int, list[_Structure]]] = {}
    for s in structures:
        grouped.setdefault(s.case, {}).setdefault(s.value, []).append(s)
    return grouped
