"""Volume Fusion maps: fused samples of the input, the true and predicted fusion class per voxel, on its grid.

Pipeline (:func:`inspect_fusion`)::

    Volume --the bundle's preprocessing--> model volume x (1, 1, D, H, W) + GridMapping (VF presets do not
      reorient or resample: the mapping is the identity, pasted exactly)
      --tiles: x is cut into training patches (fusion.patch; PCT-Net: its input size), the last tile on an
        axis ending at the border; x is padded with its minimum where it is smaller than a patch
      --one training sample per tile, seeded, with the bundle's (or --fusion's) generator; the background
        is the tile itself, so the maps lie on the anatomy they come from:
          v1 (MIS-FM): foreground = a random v1 crop of x with its flips (the previous sample of a training
              batch); boxes as fuse_v1 paints them (count scaled by tile / patch voxels)
          v2 (VolF): foreground = a crop4vf patch of x (random resized crop, flips, contrast, gamma);
              background = the tile through crop4vf's intensity draws; block-grid labels as fuse_v2
          fused = alpha * foreground + (1 - alpha) * background, alpha = class / (classes - 1)
      --network: one forward pass per tile (exactly the samples it was trained on; tiles that overlap
        at the border: the later tile wins, in the sample and the prediction alike)
      --maps --GridMapping--> input grid

Outputs on the input's exact grid: ``fused``, ``background``, ``foreground`` (model intensities, float32),
``truth`` and ``predicted`` (fusion class 0..K, uint8), ``error`` (``|predicted - truth|`` in class steps,
so 1 means alpha off by 1/K; uint8) and ``confidence`` (max softmax, float32). The three class maps share
one colour table (``alpha.ctbl``, class 0 transparent). The summary counts voxels of the input grid that
the model grid covers: per-class accuracy (recall) and Dice, balanced accuracy, the confusion matrix
(rows = truth), and the mean confidence where right and where wrong.

Example::

    volumes, summary = fusion_map("vf/bundle", ct, seed=0)
    summary["balanced_accuracy"], summary["chance_balanced_accuracy"]   # e.g. 0.61, 0.2
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BundleError, ConfigError, InputError
from ..io import Volume
from ..progress import Progress
from .inspection import Inspection

if TYPE_CHECKING:
    import torch

    from ..bundle import Bundle
    from ..config import FusionConfig
    from ..pretext.vf_bundle import VFModel

__all__ = ["ALPHA_COLORS", "FusedSample", "tile_starts", "fuse_tile", "fuse_and_predict", "fusion_stats", "alpha_color_table",
           "fusion_map", "inspect_fusion", "fusion_picture"]

ALPHA_COLORS = {0: (0, 0, 0), 1: (59, 77, 191), 2: (102, 194, 166), 3: (252, 191, 112), 4: (214, 26, 28)}
"""RGB 0-255 of the fusion classes (alpha 0 .. 1; the colours of ``ssl3d.mrml.ALPHA_COLORS``); class 0 is transparent."""

_VOLUMES = ("fused", "background", "foreground", "truth", "predicted", "error", "confidence")


@dataclasses.dataclass
class FusedSample:
    """One fused sample in model space: tensors (1, 1, D, H, W); ``label`` uint8 classes, the rest float."""

    foreground: "torch.Tensor"
    background: "torch.Tensor"
    fused: "torch.Tensor"
    label: "torch.Tensor"


# ---------------------------------------------------------------------------------------------- the sample


def resolve_fusion(model: "VFModel", name: str | None) -> tuple[str, "FusionConfig"]:
    """(preset name, fusion settings): the bundle's, or those of the VF preset ``name`` (``--fusion``).

    Raises:
        ConfigError: an unknown or non-VF preset (with "did you mean"); a class count the network does not have.
    """
    from ..config import PRESETS, get_preset, look_up

    if name is None:
        return model.preset.name, model.fusion
    choice = look_up(name, sorted(n for n, p in PRESETS.items() if p.method == "vf"), "--fusion preset")
    fusion = get_preset(choice).fusion
    if fusion.classes != model.classes:
        raise ConfigError(f"--fusion {choice} fuses {fusion.classes} classes; the network predicts {model.classes}.")
    return choice, fusion


def tile_starts(size: int, tile: int) -> list[int]:
    """Starts of tiles covering ``size`` voxels: 0, tile, 2*tile, ... and a last one ending at the border.

    Example: ``tile_starts(40, 16)`` -> ``[0, 16, 24]``; ``tile_starts(16, 16)`` -> ``[0]``.
    """
    starts = list(range(0, max(1, size - tile + 1), tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def fuse_tile(x: "torch.Tensor", start: Sequence[int], tile: Sequence[int], fusion: "FusionConfig",
              generator: "torch.Generator", method: str = "exact") -> FusedSample:
    """One training sample whose background is the tile of ``x`` at ``start`` (see the module docstring).

    Args:
        x: (1, 1, D, H, W) float model volume, at least ``tile`` on every axis.
        start, tile: the tile's corner and size (D, H, W).
        fusion: version 1 (boxes) or 2 (crop4vf + blocks) settings.
        generator: CPU generator of every draw.
        method: v2 percentile method ("exact" or "histogram").

    Returns:
        :class:`FusedSample` of (1, 1, *tile) tensors; ``fused = lerp(background, foreground, label / (classes - 1))``.

    Example: ``fuse_tile(torch.rand(1, 1, 32, 48, 48), (0, 16, 16), (16, 32, 32), get_preset("vf-v1-cpu").fusion, g)``.
    """
    from ..pretext import volume_fusion as vf

    spatial, tile = tuple(int(s) for s in x.shape[2:]), tuple(int(t) for t in tile)
    (d, h, w), (td, th, tw) = start, tile
    if fusion.version == 1:
        background = x[:, :, d:d + td, h:h + th, w:w + tw]
        crop = vf.draw_crop_v1(1, spatial, generator, size=tile)
        if crop.starts[0].tolist() == list(start) and not bool(crop.flips.any()):  # the tile itself: flip it
            crop = dataclasses.replace(crop, flips=crop.flips.new_tensor([[False, True, True]]))
        foreground = vf.apply_crop_v1(x, crop)
        ratio = float(np.prod(tile)) / float(np.prod(fusion.patch))
        count = tuple(max(1, round(n * ratio)) for n in fusion.block_range)
        boxes = vf.draw_boxes_v1(1, tile, generator, count, fusion.size_min, fusion.size_max, fusion.classes)
        label = vf.paint_boxes_v1(boxes, tile, x.device)
        return FusedSample(foreground, background, vf.fuse(foreground, background, label, fusion.classes), label)
    params = vf.draw_crop4vf(1, spatial, generator, tile, scale_lower=(fusion.scale[0],) * 3, scale_upper=(fusion.scale[1],) * 3,
                             gamma_range=fusion.gamma, invert_p=fusion.inversion_p)
    starts, sizes, flips = params.starts.clone(), params.sizes.clone(), params.flips.clone()
    starts[0, 1], sizes[0, 1], flips[0, 1] = starts.new_tensor(list(start)), sizes.new_tensor(tile), False
    params = dataclasses.replace(params, starts=starts, sizes=sizes, flips=flips)  # background: the tile, unmoved
    foreground, background = vf.apply_crop4vf(x, params, method)
    fused, label = vf.fuse_v2(foreground, background, generator, fusion.classes, fusion.foreground_ratio, fusion.block_min, fusion.block_max)
    return FusedSample(foreground, background, fused, label)


def tile_size(model: "VFModel", fusion: "FusionConfig") -> tuple[int, int, int]:
    """(D, H, W) of a tile: a PCT-Net's fixed input size, else the generator's patch."""
    fixed = model.bundle.network.get("kwargs", {}).get("input_size")
    return tuple(int(s) for s in (fixed or fusion.patch))  # type: ignore[return-value]


def fuse_and_predict(model: "VFModel", x: "torch.Tensor", fusion: "FusionConfig", seed: int,
                     progress: Progress | None = None) -> tuple[dict[str, np.ndarray], int]:
    """Fused tiles over the whole model volume and the network's prediction on each.

    Args:
        model: the loaded VF bundle.
        x: (1, 1, D, H, W) model volume on the model's device.
        fusion: the generator's settings.
        seed: seed of every draw.
        progress: called with (tiles done, tiles) after each forward pass.

    Returns:
        ``{"foreground", "background", "fused", "confidence"}`` float32 and ``{"truth", "predicted"}`` uint8
        maps, each (D, H, W), and the number of tiles.
    """
    import itertools

    import torch

    from ..pretext.vf_samples import pad_volumes

    tile = tile_size(model, fusion)
    shape = tuple(int(s) for s in x.shape[2:])
    padded = pad_volumes([x[0]], tile, model.preprocessing.pad_mode)[0][None]
    before = [(p - s) // 2 for p, s in zip(padded.shape[2:], shape)]
    maps = {k: np.zeros(padded.shape[2:], dtype=np.uint8 if k in ("truth", "predicted") else np.float32)
            for k in ("foreground", "background", "fused", "truth", "predicted", "confidence")}
    generator = torch.Generator().manual_seed(int(seed))
    starts = list(itertools.product(*(tile_starts(s, t) for s, t in zip(padded.shape[2:], tile))))
    group = 4 if padded.device.type == "cuda" else 2
    for first in range(0, len(starts), group):
        part = starts[first:first + group]
        samples = [fuse_tile(padded, start, tile, fusion, generator, model.percentile_method) for start in part]
        prob = torch.softmax(model.logits(torch.cat([s.fused for s in samples])).float(), dim=1)
        top, arg = prob.max(dim=1)
        for n, (start, sample) in enumerate(zip(part, samples)):
            box = tuple(slice(a, a + t) for a, t in zip(start, tile))
            for key, value in (("foreground", sample.foreground), ("background", sample.background), ("fused", sample.fused), ("truth", sample.label)):
                maps[key][box] = value[0, 0].cpu().numpy()
            maps["predicted"][box], maps["confidence"][box] = arg[n].to(torch.uint8).cpu().numpy(), top[n].cpu().numpy()
        if progress is not None:
            progress(first + len(part), len(starts))
    crop = tuple(slice(b, b + s) for b, s in zip(before, shape))
    return {k: v[crop] for k, v in maps.items()}, len(starts)


# ---------------------------------------------------------------------------------------------- numbers


def _nan_none(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]


def fusion_stats(truth: np.ndarray, predicted: np.ndarray, classes: int, mask: np.ndarray | None = None) -> dict[str, Any]:
    """Per-class accuracy and Dice, balanced accuracy and the confusion matrix of two class maps.

    Args:
        truth, predicted: integer arrays of one shape, classes 0..classes-1.
        classes: number of fusion classes.
        mask: voxels to count (default: all).

    Returns:
        ``confusion`` (classes x classes, rows = truth), ``accuracy``, ``balanced_accuracy`` (mean recall
        over the classes present), ``per_class`` (``class``, ``true_voxels``, ``predicted_voxels``,
        ``accuracy`` = recall, ``dice``; None where undefined), ``fg_dice`` (mean Dice of classes 1..K)
        and ``voxels``.

    Example: ``fusion_stats(np.array([0, 1, 1]), np.array([0, 1, 0]), 2)["balanced_accuracy"]`` -> ``0.75``.
    """
    t, p = np.asarray(truth).astype(np.int64), np.asarray(predicted).astype(np.int64)
    if mask is not None:
        t, p = t[mask], p[mask]
    confusion = np.bincount((t * classes + p).ravel(), minlength=classes * classes).reshape(classes, classes)
    support, counted, hits = confusion.sum(1), confusion.sum(0), np.diag(confusion).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, hits / support, np.nan)
        dice = np.where(support + counted > 0, 2 * hits / (support + counted), np.nan)
    per_class = [{"class": c, "true_voxels": int(support[c]), "predicted_voxels": int(counted[c]),
                  "accuracy": r, "dice": d} for c, r, d in zip(range(classes), _nan_none(recall), _nan_none(dice))]
    present = recall[support > 0]
    fg = dice[1:][np.isfinite(dice[1:])]
    return {
        "voxels": int(confusion.sum()), "confusion": confusion.tolist(),
        "accuracy": float(hits.sum() / max(1, confusion.sum())),
        "balanced_accuracy": float(present.mean()) if present.size else None,
        "fg_dice": float(fg.mean()) if fg.size else None, "per_class": per_class,
    }


def alpha_color_table(classes: int) -> str:
    """Slicer colour table (``value name r g b a``) of the fusion classes; class 0 transparent."""
    from ..pretext.vf_samples import class_names

    names = class_names(classes)
    lines = ["# Color table file alpha.ctbl: Volume Fusion classes (alpha = class / (classes - 1))", f"# {classes} values"]
    for c in range(classes):
        r, g, b = _color(c)
        lines.append(f"{c} {'_'.join(names[c].split())} {r} {g} {b} {0 if c == 0 else 255}")
    return "\n".join(lines) + "\n"


def _color(c: int) -> tuple[int, int, int]:
    return ALPHA_COLORS[0] if c == 0 else ALPHA_COLORS[1 + (c - 1) % (len(ALPHA_COLORS) - 1)]


# ---------------------------------------------------------------------------------------------- the API


def load_model(bundle: "Bundle | str | os.PathLike", device: "torch.device | str" = "cpu") -> "VFModel":
    """A VF bundle's network; other bundles get a one-line BundleError saying what to use instead."""
    from ..bundle import as_bundle
    from ..pretext.vf_bundle import load_vf_bundle

    bundle = as_bundle(bundle)
    method = (bundle.meta.get("pretext") or {}).get("method")
    if bundle.task != "pretext":
        raise BundleError(f"{bundle.path}: a {bundle.task} bundle; 'inspect vf' needs a Volume Fusion pretext bundle (from 'ssl3d pretrain --method vf').")
    if method != "vf":
        raise BundleError(f"{bundle.path}: a {method!r} pretext bundle, not Volume Fusion; use 'ssl3d inspect voco' for VoCo bundles.")
    model = load_vf_bundle(bundle, device)
    if model.classes != model.fusion.classes:
        raise BundleError(f"{bundle.path}: the network has {model.classes} outputs, not the {model.fusion.classes} fusion classes: no fusion head to inspect.")
    return model


