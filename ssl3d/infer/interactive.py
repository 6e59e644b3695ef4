"""Click-to-segment sessions: keep a model warm, add positive/negative points, get a full-grid mask.

:class:`InteractiveSession` works with two kinds of bundle:

- an **interactive** bundle (:mod:`ssl3d.train.interactive`): the network sees the image and the clicks
  (positive and negative guidance channels, encoded as the bundle's ``provenance.guidance`` says) and
  predicts one structure. After its prediction, foreground components holding no positive click are
  dropped (when some component holds one), and the voxels within twice the guidance sigma of a negative
  click are set to background, so every negative click visibly removes what it lies on;
- a **segmentation** bundle: a positive click adds the structure under it (the class the model predicts
  at the click, and that class's connected component through the click); a negative click removes the
  connected component of the current mask it lies in.

After the first click the session works on a region of interest (ROI) in model space: a window of the
bundle's training patch around the click, extended to take in later clicks and grown by half a window on
every side the structure touches (at most twice per click, and to at most ``max_roi`` windows per axis),
so the latency depends on the structure, not on the volume. Only the input-grid voxels under the changed
ROI are resampled (nearest neighbour, exactly as :meth:`~ssl3d.data.preprocess.GridMapping.to_input_grid`).

One session state segments one structure: call :meth:`InteractiveSession.reset` before the next one.
``last_changed`` is the half-open input-grid box (k0, k1, j0, j1, i0, i1) of the voxels the last
``add_point``/``undo``/``reset`` changed, None when nothing changed.

Example::

    session = InteractiveSession("runs/click/bundle")          # loads and warms the model
    session.set_volume(read_volume("ct.nii.gz"))
    mask = session.add_point((12.5, -40.0, 101.0))             # RAS mm -> uint8 Volume on the CT's grid
    session.last_changed                                       # (k0, k1, j0, j1, i0, i1)
    mask = session.add_point((15.0, -38.0, 99.0), positive=False)
    mask = session.undo()                                      # the previous mask, exactly
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..bundle import Bundle, as_bundle
from ..errors import BundleError, InputError
from ..io import Volume
from .windows import click_window

__all__ = ["InteractiveSession", "points_session", "segment_with_points"]

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # model (z, y, x) half-open ranges
_GROW_STEPS = 3  # at most this many predictions per click while the ROI grows (latency bound)


@dataclass
class _Step:
    """What one add_point changed, to undo it exactly."""

    model_box: Box
    model_before: np.ndarray
    input_box: tuple[slice, slice, slice]
    input_before: np.ndarray
    clicks: list
    roi: Box | None
    label: int | None


@dataclass
class _Guidance:
    encoding: str = "gaussian"
    sigma: list = field(default_factory=lambda: [2.0, 2.0, 2.0])  # model voxels (D, H, W)


class InteractiveSession:
    """A warm model and one volume's clicks (module docstring).

    Args:
        bundle: an ``interactive`` or ``segmentation`` bundle (path or loaded).
        device: ``auto`` (CUDA when present and its free memory covers the clicks' estimate, see
            :func:`~ssl3d.infer.memory.device_for_bundle`; ``device_choice.message`` says why not),
            ``cpu``, ``cuda[:N]`` or a torch.device (used as is).
        warmup: run the network once at load so the first click is as fast as the next.
        max_roi: the ROI grows to at most this many windows per axis.

    Raises:
        BundleError: a pretext bundle, or an interactive bundle without 3 input channels.
    """

    def __init__(self, bundle: Bundle | str, device: str | torch.device = "auto", warmup: bool = True, max_roi: int = 3) -> None:
        from ..data.preprocess import PreprocessConfig
        from .memory import device_for_bundle
        from .segment import load_model

        self.bundle = as_bundle(bundle)
        if self.bundle.task not in ("interactive", "segmentation"):
            raise BundleError(f"{self.bundle.path}: task is {self.bundle.task!r}; clicks need an 'interactive' or 'segmentation' bundle.")
        if max_roi < 1:
            raise InputError(f"max_roi must be >= 1, got {max_roi}.")
        self.interactive = self.bundle.task == "interactive"
        self.device_choice = None if isinstance(device, torch.device) else device_for_bundle(self.bundle, device, clicks=True, max_roi=max_roi)
        self.device = device if self.device_choice is None else torch.device(self.device_choice.device)
        self.guidance = _read_guidance(self.bundle) if self.interactive else None
        self.preprocessing = PreprocessConfig(**self.bundle.meta["preprocessing"])
        self.window, self.multiple, self.fixed = click_window(self.bundle)
        self.max_roi = max_roi
        self.model = load_model(self.bundle, self.device)
        self.last_changed: tuple[int, int, int, int, int, int] | None = None
        self.last_label: int | None = None
        self._volume: Volume | None = None
        if warmup:
            self._warm_up()

    # -------------------------------------------------------------------------------------- public

    def set_volume(self, volume: Volume) -> None:
        """Preprocess ``volume`` into model space and start with an empty mask (clears clicks and undo)."""
        from ..data.preprocess import preprocess

        if not isinstance(volume, Volume):
            raise InputError(f"set_volume needs an ssl3d.io.Volume, got {type(volume).__name__}.")
        image, mapping = preprocess(volume, self.preprocessing)
        self._volume = volume
        self._image = image.to(self.device)
        self._mapping = mapping
        self._to_model = np.linalg.inv(np.asarray(mapping.model_to_input, dtype=np.float64))
        self._model_mask = np.zeros(image.shape[2:], dtype=bool)
        self._mask = np.zeros(volume.shape, dtype=np.uint8)
        self._clear()

    def add_point(self, ras: Sequence[float], positive: bool = True) -> Volume:
        """Add a click at RAS millimetres ``ras``; returns the whole mask (uint8 0/1) on the input's grid.

        Raises:
            InputError: no volume set, or the point lies outside the volume.
        """
        volume = self._need_volume()
        zyx = self._model_voxel(ras)
        before = (list(self._clicks), self._roi, self.last_label)
        self._clicks.append((zyx, bool(positive), tuple(float(v) for v in ras)))
        if self.interactive:
            box, values = self._interactive_update()
        else:
            box, values = self._segmentation_update(zyx, bool(positive))
        self._commit(box, values, *before)
        return volume.like(self._mask.copy())

    def undo(self) -> Volume:
        """Take back the last click: the mask, the clicks and the ROI are exactly as before it."""
        volume = self._need_volume()
        if not self._history:
            self.last_changed = None
            return volume.like(self._mask.copy())
        step = self._history.pop()
        current = self._mask[step.input_box]
        self.last_changed = _changed_box(current != step.input_before, step.input_box)
        self._mask[step.input_box] = step.input_before
        self._model_mask[_slices(step.model_box)] = step.model_before
        self._clicks, self._roi, self.last_label = step.clicks, step.roi, step.label
        return volume.like(self._mask.copy())

    def reset(self) -> None:
        """Forget every click and empty the mask (the volume stays); ``last_changed`` covers what was set."""
        self._need_volume()
        self.last_changed = _changed_box(self._mask != 0, (slice(None),) * 3)
        self._mask[...] = 0
        self._model_mask[...] = False
        self._clear()

    @property
    def mask(self) -> Volume:
        """The current mask as a read-only view (no copy) on the input's grid."""
        volume = self._need_volume()
        view = self._mask.view()
        view.flags.writeable = False
        return Volume(view, volume.ijk_to_ras.copy())

    @property
    def clicks(self) -> list[tuple[tuple[float, float, float], bool]]:
        """The clicks so far: (RAS point, positive)."""
        return [(ras, positive) for _, positive, ras in self._clicks]

    @property
    def label_name(self) -> str | None:
        """Segmentation bundles: the name of the class the last positive click picked."""
        return self.bundle.labels.get(self.last_label, (None,))[0] if self.last_label else None

    # -------------------------------------------------------------------------------------- model

    def _warm_up(self) -> None:
        channels = 3 if self.interactive else int(self.bundle.network["kwargs"].get("in_channels", 1))
        with torch.no_grad():
            for _ in range(2 if self.device.type == "cuda" else 1):
                self._forward(torch.zeros((1, channels, *self.window), device=self.device))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C, D, H, W) -> (C_out, D, H, W) logits; pads to the network's multiple (or slides its fixed window)."""
        from ..nets.builders import main_output
        from ..train.segmentation import pad_to_multiple

        with torch.no_grad(), torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            if self.fixed:
                from monai.inferers import sliding_window_inference

                out = sliding_window_inference(x, self.window, 1, lambda t: main_output(self.model(t)), overlap=0.25, mode="gaussian")
                return out[0].float()
            padded, crop = pad_to_multiple(x, self.multiple)
            return main_output(self.model(padded))[(0, slice(None), *crop)].float()

    def _predict(self, roi: Box) -> np.ndarray:
        """Argmax labels (D, H, W) of the ROI; interactive bundles get the clicks' guidance channels."""
        from ..train.interactive import encode_clicks

        image = self._image[(slice(None), slice(None), *_slices(roi))]
        if self.interactive:
            lo = [a for a, _ in roi]
            clicks = [(z - lo[0], y - lo[1], x - lo[2], positive) for (z, y, x), positive, _ in self._clicks]
            guidance = encode_clicks(clicks, image.shape[2:], self.guidance.sigma, self.guidance.encoding, self.device)
            image = torch.cat([image, guidance[None]], dim=1)
        return self._forward(image).argmax(0).cpu().numpy()

    # -------------------------------------------------------------------------------------- updates

    def _interactive_update(self) -> tuple[Box, np.ndarray]:
        roi = self._roi_with(self._clicks[-1][0])
        for attempt in range(_GROW_STEPS):
            mask = self._apply_click_rules(self._predict(roi) == 1, roi)
            grown = self._grow(roi, mask)
            if grown == roi or attempt == _GROW_STEPS - 1:
                break
            roi = grown
        self._roi = roi
        return roi, mask

    def _apply_click_rules(self, mask: np.ndarray, roi: Box) -> np.ndarray:
        """Keep the components that hold a positive click (if any does); clear a ball at negative clicks."""
        from scipy.ndimage import label

        local = [(tuple(c - a for c, (a, _) in zip(zyx, roi)), positive) for zyx, positive, _ in self._clicks]
        local = [(p, positive) for p, positive in local if all(0 <= v < n for v, n in zip(p, mask.shape))]
        radius = 2.0 * np.asarray(self.guidance.sigma)
        for zyx, positive in local:
            if not positive:
                mask &= ~_ball(mask.shape, zyx, radius)
        components, _ = label(mask)
        keep = {int(components[p]) for p, positive in local if positive} - {0}
        return np.isin(components, sorted(keep)) if keep else mask

    def _segmentation_update(self, zyx: tuple[int, int, int], positive: bool) -> tuple[Box, np.ndarray]:
        if positive:
            return self._add_structure(zyx)
        return self._remove_component(zyx)

    def _add_structure(self, zyx: tuple[int, int, int]) -> tuple[Box, np.ndarray]:
        from scipy.ndimage import label

        roi = self._fresh_roi(zyx)
        for attempt in range(_GROW_STEPS):
            labels = self._predict(roi)
            local = tuple(c - a for c, (a, _) in zip(zyx, roi))
            value = int(labels[local])
            if value == 0:  # background under the click: nothing to add
                box = tuple((c, c + 1) for c in zyx)
                return box, self._model_mask[_slices(box)].copy()  # type: ignore[return-value]
            components, _ = label(labels == value)
            structure = components == components[local]
            grown = self._grow(roi, structure)
            if grown == roi or attempt == _GROW_STEPS - 1:
                break
            roi = grown
        self.last_label = value
        return roi, self._model_mask[_slices(roi)] | structure

    def _remove_component(self, zyx: tuple[int, int, int]) -> tuple[Box, np.ndarray]:
        from scipy.ndimage import find_objects, label

        if not self._model_mask[zyx]:
            box = tuple((c, c + 1) for c in zyx)
            return box, self._model_mask[_slices(box)].copy()  # type: ignore[return-value]
        components, _ = label(self._model_mask)
        n = int(components[zyx])
        found = find_objects(components, max_label=n)[n - 1]
        box = tuple((s.start, s.stop) for s in found)
        region = _slices(box)  # type: ignore[arg-type]
        return box, self._model_mask[region] & (components[region] != n)  # type: ignore[return-value]

    def _commit(self, box: Box, values: np.ndarray, clicks: list, roi: Box | None, label: int | None) -> None:
        region = _slices(box)
        model_before = self._model_mask[region].copy()
        self._model_mask[region] = values
        input_box = self._input_box(box)
        new = self._sample_nearest(input_box)
        before = self._mask[input_box].copy()
        self._mask[input_box] = new
        self.last_changed = _changed_box(new != before, input_box)
        self._history.append(_Step(box, model_before, input_box, before, clicks, roi, label))

    # -------------------------------------------------------------------------------------- geometry

    def _model_voxel(self, ras: Sequence[float]) -> tuple[int, int, int]:
        """The model (z, y, x) voxel of a RAS point; InputError when it lies outside the input volume."""
        point = np.asarray(ras, dtype=np.float64).ravel()
        if point.shape != (3,) or not np.all(np.isfinite(point)):
            raise InputError(f"a point must be 3 finite RAS coordinates (mm), got {ras!r}.")
        ijk = self._volume.ras_to_index(point)  # type: ignore[union-attr]
        size = np.asarray(self._volume.shape[::-1])  # type: ignore[union-attr]
        if np.any(ijk < -0.5) or np.any(ijk >= size - 0.5):
            raise InputError(
                f"point R,A,S = {', '.join(f'{v:g}' for v in point)} lies outside the volume: voxel i,j,k = "
                f"{', '.join(f'{v:.1f}' for v in ijk)}, the volume has {' x '.join(str(int(n)) for n in size)} voxels."
            )
        xyz = self._to_model[:3, :3] @ ijk + self._to_model[:3, 3]
        shape = self._model_mask.shape
        return tuple(int(np.clip(np.floor(v + 0.5), 0, n - 1)) for v, n in zip(xyz[::-1], shape))  # type: ignore[return-value]

    def _fresh_roi(self, zyx: Sequence[int]) -> Box:
        """A window centred on the voxel, shifted to lie inside the model grid."""
        box = []
        for c, w, n in zip(zyx, self.window, self._model_mask.shape):
            lo = int(np.clip(c - w // 2, 0, max(0, n - w)))
            box.append((lo, min(n, lo + w)))
        return tuple(box)  # type: ignore[return-value]

    def _roi_with(self, zyx: Sequence[int]) -> Box:
        """The current ROI extended to hold a quarter window around the new click (a fresh one at first)."""
        if self._roi is None:
            return self._fresh_roi(zyx)
        box, near = [], []
        for (lo, hi), c, w, n in zip(self._roi, zyx, self.window, self._model_mask.shape):
            a, b = max(0, c - w // 4), min(n, c + w // 4 + 1)
            box.append((min(lo, a), max(hi, b)))
            near.append((a, b))
        return self._capped(box, near)

    def _grow(self, roi: Box, mask: np.ndarray) -> Box:
        """Move every ROI side the mask touches (and that is not the volume's border) out by half a window."""
        box = []
        for axis, ((lo, hi), w, n) in enumerate(zip(roi, self.window, self._model_mask.shape)):
            first, last = np.take(mask, 0, axis=axis).any(), np.take(mask, -1, axis=axis).any()
            box.append((max(0, lo - w // 2) if first else lo, min(n, hi + w // 2) if last else hi))
        return self._capped(box, roi)

    def _capped(self, box: Sequence[tuple[int, int]], keep: Sequence[tuple[int, int]]) -> Box:
        """Limit each side of ``box`` to ``max_roi`` windows, keeping the range ``keep`` inside it."""
        out = []
        for (lo, hi), (a, b), w in zip(box, keep, self.window):
            limit = self.max_roi * w
            if hi - lo > limit:
                lo = max(lo, b - limit)
                hi = lo + limit
            out.append((int(lo), int(hi)))
        return tuple(out)  # type: ignore[return-value]

    def _input_box(self, box: Box) -> tuple[slice, slice, slice]:
        """Input (k, j, i) slices holding every input voxel whose nearest model voxel lies in ``box``."""
        (z0, z1), (y0, y1), (x0, x1) = box
        corners = np.array([[x, y, z, 1.0] for x in (x0 - 0.5, x1 - 0.5) for y in (y0 - 0.5, y1 - 0.5) for z in (z0 - 0.5, z1 - 0.5)])
        ijk = (corners @ np.asarray(self._mapping.model_to_input, dtype=np.float64).T)[:, :3]
        lo = np.floor(ijk.min(axis=0)) - 1
        hi = np.ceil(ijk.max(axis=0)) + 2
        size = self._volume.shape[::-1]  # type: ignore[union-attr]
        i, j, k = (slice(int(max(0, a)), int(min(n, b))) for a, b, n in zip(lo, hi, size))
        return k, j, i

    def _sample_nearest(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        """The model mask at the input voxels of ``box`` (nearest neighbour, round half up; 0 outside).

        Each model coordinate is ``row . (i, j, k, 1)``; when every row has one non-zero (the usual
        axis-aligned CT, any flips or permutation) the lookup is separable and costs one index per axis.
        """
        k, j, i = (np.arange(s.start, s.stop, dtype=np.float64) for s in box)
        grids = (i[None, None, :], j[None, :, None], k[:, None, None])
        rows = self._to_model[:3]
        separable = all(np.count_nonzero(row[:3]) == 1 for row in rows)
        index, inside = [], np.ones((len(k), len(j), len(i)), dtype=bool)
        for row, n in zip(rows, self._model_mask.shape[::-1]):  # model x, y, z
            if separable:
                axis = int(np.flatnonzero(row[:3])[0])
                v = row[axis] * grids[axis] + row[3]
            else:
                v = row[0] * grids[0] + row[1] * grids[1] + row[2] * grids[2] + row[3]
            inside = inside & (v > -0.5) & (v < n - 0.5)
            index.append(np.clip(np.floor(v + 0.5).astype(np.int64), 0, n - 1))
        x, y, z = index
        return (self._model_mask[z, y, x] & inside).astype(np.uint8)

    # -------------------------------------------------------------------------------------- state

    def _need_volume(self) -> Volume:
        if self._volume is None:
            raise InputError("no volume: call set_volume(volume) before adding points.")
        return self._volume

    def _clear(self) -> None:
        self._clicks: list = []
        self._roi: Box | None = None
        self._history: list[_Step] = []
        self.last_label = None


def segment_with_points(bundle: Bundle | str, volume: Volume, points: Sequence[Sequence[float]],
                        negatives: Sequence[Sequence[float]] = (), **options: Any) -> Volume:
    """The mask of ``volume`` (uint8, on its grid) after the positive ``points``, then the ``negatives``.

    ``options``: ``device``, ``ijk`` and ``log`` of :func:`points_session`.

    Raises:
        InputError: no positive point, or a point outside the volume.
        BundleError: the bundle is neither interactive nor segmentation.
    """
    session = points_session(bundle, volume, points, negatives, **options)
    return session.mask.like(session.mask.array.copy())


def points_session(
    bundle: Bundle | str,
    volume: Volume,
    points: Sequence[Sequence[float]],
    negatives: Sequence[Sequence[float]] = (),
    device: str | torch.device = "auto",
    ijk: bool = False,
    log: Callable[[str], None] | None = None,
) -> "InteractiveSession":
    """The :class:`InteractiveSession` after the positive ``points``, then the ``negatives``: its ``mask``
    and ``last_label`` (the segmentation bundle's class of the structure found; None when none was).

    Points are RAS millimetres, or voxel indices (i, j, k) as Slicer shows them with ``ijk=True``. ``log``
    gets the device choice's note (e.g. a fallback to the CPU) when there is one.

    Raises:
        InputError: no positive point, or a point outside the volume.
        BundleError: the bundle is neither interactive nor segmentation.
    """
    if not points:
        raise InputError("segmenting with points needs at least one positive point (--point).")
    session = InteractiveSession(bundle, device, warmup=False)
    if log is not None and session.device_choice is not None and session.device_choice.message:
        log(session.device_choice.message)
    session.set_volume(volume)
    for point, positive in [(p, True) for p in points] + [(p, False) for p in negatives]:
        if ijk:
            index = np.asarray(point, dtype=np.float64).ravel()
            if index.shape != (3,):
                raise InputError(f"an --ijk point must be 3 voxel indices I,J,K, got {point!r}.")
            point = (volume.ijk_to_ras @ np.append(index, 1.0))[:3]
        session.add_point(point, positive)
    return session


# ---------------------------------------------------------------------------------------------- helpers


def _read_guidance(bundle: Bundle) -> _Guidance:
    record = bundle.meta.get("provenance", {}).get("guidance")
    kwargs = bundle.network.get("kwargs", {})
    if kwargs.get("in_channels") != 3 or kwargs.get("out_channels") != 2:
        raise BundleError(f"{bundle.path}: an interactive network needs in_channels 3 and out_channels 2, got {kwargs.get('in_channels')} and {kwargs.get('out_channels')}.")
    if not isinstance(record, dict) or record.get("encoding") not in ("gaussian", "disk") or "sigma_voxels" not in record:
        raise BundleError(f"{bundle.path}: an interactive bundle needs provenance.guidance with 'encoding' (gaussian|disk) and 'sigma_voxels'.")
    return _Guidance(record["encoding"], [float(s) for s in record["sigma_voxels"]])


def _slices(box: Box) -> tuple[slice, slice, slice]:
    return tuple(slice(a, b) for a, b in box)  # type: ignore[return-value]


def _ball(shape: Sequence[int], centre: Sequence[int], radius: np.ndarray) -> np.ndarray:
    """Boolean ellipsoid of per-axis ``radius`` (voxels) around ``centre`` on a (D, H, W) grid."""
    axes = [((np.arange(n) - c) / max(r, 0.5)) ** 2 for n, c, r in zip(shape, centre, radius)]
    return (axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :]) <= 1.0


def _changed_box(changed: np.ndarray, box: tuple[slice, ...]) -> tuple[int, int, int, int, int, int] | None:
    """Half-open (k0, k1, j0, j1, i0, i1) of the True voxels of ``changed`` (placed at ``box``); None if none."""
    if not changed.any():
        return None
    out = []
    for axis, s in enumerate(box):
        hit = np.flatnonzero(changed.any(axis=tuple(a for a in range(3) if a != axis)))
        start = s.start or 0
        out += [start + int(hit[0]), start + int(hit[-1]) + 1]
    return tuple(out)  # type: ignore[return-value]
