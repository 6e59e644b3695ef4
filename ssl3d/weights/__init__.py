"""Import of released checkpoints (VoCo, MIS-FM, SwinUNETR segmentation) as bundles.

The package's shape, in dependency order::

    checkpoint.py       the one safe reader: torch.load(weights_only=True), container unwrapping
    keymap.py           key maps (VoCo, MIS-FM) and the MatchReport of what a file filled
    imported_bundle.py  the one writer: --out checked, provenance (file, its SHA-256, format, match), bundle
    voco.py, misfm.py, swinunetr_seg.py    one module per foreign format

:func:`import_weights` dispatches by format (``ssl3d import-weights --format ...`` is that call). The
reader's and key maps' names are bound here on first use, so ``import ssl3d.weights`` does not load torch.

Example::

    report = import_weights("VoCo_10k.pt", "voco", "voco_bundle")       # preset voco-v1, teacher branch
    print(report.summary())
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .keymap import MatchReport

__all__ = [
    "CONTAINER_KEYS",
    "FORMATS",
    "SWIN_ENCODER_PREFIXES",
    "MatchReport",
    "import_weights",
    "load_foreign_state",
    "match_state",
    "misfm_keys",
    "read_checkpoint",
    "select_keys",
    "stated_merging",
    "unwrap_state",
    "voco_keys",
]

FORMATS = {"voco": "voco-v1", "mis-fm": "vf-v1", "swinunetr-seg": None}
"""``--format`` values and the preset each imports under by default (swinunetr-seg takes none)."""

_LAZY = {"checkpoint": ("CONTAINER_KEYS", "load_foreign_state", "read_checkpoint", "stated_merging", "unwrap_state"),
         "keymap": ("SWIN_ENCODER_PREFIXES", "MatchReport", "match_state", "misfm_keys", "select_keys", "voco_keys")}


def __getattr__(name: str):
    from importlib import import_module

    for module, names in _LAZY.items():
        if name in names:
            return getattr(import_module(f"{__name__}.{module}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def import_weights(path: str | PathLike, fmt: str, out_dir: str | PathLike, preset: str | None = None, branch: str = "teacher",
                   labels: str | None = None, allow_partial: bool = False) -> MatchReport:
    """Turn a released checkpoint into a bundle; nothing is written unless the import succeeds.

    Args:
        path: the checkpoint file, read with ``torch.load(weights_only=True)``.
        fmt: one of :data:`FORMATS`.
        out_dir: the bundle folder (new, empty, or a bundle that is replaced).
        preset: voco: voco-v1|voco-v2; mis-fm: vf-v1|vf-v2 (PCT-Net); default :data:`FORMATS`' entry.
        branch: voco: ``teacher`` or ``student`` for files holding both.
        labels: swinunetr-seg: ``"btcv"`` or ``"1:liver,2:spleen,..."``.
        allow_partial: accept a file that fills only part of the network (reported).

    Raises:
        ConfigError: unknown format, or a preset the format cannot take.
        WeightsError: unreadable or unsafe file, wrong shapes, a partial match not allowed.
        InputError: ``out_dir`` exists and is not a bundle folder.
    """
    from ..config import look_up

    fmt = look_up(fmt, FORMATS, "--format")
    path, out_dir = Path(path), Path(out_dir)
    if fmt == "voco":
        from .voco import import_voco_weights

        return import_voco_weights(path, preset or FORMATS[fmt], out_dir, branch, allow_partial)
    if fmt == "mis-fm":
        from .misfm import import_misfm_weights

        return import_misfm_weights(path, preset or FORMATS[fmt], out_dir, allow_partial)
    from .swinunetr_seg import import_swinunetr_segmentation

    return import_swinunetr_segmentation(path, out_dir, labels, allow_partial)