def inspect_fusion(bundle: "Bundle | str | os.PathLike", volume: Volume, seed: int = 0, fusion: str | None = None,
                   device: "torch.device | str" = "cpu", progress: Progress | None = None) -> Inspection:
    """Fuse the input, predict the fusion classes, and return the maps on its grid with a summary and a picture.

    Args:
        bundle: a VF pretext bundle (trained, or imported MIS-FM weights), path or loaded.
        volume: the input; every output volume gets its exact grid.
        seed: seed of the fused sample.
        fusion: a VF preset whose fusion settings generate the sample instead of the bundle's (e.g. "vf-v2").
        device: where the network runs ("auto", "cpu", "cuda[:N]" or a torch.device).
        progress: called with (tiles done, tiles) after each forward pass.

    Returns:
        :class:`~ssl3d.inspect.Inspection` with volumes ``fused``, ``background``, ``foreground``,
        ``truth``, ``predicted``, ``error``, ``confidence``, the summary, ``fusion.png`` and ``alpha.ctbl``.

    Raises:
        BundleError: not a VF pretext bundle, or a network without the fusion classes.
        ConfigError: an unknown ``fusion`` preset. InputError: a volume the preprocessing rejects.
    """
    from ..bundle import as_bundle
    from ..data.preprocess import preprocess
    from ..device import resolve_device

    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}.")
    bundle = as_bundle(bundle)
    model = load_model(bundle, resolve_device(device) if isinstance(device, str) else device)
    name, config = resolve_fusion(model, fusion)
    x, mapping = preprocess(volume, model.preprocessing)
    maps, tiles = fuse_and_predict(model, x.to(model.device), config, seed, progress)
    maps["error"] = np.abs(maps["predicted"].astype(np.int16) - maps["truth"].astype(np.int16)).astype(np.uint8)
    volumes = {key: mapping.to_input_grid(maps[key], label=maps[key].dtype == np.uint8) for key in _VOLUMES}
    covered = mapping.to_input_grid(np.ones(mapping.model_shape, dtype=np.uint8), label=True).array > 0
    summary = _summary(bundle, model, name, config, seed, volumes, covered, tiles)
    picture = fusion_picture(volumes, model.classes, summary)
    return Inspection(volumes, summary, {"fusion.png": picture}, {"alpha.ctbl": alpha_color_table(model.classes)})


