"""Datasets (which image goes with which label) and the preprocessed-volume cache.

:func:`find_cases` understands four layouts, tried in this order:

=================================  ==============================================================
``data``                           cases
=================================  ==============================================================
a ``.json`` file, or a folder      MSD/MONAI ``dataset.json`` or a VoCo-style datalist:
holding ``dataset.json`` with a    ``{"training": [{"image": ..., "label": ...}, ...], "validation": [...]}``;
``"training"`` list                paths relative to the json's folder (or absolute), order kept
a folder with ``imagesTr/``        nnU-Net/MSD: image ``case_0000.nii.gz`` (or ``case.nii.gz``) <->
                                   label ``labelsTr/case.nii.gz``; sorted by name
a folder of volumes                every file ending in one of :data:`~ssl3d.io.VOLUME_SUFFIXES` (not
                                   ``.seg.nrrd``) and every DICOM series sub-folder; sorted by name
one volume file or DICOM folder    one case
=================================  ==============================================================

A datalist's entries may carry ``"weight": N`` (a positive integer, default 1): the case is drawn N times as
often, as a dataset repeated N times in a ``ConcatDataset``. A json ``{"sources": [{"data": "abdomen/",
"weight": 8}, {"data": "chest.json", "weight": 1}, ...]}`` joins several datasets, each in any layout above,
with one weight per source (VoCo v2's abdomen x8, head-neck x8, chest x1); its case names are
``<source name>/<case>`` (``"name"`` of the source, else its folder or file name).

Hidden files (``.name``, macOS ``._name``) are ignored. With ``labels=False`` (pretraining) label files
are not looked at; with ``labels=True`` every case needs a label and every label an image.

:class:`VolumeCache` preprocesses every case once per (dataset, :class:`PreprocessConfig`) into
``cache_dir/<dataset>-<hash>/``: per case the model-space image ``.npy`` (``config.dtype``), the label
``.npy`` (uint8) and a ``.json`` with its :class:`GridMapping` and the size and mtime of its source files.
A changed source file is preprocessed again; everything else is reused.

Example::

    cases = find_cases("Task09_Spleen", labels=True)       # [Case(name='spleen_10', image=..., label=...), ...]
    cache = VolumeCache(cases, PreprocessConfig(spacing=(1.5, 1.5, 2.0)), default_cache_dir(run_dir)).build()
    cache.image(0).shape                                    # (D, H, W), memory-mapped
    images = cache.mapped("cuda")                           # [MappedVolume]: images[0][:, :32, :64, :64] reads a patch
    images = cache.load_all("cuda")                         # [(1, D, H, W) float32 tensors], all in memory
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from ..errors import ConfigError, DatasetError, InputError, VolumeReadError
from ..io import VOLUME_SUFFIXES, Volume, header_geometry, read_volume, volume_suffix
from .preprocess import GridMapping, PreprocessConfig, check_resampled_grid, preprocess

if TYPE_CHECKING:
    from ..events import EventWriter

__all__ = ["Case", "find_cases", "VolumeCache", "default_cache_dir", "CACHE_VERSION"]

#: Bump when preprocessing or the entry format changes numbers: old cache folders are then not reused.
CACHE_VERSION = 1
_DTYPES = ("float32", "float16")
_SHOW = 5  # how many offending files an error message lists
_CHANNEL = re.compile(r"^(.+)_(\d{4})$")
_IMAGE_SUFFIXES = ", ".join(s for s in VOLUME_SUFFIXES if s != ".seg.nrrd")  # a .seg.nrrd is a label, never an image


@dataclass
class Case:
    """One training case: an image volume (file or DICOM folder) and its optional label map."""

    name: str
    image: Path
    label: Path | None = None
    weight: int = 1  # how many times an epoch draws it (a datalist's "weight")


# ---------------------------------------------------------------------------------------------- finding


def find_cases(data: str | os.PathLike, labels: bool = False, split: str = "training") -> list[Case]:
    """The cases of a dataset folder, ``dataset.json`` or single volume (layouts in the module docstring).

    Args:
        data: folder, json file or volume file.
        labels: True: every case must have a label (fine-tuning); False: images only (pretraining).
        split: which list of a json to read ("training", "validation", ...); folders have only "training".

    Raises:
        DatasetError: nothing found, a missing or orphan label, a bad json, a listed file that does not
            exist, or two entries for one image. Messages name the path, the rule and the offending files.
    """
    path = Path(data)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder.")
    if path.is_file() and path.name.lower().endswith(".json"):
        return _from_json(path, labels, split)
    if path.is_dir() and _has_datalist(path / "dataset.json", split):
        return _from_json(path / "dataset.json", labels, split)
    if split != "training":
        raise DatasetError(f"{path}: split {split!r} needs a dataset.json with a {split!r} list; folders only hold 'training'.")
    if path.is_dir() and (path / "imagesTr").is_dir():
        return _from_nnunet(path, labels)
    if path.is_dir() and not _is_dicom_folder(path):
        return _from_folder(path, labels)
    if path.is_file() and not volume_suffix(path):
        raise DatasetError(f"{path}: not a dataset; expected a folder, a .json or a volume ({', '.join(VOLUME_SUFFIXES)}).")
    if labels:
        raise DatasetError(f"{path}: a single volume has no label; give an imagesTr/labelsTr folder or a dataset.json.")
    return [Case(_stem(path), path)]


def _stem(path: Path) -> str:
    """File name without its volume ending ('case_0000.nii.gz' -> 'case_0000')."""
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)] if suffix else path.name


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _volume_files(folder: Path) -> list[Path]:
    return [p for p in _visible(folder) if p.is_file() and volume_suffix(p) not in ("", ".seg.nrrd")]


def _is_dicom_folder(folder: Path, probe: int = 3) -> bool:
    """True when one of the first few files is DICOM (``.dcm`` or the 'DICM' tag at byte 128)."""
    files = [p for p in _visible(folder) if p.is_file()][:probe]
    for file in files:
        if file.suffix.lower() == ".dcm":
            return True
        with open(file, "rb") as handle:
            if handle.read(132)[128:] == b"DICM":
                return True
    return False


def _from_folder(folder: Path, labels: bool) -> list[Case]:
    images = _volume_files(folder) + [p for p in _visible(folder) if p.is_dir() and _is_dicom_folder(p)]
    if not images:
        subfolders = sum(1 for p in _visible(folder) if p.is_dir())
        hint = f"; it has {subfolders} sub-folders: point at one of them or list the volumes in a dataset.json" if subfolders else ""
        raise DatasetError(
            f"{folder}: no volumes found; looked for files ending in {_IMAGE_SUFFIXES}, DICOM series "
            f"sub-folders, imagesTr/ and dataset.json{hint}."
        )
    if labels:
        raise DatasetError(f"{folder}: labels are needed, but a plain folder of volumes has none; use imagesTr/ + labelsTr/ or a dataset.json.")
    return _name_cases(sorted(images, key=lambda p: (_stem(p), p.name)), folder)


def _from_nnunet(root: Path, labels: bool) -> list[Case]:
    images = _volume_files(root / "imagesTr")
    if not images:
        raise DatasetError(f"{root / 'imagesTr'}: no volumes found; looked for files ending in {_IMAGE_SUFFIXES}.")
    if not labels:
        return _name_cases(images, root / "imagesTr")
    label_dir = root / "labelsTr"
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: no such folder; labels are needed and must lie in labelsTr/ next to imagesTr/.")
    by_stem = {_stem(p): p for p in _visible(label_dir) if p.is_file() and volume_suffix(p)}
    cases, missing, used = [], [], {}
    for image in images:
        name = _label_stem(_stem(image), by_stem)
        if name is None:
            missing.append(image)
            continue
        if name in used:
            raise DatasetError(
                f"{root}: images {used[name].name} and {image.name} both pair with label {by_stem[name].name}; "
                "only one image channel (_0000) per case is supported."
            )
        used[name] = image
        cases.append(Case(name, image, by_stem[name]))
    _check_missing(root, missing, f"no label in {label_dir} (looked for CASE.<volume ending> for CASE_0000 or CASE)")
    orphans = [p for stem, p in sorted(by_stem.items()) if stem not in used]
    if orphans:
        raise DatasetError(f"{label_dir}: {len(orphans)} label(s) have no image in imagesTr/: {_listing(orphans)}.")
    return sorted(cases, key=lambda c: c.name)


def _label_stem(image_stem: str, label_stems: dict[str, Path]) -> str | None:
    """Label name of an image: same name first, then the name without nnU-Net's channel tag ``_0000``."""
    if image_stem in label_stems:
        return image_stem
    match = _CHANNEL.match(image_stem)
    return match.group(1) if match and match.group(1) in label_stems else None


