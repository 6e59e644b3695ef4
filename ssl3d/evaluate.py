"""Segmentation metrics: Dice, HD95 and ASSD per case and class (MONAI metrics), means, stds, a report.

For class value c, P = (prediction == c) and R = (reference == c):

- **Dice** = 2 |P ∩ R| / (|P| + |R|) (``monai.metrics.compute_dice``).
- **HD95** (mm) = the larger of the two directed 95th-percentile surface distances
  (``compute_hausdorff_distance(percentile=95)``).
- **ASSD** (mm) = the mean, over the surface voxels of both masks, of the distance to the other mask's
  surface (``compute_average_surface_distance(symmetric=True)``).
- Surfaces are the mask voxels with a face neighbour outside the mask (MONAI's ``get_mask_edges``);
  distances use the volume's voxel spacing along each array axis.

Empty masks (the convention, also written into every JSON summary):

- both P and R empty: Dice 1, HD95 and ASSD NaN (undefined; left out of the means);
- exactly one empty: Dice 0, HD95 and ASSD = the grid diagonal in mm (the largest distance the grid
  allows), so a missed or invented structure scores worst instead of dropping out of the means.

Means and stds are over the cases with a finite value (std: sample standard deviation, NaN for one case);
the ``all`` rows pool every (case, class) value.

Example::

    scores = evaluate_pair(read_volume("pred.nii.gz"), read_volume("ref.nii.gz"), {1: "liver"})
    scores["liver"]["dice"], scores["liver"]["hd95"]
    summary = evaluate_folders("preds/", "labelsTs/", out="report.csv")   # + report.json beside it
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .errors import ConfigError, InputError
from .filemodes import give_umask_mode
from .io import VOLUME_SUFFIXES, Volume, read_volume, volume_suffix

__all__ = ["METRICS", "CONVENTION", "parse_label_names", "evaluate_pair", "pair_cases", "evaluate_folders", "summarize", "check_report_path", "write_report"]

METRICS = ("dice", "hd95", "assd")
CONVENTION = (
    "both empty: dice 1, hd95/assd NaN (left out of means); one empty: dice 0, hd95/assd = grid diagonal (mm); "
    "std: sample standard deviation over cases with a finite value"
)
_COLUMNS = ("case", "label", "value", "dice", "hd95_mm", "assd_mm", "pred_voxels", "ref_voxels")
Labels = Mapping[int, str] | str | None


def parse_label_names(text: str) -> dict[int, str]:
    """``"1:liver,2:spleen"`` -> {1: "liver", 2: "spleen"}; ConfigError naming a bad item."""
    names: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        value, _, name = item.partition(":")
        if not value.strip().isdigit() or int(value) < 1 or not name.strip():
            raise ConfigError(f"--labels item {item!r} must look like VALUE:NAME with VALUE >= 1, e.g. 1:liver.")
        if int(value) in names:
            raise ConfigError(f"--labels value {int(value)} is given twice.")
        names[int(value)] = name.strip()
    if not names:
        raise ConfigError(f"--labels {text!r} names no label; use e.g. \"1:liver,2:spleen\".")
    return names


def _label_names(labels: Labels, arrays: tuple[np.ndarray, ...]) -> dict[int, str]:
    if isinstance(labels, str):
        return parse_label_names(labels)
    if labels is not None:
        return {int(v): str(n) for v, n in labels.items()}
    values = sorted(set().union(*(np.unique(a).tolist() for a in arrays)) - {0})
    return {int(v): f"label {int(v)}" for v in values}


def _label_array(volume: Volume, name: str) -> np.ndarray:
    array = volume.array
    if array.dtype.kind == "f":
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{name}: not a label map (it holds non-integer values).")
        array = array.astype(np.int64)
    elif array.dtype.kind not in "iub":
        raise InputError(f"{name}: not a label map (voxel type {array.dtype}).")
    return array


def _check_grids(pred: Volume, ref: Volume, pred_name: str, ref_name: str) -> None:
    if pred.same_grid(ref):
        return
    details = []
    if pred.shape != ref.shape:
        details.append(f"shape {pred.shape} vs {ref.shape}")
    for what in ("spacing", "origin", "direction"):
        a, b = getattr(pred, what), getattr(ref, what)
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
            details.append(f"{what} {np.round(a, 4).tolist()} vs {np.round(b, 4).tolist()}")
    raise InputError(f"{pred_name} and {ref_name} are not on the same grid ({'; '.join(details)}); resample the prediction onto the reference grid.")


def evaluate_pair(pred: Volume, ref: Volume, labels: Labels = None, pred_name: str = "prediction", ref_name: str = "reference") -> dict[str, dict[str, Any]]:
    """Dice, HD95 and ASSD of every class of one case.

    Args:
        pred, ref: label maps on the same grid (shape, spacing, origin, direction).
        labels: {value: name}, or ``"1:liver,2:spleen"``; None: every non-zero value in either map.
        pred_name, ref_name: how errors name the two maps (e.g. their files).

    Returns:
        {name: {"value", "dice", "hd95", "assd", "pred_voxels", "ref_voxels"}} in value order;
        distances in mm, NaN where undefined (see the module's convention).

    Raises:
        InputError: different grids (naming both), or a map that is not integer-valued.
    """
    _check_grids(pred, ref, pred_name, ref_name)
    p_arr, r_arr = _label_array(pred, pred_name), _label_array(ref, ref_name)
    spacing = ref.spacing[::-1]  # along the array axes (k, j, i)
    diagonal = float(np.linalg.norm(spacing * (np.array(ref.shape) - 1)))
    return {name: {"value": value, **_class_scores(p_arr == value, r_arr == value, spacing, diagonal)} for value, name in sorted(_label_names(labels, (p_arr, r_arr)).items())}


def _class_scores(p: np.ndarray, r: np.ndarray, spacing: np.ndarray, diagonal: float) -> dict[str, Any]:
    n_pred, n_ref = int(p.sum()), int(r.sum())
    counts = {"pred_voxels": n_pred, "ref_voxels": n_ref}
    if n_pred == 0 and n_ref == 0:
        return {"dice": 1.0, "hd95": math.nan, "assd": math.nan, **counts}
    if n_pred == 0 or n_ref == 0:
        return {"dice": 0.0, "hd95": diagonal, "assd": diagonal, **counts}
    return {**_monai_scores(p, r, spacing), **counts}


def _monai_scores(p: np.ndarray, r: np.ndarray, spacing: np.ndarray) -> dict[str, float]:
    """MONAI's metrics on the masks cropped to their union's box plus one voxel (values are unchanged)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    box = _union_box(p | r)
    pt = torch.from_numpy(np.ascontiguousarray(p[box]))[None, None].float()
    rt = torch.from_numpy(np.ascontiguousarray(r[box]))[None, None].float()
    step = [float(s) for s in spacing]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecated argument, used inside its metrics
        dice = compute_dice(pt, rt, include_background=True, ignore_empty=False)
        hd95 = compute_hausdorff_distance(pt, rt, include_background=True, percentile=95, spacing=step)
        assd = compute_average_surface_distance(pt, rt, include_background=True, symmetric=True, spacing=step)
    return {"dice": float(dice), "hd95": float(hd95), "assd": float(assd)}


def _union_box(mask: np.ndarray) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        hits = np.nonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != axis)))[0]
        box.append(slice(max(int(hits[0]) - 1, 0), int(hits[-1]) + 2))
    return tuple(box)


