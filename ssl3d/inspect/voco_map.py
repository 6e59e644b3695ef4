"""VoCo position maps: where a pretext bundle thinks a crop lies among the base crops, on the input grid.

Pipeline (:func:`inspect_voco`)::

    Volume --the bundle's preprocessing--> model volume (1, D, H, W) + GridMapping
      --grid: v1 the whole volume; v2 a (grid*base)^2 x depth window (centred, shifted to hold the boxes)
      --crops: RAS centres (boxes, clamped so the crop stays in the grid) or seeded random centres
      --scores: the training score p per base cell (v1 ½(relu cos(x_s, b_t) + relu cos(x_t, b_s)),
                v2 relu cos(x_s, b_t)), in the training batch layout (see below)
      --maps in model space (cell index; dense: localisation) --GridMapping (nearest)--> input grid

Outputs (volumes on the input's exact grid; 0 where the grid does not reach):

* ``grid``: base cell index + 1 (uint8 label map); cell ``k = ix*grid + iy``, x towards R, y towards A.
* ``predicted``: per voxel, p of the cell it lies in, for crop 0 (float32).
* ``truth``: per voxel, the overlap label of the cell it lies in (:func:`~ssl3d.pretext.voco.position_labels`).
* ``localisation`` (``dense=True``): crops centred on a lattice of stride crop/4 over the grid; per voxel,
  for the lattice crop nearest to it, the share of the predicted weight on the cells the crop overlaps
  (``sum_{y_k > 0} p_k / sum_k p_k``; 1 = all weight where it belongs).

Per crop the summary holds p, the labels, L1 = ``sum |p - y|``, top-1 (argmax p is a cell of largest
overlap), the entropy in bits of p normalised to sum 1, and the mass on the true cells; chance is 1/grid².

Batch layout. The heads' BatchNorm uses the statistics of each forward pass (as in training), so p of a crop
depends on the crops it is forwarded with. Every pass is a training step's batch: ``batch_size`` volumes
(the preset's) of ``num_random`` random crops plus the ``grid²`` base crops each. A ``box`` crop takes one
random-crop slot and seeded random companion crops (``seed``) fill the others; random crops fill whole
passes; dense lattice crops go in a seeded random order. All volumes of a pass are the grid volume, where
training has different volumes (v2: different windows): that, and the companions' draw, remain; the summary's
``layout`` records the passes. Measured on the test session's trained voco-v1-cpu bundle (18 crops, 3
phantoms): p of a box moves by at most 0.07 between companion seeds and by at most 0.05 from the same crop
in random mode, with the same argmax; one volume's crops alone, the group filled with copies of the box,
were 0.07-0.22 off.

Example::

    volumes, summary = voco_map("run/bundle", ct, boxes=[(12.5, -30.0, 40.0)])
    summary["crops"][0]["predicted_cell"], summary["crops"][0]["top1"]
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..errors import BundleError, InputError
from ..io import Volume
from ..pictures import text_font, text_strip
from ..progress import Progress
from .inspection import Inspection

if TYPE_CHECKING:
    import torch

    from ..bundle import Bundle
    from ..data.preprocess import GridMapping
    from ..pretext.voco_bundle import VoCoScorer
    from ..pretext.voco_samples import SampleSpec

__all__ = ["DEFAULT_RANDOM", "place_window", "crop_stats", "cell_map", "load_scorer", "voco_map", "inspect_voco", "voco_picture"]

DEFAULT_RANDOM = 16
"""Random crops drawn when no box is given."""


# ---------------------------------------------------------------------------------------------- pure parts


def place_window(volume_xyz: Sequence[int], window_xyz: Sequence[int], centre_range: tuple[int, int],
                 points_xyz: np.ndarray | None = None) -> tuple[int, int, int]:
    """Start (x, y, z) of a window inside a volume: centred, then shifted the least so that every point
    can be a crop centre (x, y in ``[start + low, start + high)``, z in ``[start, start + depth)``).

    A shift beyond the volume is cut at its border (the points are then clamped, see :func:`inspect_voco`).

    Args:
        volume_xyz: volume size (x, y, z), at least the window's on every axis.
        window_xyz: window size (x, y, z).
        centre_range: ``(low, high)`` of crop centres inside the window (x and y).
        points_xyz: ``(n, 3)`` requested centres in volume voxels, or None (centred window).

    Raises:
        InputError: points too far apart to share one window.

    Example: ``place_window((60, 60, 20), (48, 48, 16), (8, 40), np.array([[50, 30, 10]]))`` -> ``(11, 6, 2)``.
    """
    start = []
    for axis, (size, win) in enumerate(zip(volume_xyz, window_xyz)):
        centred = (int(size) - int(win)) // 2
        if points_xyz is None or len(points_xyz) == 0:
            start.append(centred)
            continue
        low, high = centre_range if axis < 2 else (0, int(win))
        coords = np.floor(np.asarray(points_xyz, dtype=np.float64)[:, axis] + 0.5).astype(int)
        first, last = int(coords.max()) - high + 1, int(coords.min()) - low
        if first > last:
            raise InputError(f"the boxes lie {int(coords.max() - coords.min())} voxels apart on model axis {'xyz'[axis]}; "
                             f"one VoCo window holds crop centres at most {high - low - 1} apart: inspect them separately.")
        start.append(int(np.clip(np.clip(centred, first, last), 0, int(size) - int(win))))
    return tuple(start)  # type: ignore[return-value]


def crop_stats(p: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Numbers of one crop: predicted scores ``p`` (K,) against overlap labels ``y`` (K,).

    Returns:
        ``predicted``, ``true`` (lists), ``predicted_cell`` (argmax p), ``true_cells`` (cells of largest
        overlap), ``top1``, ``l1`` (``sum |p - y|``), ``entropy`` (bits, of p / sum p; uniform when p = 0)
        and ``mass_on_true`` (share of p on cells with y > 0).

    Example: ``crop_stats(np.array([0.9, 0.1]), np.array([1.0, 0.0]))["top1"]`` -> ``True``.
    """
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    total = float(p.sum())
    q = p / total if total > 0 else np.full_like(p, 1.0 / len(p))
    nonzero = q[q > 0]
    best = float(y.max())
    cell = int(np.argmax(p))
    return {
        "predicted": [float(v) for v in p], "true": [float(v) for v in y],
        "predicted_cell": cell, "true_cells": [int(k) for k in np.flatnonzero(y == best)],
        "top1": bool(y[cell] == best), "l1": float(np.abs(p - y).sum()),
        "entropy": float(-(nonzero * np.log2(nonzero)).sum()), "mass_on_true": float(q[y > 0].sum()),
    }


