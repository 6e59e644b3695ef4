"""Volume -> network tensor (N, C, D, H, W), with the exact mapping back to the input grid.

The steps, in order, each optional (a :class:`PreprocessConfig` says which):

0. cast on load (``load_dtype``: VoCo v1's ``LoadImaged(dtype=int16)``), 1. orientation (MONAI ``Orientation``, e.g. "RAS"), 2. spacing resample (MONAI ``Spacing``),
3. intensity (``window:LO,HI[,A,B]``, ``zscore``, ``percentile:P0,P1``), 4. foreground crop,
5. pad to a minimum size, 6. resize to a fixed size (MONAI ``Resize``).

Every step is an affine map between voxel grids; :class:`GridMapping` composes them into one 4x4
matrix from model voxel indices to input voxel indices, so any model-space map is pasted back onto the
input grid exactly (:meth:`GridMapping.to_input_grid`).

Axes: a :class:`~ssl3d.io.Volume` array is (k, j, i); MONAI gets channel-first (C, x, y, z) arrays with
the RAS affine; the network gets (N, C, D, H, W) = (z, y, x). The two transpositions live in
:func:`_to_monai` and :func:`_to_network` only.

Example::

    spec = PreprocessConfig(orientation="RAS", spacing=(1.5, 1.5, 1.5), intensity="window:-175,250")
    x, mapping = preprocess(volume, spec)   # x: (1, 1, D, H, W) float32
    labels = mapping.to_input_grid(x[0].argmax(0), label=True)   # a Volume on volume's grid
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError
from ..io import Volume

__all__ = ["PreprocessConfig", "GridMapping", "preprocess", "apply_intensity", "parse_intensity", "pad_array",
           "PAD_MODES", "LOAD_DTYPES"]

PAD_MODES = ("minimum", "zero", "reflect")
LOAD_DTYPES = (None, "int16")


@dataclass
class PreprocessConfig:
    """What preprocessing does; every field that changes numbers. Sizes are (x, y, z) in RAS model space."""

    orientation: str | None = "RAS"
    spacing: tuple[float, float, float] | None = None
    intensity: str = "window:-175,250"
    foreground_threshold: float | None = None  # crop to voxels > threshold (after intensity)
    pad_to: tuple[int, int, int] | None = None
    resize: tuple[int, int, int] | None = None
    resize_mode: str = "trilinear"
    align_corners: bool = True
    dtype: str = "float32"  # how the dataset cache stores images (float32|float16); tensors are float32
    # what pad_to fills with (PAD_MODES): "minimum" (ssl3d: the volume's minimum, air after a CT window),
    # "zero" (MONAI SpatialPad's constant 0, the official VoCo), "reflect" (numpy, PyMIC's LUNA preprocessing)
    pad_mode: str = "minimum"
    load_dtype: str | None = None  # LOAD_DTYPES: "int16" casts the image as read, as VoCo v1's LoadImaged(dtype=int16)

    def to_dict(self) -> dict:
        return asdict(self)


def parse_intensity(spec: str) -> tuple[str, tuple[float, ...]]:
    """``"window:-175,250"`` -> ("window", (-175.0, 250.0, 0.0, 1.0)); raises ConfigError naming the value."""
    name, _, args = spec.partition(":")
    try:
        values = tuple(float(v) for v in args.split(",")) if args else ()
    except ValueError:
        raise ConfigError(f"intensity {spec!r}: arguments must be numbers.") from None
    if name == "window" and len(values) in (2, 4) and values[1] > values[0]:
        return name, values if len(values) == 4 else values + (0.0, 1.0)
    if name == "percentile" and len(values) == 2 and 0 <= values[0] < values[1] <= 100:
        return name, values
    if name in ("zscore", "none") and not values:
        return name, values
    raise ConfigError(f"intensity {spec!r} is not valid; use 'window:LO,HI[,A,B]', 'zscore', 'percentile:P0,P1' or 'none'.")


def apply_intensity(array: np.ndarray, spec: str) -> np.ndarray:
    """Map intensities as ``spec`` says (float32 out); window and percentile clip to the output range."""
    name, values = parse_intensity(spec)
    array = array.astype(np.float32, copy=False)
    if name == "window":
        lo, hi, a, b = values
        return (np.clip(array, lo, hi) - lo) / (hi - lo) * (b - a) + a
    if name == "percentile":
        lo, hi = np.percentile(array, values)
        return np.clip((array - lo) / max(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)
    if name == "zscore":
        return ((array - array.mean()) / max(float(array.std()), 1e-6)).astype(np.float32)
    return array.copy()


@dataclass
class GridMapping:
    """Model grid <-> input grid. ``model_to_input`` maps (x, y, z, 1) model indices to (i, j, k, 1)."""

    input_shape: tuple[int, int, int]  # (k, j, i)
    input_ijk_to_ras: np.ndarray
    model_shape: tuple[int, int, int]  # (D, H, W) = (z, y, x)
    model_to_input: np.ndarray = field(default_factory=lambda: np.eye(4))

    @property
    def model_affine(self) -> np.ndarray:
        """Model index (x, y, z) -> RAS; ``Volume(model_array_zyx, mapping.model_affine)`` is a valid Volume."""
        return self.input_ijk_to_ras @ self.model_to_input

    def model_volume(self, array: np.ndarray) -> Volume:
        """Wrap a (D, H, W) model-space array as a Volume with its true geometry."""
        return Volume(np.asarray(array), self.model_affine)

    def to_dict(self) -> dict:
        return {
            "input_shape": list(self.input_shape),
            "input_ijk_to_ras": np.asarray(self.input_ijk_to_ras).tolist(),
            "model_shape": list(self.model_shape),
            "model_to_input": np.asarray(self.model_to_input).tolist(),
        }

    @staticmethod
    def from_dict(data: dict) -> "GridMapping":
        return GridMapping(
            tuple(data["input_shape"]), np.asarray(data["input_ijk_to_ras"]), tuple(data["model_shape"]), np.asarray(data["model_to_input"])
        )

    def to_input_grid(self, prediction: Any, label: bool | None = None, fill: float = 0.0) -> Volume | list[Volume]:
        """Paste a model-space map back onto the input grid exactly (input shape and geometry).

        Args:
            prediction: (D, H, W) array/tensor -> one Volume; (C, D, H, W) -> a list of C Volumes.
            label: nearest-neighbour sampling; default: True for integer/bool arrays.
            fill: value outside the model grid (e.g. voxels removed by the foreground crop).
        """
        import torch

        pred = torch.as_tensor(prediction).detach().cpu()
        if pred.shape[-3:] != tuple(self.model_shape):
            raise InputError(f"prediction shape {tuple(pred.shape)} does not end with the model shape {tuple(self.model_shape)}.")
        if label is None:
            label = not torch.is_floating_point(pred)
        squeeze = pred.ndim == 3
        pred = pred[None] if squeeze else pred
        out = _resample_to_input(pred, self, label, fill)
        if squeeze:
            return Volume(out[0], self.input_ijk_to_ras.copy())
        return [Volume(channel, self.input_ijk_to_ras.copy()) for channel in out]


def _resample_to_input(pred, mapping: GridMapping, label: bool, fill: float) -> np.ndarray:
    """Sample (C, D, H, W) model maps at every input voxel, slab by slab along k to bound memory."""
    import torch
    import torch.nn.functional as F

    m = np.asarray(mapping.model_to_input, dtype=np.float64)
    exact = _integer_paste(pred, m, mapping, fill)
    if exact is not None:
        return exact
    separable = _separable_paste(pred, m, mapping, label, fill)
    if separable is not None:
        return separable
    inv = np.linalg.inv(m)
    kk, jj, ii = mapping.input_shape
    d, h, w = mapping.model_shape
    dtype = pred.dtype
    src = pred.to(torch.float32)[None]  # (1, C, D, H, W)
    out = np.empty((pred.shape[0], kk, jj, ii), dtype=pred.numpy().dtype)
    slab = max(1, int(8_000_000 // max(1, jj * ii)))
    j_idx, i_idx = np.meshgrid(np.arange(jj), np.arange(ii), indexing="ij")
    for k0 in range(0, kk, slab):
        ks = np.arange(k0, min(kk, k0 + slab))
        ijk = np.stack(np.broadcast_arrays(i_idx[None], j_idx[None], ks[:, None, None]), axis=-1).astype(np.float64)
        xyz = ijk @ inv[:3, :3].T + inv[:3, 3]
        # grid_sample wants (x, y, z) normalised to [-1, 1] over (W, H, D) with align_corners=True
        norm = xyz / np.array([max(w - 1, 1), max(h - 1, 1), max(d - 1, 1)]) * 2 - 1
        inside = np.all((xyz > -0.5) & (xyz < np.array([w, h, d]) - 0.5), axis=-1)
        if label:
            # nearest with round-half-up, matching the exact paste
            norm = np.floor(xyz + 0.5) / np.array([max(w - 1, 1), max(h - 1, 1), max(d - 1, 1)]) * 2 - 1
        grid = torch.from_numpy(norm.astype(np.float32))[None]
        sampled = F.grid_sample(src, grid, mode="nearest" if label else "bilinear", padding_mode="border", align_corners=True)[0]
        values = sampled.to(dtype).numpy()
        values[:, ~inside] = fill
        out[:, ks[0] : ks[-1] + 1] = values
    return out


def _separable_paste(pred, m: np.ndarray, mapping: GridMapping, label: bool, fill: float) -> np.ndarray | None:
    """Axis-aligned grids (a scaled, permuted or flipped model grid: the usual resampling to a spacing).

    Trilinear and nearest sampling are then separable: each input axis reads one model axis, so three 1D
    gathers replace a 3D ``grid_sample`` over every input voxel. Same values as the generic path (border
    clamping, round-half-up for labels). numpy's ``take`` here: torch's ``index_select`` was 80x slower on uint8.
    """
    import torch

    inv = np.linalg.inv(m)
    lin = inv[:3, :3]
    nonzero = np.abs(lin) > 1e-9 * np.abs(lin).max()
    if not ((nonzero.sum(axis=0) == 1).all() and (nonzero.sum(axis=1) == 1).all()):
        return None  # oblique: the generic path
    model_size = mapping.model_shape[::-1]  # (w, h, d) for model axes x, y, z
    input_size = mapping.input_shape[::-1]  # (i, j, k)
    dtype = pred.numpy().dtype
    data = pred.numpy() if label else pred.to(torch.float32).numpy()  # (C, D, H, W): model axis b is dim 3 - b
    inside, source_of = {}, {}
    for b in range(3):
        a = int(np.argmax(nonzero[b]))  # the input axis that model axis b feeds
        pos = lin[b, a] * np.arange(input_size[a], dtype=np.float64) + inv[b, 3]
        n = model_size[b]
        inside[a] = (pos > -0.5) & (pos < n - 0.5)
        source_of[a] = b
        if label:
            data = np.take(data, np.clip(np.floor(pos + 0.5), 0, n - 1).astype(np.intp), axis=3 - b)
        else:  # grid_sample's border padding: clamp, then linear between the two neighbours
            clamped = np.clip(pos, 0, n - 1)
            lo = np.floor(clamped).astype(np.intp)
            shape = [1, 1, 1, 1]
            shape[3 - b] = -1
            weight = (clamped - lo).astype(np.float32).reshape(shape)
            low = np.take(data, lo, axis=3 - b)
            high = np.take(data, np.minimum(lo + 1, n - 1), axis=3 - b)
            high -= low
            high *= weight
            low += high
            data = low
            del low, high  # peak memory: the interpolated array alone is carried on
    # dims now hold input axes in model order; (C, k, j, i) puts input axis a at dim 3 - a
    out = np.ascontiguousarray(np.transpose(data, (0, *[3 - source_of[a] for a in (2, 1, 0)])), dtype=dtype)
    for a in range(3):
        if not inside[a].all():
            np.moveaxis(out, 3 - a, 1)[:, ~inside[a]] = fill
    return out


def _integer_paste(pred, m: np.ndarray, mapping: GridMapping, fill: float) -> np.ndarray | None:
    """Exact path when the model grid is a permuted/flipped, integer-shifted part of the input grid."""
    lin = m[:3, :3]
    if not (np.allclose(lin, np.round(lin)) and np.allclose(m[:3, 3], np.round(m[:3, 3]))):
        return None
    lin = np.round(lin).astype(int)
    if sorted(np.abs(lin).sum(axis=0).tolist()) != [1, 1, 1] or sorted(np.abs(lin).sum(axis=1).tolist()) != [1, 1, 1]:
        return None
    arr = pred.numpy()  # (C, z, y, x)
    arr = np.transpose(arr, (0, 3, 2, 1))  # (C, x, y, z): model index order
    # for each input axis a (i, j, k): which model axis b feeds it and with which sign
    for_input = []
    for a in range(3):
        b = int(np.nonzero(lin[a])[0][0])
        for_input.append((b, int(lin[a, b]), int(round(m[a, 3]))))
    arr = np.transpose(arr, (0, *[1 + b for b, _, _ in for_input]))  # (C, i-ish, j-ish, k-ish)
    sl_out, sl_in = [], []
    in_size = mapping.input_shape[::-1]  # (i, j, k)
    for a, (b, sign, shift) in enumerate(for_input):
        n = arr.shape[1 + a]
        if sign < 0:
            arr = np.flip(arr, axis=1 + a)
            shift = shift - (n - 1)  # input index of the first element after the flip
        lo, hi = max(0, shift), min(in_size[a], shift + n)
        if hi <= lo:
            return np.full((pred.shape[0], *mapping.input_shape), fill, dtype=arr.dtype)
        sl_out.append(slice(lo, hi))
        sl_in.append(slice(lo - shift, hi - shift))
    out = np.full((pred.shape[0], *in_size), fill, dtype=arr.dtype)
    out[(slice(None), *sl_out)] = arr[(slice(None), *sl_in)]
    return np.ascontiguousarray(np.transpose(out, (0, 3, 2, 1)))


# ---------------------------------------------------------------------------------------------- forward


def _to_monai(volume: Volume):
    """(k, j, i) Volume -> MONAI MetaTensor (1, x, y, z) with its RAS affine (the one transposition in)."""
    import torch
    from monai.data import MetaTensor

    array = np.ascontiguousarray(np.transpose(volume.array, (2, 1, 0)))[None]
    return MetaTensor(torch.from_numpy(array.astype(np.float32, copy=False)), affine=torch.as_tensor(volume.ijk_to_ras))


def _to_network(array_xyz: np.ndarray):
    """(C, x, y, z) -> (1, C, D, H, W) = (z, y, x) network tensor (the one transposition out)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.transpose(array_xyz, (0, 3, 2, 1))))[None]


