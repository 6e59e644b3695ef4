"""The one safe reader of foreign checkpoints: ``torch.load(weights_only=True)`` (never unpickling code,
numpy scalars and pickled optimizer objects kept as inert data), the tensors unwrapped from their
container, and the SwinUNETR merge variant a file states.

Example::

    checkpoint = read_checkpoint("VoCo_10k.pt")          # WeightsError, one line, for anything unsafe
    state = unwrap_state(checkpoint, "VoCo_10k.pt")      # {key: tensor}, nested keys joined with dots
"""

from __future__ import annotations

import re
import warnings
from os import PathLike
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..errors import WeightsError

__all__ = ["CONTAINER_KEYS", "LISTED", "read_checkpoint", "unwrap_state", "load_foreign_state", "stated_merging"]

CONTAINER_KEYS = ("state_dict", "model_state_dict", "network_weights", "net", "model")
"""Keys under which checkpoints nest their weights, tried in this order."""

LISTED = 5
"""Keys named per category in error messages."""

_OPTIMIZERS = (("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"))  # pickled whole by some training scripts


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Tensor]:
    """Tensors of a (nested) mapping, nested names joined with dots; other values are ignored."""
    flat: dict[str, Tensor] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Tensor):
            flat[name] = value
        elif isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
    return flat