def fusion_map(bundle: "Bundle | str | os.PathLike", volume: Volume, seed: int = 0, **options: Any) -> tuple[dict[str, Volume], dict[str, Any]]:
    """Volume Fusion maps on the input grid and their summary: :func:`inspect_fusion` without the picture.

    ``options``: ``fusion`` and ``device`` of :func:`inspect_fusion`.

    Returns:
        ``({"fused", "background", "foreground", "truth", "predicted", "error", "confidence": Volume}, summary)``.
    """
    result = inspect_fusion(bundle, volume, seed, **options)
    return result.volumes, result.summary


def _summary(bundle: "Bundle", model: "VFModel", name: str, config: "FusionConfig", seed: int, volumes: dict[str, Volume],
             covered: np.ndarray, tiles: int) -> dict[str, Any]:
    from ..config import to_dict
    from ..pretext.vf_samples import class_names

    classes = model.classes
    stats = fusion_stats(volumes["truth"].array, volumes["predicted"].array, classes, covered)
    names = class_names(classes)
    for entry in stats["per_class"]:
        entry.update(name=names[entry["class"]], alpha=entry["class"] / (classes - 1))
    right = volumes["error"].array[covered] == 0
    confidence = volumes["confidence"].array[covered]
    background = "each tile of the input" + (" through crop4vf's intensity draws (contrast, gamma, inversion)" if config.version == 2 else "")
    foreground = "a random v1 crop of the input with flips" if config.version == 1 else "a crop4vf patch of the input (random resized crop, flips, contrast, gamma)"
    return {
        "method": "vf", "bundle": str(bundle.path), "preset": model.preset.name, "fusion_preset": name,
        "fusion": to_dict(config), "seed": seed, "classes": classes, "class_names": names,
        "alphas": [c / (classes - 1) for c in range(classes)], "background": background, "foreground": foreground,
        "coverage": float(covered.mean()), "tile": list(tile_size(model, config)), "tiles": tiles,
        "chance_balanced_accuracy": 1.0 / classes, **stats,
        "mean_confidence": float(confidence.mean()) if confidence.size else None,
        "mean_confidence_right": float(confidence[right].mean()) if right.any() else None,
        "mean_confidence_wrong": float(confidence[~right].mean()) if (~right).any() else None,
        "color_table": "alpha.ctbl",
    }