def _has_datalist(path: Path, split: str) -> bool:
    """A folder's dataset.json is used when it lists cases or sources (nnU-Net v2's dataset.json lists none)."""
    if not path.is_file():
        return False
    record = _read_json(path)
    return split in record or "sources" in record


def dataset_label_names(data: str | os.PathLike) -> dict[int, str]:
    """Label names of a ``dataset.json`` (MSD ``{"1": "liver"}`` or nnU-Net v2 ``{"liver": 1}``); {} if none."""
    path = Path(data)
    path = path / "dataset.json" if path.is_dir() else path
    if path.suffix.lower() != ".json" or not path.is_file():
        return {}
    labels = _read_json(path).get("labels")
    if not isinstance(labels, dict):
        return {}
    names: dict[int, str] = {}
    for key, value in labels.items():
        if str(key).isdigit() and isinstance(value, str):
            names[int(key)] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            names[value] = str(key)
    names.pop(0, None)
    return names


def median_spacing(cases: list[Case]) -> tuple[float, float, float]:
    """The median (i, j, k) voxel size of the cases' images, from their headers (nnU-Net's target spacing)."""
    import SimpleITK as sitk

    spacings = []
    for case in cases:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(case.image))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # unreadable files are reported when the cache is built
        spacings.append(reader.GetSpacing()[:3])
    if not spacings:
        raise DatasetError("no readable image to take a median spacing from.")
    return tuple(float(v) for v in np.median(np.asarray(spacings), axis=0))  # type: ignore[return-value]