def _affine(tensor) -> np.ndarray:
    return np.asarray(tensor.affine, dtype=np.float64)


def preprocess(volume: Volume, config: PreprocessConfig, label: Volume | None = None):
    """Preprocess ``volume`` (and optionally its label map, on the same grid) into model space.

    Returns:
        (tensor, mapping) or (tensor, label_tensor, mapping) when ``label`` is given; tensors are
        (1, 1, D, H, W); the image float32, the label uint8 (nearest-neighbour throughout).
    """
    if label is not None and not volume.same_grid(label):
        raise InputError(f"label grid {label.shape} does not match the image grid {volume.shape}.")
    check_choices(config)
    if config.load_dtype is not None:  # numpy's cast, as MONAI LoadImage's: fractions truncated toward 0
        volume = Volume(volume.array.astype(config.load_dtype), volume.ijk_to_ras)
    image = _to_monai(volume)
    lab = _to_monai(label) if label is not None else None
    step = np.eye(4)
    image, lab, step = _orient_and_resample(image, lab, config, step)
    array = apply_intensity(np.asarray(image[0]), config.intensity)[None]
    lab_array = np.asarray(lab[0])[None] if lab is not None else None
    array, lab_array, step = _crop_and_pad(array, lab_array, config, step)
    array, lab_array, step = _resize(array, lab_array, config, step)
    mapping = GridMapping(volume.shape, volume.ijk_to_ras.copy(), tuple(array.shape[1:][::-1]), step)
    # config.dtype is the cache's storage dtype; networks always get float32
    tensor = _to_network(array.astype(np.float32, copy=False))
    if lab_array is None:
        return tensor, mapping
    return tensor, _to_network(np.rint(lab_array).astype(np.uint8)), mapping