# ---------------------------------------------------------------------------------------------- folders


def _case_name(path: Path) -> str:
    suffix = volume_suffix(path)
    return path.name[: len(path.name) - len(suffix)]


def _volume_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and volume_suffix(path):
            files.setdefault(_case_name(path), path)
    return files


def pair_cases(pred: str | os.PathLike, ref: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """[(case, prediction, reference)]: two files, or two folders paired by file name without its ending
    (``case7.seg.nrrd`` pairs with ``case7.nii.gz``). Every reference needs a prediction; extra predictions are ignored.

    Raises:
        InputError: a missing path, a file given with a folder, an empty folder, or references without predictions.
    """
    pred, ref = Path(pred), Path(ref)
    for option, path in (("--pred", pred), ("--ref", ref)):
        if not path.exists():
            raise InputError(f"{option} {path}: no such file or folder.")
    if pred.is_dir() != ref.is_dir():
        raise InputError(f"--pred {pred} and --ref {ref} must both be files or both be folders.")
    if not ref.is_dir():
        return [(_case_name(ref) or ref.name, pred, ref)]
    refs, preds = _volume_files(ref), _volume_files(pred)
    if not refs:
        raise InputError(f"--ref {ref}: the folder holds no volume ({', '.join(VOLUME_SUFFIXES)}).")
    missing = [case for case in refs if case not in preds]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"--pred {pred}: no prediction for {len(missing)} of {len(refs)} reference cases ({shown}); predictions are paired by file name.")
    return [(case, preds[case], path) for case, path in refs.items()]