# ---------------------------------------------------------------------------------------------- picture


def _tiles(row: np.ndarray, count: int) -> list[np.ndarray]:
    return np.split(row, count, axis=1)


def _legend(width: int, classes: int) -> np.ndarray:
    """A strip naming the class colours (also those of the error: |delta alpha| in class steps)."""
    from PIL import Image, ImageDraw

    from ..pictures import text_font
    from ..pretext.vf_samples import class_names

    strip = Image.new("RGB", (int(width), 22))
    draw, font, x = ImageDraw.Draw(strip), text_font(12), 4
    for c, name in enumerate(class_names(classes)[1:], start=1):
        draw.rectangle([x, 5, x + 12, 17], fill=_color(c))
        draw.text((x + 16, 11), name, fill=(255, 255, 255), font=font, anchor="lm")
        x += 24 + int(draw.textlength(name, font=font))
    draw.text((x + 8, 11), "(error: |delta alpha| in the same colours)", fill=(200, 200, 200), font=font, anchor="lm")
    return np.asarray(strip)


def fusion_picture(volumes: dict[str, Volume], classes: int, summary: dict[str, Any] | None = None, slices: int = 3) -> np.ndarray:
    """RGB montage: columns fused | truth | prediction | error, rows = ``slices`` axial slices (k) of the input grid.

    Class maps are drawn over the fused image in the alpha colours (class 0 not drawn).
    """
    from ..pictures import axial_montage, text_strip

    fused = volumes["fused"]
    low, high = (float(v) for v in np.percentile(fused.array, [0.5, 99.5]))
    window = (low, high if high > low else low + 1.0)
    colors = {c: _color(c) for c in range(1, classes)}
    columns = [_tiles(axial_montage(fused, None, slices, window), slices)]
    for key in ("truth", "predicted", "error"):
        columns.append(_tiles(axial_montage(fused, volumes[key], slices, window, colors, alpha=0.6), slices))
    scale = max(1, round(160 / max(columns[0][0].shape[:2])))
    grow = lambda t: np.repeat(np.repeat(t, scale, axis=0), scale, axis=1)  # noqa: E731
    gap = 4
    rows = []
    for n in range(slices):
        tiles = [grow(column[n]) for column in columns]
        spacer = np.zeros((tiles[0].shape[0], gap, 3), dtype=np.uint8)
        rows.append(np.concatenate([x for t in tiles for x in (t, spacer)][:-1], axis=1))
        rows.append(np.zeros((gap, rows[-1].shape[1], 3), dtype=np.uint8))
    tile_w = columns[0][0].shape[1] * scale
    header = np.concatenate([x for caption in ("fused", "true alpha", "predicted alpha", "error |delta alpha|")
                             for x in (text_strip(tile_w, caption), np.zeros((22, gap, 3), dtype=np.uint8))][:-1], axis=1)
    body = np.concatenate(rows[:-1], axis=0)
    parts = [header, body, _legend(body.shape[1], classes)]
    if summary is not None:
        shown = lambda key: "-" if summary.get(key) is None else f"{summary[key]:.2f}"  # noqa: E731
        line = (f"balanced accuracy {shown('balanced_accuracy')} (chance {shown('chance_balanced_accuracy')}), "
                f"fg Dice {shown('fg_dice')}, mean confidence {shown('mean_confidence')}; seed {summary['seed']}, {summary['fusion_preset']}")
        parts.append(text_strip(body.shape[1], line))
    width = max(p.shape[1] for p in parts)
    return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]), (0, 0))) for p in parts], axis=0)
