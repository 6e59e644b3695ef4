"""What the Slicer modules show and find of model bundles: bundle.json as a dict, its task and pretext
method, one-line and HTML summaries, and the bundle a run wrote.

Standard library only (Slicer's process imports it before the engine's packages are installed); the full
reader and writer of bundles is :mod:`ssl3d.bundle`. Every function takes what may be missing: a folder
without bundle.json reads as ``{}``, and the summaries of ``{}`` are empty.

Example::

    info = read_bundle_info(Path("runs/voco"))     # {} when there is no bundle.json
    bundle_task(info), pretext_method(info)         # "pretext", "voco"
    describe_pretext(info)                          # "voco · voco-v1-cpu · cnn-small · 40 steps"
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from .job_arguments import PRETEXT_METHODS

__all__ = ["read_bundle_info", "bundle_task", "takes_clicks", "pretext_method", "describe_pretext", "describe_bundle",
           "bundle_from_outputs", "newest_bundle"]


def read_bundle_info(folder: Optional[Union[str, os.PathLike]]) -> dict:
    """bundle.json of a bundle folder as a dict ({} without a folder, a bundle.json, or valid JSON)."""
    try:
        return json.loads((Path(folder) / "bundle.json").read_text(encoding="utf-8")) if folder else {}
    except (OSError, ValueError):
        return {}


def bundle_task(info: Mapping[str, Any]) -> Optional[str]:
    """The bundle's task ('segmentation', 'interactive', 'pretext'), None without a bundle."""
    task = info.get("task")
    return (task.get("name") or task.get("type")) if isinstance(task, dict) else task


def takes_clicks(info: Mapping[str, Any]) -> bool:
    """Whether the bundle can refine a segment by clicks (click-to-segment and segmentation bundles)."""
    return bundle_task(info) in ("interactive", "segmentation")


def pretext_method(info: Mapping[str, Any]) -> Optional[str]:
    """'voco' or 'vf' for a pretext bundle, else None."""
    method = str((info.get("pretext") or {}).get("method", "")).lower()
    return method if method in PRETEXT_METHODS else None


def describe_pretext(info: Mapping[str, Any]) -> str:
    """One line on a pretext bundle: method, preset, network, steps, and whether it can be inspected."""
    if not info:
        return ""
    pretext = info.get("pretext") or {}
    provenance = info.get("provenance") or {}
    network = (info.get("network") or {}).get("name", "?")
    parts = [f"{pretext.get('method', '?')} · {pretext.get('preset', '?')} · {network}"]
    if provenance.get("steps") is not None:
        parts.append(f"{provenance['steps']} steps")
    if pretext.get("heads") is None and "heads" in pretext:
        parts.append("no pretext heads (imported weights): cannot be inspected")
    return " · ".join(parts)


def describe_bundle(info: Mapping[str, Any]) -> str:
    """HTML summary of bundle.json: task and network, labels with colours, spacing, provenance, metrics, licence."""
    if not info:
        return "<i>Choose a model bundle folder (model.safetensors + bundle.json).</i>"
    network = (info.get("network") or {}).get("name", "?")
    lines = [f"<b>{html.escape(str(bundle_task(info)))}</b> · {html.escape(str(network))}"]
    swatches = []
    for entry in info.get("labels") or []:
        color = entry.get("color") or (128, 128, 128)
        hex_color = "#%02x%02x%02x" % tuple(int(c) for c in color[:3])
        swatches.append(f'<span style="color:{hex_color}">&#9632;</span> {entry.get("value")} '
                        f'{html.escape(str(entry.get("name", "")))}')
    if swatches:
        lines.append("Labels: " + ", ".join(swatches))
    spacing = (info.get("preprocessing") or {}).get("spacing")
    if spacing:
        lines.append("Spacing: {spacing} mm".format(spacing=" x ".join(f"{s:g}" for s in spacing)))
    provenance = {k: v for k, v in (info.get("provenance") or {}).items() if k != "cache"}
    licence = provenance.pop("licence", None) or provenance.pop("license", None)
    for title, value in (("Pretext", info.get("pretext")), ("Provenance", provenance), ("Validation", info.get("metrics"))):
        text = _flat(value) if value else ""
        if text:
            lines.append(f"{title}: {html.escape(text)}")
    if licence:
        lines.append(f"Licence: {html.escape(str(licence))}")
    return "<br>".join(lines)


def _flat(value: Any) -> str:
    """A short one-line text for a JSON value (dicts as key=value pairs, one level of nesting)."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_flat(v)}" if not isinstance(v, dict) else f"{k}: {_flat(v)}"
                         for k, v in value.items() if v not in (None, {}, []) and not isinstance(v, list))
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def bundle_from_outputs(outputs: Mapping[str, Any]) -> Optional[Path]:
    """The bundle folder among a ``done`` event's outputs (a bundle folder or its bundle.json), else None."""
    for path in map(Path, outputs.values()):
        if (path / "bundle.json").is_file():
            return path
        if path.name == "bundle.json" and path.is_file():
            return path.parent
    return None


def newest_bundle(folder: Optional[Union[str, os.PathLike]]) -> Optional[Path]:
    """The most recently written bundle folder inside a run folder, else None."""
    folder = Path(folder) if folder else None
    bundles = [p.parent for p in folder.rglob("bundle.json")] if folder and folder.is_dir() else []
    return max(bundles, key=lambda p: (p / "bundle.json").stat().st_mtime, default=None)
