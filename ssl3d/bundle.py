"""Model bundles: a folder with ``model.safetensors`` (weights) and ``bundle.json`` (everything else).

``bundle.json`` has a ``schema`` version and sections. Each feature registers the sections it owns with a
validator (:func:`register_section`); unknown sections are rejected with the list of known ones, and a
bundle written by a newer schema says "requires schema X, this ssl3d reads up to Y: please update".

Core sections::

    network       {"name": str, "kwargs": {...}}                      required
    task          "pretext" | "segmentation" | "interactive"          required
    preprocessing PreprocessConfig as a dict                           required
    labels        [{"value": int, "name": str, "color": [r, g, b] (0-255), "terminology": {...}?}]
    pretext       {"method": "voco"|"vf", "preset": str, "grid": int?, "heads": {...} | null}
    provenance    {"data": str, "steps": int, "source": str?, "licence": str?, "assumed": {...}?}
    metrics       {name: float | {...}}
    preset        the resolved preset the model was trained with (as a dict)

Example::

    write_bundle("out/model", model.state_dict(), {"network": {...}, "task": "segmentation", ...})
    bundle = read_bundle("out/model"); state = bundle.state_dict()
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import BundleError
from .filemodes import give_umask_mode

__all__ = ["SCHEMA", "Bundle", "read_bundle", "write_bundle", "register_section", "validate_meta", "as_bundle", "file_sha256"]

SCHEMA = 1
WEIGHTS = "model.safetensors"
META = "bundle.json"
TASKS = ("pretext", "segmentation", "interactive")
_REQUIRED = ("network", "task", "preprocessing")
_VALIDATORS: dict[str, Callable[[Any], None]] = {}


def register_section(name: str, validator: Callable[[Any], None]) -> None:
    """Register a bundle.json section; ``validator(value)`` raises BundleError naming the bad field."""
    _VALIDATORS[name] = validator


def _need(condition: bool, message: str) -> None:
    if not condition:
        raise BundleError(message)


def _network(value: Any) -> None:
    _need(isinstance(value, dict) and isinstance(value.get("name"), str), "network must be {'name': str, 'kwargs': {...}}.")
    _need(isinstance(value.get("kwargs", {}), dict), f"network.kwargs must be a mapping, got {value.get('kwargs')!r}.")


def _task(value: Any) -> None:
    _need(value in TASKS, f"task must be one of {', '.join(TASKS)}, got {value!r}.")


def _preprocessing(value: Any) -> None:
    from .data.preprocess import PreprocessConfig

    _need(isinstance(value, dict), "preprocessing must be a mapping.")
    known = set(PreprocessConfig.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    _need(not unknown, f"preprocessing has unknown fields {unknown}; known: {sorted(known)}.")


def _labels(value: Any) -> None:
    _need(isinstance(value, list), "labels must be a list of {'value', 'name', 'color'}.")
    seen = set()
    for n, entry in enumerate(value):
        where = f"labels[{n}]"
        _need(isinstance(entry, dict), f"{where} must be a mapping.")
        _need(isinstance(entry.get("value"), int) and entry["value"] > 0, f"{where}.value must be a positive integer, got {entry.get('value')!r}.")
        _need(entry["value"] not in seen, f"{where}.value {entry['value']} is repeated.")
        seen.add(entry["value"])
        _need(isinstance(entry.get("name"), str) and entry["name"], f"{where}.name must be a non-empty string.")
        color = entry.get("color")
        _need(
            isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in color),
            f"{where}.color must be [r, g, b] integers 0-255, got {color!r}.",
        )


def _pretext(value: Any) -> None:
    _need(isinstance(value, dict) and value.get("method") in ("voco", "vf"), f"pretext.method must be 'voco' or 'vf', got {value!r}.")


def _weights(value: Any) -> None:
    digest = value.get("sha256") if isinstance(value, dict) else None
    _need(isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest),
          f"weights.sha256 must be 64 lowercase hex digits, got {digest!r}.")


def _mapping(name: str) -> Callable[[Any], None]:
    return lambda value: _need(isinstance(value, dict), f"{name} must be a mapping, got {type(value).__name__}.")


for _name, _check in (
    ("network", _network),
    ("task", _task),
    ("preprocessing", _preprocessing),
    ("labels", _labels),
    ("pretext", _pretext),
    ("weights", _weights),
    ("provenance", _mapping("provenance")),
    ("metrics", _mapping("metrics")),
    ("preset", _mapping("preset")),
    ("mapping_hint", _mapping("mapping_hint")),
):
    register_section(_name, _check)


def validate_meta(meta: dict, where: str = "bundle.json") -> dict:
    """Check the schema version, required sections, and each section's validator."""
    _need(isinstance(meta, dict), f"{where}: must be a JSON object.")
    schema = meta.get("schema", SCHEMA)
    _need(isinstance(schema, int), f"{where}: schema must be an integer, got {schema!r}.")
    _need(schema <= SCHEMA, f"{where}: requires bundle schema {schema}, this ssl3d reads up to {SCHEMA}: please update ssl3d.")
    for name in _REQUIRED:
        _need(name in meta, f"{where}: missing required section {name!r}.")
    for name, value in meta.items():
        if name == "schema":
            continue
        _need(name in _VALIDATORS, f"{where}: unknown section {name!r}; known: {', '.join(sorted(_VALIDATORS))}.")
        try:
            _VALIDATORS[name](value)
        except BundleError as exc:
            raise BundleError(f"{where}: {exc}") from None
    if meta["task"] == "pretext":
        _need("pretext" in meta, f"{where}: a pretext bundle needs a 'pretext' section.")
    return meta