def evaluate_folders(
    pred: str | os.PathLike,
    ref: str | os.PathLike,
    labels: Labels = None,
    out: str | os.PathLike | None = None,
    progress: Callable[[str, dict], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every case of two folders (or two files); write ``out`` (CSV) and its JSON summary when given.

    Returns:
        {"cases": {case: {label: scores}}, "mean": {label: {metric: value}}, "std": ..., "n": ...,
        "labels": {value: name}, "convention": str, "pred": str, "ref": str}.

    Raises:
        InputError: see :func:`pair_cases` and :func:`evaluate_pair`; an unwritable ``out`` (checked first).
    """
    if out is not None:
        out = check_report_path(out)
    names = None if labels is None else _label_names(labels, ())
    cases: dict[str, dict] = {}
    for case, pred_path, ref_path in pair_cases(pred, ref):
        scores = evaluate_pair(read_volume(pred_path), read_volume(ref_path), names, str(pred_path), str(ref_path))
        cases[case] = scores
        if progress is not None:
            progress(case, scores)
    if names is None:
        names = _fill_absent_classes(cases)
    summary = {"pred": str(pred), "ref": str(ref), "labels": {v: n for v, n in sorted(names.items())}, "convention": CONVENTION, "cases": cases, **summarize(cases)}
    if out is not None:
        summary["outputs"] = {k: str(v) for k, v in write_report(summary, out).items()}
    return summary


def _fill_absent_classes(cases: dict[str, dict]) -> dict[int, str]:
    """Without --labels each case reports the values it holds; a value absent from a case is 'both empty' there."""
    names = {s["value"]: name for scores in cases.values() for name, s in scores.items()}
    for case, scores in cases.items():
        present = {s["value"] for s in scores.values()}
        for value in sorted(set(names) - present):
            scores[names[value]] = {"value": value, "dice": 1.0, "hd95": math.nan, "assd": math.nan, "pred_voxels": 0, "ref_voxels": 0}
        cases[case] = dict(sorted(scores.items(), key=lambda item: item[1]["value"]))
    return names


def summarize(cases: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, dict]:
    """Per-label mean, std and count of each metric over cases with finite values, plus ``all`` pooling every class."""
    pooled: dict[str, dict[str, list[float]]] = {}
    for scores in cases.values():
        for name, s in scores.items():
            for key in (name, "all"):
                bucket = pooled.setdefault(key, {m: [] for m in METRICS})
                for metric in METRICS:
                    if math.isfinite(s[metric]):
                        bucket[metric].append(float(s[metric]))
    if "all" in pooled:
        pooled["all"] = pooled.pop("all")  # keep it last
    result: dict[str, dict] = {"mean": {}, "std": {}, "n": {}}
    for name, bucket in pooled.items():
        result["mean"][name] = {m: float(np.mean(v)) if v else math.nan for m, v in bucket.items()}
        result["std"][name] = {m: float(np.std(v, ddof=1)) if len(v) > 1 else math.nan for m, v in bucket.items()}
        result["n"][name] = {m: len(v) for m, v in bucket.items()}
    return result


# ---------------------------------------------------------------------------------------------- report


def check_report_path(out: str | os.PathLike) -> Path:
    """``out`` if it is a .csv file in an existing folder (``--out`` of ``ssl3d evaluate``); else InputError."""
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise InputError(f"--out {out}: the report must be a .csv file (a .json summary is written beside it).")
    if not out.parent.is_dir():
        raise InputError(f"--out {out}: the folder {out.parent} does not exist.")
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return str(value)


def write_report(summary: Mapping[str, Any], out: str | os.PathLike) -> dict[str, Path]:
    """Write ``out`` (CSV: one row per case and class, then mean and std rows) and ``out`` with ``.json``; atomic."""
    out = check_report_path(out)
    values = {name: s["value"] for scores in summary["cases"].values() for name, s in scores.items()}
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for case, scores in summary["cases"].items():
        for name, s in scores.items():
            writer.writerow([_cell(v) for v in (case, name, s["value"], s["dice"], s["hd95"], s["assd"], s["pred_voxels"], s["ref_voxels"])])
    for row in ("mean", "std"):
        for name, m in summary[row].items():
            writer.writerow([_cell(v) for v in (row, name, values.get(name, ""), m["dice"], m["hd95"], m["assd"], "", "")])
    json_path = out.with_suffix(".json")
    summary_text = json.dumps(_json_safe({k: v for k, v in summary.items() if k != "outputs"}), indent=2) + "\n"
    _atomic_write({out: text.getvalue(), json_path: summary_text})
    return {"report": out, "summary": json_path}


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _atomic_write(files: Mapping[Path, str]) -> None:
    """Write every file to a temporary name beside it, then rename them all (none on failure)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files.items():
            handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            staged.append((tmp, path))
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
                stream.write(text)
            give_umask_mode(tmp)  # not mkstemp's 0600
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
