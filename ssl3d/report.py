"""A self-contained HTML report of a demo or a study: headings, paragraphs, tables and PNG pictures."""

from __future__ import annotations

import html
import os
from pathlib import Path

__all__ = ["write_report", "VOCO_GUIDE", "VF_GUIDE"]

# How to read the inspection pictures (ssl3d.inspect: voco.png, fusion.png), for any report that shows them.
VOCO_GUIDE = (
    "One axial slice through the middle of the volume the model sees (patient's right on the left, anterior up), cut by "
    "white lines into the grid of base crops; the cyan box is one random crop. Left: the model's score p for each cell "
    "(the number, and a heat tint from black through red and yellow to white as p grows); middle: the training target, the "
    "share of the crop's area in each cell (it sums to 1); right: the crop slid over the whole grid, each position tinted "
    "by the share of the predicted weight that falls on the cells it really overlaps (white = all of it). A model that has "
    "learnt where crops lie makes the left panel look like the middle one and the right one bright; the line below gives "
    "the predicted and true cell, whether the top-1 guess is right, the L1 distance to the target, the entropy of p "
    "(lower = surer) and chance (1 / number of cells)."
)
VF_GUIDE = (
    "Three axial slices (rows) of a fused sample: the volume is cut into blocks and each block blended with another "
    "crop of the volume, fused = alpha * foreground + (1 - alpha) * background, alpha one of the classes in the legend "
    "(untinted: alpha 0, pure background). Columns: the fused image the network sees, the true alpha per block, the alpha "
    "it predicts per voxel, and the error |delta alpha| in class steps drawn in the same colours (the first colour = one "
    "step off; untinted = right). A model that has learnt the task reproduces the true-alpha column and leaves the error "
    "column mostly untinted; the line below gives the balanced accuracy (mean recall over the classes) against chance "
    "(1 / number of classes), the foreground Dice and the mean confidence."
)

_STYLE = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}img{max-width:100%;border:1px solid #ccc}" \
         "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}"


def _table(rows: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(rows.values())).keys())
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["", *columns, "mean"])
    body = ""
    for name, values in rows.items():
        mean = sum(values.values()) / max(1, len(values))
        cells = "".join(f"<td>{values[c]:.3f}</td>" for c in columns)
        body += f"<tr><td>{html.escape(name)}</td>{cells}<td><b>{mean:.3f}</b></td></tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _grid(rows: list[list[str]]) -> str:
    """A table of text cells; the first row is the header."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(path: str | os.PathLike, title: str, sections: list[dict]) -> Path:
    """Sections: ``{"title": str, "text": str?, "items": [str]?, "table": {row: {column: value}}?,
    "grid": [[header, ...], [cell, ...], ...]?, "images": [path]?}``.

    Image paths are written relative to the report's folder, so the folder can be moved as a whole.
    """
    path = Path(path)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section['title'])}</h2>")
        if section.get("text"):
            parts.append(f"<p>{html.escape(section['text'])}</p>")
        if section.get("items"):
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in section["items"]) + "</ul>")
        if section.get("table"):
            parts.append(_table(section["table"]))
        if section.get("grid"):
            parts.append(_grid(section["grid"]))
        for image in section.get("images", []):
            rel = os.path.relpath(Path(image), path.parent)
            parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(Path(image).name)}'></p>")
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
