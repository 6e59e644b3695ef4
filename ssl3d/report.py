"""A self-contained HTML report of a demo or a study: headings, paragraphs, tables and PNG pictures."""

from __future__ import annotations

import html
import os
from pathlib import Path

__all__ = ["write_report"]

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


def write_report(path: str | os.PathLike, title: str, sections: list[dict]) -> Path:
    """Sections: ``{"title": str, "text": str?, "table": {row: {column: value}}?, "images": [path]?}``.

    Image paths are written relative to the report's folder, so the folder can be moved as a whole.
    """
    path = Path(path)
    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title><style>{_STYLE}</style><h1>{html.escape(title)}</h1>"]
    for section in sections:
        parts.append(f"<h2>{html.escape(section['title'])}</h2>")
        if section.get("text"):
            parts.append(f"<p>{html.escape(section['text'])}</p>")
        if section.get("table"):
            parts.append(_table(section["table"]))
        for image in section.get("images", []):
            rel = os.path.relpath(Path(image), path.parent)
            parts.append(f"<p><img src='{html.escape(rel)}' alt='{html.escape(Path(image).name)}'></p>")
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text("\n".join(parts) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
