"""Cached volumes read through their memory maps, one region at a time.

A :class:`MappedVolume` stands for one cached (D, H, W) ``.npy`` array as if it were a (1, D, H, W) tensor on
a device: ``v.shape``, ``v.device`` and ``v[:, a:b, c:d, e:f]`` (slices as torch clips them) read only that
region from the file, convert it (float32 images, uint8 labels through an optional relabelling table) and
return it as a tensor on the device. Nothing of the volume stays in memory between reads (the file is opened
per read: no file descriptor per cached volume either), so a task's resident memory does not grow with the
number of cached volumes; the pages read are the kernel's file cache, not the process's.

``padded(size, mode)`` emulates :func:`~ssl3d.pretext.vf_samples.pad_volumes` (half before, half after, a
:data:`~ssl3d.data.preprocess.PAD_MODES` fill) per read: the same values as padding the whole volume, then
cutting. ``load()`` is the whole volume (for what needs one, e.g. sliding-window validation, one at a time).

:class:`OpenMaps` is the other way, for readers that slice many small views of a volume (VoCo): tensors
that view the maps themselves, no copy, with a bounded number of maps open at a time.

Example::

    v = MappedVolume.open(cache.dir / "case.npy", torch.float32, "cuda")
    v.shape                                  # torch.Size([1, D, H, W])
    v[:, 10:42, 0:64, 0:64].shape            # (1, 32, 64, 64), read from disk, on the GPU
"""

from __future__ import annotations

import warnings
from collections import OrderedDict, abc
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["MappedVolume", "OpenMaps"]