def _read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}).") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot be read ({exc}).") from None
    if not isinstance(record, dict):
        raise DatasetError(f"{path}: must hold a JSON object with a 'training' list, got a {type(record).__name__}.")
    return record


def _from_json(path: Path, labels: bool, split: str, nested: bool = False) -> list[Case]:
    record = _read_json(path)
    if "sources" in record:
        if nested:
            raise DatasetError(f"{path}: a source cannot itself list 'sources'; list its datasets in the outer json.")
        return _from_sources(path, record["sources"], labels, split)
    entries = record.get(split)
    if not isinstance(entries, list) or not entries:
        found = f"keys {sorted(record)}" if split not in record else f"{split!r} = {str(entries)[:60]}"
        raise DatasetError(f"{path}: needs a non-empty {split!r} list of {{'image': ..., 'label': ...}} entries; found {found}.")
    pairs = [_json_entry(path, index, entry, labels) for index, entry in enumerate(entries)]
    missing = [image for image, label in pairs if labels and label is None]
    _check_missing(path, missing, f"no 'label' in their {split!r} entry")
    absent = [p for pair in pairs for p in pair if p is not None and not p.exists()]
    if absent:
        raise DatasetError(f"{path}: {len(absent)} listed file(s) do not exist (paths are relative to {path.parent}): {_listing(absent)}.")
    seen: dict[Path, int] = {}
    for index, (image, _) in enumerate(pairs):
        if image.resolve() in seen:
            raise DatasetError(f"{path}: {split}[{index}] repeats the image of {split}[{seen[image.resolve()]}]: {image}.")
        seen[image.resolve()] = index
    cases = _name_cases([image for image, _ in pairs], path.parent)
    for index, (case, (_, label), entry) in enumerate(zip(cases, pairs, entries)):
        case.label = label if labels else None
        case.weight = _weight(entry.get("weight", 1) if isinstance(entry, dict) else 1, f"{path}: {split}[{index}]")
    return cases