def cell_map(model_shape: Sequence[int], origin_xyz: Sequence[int], spec: "SampleSpec") -> np.ndarray:
    """Base cell index + 1 of every model voxel (uint8 (D, H, W)); 0 outside the grid.

    The grid spans x, y in ``[origin, origin + grid*base)`` and z in ``[origin, origin + depth)``.
    Example: model (32, 64, 64), origin (0, 0, 0), grid 4, base 16: voxel (z, y=20, x=40) -> 2*4 + 1 + 1 = 10.
    """
    d, h, w = (int(s) for s in model_shape)
    gx, gy, gz = (np.arange(n) - int(o) for n, o in zip((w, h, d), origin_xyz))
    inside_xy = ((gy >= 0) & (gy < spec.size))[:, None] & ((gx >= 0) & (gx < spec.size))[None, :]
    ix, iy = np.clip(gx // spec.base, 0, spec.grid - 1), np.clip(gy // spec.base, 0, spec.grid - 1)
    cells = np.where(inside_xy, ix[None, :] * spec.grid + iy[:, None] + 1, 0)
    inside_z = (gz >= 0) & (gz < spec.depth)
    return np.where(inside_z[:, None, None], cells[None], 0).astype(np.uint8)


def _lattice(spec: "SampleSpec") -> np.ndarray:
    """Dense crop centres on one axis: ``low, low + stride, ... < high`` with stride crop/4."""
    low, high = spec.centre_range
    return np.arange(low, high, max(1, spec.crop // 4))


def _lattice_map(values: np.ndarray, model_shape: Sequence[int], origin_xyz: Sequence[int], spec: "SampleSpec") -> np.ndarray:
    """Model-space float32 map: each grid voxel takes the value of the lattice crop centred nearest to it."""
    d, h, w = (int(s) for s in model_shape)
    centres, stride = _lattice(spec), max(1, spec.crop // 4)
    gx, gy, gz = (np.arange(n) - int(o) for n, o in zip((w, h, d), origin_xyz))
    li = np.clip(np.floor((gx - centres[0]) / stride + 0.5).astype(int), 0, len(centres) - 1)
    lj = np.clip(np.floor((gy - centres[0]) / stride + 0.5).astype(int), 0, len(centres) - 1)
    plane = values[li[None, :], lj[:, None]]  # values indexed (x lattice, y lattice) -> (H, W)
    plane = np.where(((gy >= 0) & (gy < spec.size))[:, None] & ((gx >= 0) & (gx < spec.size))[None, :], plane, 0.0)
    inside_z = (gz >= 0) & (gz < spec.depth)
    return np.where(inside_z[:, None, None], plane[None], 0.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------- model side


def load_scorer(bundle: "Bundle | str | os.PathLike", device: "torch.device | str" = "cpu") -> "VoCoScorer":
    """A VoCo bundle's scorer; other bundles get a one-line BundleError saying what to use instead."""
    from ..bundle import as_bundle
    from ..pretext.voco_bundle import load_voco_bundle

    bundle = as_bundle(bundle)
    method = (bundle.meta.get("pretext") or {}).get("method")
    if bundle.task != "pretext":
        raise BundleError(f"{bundle.path}: a {bundle.task} bundle; 'inspect voco' needs a VoCo pretext bundle (from 'ssl3d pretrain --method voco').")
    if method != "voco":
        raise BundleError(f"{bundle.path}: a {method!r} pretext bundle, not VoCo; use 'ssl3d inspect vf' for Volume Fusion bundles.")
    return load_voco_bundle(bundle, device)


def _scores(scorer: "VoCoScorer", grid_volume: "torch.Tensor", centres: np.ndarray, per_pass: int,
            generator: "torch.Generator", progress: Progress | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(n, K) float64 scores of the crops centred at ``centres`` (n, 2), forwarded in the training layout.

    The heads' BatchNorm normalises over the crops of each forward pass (batch statistics, as in training),
    so p of a crop depends on the other crops of its pass. Each pass therefore holds what a training step
    holds: ``group`` (the preset's batch size) volumes of ``n_random`` random crops plus their base crops.
    Every volume is the grid volume; ``per_pass`` of the random-crop slots take the crops asked for, the
    others take companion crops drawn uniformly from ``centre_range`` with ``generator`` (as training draws
    them). Box crops go one per pass, so a box's p does not depend on the other boxes.

    Returns:
        ``(scores, layout)``; ``layout`` describes the passes for the summary.
    """
    import torch

    spec, groups = scorer.spec, scorer.group
    grid_volume = grid_volume.to(scorer.device)  # once, not once per pass and volume slot
    slots = groups * spec.n_random
    per_pass = max(1, min(int(per_pass), slots))
    low, high = spec.centre_range
    out, companions = [], 0
    for start in range(0, len(centres), per_pass):
        chunk = np.asarray(centres[start:start + per_pass], dtype=np.int64)
        fill = torch.randint(low, high, (slots - len(chunk), 2), generator=generator).numpy().astype(np.int64)
        companions += len(fill)
        layout = np.concatenate([chunk, fill]).reshape(groups, spec.n_random, 2)
        out.append(scorer.scores([grid_volume] * groups, layout).numpy().reshape(slots, -1)[: len(chunk)])
        if progress is not None:
            progress(min(start + per_pass, len(centres)), len(centres))
    info = {"volumes_per_pass": groups, "random_crops_per_volume": spec.n_random, "base_crops_per_volume": spec.n_base,
            "crops_asked_per_pass": per_pass, "passes": len(out), "companion_crops": companions,
            "companions": "seeded uniform random crops of the same grid volume, as training draws them; every volume "
                          "of a pass is the grid volume (training: different volumes)"}
    return np.concatenate(out).astype(np.float64), info


@dataclass
class _Grid:
    """Where the base-crop grid lies: the cut volume (1, depth, S, S), its origin in model voxels (x, y, z)."""

    volume: "torch.Tensor"
    origin: tuple[int, int, int]


def _lay_grid(model: "torch.Tensor", scorer: "VoCoScorer", points_xyz: np.ndarray | None) -> _Grid:
    """Lay the grid over the model volume (v1: it is the volume; v2: a window, zero-padded as in training)."""
    from ..pretext.voco_bundle import pad_to_window

    spec = scorer.spec
    if scorer.window is None:
        if tuple(model.shape) != spec.volume_shape:
            raise BundleError(f"the bundle's preprocessing gives a model volume {tuple(model.shape)}, "
                              f"but its VoCo grid needs (1, D, H, W) = {spec.volume_shape}.")
        return _Grid(model, (0, 0, 0))
    window = tuple(int(v) for v in scorer.window)
    padded = pad_to_window(model, window)
    before = [(p - s) // 2 for p, s in zip(padded.shape[1:][::-1], model.shape[1:][::-1])]  # (x, y, z)
    points = None if points_xyz is None else np.asarray(points_xyz) + np.asarray(before)
    start = place_window(padded.shape[1:][::-1], window, spec.centre_range, points)
    (x0, y0, z0), (wx, wy, wz) = start, window
    cut = padded[:, z0:z0 + wz, y0:y0 + wy, x0:x0 + wx]
    return _Grid(cut, tuple(int(s - b) for s, b in zip(start, before)))  # type: ignore[arg-type]


def _box_points(volume: Volume, mapping: "GridMapping", boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """RAS box centres -> model voxel coordinates (n, 3) (x, y, z).

    Raises:
        InputError: a centre that is not three finite numbers, or lies outside the input volume.
    """
    points = []
    size_ijk = np.asarray(volume.shape[::-1], dtype=np.float64)
    to_model = np.linalg.inv(np.asarray(mapping.model_to_input, dtype=np.float64))
    for n, ras in enumerate(boxes):
        ras = np.asarray(ras, dtype=np.float64).reshape(-1)
        if ras.shape != (3,) or not np.all(np.isfinite(ras)):
            raise InputError(f"box {n}: a centre needs three finite RAS numbers (mm), got {ras.tolist()}.")
        ijk = volume.ras_to_index(ras)
        if np.any(ijk < -0.5) or np.any(ijk > size_ijk - 0.5):
            shown = ",".join(f"{v:g}" for v in ras)
            raise InputError(f"box {n}: the centre R,A,S = {shown} mm lies outside the volume "
                             f"(voxel i,j,k = {', '.join(f'{v:.1f}' for v in ijk)}; the volume has {', '.join(str(int(s)) for s in size_ijk)}).")
        points.append((to_model @ np.append(ijk, 1.0))[:3])
    return np.asarray(points, dtype=np.float64).reshape(-1, 3)


def _centres(points_xyz: np.ndarray | None, grid: _Grid, spec: "SampleSpec", n_random: int,
             generator: "torch.Generator") -> tuple[np.ndarray, np.ndarray]:
    """Integer crop centres (n, 2) in grid voxels, and which of them were moved to keep the crop in the grid."""
    import torch

    low, high = spec.centre_range
    if points_xyz is None:
        centres = torch.randint(low, high, (n_random, 2), generator=generator).numpy().astype(np.int64)
        return centres, np.zeros(n_random, dtype=bool)
    wanted = np.floor(points_xyz[:, :2] - np.asarray(grid.origin[:2]) + 0.5).astype(np.int64)
    centres = np.clip(wanted, low, high - 1)
    return centres, np.any(centres != wanted, axis=1)


# ---------------------------------------------------------------------------------------------- geometry out


def _corners(mapping: "GridMapping", lo_xyz: Sequence[float], hi_xyz: Sequence[float]) -> list[list[float]]:
    """RAS corners (8 x 3) of the model-voxel box [lo, hi] (voxel edges)."""
    affine = np.asarray(mapping.model_affine, dtype=np.float64)
    corners = []
    for x in (lo_xyz[0], hi_xyz[0]):
        for y in (lo_xyz[1], hi_xyz[1]):
            for z in (lo_xyz[2], hi_xyz[2]):
                corners.append([round(float(v), 4) for v in (affine @ np.array([x, y, z, 1.0]))[:3]])
    return corners


def _crop_box(mapping: "GridMapping", grid: _Grid, spec: "SampleSpec", centre: Sequence[int]) -> tuple[list, list]:
    """(RAS corners, RAS centre) of the effective crop: crop x crop in x-y around the centre, the grid's depth."""
    ox, oy, oz = grid.origin
    x0, y0 = ox + int(centre[0]) - spec.crop // 2, oy + int(centre[1]) - spec.crop // 2
    lo, hi = (x0 - 0.5, y0 - 0.5, oz - 0.5), (x0 + spec.crop - 0.5, y0 + spec.crop - 0.5, oz + spec.depth - 0.5)
    middle = np.asarray(mapping.model_affine) @ np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2, 1.0])
    return _corners(mapping, lo, hi), [round(float(v), 4) for v in middle[:3]]


# ---------------------------------------------------------------------------------------------- the API


def inspect_voco(bundle: "Bundle | str | os.PathLike", volume: Volume, boxes: Sequence[Sequence[float]] | None = None,
                 dense: bool = False, n_random: int = DEFAULT_RANDOM, seed: int = 0, device: "torch.device | str" = "cpu",
                 progress: Progress | None = None) -> Inspection:
    """Position predictions of a VoCo bundle on one volume: maps, summary, picture and boxes.json.

    Args:
        bundle: a VoCo pretext bundle with heads (from ``ssl3d pretrain --method voco``), path or loaded.
        volume: the input; every output volume gets its exact grid.
        boxes: crop centres as RAS points (mm), e.g. the centre of a Slicer ROI; each crop is the preset's
            crop in x-y and the grid's full depth, moved into the grid when it would stick out (``clamped``).
            None: ``n_random`` seeded random crops, drawn as in training.
        dense: also the ``localisation`` map (crops on a lattice of stride crop/4).
        n_random: random crops when ``boxes`` is None (>= 1).
        seed: seed of the random crops and of the companion crops that share their forward passes.
        device: where the network runs ("auto", "cpu", "cuda[:N]" or a torch.device).
        progress: called with (crops scored, crops) after each forward pass, for the crops and then for the
            dense lattice.

    Returns:
        :class:`~ssl3d.inspect.Inspection`: volumes ``grid``, ``predicted``, ``truth`` (+ ``localisation``),
        the summary (see the module docstring), ``voco.png`` and ``boxes.json`` (every crop's effective box
        as 8 RAS corners, and the grid's).

    Raises:
        BundleError: not a VoCo pretext bundle, or one without heads (imported weights).
        InputError: a box outside the volume, boxes too far apart for one v2 window, ``n_random`` < 1,
            or a volume with no foreground for the bundle's preprocessing.
    """
    import torch

    from ..pretext.voco import position_labels

    if boxes is None and (not isinstance(n_random, int) or n_random < 1):
        raise InputError(f"n_random must be a positive integer, got {n_random!r}.")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}.")
    if boxes is not None and len(boxes) == 0:
        raise InputError("boxes must hold at least one RAS centre, got none.")
    from ..bundle import as_bundle
    from ..device import resolve_device

    bundle = as_bundle(bundle)
    scorer = load_scorer(bundle, resolve_device(device) if isinstance(device, str) else device)
    spec = scorer.spec
    model, mapping = scorer.prepare(volume)
    points = None if boxes is None else _box_points(volume, mapping, boxes)
    grid = _lay_grid(model, scorer, points)
    generator = torch.Generator().manual_seed(int(seed))
    centres, clamped = _centres(points, grid, spec, n_random, generator)
    # random crops fill whole passes (they are training draws); a box goes alone among random companions
    scores, layout = _scores(scorer, grid.volume, centres, 1 if boxes is not None else len(centres), generator, progress)
    labels = position_labels(centres, spec.crop, spec.base, spec.grid)
    crops = [_crop_record(n, mapping, grid, spec, centres[n], scores[n], labels[n], bool(clamped[n]), None if boxes is None else boxes[n])
             for n in range(len(centres))]
    cells = cell_map(mapping.model_shape, grid.origin, spec)
    grid_volume = mapping.to_input_grid(cells, label=True)
    volumes = {"grid": grid_volume, "predicted": _per_cell(grid_volume, scores[0]), "truth": _per_cell(grid_volume, labels[0])}
    summary = _summary(scorer, str(bundle.path), mapping, grid, crops, "box" if boxes is not None else "random", seed, layout)
    local = None
    if dense:
        local, summary["dense"] = _dense(scorer, grid, spec, seed, progress)
        volumes["localisation"] = mapping.to_input_grid(_lattice_map(local, mapping.model_shape, grid.origin, spec), label=True)
    picture = voco_picture(grid.volume[0].cpu().numpy(), spec, crops[0], local)
    boxes_json = {"space": "RAS", "units": "mm", "boxes": [{k: c[k] for k in ("index", "center", "corners", "requested", "clamped")} for c in crops],
                  "grid": {"corners": summary["grid_box"]["corners"]}}
    return Inspection(volumes, summary, {"voco.png": picture}, {"boxes.json": json.dumps(boxes_json, indent=2) + "\n"})


def voco_map(bundle: "Bundle | str | os.PathLike", volume: Volume, boxes: Sequence[Sequence[float]] | None = None,
             dense: bool = False, **options: Any) -> tuple[dict[str, Volume], dict[str, Any]]:
    """VoCo position maps on the input grid and their summary: :func:`inspect_voco` without the picture.

    ``options``: ``n_random``, ``seed``, ``device`` of :func:`inspect_voco`.

    Returns:
        ``({"grid", "predicted", "truth"[, "localisation"]: Volume}, summary)``.
    """
    result = inspect_voco(bundle, volume, boxes, dense, **options)
    return result.volumes, result.summary


def _per_cell(grid_volume: Volume, values: np.ndarray) -> Volume:
    """A float32 volume holding ``values[cell]`` on every voxel of the cell (0 outside the grid)."""
    table = np.concatenate([[0.0], np.asarray(values, dtype=np.float64)]).astype(np.float32)
    return grid_volume.like(table[grid_volume.array])


def _crop_record(n: int, mapping: "GridMapping", grid: _Grid, spec: "SampleSpec", centre: np.ndarray, p: np.ndarray,
                 y: np.ndarray, clamped: bool, requested: Sequence[float] | None) -> dict[str, Any]:
    corners, middle = _crop_box(mapping, grid, spec, centre)
    return {"index": n, "center_grid_xy": [int(v) for v in centre], "center": middle, "corners": corners,
            "requested": None if requested is None else [float(v) for v in requested], "clamped": clamped, **crop_stats(p, y)}


def _summary(scorer: "VoCoScorer", path: str, mapping: "GridMapping", grid: _Grid, crops: list[dict], mode: str, seed: int,
             layout: dict[str, Any]) -> dict[str, Any]:
    spec, meta = scorer.spec, scorer.meta
    size = (spec.size, spec.size, spec.depth)
    lo = tuple(o - 0.5 for o in grid.origin)
    hi = tuple(o + s - 0.5 for o, s in zip(grid.origin, size))

    def mean(key: str) -> float:
        return float(np.mean([c[key] for c in crops]))

    return {
        "method": "voco", "version": scorer.version, "preset": (meta.get("pretext") or {}).get("preset"),
        "bundle": path, "grid": spec.grid, "cells": spec.n_base, "chance": 1.0 / spec.n_base,
        "crop_voxels_xyz": [spec.crop, spec.crop, spec.depth], "base_voxels_xyz": [spec.base, spec.base, spec.depth],
        "model_shape": [int(s) for s in mapping.model_shape],
        "grid_box": {"origin_model_xyz": list(grid.origin), "size_xyz": list(size), "corners": _corners(mapping, lo, hi)},
        "mode": mode, "seed": seed, "layout": layout, "maps_show_crop": 0, "entropy_unit": "bits",
        "max_entropy": math.log2(spec.n_base), "top1_accuracy": mean("top1"), "mean_l1": mean("l1"),
        "mean_entropy": mean("entropy"), "mean_mass_on_true": mean("mass_on_true"), "crops": crops,
    }


def _dense(scorer: "VoCoScorer", grid: _Grid, spec: "SampleSpec", seed: int,
           progress: Progress | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Mass on the true cells for crops on the lattice: (n_x, n_y) values and their summary."""
    import torch

    from ..pretext.voco import position_labels

    axis = _lattice(spec)
    centres = np.stack(np.meshgrid(axis, axis, indexing="ij"), axis=-1).reshape(-1, 2).astype(np.int64)  # (x, y), x slowest
    generator = torch.Generator().manual_seed(int(seed))
    # lattice crops in a seeded random order: a pass then holds crops spread over the grid, like training's draws
    order = torch.randperm(len(centres), generator=generator).numpy()
    shuffled, layout = _scores(scorer, grid.volume, centres[order], len(centres), generator, progress)
    scores = np.empty_like(shuffled)
    scores[order] = shuffled
    labels = position_labels(centres, spec.crop, spec.base, spec.grid)
    stats = [crop_stats(p, y) for p, y in zip(scores, labels)]
    values = np.array([s["mass_on_true"] for s in stats]).reshape(len(axis), len(axis))
    info = {"stride": max(1, spec.crop // 4), "lattice_grid_xy": [int(v) for v in axis], "crops": len(stats), "layout": layout,
            "mean_localisation": float(values.mean()), "top1_accuracy": float(np.mean([s["top1"] for s in stats])),
            "localisation": values.round(6).tolist()}
    return values, info


# ---------------------------------------------------------------------------------------------- picture

_HEAT = ((0.0, (0, 0, 0)), (0.35, (204, 0, 0)), (0.7, (255, 204, 0)), (1.0, (255, 255, 255)))
_BOX = (0, 230, 255)


def _heat(value: float) -> tuple[int, int, int]:
    """The heat colour scale (black, red, yellow, white) at ``value`` in [0, 1]."""
    stops = np.array([s for s, _ in _HEAT])
    colours = np.array([c for _, c in _HEAT], dtype=np.float64)
    v = float(np.clip(value, 0.0, 1.0))
    return tuple(int(round(np.interp(v, stops, colours[:, c]))) for c in range(3))  # type: ignore[return-value]


def _panel(image: np.ndarray, spec: "SampleSpec", weights: np.ndarray | None, title: str, crop: dict, scale: int,
           top: float, heat: np.ndarray | None = None) -> np.ndarray:
    """One axial panel of the grid (radiological: R on the left, A up): tinted cells, lines, numbers, crop box."""
    from PIL import Image, ImageDraw

    s, b, f = spec.size, spec.base, scale
    grey = np.clip(image[::-1, ::-1], 0.0, 1.0)  # rows: y (A up), columns: x (R on the left)
    rgb = np.repeat((grey * 255)[..., None], 3, axis=-1).astype(np.float64)
    tint = np.zeros((s, s, 3))
    amount = np.zeros((s, s, 1))
    if heat is not None:
        shown = heat[::-1, ::-1]
        tint = np.array([[_heat(v) for v in row] for row in shown], dtype=np.float64)
        amount = 0.6 * np.ones((s, s, 1))
    elif weights is not None:
        for k, w in enumerate(weights):
            ix, iy = divmod(k, spec.grid)
            rows, cols = slice(s - (iy + 1) * b, s - iy * b), slice(s - (ix + 1) * b, s - ix * b)
            tint[rows, cols] = _heat(w / top)
            amount[rows, cols] = 0.6 * min(1.0, w / top) ** 0.5
    rgb = (1 - amount) * rgb + amount * tint
    picture = Image.fromarray(rgb.astype(np.uint8)).resize((s * f, s * f), Image.NEAREST)
    draw = ImageDraw.Draw(picture)
    for k in range(1, spec.grid):
        draw.line([(k * b * f, 0), (k * b * f, s * f)], fill=(255, 255, 255), width=1)
        draw.line([(0, k * b * f), (s * f, k * b * f)], fill=(255, 255, 255), width=1)
    font = text_font(max(10, b * f // 6))
    if weights is not None:
        for k, w in enumerate(weights):
            ix, iy = divmod(k, spec.grid)
            at = ((s - ix * b - b / 2) * f, (s - iy * b - b / 2) * f)
            draw.text(at, f"{w:.2f}", fill=(255, 255, 255), font=font, anchor="mm", stroke_width=2, stroke_fill=(0, 0, 0))
    cx, cy = crop["center_grid_xy"]
    x0, y0 = cx - spec.crop // 2, cy - spec.crop // 2
    draw.rectangle([(s - x0 - spec.crop) * f, (s - y0 - spec.crop) * f, (s - x0) * f - 1, (s - y0) * f - 1], outline=_BOX, width=2)
    return np.concatenate([text_strip(s * f, title), np.asarray(picture)], axis=0)


def voco_picture(image: np.ndarray, spec: "SampleSpec", crop: dict[str, Any], localisation: np.ndarray | None = None) -> np.ndarray:
    """RGB picture of one crop on the mid-depth axial slice of the grid volume.

    Panels: predicted weights, true weights (cells tinted on one heat scale, numbers written in each
    cell, the crop in cyan), and with ``localisation`` the dense map; a line of numbers below.

    Args:
        image: the grid volume (depth, S, S) in model space (z, y, x), intensities after the bundle's window.
        spec: the sample sizes.
        crop: a crop record of the summary (``center_grid_xy``, ``predicted``, ``true`` ...).
        localisation: (n_x, n_y) lattice values of :func:`inspect_voco` with ``dense``.
    """
    s = spec.size
    scale = max(1, round(384 / s))
    middle = image[image.shape[0] // 2]
    p, y = np.asarray(crop["predicted"]), np.asarray(crop["true"])
    top = max(float(p.max()), float(y.max()), 1e-6)
    panels = [_panel(middle, spec, p, "predicted p (R left, A up)", crop, scale, top),
              _panel(middle, spec, y, "true overlap", crop, scale, top)]
    if localisation is not None:
        heat = _lattice_map(localisation, (1, s, s), (0, 0, 0), spec)[0]
        panels.append(_panel(middle, spec, None, "localisation (mass on true cells)", crop, scale, 1.0, heat))
    gap = np.zeros((panels[0].shape[0], 6, 3), dtype=np.uint8)
    row = np.concatenate([x for panel in panels for x in (panel, gap)][:-1], axis=1)
    line = (f"crop {crop['index']}: predicted cell {crop['predicted_cell']} (p {max(crop['predicted']):.2f}), "
            f"true cell(s) {', '.join(map(str, crop['true_cells']))} ({max(crop['true']):.2f}); top-1 {'yes' if crop['top1'] else 'no'}; "
            f"L1 {crop['l1']:.2f}; entropy {crop['entropy']:.2f} of {math.log2(spec.n_base):.2f} bits; chance 1/{spec.n_base}")
    return np.concatenate([row, text_strip(row.shape[1], line)], axis=0)
