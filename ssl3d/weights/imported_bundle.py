"""The one bundle writer of every weight import: the output folder checked first, then the provenance every
imported bundle carries (the file, its SHA-256, the format, the match report) beside what the format adds.

Example::

    check_out_dir(out)                                   # before reading a multi-GB file
    write_imported_bundle(out, state, meta, path, "mis-fm", report)
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from torch import Tensor

from ..bundle import file_sha256, write_bundle
from ..errors import InputError
from .keymap import MatchReport

__all__ = ["check_out_dir", "match_record", "write_imported_bundle"]


def check_out_dir(out_dir: Path) -> None:
    """Refuse an ``--out`` that exists and is not a bundle folder (an import replaces a bundle, nothing else).

    Raises:
        InputError: ``out_dir`` is a file, or a non-empty folder without ``bundle.json``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir()) and not (out_dir / "bundle.json").is_file())):
        raise InputError(f"--out {out_dir}: exists and is not a bundle folder; choose a new or empty folder.")


def match_record(report: MatchReport) -> dict:
    """``provenance.match``: the summary line, counts, and the keys a partial import left at their init."""
    return {"summary": report.summary(), "matched": len(report.matched), "missing": report.missing, "unexpected": report.unexpected,
            "dropped": len(report.dropped), "partial": not report.complete}


def write_imported_bundle(out_dir: Path, state: Mapping[str, Tensor], meta: dict, source: Path, fmt: str, report: MatchReport) -> Path:
    """Write the bundle of an imported checkpoint; returns its folder.

    Args:
        out_dir: the bundle folder (checked by :func:`check_out_dir`; an existing bundle is replaced).
        state: the network's full state dict.
        meta: ``bundle.json`` sections of the format (its ``provenance`` keeps what the format records).
        source: the checkpoint file that was read.
        fmt: the ``--format`` name (``voco``, ``mis-fm``, ``swinunetr-seg``).
        report: the key match of the import.
    """
    source = Path(source)
    check_out_dir(out_dir)
    common = {"source": str(source.resolve()), "source_name": source.name, "sha256": file_sha256(source), "format": fmt,
              "match": match_record(report)}
    meta = {**meta, "provenance": {**meta.get("provenance", {}), **common}}
    return write_bundle(out_dir, dict(state), meta).path
