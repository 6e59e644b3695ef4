"""Import of officially released checkpoints (VoCo, MIS-FM) through key maps that report what matched.

A foreign checkpoint is read with ``torch.load(weights_only=True)`` (never unpickling code), unwrapped
from its container (``state_dict``, ``model_state_dict``, ...), and renamed key by key with a key map
(:func:`voco_keys`, :func:`misfm_keys`: a function ``str -> str | None``; ``None`` drops the key).
:func:`match_state` then pairs the renamed tensors with a network's ``state_dict()`` and returns the
state to load plus a :class:`MatchReport` of matched, missing, unexpected, shape-mismatched and dropped
keys. Wrong shapes always fail; a partial match fails unless allowed (the official loaders'
``strict=False`` loads nothing without a word when the prefixes are wrong).

Example::

    foreign = load_foreign_state("VoCo_B_SSL_head.pt")
    target = select_keys(net.state_dict(), SWIN_ENCODER_PREFIXES)    # swinViT.* + encoder*
    state, report = match_state(target, foreign, voco_keys, source="VoCo_B_SSL_head.pt")
    net.load_state_dict(state, strict=False)
    print(report.summary())   # "VoCo_B_SSL_head.pt: updated 145 of 145 tensors ..."
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from .errors import ConfigError, WeightsError

__all__ = [
    "CONTAINER_KEYS",
    "SWIN_ENCODER_PREFIXES",
    "MatchReport",
    "read_checkpoint",
    "unwrap_state",
    "load_foreign_state",
    "select_keys",
    "match_state",
    "stated_merging",
    "voco_keys",
    "misfm_keys",
]

CONTAINER_KEYS = ("state_dict", "model_state_dict", "network_weights", "net", "model")
"""Keys under which checkpoints nest their weights, tried in this order."""

SWIN_ENCODER_PREFIXES = ("swinViT.", "encoder")
"""The SwinUNETR entries VoCo pretrains: ``swinViT.*`` and ``encoder1/2/3/4/10.*`` (145 tensors at size 48)."""

_LISTED = 5  # keys named per category in error messages
_OPTIMIZERS = (("adam", "Adam"), ("adamw", "AdamW"), ("sgd", "SGD"))  # pickled whole by some training scripts


@dataclass
class MatchReport:
    """What a key map matched between a foreign checkpoint and a network.

    Attributes:
        source: the file (or a description) the tensors came from.
        matched: network keys filled from the file.
        missing: network keys the file does not provide.
        unexpected: renamed file keys the network does not have.
        mismatched: ``(key, file shape, network shape)`` for names that match with different shapes.
        dropped: file keys the key map discards on purpose (other branch, projection heads, ...).
    """

    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every network key matched and every kept file key used."""
        return bool(self.matched) and not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: ``"FILE: updated N of M tensors; a missing, b unexpected, c dropped by the key map"``."""
        total = len(self.matched) + len(self.missing) + len(self.mismatched)
        return (
            f"{self.source}: updated {len(self.matched)} of {total} tensors; {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} with wrong shapes, "
            f"{len(self.dropped)} dropped by the key map"
        )

    def details(self, limit: int = 10) -> list[str]:
        """Lines naming the missing, unexpected and wrong-shape keys (``limit`` of each), each category
        headed by its count and a breakdown by module (the first two parts of the key).

        Example::

            report.details(2)
            # ["missing 80 (pred_heads.2: 80):", "  pred_heads.2.up1.up.0.weight", "  pred_heads.2.up1.up.0.bias",
            #  "  ... and 78 more"]
        """
        shapes = [f"{k}: file {list(f)} vs network {list(m)}" for k, f, m in self.mismatched]
        categories = (("missing", self.missing, self.missing), ("unexpected", self.unexpected, self.unexpected),
                      ("wrong shape", [k for k, _, _ in self.mismatched], shapes))
        lines: list[str] = []
        for title, keys, shown in categories:
            if not keys:
                continue
            groups: dict[str, int] = {}
            for key in keys:
                group = ".".join(key.split(".")[:2])
                groups[group] = groups.get(group, 0) + 1
            breakdown = ", ".join(f"{g}: {n}" for g, n in list(groups.items())[:limit])
            breakdown += f", ... ({len(groups) - limit} more modules)" if len(groups) > limit else ""
            lines.append(f"{title} {len(keys)} ({breakdown}):")
            lines += [f"  {item}" for item in shown[:limit]]
            if len(shown) > limit:
                lines.append(f"  ... and {len(shown) - limit} more")
        return lines


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
        raise WeightsError(f"{path}: holds no tensors (top-level keys: {list(obj)[:_LISTED]}).")
    return state


def stated_merging(obj: Any, path: str | PathLike[str]) -> str | None:
    """The SwinUNETR token-merge variant a loaded checkpoint states (a top-level ``merging`` string), or None.

    Released VoCo / SwinUNETR files state none (they were trained under MONAI <= 1.4: ``"v1.3"``); see
    :mod:`ssl3d.nets.swin_merging`. Raises WeightsError for a value that is not a known variant.
    """
    from .nets.swin_merging import MERGING_VARIANTS

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


def select_keys(state: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """The entries of ``state`` whose key starts with one of ``prefixes`` (e.g. :data:`SWIN_ENCODER_PREFIXES`)."""
    return {key: value for key, value in state.items() if key.startswith(prefixes)}


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - _LISTED} more" if len(items) > _LISTED else ""
    return ", ".join(items[:_LISTED]) + more


def match_state(
    model_state: Mapping[str, Tensor],
    foreign: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    allow_partial: bool = False,
    source: str = "checkpoint",
) -> tuple[dict[str, Tensor], MatchReport]:
    """Pair a foreign state with a network's state through a key map, checking names and shapes.

    Args:
        model_state: the network's ``state_dict()`` (or the part of it to fill; meta tensors work).
        foreign: tensors from :func:`load_foreign_state`.
        rename: key map, file key -> network key, or ``None`` to drop the entry.
        allow_partial: accept missing or unexpected keys (they are still reported).
        source: name of the file, used in messages.

    Returns:
        ``(state, report)``: ``state`` maps matched network keys to the file's tensors, ready for
        ``load_state_dict(state, strict=False)``.

    Raises:
        WeightsError: any shape mismatch (naming the key and both shapes); two file keys renamed to the
            same name; nothing matched; missing or unexpected keys unless ``allow_partial``.
    """
    report = MatchReport(source=source)
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, tensor in foreign.items():
        name = rename(key)
        if name is None:
            report.dropped.append(key)
        elif name in origin:
            raise WeightsError(f"{source}: keys {origin[name]!r} and {key!r} both map to {name!r}.")
        elif name not in model_state:
            report.unexpected.append(name)
        elif tuple(tensor.shape) != tuple(model_state[name].shape):
            report.mismatched.append((name, tuple(tensor.shape), tuple(model_state[name].shape)))
        else:
            state[name] = tensor
            report.matched.append(name)
        if name is not None:
            origin[name] = key
    report.missing = [key for key in model_state if key not in state and key not in origin]
    _raise_on_bad_match(report, allow_partial)
    return state, report


def _raise_on_bad_match(report: MatchReport, allow_partial: bool) -> None:
    if report.mismatched:
        shown = "; ".join(f"{k}: file {list(f)} vs network {list(m)}" for k, f, m in report.mismatched[:_LISTED])
        more = f" (and {len(report.mismatched) - _LISTED} more)" if len(report.mismatched) > _LISTED else ""
        raise WeightsError(f"{report.source}: {len(report.mismatched)} tensors have the wrong shape: {shown}{more}.")
    if not report.matched:
        raise WeightsError(
            f"{report.source}: no tensor matched the network ({report.summary()}); "
            f"file keys after renaming: {_listing(report.unexpected) or 'none'}."
        )
    if (report.missing or report.unexpected) and not allow_partial:
        parts = []
        if report.missing:
            parts.append(f"missing from the file: {_listing(report.missing)}")
        if report.unexpected:
            parts.append(f"not in the network: {_listing(report.unexpected)}")
        raise WeightsError(
            f"{report.summary()}; {'; '.join(parts)}. Pass allow_partial (--allow-partial) to load anyway."
        )


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def voco_keys(key: str, branch: str = "teacher") -> str | None:
    """Key map for released VoCo checkpoints onto MONAI ``SwinUNETR(use_v2=True)`` names.

    Handles the v1 ``VoCo_10k.pt`` layout and the v2 ``VoCo_{B,L,H}_SSL_head.pt`` layout (145 tensors
    ``swinViT.*`` + ``encoder*`` at feature size 48): strips ``module.``, selects ``student.``/``teacher.``
    by ``branch`` (the other branch is dropped), strips ``backbone.``, renames ``swin_vit`` -> ``swinViT``,
    and drops everything that is not part of the encoder (projection heads, decoders).

    Args:
        key: a key of the file.
        branch: ``"teacher"`` (what the official v1 release exports: the EMA network) or ``"student"``.

    Returns:
        The SwinUNETR key, or ``None`` to drop the entry.

    Example::

        voco_keys("module.teacher.swin_vit.patch_embed.proj.weight")   # "swinViT.patch_embed.proj.weight"
    """
    if branch not in ("student", "teacher"):
        raise ConfigError(f"branch must be 'student' or 'teacher', got {branch!r}.")
    name = _strip(key, ("module.",))
    for side in ("student.", "teacher."):
        if name.startswith(side):
            if side[:-1] != branch:
                return None
            name = name[len(side) :]
    name = _strip(name, ("module.", "backbone.")).replace("swin_vit", "swinViT")
    return name if name.startswith(SWIN_ENCODER_PREFIXES) else None


def misfm_keys(key: str) -> str | None:
    """Key map for MIS-FM (PyMIC PCT-Net) checkpoints: strip a DataParallel ``module.`` prefix.

    The checkpoint is a dict whose ``model_state_dict`` :func:`load_foreign_state` unwraps; its keys
    otherwise equal the PCT-Net ``state_dict()`` names.
    """
    return _strip(key, ("module.",))