def _weight(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DatasetError(f"{where}: 'weight' must be a positive integer (how many times an epoch draws it), got {value!r}.")
    return value


def _from_sources(path: Path, sources: Any, labels: bool, split: str) -> list[Case]:
    """The cases of every source of a ``{"sources": [{"data", "weight", "name"}, ...]}`` json, weighted."""
    if not isinstance(sources, list) or not sources:
        raise DatasetError(f"{path}: 'sources' must be a non-empty list of {{'data': ..., 'weight': N}} objects.")
    cases: list[Case] = []
    names: dict[str, int] = {}
    for index, source in enumerate(sources):
        where = f"{path}: sources[{index}]"
        if not isinstance(source, dict) or not isinstance(source.get("data"), str):
            raise DatasetError(f"{where} must be an object with a 'data' path (a folder, json or volume), got {str(source)[:80]}.")
        data = path.parent / source["data"]
        name = source.get("name", data.stem if data.suffix.lower() == ".json" else _stem(data))
        if not isinstance(name, str) or not name:
            raise DatasetError(f"{where}: 'name' must be a non-empty string, got {name!r}.")
        if name in names:
            raise DatasetError(f"{where} has the name {name!r} of sources[{names[name]}]; give each source its own 'name'.")
        names[name] = index
        weight = _weight(source.get("weight", 1), where)
        if data.is_file() and data.name.lower().endswith(".json"):
            found = _from_json(data, labels, split, nested=True)
        elif data.is_dir() and _has_datalist(data / "dataset.json", split):
            found = _from_json(data / "dataset.json", labels, split, nested=True)
        else:
            found = find_cases(data, labels, split)
        cases += [Case(f"{name}/{c.name}", c.image, c.label, c.weight * weight) for c in found]
    return cases


def _json_entry(path: Path, index: int, entry: Any, labels: bool) -> tuple[Path, Path | None]:
    where = f"{path}: entry {index}"
    if isinstance(entry, str):
        entry = {"image": entry}
    if not isinstance(entry, dict) or "image" not in entry:
        raise DatasetError(f"{where} must be a path or an object with an 'image' key, got {str(entry)[:80]}.")
    values = [entry["image"], entry.get("label") if labels else None]
    paths: list[Path | None] = []
    for key, value in zip(("image", "label"), values):
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if value is not None and not isinstance(value, str):
            raise DatasetError(f"{where}: '{key}' must be one path (single-channel images only), got {str(value)[:80]}.")
        paths.append(None if value is None else path.parent / value)
    return paths[0], paths[1]  # type: ignore[return-value]


def _name_cases(images: list[Path], root: Path) -> list[Case]:
    """Cases named by file stem; where stems repeat, by the path relative to ``root`` instead."""
    stems = [_stem(p) for p in images]
    cases = []
    for image, stem in zip(images, stems):
        if stems.count(stem) > 1:
            stem = image.relative_to(root).as_posix() if image.is_relative_to(root) else str(image)
        cases.append(Case(stem, image))
    return cases


def _check_missing(where: Path, images: list[Path], rule: str) -> None:
    if images:
        raise DatasetError(f"{where}: labels are needed, but {len(images)} image(s) have {rule}: {_listing(images)}.")


def _listing(paths: list[Path]) -> str:
    shown = ", ".join(p.name for p in paths[:_SHOW])
    return shown + (f" and {len(paths) - _SHOW} more" if len(paths) > _SHOW else "")


# ---------------------------------------------------------------------------------------------- cache


def default_cache_dir(run_dir: str | os.PathLike | None) -> Path:
    """``run_dir/cache`` for a run, else the user cache (``ssl3d.data.samples.cache_dir() / "datasets"``)."""
    if run_dir is not None:
        return Path(run_dir) / "cache"
    from .samples import cache_dir

    return cache_dir() / "datasets"


def _case_key(case: Case) -> str:
    """What a cache entry was made from: the size and mtime of the case's files."""
    return _digest([_file_stamp(case.image), _file_stamp(case.label) if case.label else None])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _file_stamp(path: Path) -> list:
    """Absolute path, size and mtime of a file, or of every file of a (DICOM) folder."""
    if path.is_dir():
        return [str(path.resolve()), [_file_stamp(p) for p in sorted(path.iterdir()) if p.is_file()]]
    stat = path.stat()
    stamp = [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    data = path.with_suffix(".raw")  # an .mhd header's pixel data
    if path.suffix.lower() == ".mhd" and data.is_file():
        stamp.append(_file_stamp(data))
    return stamp


def _atomic_write(path: Path, write) -> None:
    """``write(handle)`` into a temporary file next to ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _save_npy(path: Path, array: np.ndarray) -> None:
    _atomic_write(path, lambda handle: np.save(handle, np.ascontiguousarray(array)))


def _save_json(path: Path, record: dict) -> None:
    _atomic_write(path, lambda handle: handle.write((json.dumps(record, indent=1) + "\n").encode()))


class VolumeCache:
    """Preprocessed cases on disk: images as ``config.dtype`` ``.npy``, labels as uint8, mappings as JSON.

    A set is *labelled* when any case has a label. Unreadable volumes of an unlabelled (pretraining) set
    are skipped with a ``log`` event (level warning) and listed in ``skipped.txt`` unless ``strict``; in
    a labelled set they are errors.

    Args:
        cases: from :func:`find_cases`; names must be unique.
        config: the preprocessing; ``config.dtype`` ("float32" or "float16") is the stored image dtype.
        cache_dir: root folder; this dataset and config get the sub-folder :attr:`dir`.
        strict: raise on unreadable volumes instead of skipping them.
        events: an :class:`~ssl3d.events.EventWriter` for the skip warnings and a summary (optional).

    Raises:
        ConfigError: ``config.dtype`` is not float32 or float16.
        DatasetError: no cases, or two cases with one name.
    """

    def __init__(
        self,
        cases: list[Case],
        config: PreprocessConfig,
        cache_dir: str | os.PathLike,
        strict: bool = False,
        events: EventWriter | None = None,
    ) -> None:
        if config.dtype not in _DTYPES:
            raise ConfigError(f"cache dtype must be one of {_DTYPES}, got {config.dtype!r}.")
        if not cases:
            raise DatasetError("the dataset has no cases to cache.")
        names = [case.name for case in cases]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DatasetError(f"case names must be unique, repeated: {', '.join(repeated[:_SHOW])}.")
        self.cases = list(cases)
        self.config = config
        self.strict = strict
        self.events = events
        self.labelled = any(case.label is not None for case in cases)
        identity = [CACHE_VERSION, config.to_dict(), [[str(c.image.resolve()), str(c.label.resolve()) if c.label else None] for c in cases]]
        self.dir = Path(cache_dir) / f"{_dataset_label(cases)}-{_digest(identity)[:16]}"
        self.preprocessed = 0  # how many cases the last build() preprocessed (the rest were reused)
        self._entries: list[dict] | None = None
        self._skipped: list[tuple[str, str]] = []
        self._estimates: dict[int, int] = {}  # case index -> estimated bytes (headers are read once)

    # -------------------------------------------------------------------------------------- building

    def build(self, workers: int | None = 1, progress: Callable[[int, int], None] | None = None) -> "VolumeCache":
        """Preprocess every case whose entry is missing or stale; returns ``self``.

        Args:
            workers: processes that preprocess in parallel (None: :func:`~ssl3d.data.cache_build.default_workers`);
                1 preprocesses here. Parallel or not, the entries are byte-identical.
            progress: called with (volumes preprocessed, volumes to preprocess) after each one.

        Raises:
            VolumeReadError: an unreadable volume in a labelled set, or with ``strict``.
            DatasetError: a label not on its image's grid or with values outside 0..255; every case skipped.
            DiskSpaceError: the volumes to preprocess will not fit (checked before anything is written).
        """
        found = self._build_missing(self._existing(), range(len(self.cases)), workers, progress)
        entries, self._skipped = [], []
        for index, case in enumerate(self.cases):
            entry = self._entry(index, case, found[index])
            if "skipped" in entry:
                self._skip(case, entry["skipped"])
            else:
                entries.append(entry)
        self._write_skipped()
        if not entries:
            reasons = "; ".join(f"{Path(image).name}: {reason}" for image, reason in self._skipped[:3])
            more = f"; and {len(self._skipped) - 3} more" if len(self._skipped) > 3 else ""
            raise DatasetError(f"all {len(self.cases)} volumes are unreadable, nothing to train on: {reasons}{more}.")
        self._entries = entries
        self._log("info", f"cache {self.dir}: {len(entries)} volumes ({self.preprocessed} preprocessed), {self._bytes() / 1e6:.1f} MB")
        return self

    def build_shard(self, shard: int, shards: int, workers: int | None = 1,
                    progress: Callable[[int, int], None] | None = None) -> int:
        """Preprocess the missing entries of cases ``index % shards == shard`` only (one rank, or one node of
        a cluster build); returns how many it preprocessed. :meth:`build` afterwards reads what all made."""
        if not (isinstance(shard, int) and isinstance(shards, int) and 0 <= shard < shards):
            raise ConfigError(f"shard must be K/N with 0 <= K < N, got {shard}/{shards}.")
        self._build_missing(self._existing(), range(shard, len(self.cases), shards), workers, progress)
        return self.preprocessed

    def missing(self, among: Sequence[int] | None = None) -> list[int]:
        """Indices (of ``among``, default all) of the cases that have no current entry yet (neither arrays
        nor a 'skipped' record)."""
        indices = range(len(self.cases)) if among is None else among
        return [i for i in indices if self._record(i) is None]

    def _existing(self) -> list[dict | None]:
        return [self._record(index) for index in range(len(self.cases))]

    def _record(self, index: int) -> dict | None:
        """The current entry record of case ``index`` on disk, or None."""
        return _load_entry(self._base(index, self.cases[index]), _case_key(self.cases[index]))

    def _build_missing(self, found: list[dict | None], indices, workers: int | None,
                       progress: Callable[[int, int], None] | None) -> list[dict | None]:
        """Make the entries of ``indices`` that ``found`` lacks; ``found`` with them filled in."""
        todo = [index for index in indices if found[index] is None]
        self.preprocessed = 0
        if not todo:
            return found
        from ..disk_space import require  # before anything is written: a cache that cannot fit is refused

        require(self.dir, self.estimated_bytes(todo), f"preprocessing {len(todo)} volume(s) into the cache")
        self.dir.mkdir(parents=True, exist_ok=True)
        from .cache_build import build_entries

        found = list(found)
        for index, record in build_entries(self, todo, make_entry, workers, progress):
            found[index] = record
            self.preprocessed += 1
        return found

    def _base(self, index: int, case: Case) -> Path:
        return _entry_base(self.dir, index, case)

    def estimated_bytes(self, indices: Sequence[int]) -> int:
        """About what the cached arrays of cases ``indices`` will take (see :meth:`_estimate_bytes`); each
        case's header is read once per cache object, however often this is asked."""
        for index in indices:
            if index not in self._estimates:
                self._estimates[index] = self._estimate_bytes(self.cases[index])
        return sum(self._estimates[index] for index in indices)

    def _estimate_bytes(self, case: Case) -> int:
        """About what a case's cached arrays take, from its image header (an upper bound: a foreground crop
        only shrinks it); 0 when the header cannot be read (the volume is skipped or refused later)."""
        size, spacing = header_geometry(case.image)
        if size is None:
            return 0
        config = self.config
        if config.resize is not None:
            shape = np.asarray(config.resize, np.float64)
        else:
            target = np.asarray(config.spacing, np.float64) if config.spacing is not None else None
            if target is not None:
                spacing = np.where(np.isnan(spacing), target, spacing)
                try:
                    check_resampled_grid(size, spacing, target)
                except InputError:  # refused (or skipped) with its own message when it is preprocessed
                    return 0
            shape = size if target is None else np.ceil(size * spacing / target)
            if config.pad_to is not None:
                shape = np.maximum(shape, config.pad_to)
        voxels = float(np.prod(shape))
        return int(voxels * (np.dtype(config.dtype).itemsize + (1 if case.label is not None else 0))) + 4096

    def _entry(self, index: int, case: Case, record: dict | None) -> dict:
        if record is None:  # not made: an entry that vanished while the build ran
            raise DatasetError(f"{self._base(index, case)}.json: the cache entry of {case.image} is missing; build the cache again.")
        if "skipped" in record and self.strict:
            raise VolumeReadError(f"{case.image}: {record['skipped']}")
        return record

    def _skip(self, case: Case, reason: str) -> None:
        self._skipped.append((str(case.image), reason))
        self._log("warning", f"skipped unreadable volume {case.image}: {reason}")

    def _write_skipped(self) -> None:
        path = self.dir / "skipped.txt"
        if self._skipped:
            text = "".join(f"{image}\t{reason}\n" for image, reason in self._skipped)
            _atomic_write(path, lambda handle: handle.write(text.encode()))
        elif path.exists():
            path.unlink()

    def _log(self, level: str, message: str) -> None:
        if self.events is not None:
            self.events.emit("log", message=message, level=level)

    # -------------------------------------------------------------------------------------- reading

    def _built(self) -> list[dict]:
        if self._entries is None:
            raise RuntimeError("VolumeCache: call build() before reading from the cache.")
        return self._entries

    def __len__(self) -> int:
        return len(self._built())

    @property
    def names(self) -> list[str]:
        """Case names of the cached (not skipped) entries, in dataset order."""
        return [entry["name"] for entry in self._built()]

    @property
    def weights(self) -> list[int]:
        """Each cached entry's datalist ``weight`` (draws per epoch), in dataset order."""
        by_name = {case.name: case.weight for case in self.cases}
        return [by_name[entry["name"]] for entry in self._built()]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(image path, reason) of every volume the last build skipped."""
        return list(self._skipped)

    def image(self, index: int) -> np.ndarray:
        """Model-space image (D, H, W) in ``config.dtype``, memory-mapped read-only."""
        return np.load(self._file(index, "image"), mmap_mode="r")

    def image_file(self, index: int) -> Path:
        """The ``.npy`` file of a model-space image (for readers that open it themselves)."""
        return self._file(index, "image")

    def label(self, index: int) -> np.ndarray | None:
        """Model-space label map (D, H, W) uint8, memory-mapped; None for a case without a label."""
        has = "label" in self._built()[index]["files"]
        return np.load(self._file(index, "label"), mmap_mode="r") if has else None

    def mapping(self, index: int) -> GridMapping:
        """The mapping from this entry's model grid back to its source volume's grid."""
        return GridMapping.from_dict(self._built()[index]["mapping"])

    def mapped(self, device=None) -> list:
        """Every image as a :class:`~ssl3d.data.mapped.MappedVolume`: read as a (1, D, H, W) float32 tensor
        on ``device`` one region at a time, through its memory map (nothing held in RAM)."""
        import torch

        from .mapped import MappedVolume

        return [MappedVolume.open(self._file(i, "image"), torch.float32, device) for i in range(len(self))]

    def mapped_labels(self, device=None) -> list:
        """Every label map as a uint8 :class:`~ssl3d.data.mapped.MappedVolume` (see :meth:`mapped`).

        Raises:
            DatasetError: a case has no label.
        """
        import torch

        from .mapped import MappedVolume

        self._check_labels()
        return [MappedVolume.open(self._file(i, "label"), torch.uint8, device) for i in range(len(self))]

    def _file(self, index: int, kind: str) -> Path:
        return self.dir / self._built()[index]["files"][kind][0]

    def _check_labels(self) -> None:
        missing = [name for i, name in enumerate(self.names) if "label" not in self._built()[i]["files"]]
        if missing:
            raise DatasetError(f"{self.dir}: {len(missing)} case(s) have no label: {', '.join(missing[:_SHOW])}.")

    def load_all(self, device=None) -> list:
        """Every image as a (1, D, H, W) float32 tensor on ``device`` (for datasets that fit in memory)."""
        import torch

        return [torch.from_numpy(np.array(self.image(i), dtype=np.float32))[None].to(device) for i in range(len(self))]

    def load_labels(self, device=None) -> list:
        """Every label map as a (1, D, H, W) uint8 tensor on ``device``.

        Raises:
            DatasetError: a case has no label.
        """
        import torch

        self._check_labels()
        return [torch.from_numpy(np.array(self.label(i)))[None].to(device) for i in range(len(self))]

    def _bytes(self) -> int:
        return sum(size for entry in self._built() for _, size in entry["files"].values())

    def info(self) -> dict:
        """For run.json: ``dir``, ``entries``, ``bytes`` (the arrays on disk), ``dtype``, ``skipped``."""
        skipped = len(self._skipped)
        return {"dir": str(self.dir), "entries": len(self), "bytes": self._bytes(), "dtype": self.config.dtype, "skipped": skipped}


def _dataset_label(cases: list[Case]) -> str:
    """Readable part of the cache folder name: the images' common folder (its parent for imagesTr)."""
    try:
        root = Path(os.path.commonpath([str(c.image.resolve().parent) for c in cases]))
    except ValueError:  # different drives
        return "dataset"
    if root.name in ("imagesTr", "imagesTs") and root.parent.name:
        root = root.parent
    return re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:40] or "dataset"


def _load_entry(base: Path, key: str) -> dict | None:
    """A cached entry record when it is complete and made from the same source files, else None."""
    path = base.with_suffix(".json")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    for name, size in record.get("files", {}).values():
        file = base.with_name(name)
        if not file.is_file() or file.stat().st_size != size:
            return None
    return {**record, "base": base}


def make_entry(cache_dir: Path, config: PreprocessConfig, index: int, case: Case, labelled: bool, strict: bool) -> dict:
    """Preprocess one case into its cache entry (files written atomically, the .json last) and return its
    record, or a 'skipped' record for an unreadable pretraining volume. A module-level function: worker
    processes of a parallel build run it as it is.

    Raises:
        InputError: an unreadable volume in a labelled set or with ``strict``; a bad label (DatasetError).
    """
    base, key = _entry_base(cache_dir, index, case), _case_key(case)
    try:
        image = read_volume(case.image)
        arrays = _preprocess_case(config, case, image)
    except InputError as exc:
        if labelled or strict or isinstance(exc, DatasetError):
            raise
        record = {"key": key, "skipped": _reason(exc, case.image)}
        for stale in (base.with_name(base.name + ".npy"), base.with_name(base.name + ".label.npy")):
            stale.unlink(missing_ok=True)
        _save_json(base.with_suffix(".json"), record)
        return record
    return _store_entry(cache_dir, config.dtype, base, key, case, *arrays)


def _entry_base(cache_dir: Path, index: int, case: Case) -> Path:
    return cache_dir / f"{index:05d}-{re.sub(r'[^A-Za-z0-9._-]+', '_', case.name)[:80]}"


def _preprocess_case(config: PreprocessConfig, case: Case, image: Volume) -> tuple[np.ndarray, np.ndarray | None, GridMapping]:
    if case.label is None:
        tensor, mapping = preprocess(image, config)
        return tensor[0, 0].numpy(), None, mapping
    label = read_volume(case.label)
    _check_label(case, image, label)
    try:
        tensor, label_tensor, mapping = preprocess(image, config, label)
    except InputError as exc:
        raise DatasetError(f"{case.image} (label {case.label}): {exc}") from None
    return tensor[0, 0].numpy(), label_tensor[0, 0].numpy(), mapping


def _store_entry(cache_dir: Path, dtype: str, base: Path, key: str, case: Case, image: np.ndarray,
                 label: np.ndarray | None, mapping: GridMapping) -> dict:
    files = {"image": base.name + ".npy"}
    _save_npy(base.with_name(files["image"]), image.astype(dtype, copy=False))
    if label is not None:
        files["label"] = base.name + ".label.npy"
        _save_npy(base.with_name(files["label"]), label.astype(np.uint8, copy=False))
    record = {
        "key": key,
        "name": case.name,
        "source": {"image": str(case.image), "label": str(case.label) if case.label else None},
        "files": {role: [name, (cache_dir / name).stat().st_size] for role, name in files.items()},
        "mapping": mapping.to_dict(),
    }
    _save_json(base.with_suffix(".json"), record)  # written last: the entry exists once this exists
    return {**record, "base": base}


def _reason(exc: Exception, path: Path) -> str:
    """The error message without its leading ``path:`` (skipped.txt puts the path in its own column)."""
    message = " ".join(str(exc).split())
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _check_label(case: Case, image: Volume, label: Volume) -> None:
    """The label must lie on the image's grid and hold integers 0..255."""
    if not image.same_grid(label):
        raise DatasetError(
            f"{case.label}: the label is not on the grid of its image {case.image}: shape (k, j, i) {label.shape} vs "
            f"{image.shape}, spacing {np.round(label.spacing, 4).tolist()} vs {np.round(image.spacing, 4).tolist()}, "
            f"origin {np.round(label.origin, 3).tolist()} vs {np.round(image.origin, 3).tolist()}; resample the label onto the image."
        )
    values = label.array
    low, high = (values.min(), values.max()) if values.size else (0, 0)
    if low < 0 or high > 255 or (values.dtype.kind == "f" and not np.array_equal(values, np.rint(values))):
        raise DatasetError(f"{case.label}: label values must be integers in 0..255, got the range {low}..{high} ({values.dtype}).")