@dataclass
class Bundle:
    """A bundle folder: its metadata, and its weights loaded on demand."""

    path: Path
    meta: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def network(self) -> dict:
        return self.meta["network"]

    def network_error(self, exc: Exception) -> BundleError:
        """The error for a network record (in bundle.json) that cannot be built: it names the bundle."""
        return BundleError(f"{self.path}: the network recorded in bundle.json ({self.network.get('name')!r}) cannot be built: {exc}")

    @property
    def labels(self) -> dict[int, tuple[str, tuple[int, int, int]]]:
        """{value: (name, (r, g, b) 0-255)}."""
        return {e["value"]: (e["name"], tuple(e["color"])) for e in self.meta.get("labels", [])}

    def state_dict(self, device: str = "cpu") -> dict:
        """The weights, checked against the SHA-256 that bundle.json records and for non-finite values.

        Raises:
            BundleError: the file is unreadable, does not match its recorded hash (damaged or replaced) or
                holds NaN/infinite values. Older bundles without a recorded hash load with a warning.
        """
        from safetensors.torch import load

        path = self.path / WEIGHTS
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BundleError(f"{path}: cannot read the weights ({exc.strerror or exc}).") from None
        self._check_hash(path, data)
        try:
            state = load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise BundleError(f"{path}: cannot read the weights ({exc}).") from None
        check_finite(state, str(path))
        return {k: v.to(device) for k, v in state.items()}

    def _check_hash(self, path: Path, data: bytes) -> None:
        expected = self.meta.get("weights", {}).get("sha256")
        if expected is None:
            warnings.warn(f"{path}: bundle.json records no SHA-256 of the weights (a bundle from an older ssl3d); "
                          "they are used unchecked.", stacklevel=3)
        elif hashlib.sha256(data).hexdigest() != expected:
            raise BundleError(f"{path}: the weights are damaged or were replaced: their SHA-256 differs from the one "
                              f"{self.path / META} records.")


def mismatch_details(exc: Exception, limit: int = 300) -> str:
    """What ``load_state_dict`` found wrong (missing, unexpected or mis-shaped keys), on one line; torch's
    first line only names the module class."""
    details = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
    return ("; ".join(details) or str(exc))[:limit]


def check_finite(tensors: dict, where: str) -> None:
    """BundleError naming ``where`` and the first tensor that holds NaN or infinite values."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(tensor.isfinite().all()):
            raise BundleError(f"{where}: tensor {name!r} holds NaN or infinite values; the weights are unusable.")


def read_bundle(path: str | os.PathLike) -> Bundle:
    """Read and validate a bundle folder (weights are loaded by :meth:`Bundle.state_dict`)."""
    path = Path(path)
    meta_path = path / META
    if not path.is_dir():
        raise BundleError(f"{path}: not a bundle folder (expected a folder with {META} and {WEIGHTS}).")
    if not meta_path.is_file() or not (path / WEIGHTS).is_file():
        raise BundleError(f"{path}: a bundle folder needs {META} and {WEIGHTS}.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{meta_path}: not valid JSON ({exc}).") from None
    return Bundle(path, validate_meta(meta, str(meta_path)))


def as_bundle(bundle: "Bundle | str | os.PathLike") -> Bundle:
    """APIs accept a path or a loaded bundle."""
    return bundle if isinstance(bundle, Bundle) else read_bundle(bundle)


def write_bundle(path: str | os.PathLike, state_dict: dict, meta: dict) -> Bundle:
    """Write a bundle folder atomically (a temporary folder renamed into place)."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = validate_meta({"schema": SCHEMA, **meta})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        give_umask_mode(tmp, folder=True)  # not mkdtemp's private 0700
        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in state_dict.items()}  # clone: no shared storage
        save_file(tensors, str(tmp / WEIGHTS))
        give_umask_mode(tmp / WEIGHTS)  # safetensors creates 0600 files
        meta = {**meta, "weights": {"sha256": file_sha256(tmp / WEIGHTS)}}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return Bundle(path, meta)


def file_sha256(path: str | os.PathLike) -> str:
    """A file's SHA-256 (hex), read in 1 MiB blocks (weights and released checkpoints are GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