@dataclass(frozen=True)
class MappedVolume:
    """One cached array read per region (module docstring).

    Attributes:
        path: the ``.npy`` file (D, H, W).
        spatial: its (D, H, W) before padding.
        dtype: the torch dtype reads return (float32 images, uint8 labels).
        device: where reads go.
        table: optional uint8 lookup (256 entries) applied to every read (label relabelling).
        pad: (before, after) voxels per axis; ``fill`` is "reflect" or the constant value.
    """

    path: Path
    spatial: tuple[int, int, int]
    dtype: torch.dtype
    device: torch.device
    table: np.ndarray | None = None
    pad: tuple[tuple[int, int], ...] = ((0, 0), (0, 0), (0, 0))
    fill: float | str = 0.0

    @classmethod
    def open(cls, path: str | Path, dtype: torch.dtype, device: Any = None) -> MappedVolume:
        array = np.load(path, mmap_mode="r")
        return cls(Path(path), tuple(int(s) for s in array.shape), dtype, torch.device(device or "cpu"))

    def array(self) -> np.ndarray:
        """The cached array, memory-mapped read-only (no padding, no table)."""
        return np.load(self.path, mmap_mode="r")

    @property
    def shape(self) -> torch.Size:
        return torch.Size((1, *(s + a + b for s, (a, b) in zip(self.spatial, self.pad))))

    def relabelled(self, table: np.ndarray) -> MappedVolume:
        """The same volume read through a uint8 lookup table (``table[value]``)."""
        return replace(self, table=np.asarray(table, dtype=np.uint8))

    def padded(self, size: Sequence[int], mode: str) -> MappedVolume:
        """Padded to at least ``size`` as :func:`~ssl3d.pretext.vf_samples.pad_volumes` pads (``mode``: a
        :data:`~ssl3d.data.preprocess.PAD_MODES` fill; "minimum" reads the volume's minimum once, here)."""
        margin = [max(0, p - s) for p, s in zip(size, self.spatial)]
        if not any(margin):
            return self
        fill: float | str = "reflect" if mode == "reflect" else 0.0
        if mode == "minimum":
            fill = float(np.asarray(self.array().min(), dtype=np.float32))
        return replace(self, pad=tuple((m // 2, m - m // 2) for m in margin), fill=fill)

    def region(self, starts: Sequence[int], sizes: Sequence[int]) -> torch.Tensor:
        """(1, d, h, w) tensor of ``[start, start + size)`` per axis (clipped to the volume, as slicing)."""
        return self[(slice(None), *(slice(int(a), int(a) + int(n)) for a, n in zip(starts, sizes)))]

    def load(self) -> torch.Tensor:
        """The whole (padded) volume as a (1, D, H, W) tensor."""
        return self[:, :, :, :]

    # ------------------------------------------------------------------ label maps, a few slices at a time

    def scan(self) -> tuple[set[int], np.ndarray]:
        """The values present and the nonzero voxels per slice ((D,) int64), after the table, in one read."""
        present, counts = np.zeros(256, dtype=bool), []
        for slab in self._slabs():
            present[np.unique(slab)] = True
            counts.append(np.count_nonzero(slab.reshape(len(slab), -1), axis=1))
        return set(np.flatnonzero(present).tolist()), np.concatenate(counts).astype(np.int64)

    def values(self) -> set[int]:
        """The values present (after the table)."""
        return self.scan()[0]

    def slice_counts(self) -> np.ndarray:
        """Nonzero voxels (after the table) per slice: (D,) int64."""
        return self.scan()[1]

    def nth_nonzero(self, k: int, counts: np.ndarray) -> list[int]:
        """The ``k``-th nonzero voxel in row-major order (``torch.nonzero(v[0])[k]``), from :meth:`slice_counts`;
        reads one slice."""
        ends = np.cumsum(counts)
        z = int(np.searchsorted(ends, k, side="right"))
        within = int(k - (ends[z] - counts[z]))
        return [z, *np.argwhere(self._convert(self.array()[z]))[within].tolist()]

    def _slabs(self, depth: int = 16):
        array = self.array()
        for z in range(0, self.spatial[0], depth):
            yield self._convert(array[z:z + depth])

    def __getitem__(self, key: tuple) -> torch.Tensor:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) > 4 or key[0] != slice(None) or any(not isinstance(k, slice) or k.step not in (None, 1) for k in key):
            raise IndexError(f"a MappedVolume is read as [:, z0:z1, y0:y1, x0:x1], got {key!r}")
        ranges = [range(*k.indices(n)) for k, n in zip(key[1:] + (slice(None),) * (4 - len(key)), self.shape[1:])]
        array = self.array()
        if not any(a or b for a, b in self.pad):
            out = self._convert(array[tuple(slice(r.start, max(r.start, r.stop)) for r in ranges)])
        else:
            out = self._padded_read(array, ranges)
        # a float32 cache's region may still be the map itself: copy it (a tensor never writes to the file)
        return torch.from_numpy(np.require(out, requirements=("C", "W")))[None].to(self.device)

    def _convert(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float32 if self.dtype.is_floating_point else np.uint8)
        return values if self.table is None else self.table[values]

    def _padded_read(self, array: np.ndarray, ranges: list[range]) -> np.ndarray:
        """Source index per padded position (np.pad of the indices: -1 where a constant fills), then one
        read of the source box those indices span."""
        reflect = self.fill == "reflect"
        index = []
        for r, s, (a, b) in zip(ranges, self.spatial, self.pad):
            positions = np.arange(s)
            mapped = np.pad(positions, (a, b), mode="reflect") if reflect else np.pad(positions, (a, b), constant_values=-1)
            index.append(mapped[r.start:max(r.start, r.stop)])
        valid = [i[i >= 0] for i in index]
        shape = tuple(len(i) for i in index)
        if any(len(v) == 0 for v in valid):
            return np.full(shape, self.fill, dtype=np.float32)
        lo = [int(v.min()) for v in valid]
        box = self._convert(array[tuple(slice(low, int(v.max()) + 1) for low, v in zip(lo, valid))])
        if reflect:
            return box[np.ix_(*(i - low for i, low in zip(index, lo)))]
        out = np.full(shape, self.fill, dtype=box.dtype)
        out[np.ix_(*(i >= 0 for i in index))] = box[np.ix_(*(v - low for v, low in zip(valid, lo)))]
        return out


class OpenMaps(abc.Sequence):
    """Cached arrays as (1, D, H, W) CPU tensors that view their memory maps (no copy), with at most ``limit``
    maps open at a time.

    Every open map holds a file descriptor and a kernel mapping (Linux allows 65530 mappings per process
    by default), so the 160k volumes of a large pretraining folder cannot all stay mapped. The least
    recently used map is dropped (the kernel unmaps it once no batch still views it) and opened again, with
    the same values, on its next visit.

    Args:
        files: the ``.npy`` files, one per volume.
        prepare: applied to each tensor when it is opened (e.g. padding to a window); its result is what the
            sequence holds while the map is open.
        limit: maps open at once.
    """

    def __init__(self, files: Sequence[str | Path], prepare: Callable[[torch.Tensor], torch.Tensor] | None = None, limit: int = 256) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
        self.files, self.prepare, self.limit = [Path(f) for f in files], prepare, limit
        self._open: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = range(len(self))[index]  # negative indices; IndexError past the end
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        with warnings.catch_warnings():  # read-only maps, never written through: only sliced and copied
            warnings.simplefilter("ignore", UserWarning)
            tensor = torch.from_numpy(np.load(self.files[index], mmap_mode="r"))[None]
        tensor = self.prepare(tensor) if self.prepare else tensor
        self._open[index] = tensor
        if len(self._open) > self.limit:
            self._open.popitem(last=False)
        return tensor