class _Inert:
    """Stand-in for a pickled optimizer object: keeps its state as plain data, runs nothing."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _plain_dict(*_: Any) -> dict:
    return {}  # stands in for collections.defaultdict(dict), which the weights-only unpickler cannot fill


def _safe_globals() -> list[Any]:
    """What training checkpoints pickle beside the tensors, made loadable without running code.

    * numpy scalars, dtypes and plain arrays (PyMIC's ``valid_pred`` is a ``numpy.float64``); each
      reconstruct function under its numpy-2 name and, as ``(obj, name)``, the numpy-1 name older
      files hold (``numpy.core.multiarray.scalar``);
    * whole optimizer objects (VoCo's ``model_current_epoch.pt`` stores ``"optimizer": optimizer``):
      read as inert data (:class:`_Inert`), never as a torch optimizer.
    """
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core to numpy._core
    names = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64", "longdouble", "complex64", "complex128")
    allowed: list[Any] = [np.dtype, np.ndarray, *{type(np.dtype(n)) for n in names}, dict]
    for func in ("scalar", "_reconstruct"):
        obj = getattr(core.multiarray, func)
        allowed += [(obj, f"numpy._core.multiarray.{func}"), (obj, f"numpy.core.multiarray.{func}")]
    allowed += [(_Inert, f"torch.optim.{module}.{cls}") for module, cls in _OPTIMIZERS]
    return [*allowed, (_plain_dict, "collections.defaultdict")]


def _load_reason(exc: Exception) -> str:
    """One line saying why torch.load failed: the unpickler's own cause, not its generic first line."""
    marker = "WeightsUnpickler error:"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    at = next((i for i, line in enumerate(lines) if marker in line), None)
    cause = ""
    if at is not None:  # "WeightsUnpickler error: Unsupported global: GLOBAL x.y was not an allowed global ... Please use ..."
        cause = lines[at].split(marker, 1)[1].strip() or (lines[at + 1] if at + 1 < len(lines) else "")
        cause = cause.split(" Please use", 1)[0].strip()
    refused = (re.search(r"GLOBAL (\S+) was not an allowed global", cause) or re.search(r"but got <class '([^']+)'>", cause)
               or re.search(r"unsupported GLOBAL (\S+) whose module", " ".join(lines)))
    if refused:  # the one fact the user needs; torch's allowlisting advice does not apply to a foreign file
        cause = f"refused global {refused.group(1)}: a pickled object that needs code to build; only tensors and plain data are read"
    # torch's first lines advise weights_only=False (arbitrary code): never repeat them
    reason = cause or next((line for line in lines if "weights_only" not in line and "trust" not in line), "")
    return f"{type(exc).__name__}: {reason[:300]}" if reason else type(exc).__name__


def read_checkpoint(path: str | PathLike[str]) -> Any:
    """Load a foreign checkpoint file as it is (top-level dict and all), safely, on the CPU.

    ``torch.load(weights_only=True)`` with numpy scalars, dtypes and arrays allowed and pickled
    optimizers read as inert data (:func:`_safe_globals`): PyMIC and VoCo training checkpoints hold them
    next to the tensors (``valid_pred``, optimizer states). Anything else that needs code is refused.

    Args:
        path: the checkpoint file.

    Raises:
        WeightsError: the file is missing or cannot be read this way; the message keeps the cause.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file.")
    try:
        with torch.serialization.safe_globals(_safe_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a plain pickle: refused below
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        reason = _load_reason(exc)
        imports = _pickle_imports(path) if "refused global" not in reason else []
        if imports:  # torch stopped before the global (an opcode it does not read): name what it would import
            reason += f"; the file would import {', '.join(imports)} (code), so it is refused unread"
        raise WeightsError(f"{path}: cannot be read as a weights-only torch checkpoint ({reason}).") from exc


def _pickle_imports(path: Path, limit: int = 3) -> list[str]:
    """The globals a pickle (or a torch zip's data.pkl) names, found by reading its opcodes (nothing runs);
    [] when it names none or cannot be parsed."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next((n for n in archive.namelist() if n.endswith("data.pkl")), None)
                data = archive.read(name) if name else b""
        else:
            data = path.read_bytes()
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle at all: torch's reason stands alone
        return []
    plain = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"}
    return [g for g in dict.fromkeys(found) if g not in plain and not g.startswith("torch.")][:limit]


def unwrap_state(obj: Any, path: str | PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a loaded checkpoint: the entry under one of :data:`CONTAINER_KEYS` when there is
    one, nested mappings flattened to dotted keys.

    Raises:
        WeightsError: not a mapping, or no tensors in it (``path`` names the file).
    """
    if isinstance(obj, Tensor) or not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a mapping of tensors (a state dict), got {type(obj).__name__}.")
    for key in CONTAINER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    state = _flatten(obj)
    if not state:
        raise WeightsError(f"{path}: holds no tensors (top-level keys: {list(obj)[:LISTED]}).")
    return state


def stated_merging(obj: Any, path: str | PathLike[str]) -> str | None:
    """The SwinUNETR token-merge variant a loaded checkpoint states (a top-level ``merging`` string), or None.

    Released VoCo / SwinUNETR files state none (they were trained under MONAI <= 1.4: ``"v1.3"``); see
    :mod:`ssl3d.nets.swin_merging`. Raises WeightsError for a value that is not a known variant.
    """
    from ..nets.swin_merging import MERGING_VARIANTS

    stated = obj.get("merging") if isinstance(obj, Mapping) else None
    if stated is not None and stated not in MERGING_VARIANTS:
        raise WeightsError(f"{path}: 'merging' is {stated!r}; expected one of {sorted(MERGING_VARIANTS)}.")
    return stated


def load_foreign_state(path: str | PathLike[str]) -> dict[str, Tensor]:
    """Read a foreign checkpoint's tensors, safely, on the CPU.

    The file is read by :func:`read_checkpoint` (``torch.load(weights_only=True)``, numpy scalars
    allowed). If the top level holds one of :data:`CONTAINER_KEYS` (``state_dict``, ``model_state_dict``
    for PyMIC, ...), that entry is used; nested mappings (e.g. ``{"student": {...}, "teacher": {...}}``)
    are flattened to dotted keys. Optimizer states and other entries beside the container are ignored.

    Args:
        path: the checkpoint file (``.pt``/``.pth``).

    Returns:
        ``{key: tensor}`` in file order.

    Raises:
        WeightsError: the file is missing, unreadable, needs unpickling code, or holds no tensors.
    """
    return unwrap_state(read_checkpoint(path), path)
