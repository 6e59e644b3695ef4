"""Key maps and their report: a foreign checkpoint's keys renamed for our networks, and what matched.

A key map (:func:`voco_keys`, :func:`misfm_keys`) is a function ``str -> str | None`` (``None`` drops
the key). :func:`match_state` pairs the renamed tensors with a network's ``state_dict()`` and returns the
state to load plus a :class:`MatchReport` of matched, missing, unexpected, shape-mismatched and dropped
keys. Wrong shapes always fail; a partial match fails unless allowed (the official loaders'
``strict=False`` loads nothing without a word when the prefixes are wrong).

Example::

    foreign = load_foreign_state("VoCo_B_SSL_head.pt")              # ssl3d.weights.checkpoint
    target = select_keys(net.state_dict(), SWIN_ENCODER_PREFIXES)    # swinViT.* + encoder*
    state, report = match_state(target, foreign, voco_keys, source="VoCo_B_SSL_head.pt")
    net.load_state_dict(state, strict=False)
    print(report.summary())   # "VoCo_B_SSL_head.pt: updated 145 of 145 tensors ..."
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from torch import Tensor

from ..errors import ConfigError, WeightsError
from .checkpoint import LISTED

__all__ = ["SWIN_ENCODER_PREFIXES", "MatchReport", "select_keys", "match_state", "voco_keys", "misfm_keys"]

SWIN_ENCODER_PREFIXES = ("swinViT.", "encoder")
"""The SwinUNETR entries VoCo pretrains: ``swinViT.*`` and ``encoder1/2/3/4/10.*`` (145 tensors at size 48)."""



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


def select_keys(state: Mapping[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    """The entries of ``state`` whose key starts with one of ``prefixes`` (e.g. :data:`SWIN_ENCODER_PREFIXES`)."""
    return {key: value for key, value in state.items() if key.startswith(prefixes)}


def _listing(items: list[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more


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
        shown = "; ".join(f"{k}: file {list(f)} vs network {list(m)}" for k, f, m in report.mismatched[:LISTED])
        more = f" (and {len(report.mismatched) - LISTED} more)" if len(report.mismatched) > LISTED else ""
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