def _orient_and_resample(image, lab, config: PreprocessConfig, step: np.ndarray):
    from monai.transforms import Orientation, Spacing

    start = _affine(image)
    if config.orientation:
        orient = Orientation(axcodes=config.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S")))
        image = orient(image)
        lab = orient(lab) if lab is not None else None
    if config.spacing is not None:
        check_resampled_grid(image.shape[1:], np.linalg.norm(_affine(image)[:3, :3], axis=0), config.spacing)
        image = Spacing(pixdim=config.spacing, mode="bilinear")(image)
        lab = Spacing(pixdim=config.spacing, mode="nearest")(lab) if lab is not None else None
    return image, lab, step @ np.linalg.inv(start) @ _affine(image)


MAX_GRID_VOXELS = 2 * 1024**3  # 2 GVoxels: 8 GB as float32, far beyond any CT resampled to a model's spacing
MAX_SIZE_FACTOR = 100.0


def check_resampled_grid(shape, spacing, target) -> None:
    """InputError, before anything is allocated, when resampling to ``target`` mm gives an implausible grid.

    A header in µm or a 500 mm voxel changes the size by a factor over 100 along an axis (or to over
    2 GVoxels), which would try to allocate terabytes or collapse the volume to a voxel.
    """
    factor = np.asarray(spacing, np.float64) / np.asarray(target, np.float64)
    grid = tuple(int(v) for v in np.maximum(np.ceil(np.asarray(shape) * factor), 1))
    if np.any(factor > MAX_SIZE_FACTOR) or np.any(factor < 1 / MAX_SIZE_FACTOR) or np.prod(grid, dtype=np.float64) > MAX_GRID_VOXELS:
        raise InputError(
            f"implausible spacing {tuple(round(float(v), 6) for v in spacing)} mm: resampling the {tuple(int(v) for v in shape)} "
            f"grid to {tuple(float(v) for v in target)} mm would give {grid} voxels (a size factor of "
            f"{', '.join(f'{v:.3g}' for v in factor)}; the limits are {MAX_SIZE_FACTOR:g} per axis and "
            f"{MAX_GRID_VOXELS / 1024**3:g} GVoxels). Check the file's spacing (a header in µm?).")


def _crop_and_pad(array, lab, config: PreprocessConfig, step: np.ndarray):
    if config.foreground_threshold is not None:
        mask = array[0] > config.foreground_threshold
        if not mask.any():
            raise InputError(f"no foreground: no voxel above the threshold {config.foreground_threshold} after '{config.intensity}'.")
        lo = [int(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != d)))[0][[0, -1]][0]) for d in range(3)]
        hi = [int(np.nonzero(mask.any(axis=tuple(a for a in range(3) if a != d)))[0][-1]) + 1 for d in range(3)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        array = array[(slice(None), *box)]
        lab = lab[(slice(None), *box)] if lab is not None else None
        step = step @ _translation(lo)
    if config.pad_to is not None:
        need = [max(0, t - s) for t, s in zip(config.pad_to, array.shape[1:])]
        before = [n // 2 for n in need]
        widths = [(0, 0)] + [(b, n - b) for b, n in zip(before, need)]
        array = pad_array(array, widths, config.pad_mode)
        lab = np.pad(lab, widths) if lab is not None else None
        step = step @ _translation([-b for b in before])
    return array, lab, step


def check_choices(config: PreprocessConfig) -> None:
    """ConfigError when ``pad_mode`` or ``load_dtype`` is not one of its choices."""
    if config.pad_mode not in PAD_MODES:
        raise ConfigError(f"preprocess.pad_mode must be one of {', '.join(PAD_MODES)}, got {config.pad_mode!r}.")
    if config.load_dtype not in LOAD_DTYPES:
        raise ConfigError(f"preprocess.load_dtype must be null or int16, got {config.load_dtype!r}.")


def pad_array(array: np.ndarray, widths, mode: str) -> np.ndarray:
    """``np.pad`` by ``widths`` with a :data:`PAD_MODES` fill (numpy's reflect repeats a 1-voxel axis)."""
    if not any(a or b for a, b in widths):
        return array
    if mode == "reflect":
        return np.pad(array, widths, mode="reflect")
    background = (float(array.min()) if array.size else 0.0) if mode == "minimum" else 0.0
    return np.pad(array, widths, constant_values=background)


def _resize(array, lab, config: PreprocessConfig, step: np.ndarray):
    if config.resize is None or tuple(array.shape[1:]) == tuple(config.resize):
        return array, lab, step
    from monai.transforms import Resize

    size_in = np.array(array.shape[1:], dtype=np.float64)
    size_out = np.array(config.resize, dtype=np.float64)
    align = config.align_corners if config.resize_mode in ("trilinear", "bilinear", "linear") else None
    array = np.asarray(Resize(config.resize, mode=config.resize_mode, align_corners=align, anti_aliasing=False)(array))
    if lab is not None:
        lab = np.asarray(Resize(config.resize, mode="nearest")(lab))
    scale = np.eye(4)
    if align:
        scale[:3, :3] = np.diag((size_in - 1) / np.maximum(size_out - 1, 1))
    else:  # voxel centres: x_in = (x_out + 0.5) * in/out - 0.5
        ratio = size_in / size_out
        scale[:3, :3] = np.diag(ratio)
        scale[:3, 3] = 0.5 * ratio - 0.5
    return array, lab, step @ scale


def _translation(offset) -> np.ndarray:
    matrix = np.eye(4)
    matrix[:3, 3] = offset
    return matrix
