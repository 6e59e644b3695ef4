"""``results.csv``: the raw numbers of a study, one row per cell, held-out case and label, so the study can be
re-analysed elsewhere (:func:`read_results` reads it back for :func:`~ssl3d.study.summary.summarize_study`)."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Sequence

from .cells import read_evaluation
from .plan import Cell

__all__ = ["COLUMNS", "collect_results", "write_results", "read_results"]

COLUMNS = ("init", "cases", "seed", "cell", "case", "label", "value", "dice", "hd95_mm", "assd_mm", "pred_voxels", "ref_voxels")
_NUMBERS = {"cases": int, "seed": int, "value": int, "pred_voxels": int, "ref_voxels": int, "dice": float, "hd95_mm": float, "assd_mm": float}


def collect_results(out: Path, cells: Sequence[Cell]) -> list[dict]:
    """One row per (cell, held-out case, label) from every cell's ``evaluation.json``."""
    rows = []
    for cell in cells:
        for case, labels in read_evaluation(out, cell).items():
            for label, s in labels.items():
                rows.append({"init": cell.init, "cases": cell.cases, "seed": cell.seed, "cell": cell.name, "case": case, "label": label,
                             "value": s["value"], "dice": s["dice"], "hd95_mm": s["hd95"], "assd_mm": s["assd"],
                             "pred_voxels": s["pred_voxels"], "ref_voxels": s["ref_voxels"]})
    return rows


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_results(rows: Sequence[dict], path: Path) -> Path:
    """Write ``path`` atomically (NaN as an empty field, as ``ssl3d evaluate`` does)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row[c]) for c in COLUMNS])
    return write_text(path, text.getvalue())


def write_text(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_results(path: str | os.PathLike) -> list[dict]:
    """The rows of a ``results.csv``, numbers as numbers (empty fields as NaN)."""
    with open(path, encoding="utf-8", newline="") as handle:
        return [{k: (_NUMBERS[k](v) if v else math.nan) if k in _NUMBERS else v for k, v in row.items()} for row in csv.DictReader(handle)]
