"""``ssl3d segment`` (whole-volume segmentation with a bundle) and ``ssl3d evaluate`` (Dice, HD95, ASSD).

Both check every argument before any work starts, so a user error prints one ``error:`` line, exits 2
and leaves no output file. ``segment`` stops within a second of a cancel (SIGTERM, or the cancel file
of the Slicer job that started it: :mod:`ssl3d.cancel_watch`), exits 130 and writes nothing; its
outputs are written as one uncut step.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..cli import register_command

__all__: list[str] = []

_SEGMENT_HELP = """\
Segment a whole volume with a segmentation bundle: the bundle's preprocessing, MONAI sliding windows
with Gaussian blending (window = the bundle's training patch), AMP on CUDA, the label map pasted back
onto the input grid exactly (same shape, origin, spacing and direction as --input).

Outputs:
  .seg.nrrd               Slicer segmentation: one segment per class with the bundle's names and colours
  .nii.gz .nii .nrrd .mha label map, plus a Slicer colour table beside it (seg.nii.gz -> seg.ctbl)
  --probabilities P.nii.gz  one float32 volume per foreground class: P_<value>_<name>.nii.gz

Example:
  ssl3d segment --model runs/abdomen/bundle --input ct.nii.gz --output ct_seg.seg.nrrd
"""

_EVALUATE_HELP = """\
Dice, HD95 and ASSD (MONAI metrics, distances in mm) per case and class, with mean and std rows.
Folders are paired by file name without its ending (case7.seg.nrrd <-> case7.nii.gz); the prediction
and reference of a case must be on the same grid. A JSON summary is written beside the CSV.

Empty masks: both empty -> Dice 1, HD95/ASSD left empty (NaN, not in the means); one empty -> Dice 0,
HD95/ASSD = the grid diagonal in mm.

Example:
  ssl3d evaluate --pred preds/ --ref labelsTs/ --labels "1:liver,2:spleen" --out report.csv
"""


def _add_segment(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="BUNDLE", help="segmentation bundle folder (from 'ssl3d finetune' or 'ssl3d import-weights')")
    parser.add_argument("--input", required=True, metavar="FILE", help="the volume: NIfTI, NRRD, MHA/MHD or a DICOM folder")
    parser.add_argument("--output", required=True, metavar="FILE", help="label map: .seg.nrrd, .nii.gz, .nii, .nrrd or .mha")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present and its free memory covers the model's estimated need, else CPU), cpu, cuda or cuda:N [auto]")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 1); more is smoother and slower [0.5]")
    parser.add_argument("--sw-batch", type=int, default=2, metavar="N", help="windows per forward pass; raise it on a GPU [2]")
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto", help="half-precision forward passes: auto = on CUDA only [auto]")
    parser.add_argument("--probabilities", metavar="FILE", help="also write per-class probabilities, FILE_<value>_<name>.<ext> (.nii.gz, .nii, .nrrd, .mha)")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")
    parser.add_argument("--point", action="append", default=[], metavar="R,A,S", help="a positive click (repeatable): the structure under it (segmentation bundle) or the model's mask (interactive bundle)")
    parser.add_argument("--negative", action="append", default=[], metavar="R,A,S", help="a negative click (repeatable): removes the region it lies in")
    parser.add_argument("--ijk", action="store_true", help="--point/--negative are voxel indices I,J,K as Slicer shows them, not RAS mm")


def _check_segment_args(args: argparse.Namespace) -> None:
    """Everything that can be checked without the model or the volume, so bad input fails before any work."""
    from ..errors import ConfigError, InputError
    from ..io import check_writable
    from .segment import PROBABILITY_SUFFIXES, check_output_not_input, check_output_path

    output = check_output_path(args.output)
    check_output_not_input(output, args.input)
    check_writable(output)
    if args.probabilities:
        check_output_path(args.probabilities, "--probabilities", PROBABILITY_SUFFIXES)
        check_output_not_input(args.probabilities, args.input, "--probabilities")
        check_writable(args.probabilities, "--probabilities")
        if Path(args.probabilities).resolve() == output.resolve():
            raise InputError(f"--probabilities {args.probabilities}: must differ from --output.")
    if not 0 <= args.overlap < 1:
        raise ConfigError(f"--overlap must be in [0, 1), got {args.overlap}.")
    if args.sw_batch < 1:
        raise ConfigError(f"--sw-batch must be >= 1, got {args.sw_batch}.")
    if not Path(args.input).exists():
        raise InputError(f"--input {args.input}: no such file or folder.")


def _run_segment(args: argparse.Namespace) -> int:
    from ..cancel_watch import CancelWatch

    _check_segment_args(args)
    with CancelWatch.from_environment() as watch:
        return _segment_volume(args, watch)


def _segment_volume(args: argparse.Namespace, watch) -> int:
    from ..bundle import read_bundle
    from ..device import resolve_device
    from ..events import EventWriter
    from ..io import read_volume
    from .segment import check_segmentation_bundle, segment, write_outputs

    resolve_device(args.device)  # a bad --device fails before any work; the GPU-memory check comes with the volume
    bundle = read_bundle(args.model)
    if args.point or args.negative:
        return _segment_with_points(args, bundle, args.device, watch)
    check_segmentation_bundle(bundle)
    volume = read_volume(args.input)
    amp = None if args.amp == "auto" else args.amp == "on"
    from ..progress import TextProgress

    with EventWriter(args.events) as events, TextProgress("segment", None, "window", enabled=args.events != "-") as shown:
        events.emit("start", step=0, message=f"segment {args.input}")

        def progress(done: int, total: int) -> None:
            watch.check()  # between forward passes (a cancel is also raised within one)
            events.emit("progress", step=done, total=total)
            shown.update(done, total)

        note = lambda message, level=None: _device_note(args, events, message, level)  # noqa: E731
        result = segment(bundle, volume, args.device, args.overlap, args.sw_batch, amp, bool(args.probabilities), progress=progress, log=note)
        del volume
        watch.check()
        with watch.final():  # all outputs or none: a cancel now comes too late
            outputs = write_outputs(result, args.output, args.probabilities)
        events.emit("done", step=result.info["windows"], total=result.info["windows"], outputs=outputs)
    if args.events != "-":
        info = result.info
        present = sorted(set(int(v) for v in _unique(result.labels.array)) - {0})
        names = {v: n for v, n, _ in result.entries}
        print(f"{len(present)} of {len(result.entries)} classes found: {', '.join(names.get(v, str(v)) for v in present) or 'none'}")
        print(f"{info['windows']} windows of {tuple(info['window'])} on model grid {tuple(info['model_shape'])} ({info['device']}, AMP {'on' if info['amp'] else 'off'}); "
              f"preprocess {info['preprocess_s']:.1f} s, windows {info['windows_s']:.1f} s, paste {info['paste_s']:.1f} s")
        for name, path in outputs.items():
            print(f"{name}: {path}")
    return 0


def _device_note(args: argparse.Namespace, events, message: str, level: str | None = None) -> None:
    """A note of segment's on where it runs: a ``log`` event, and one line for a human (a warning when segment
    says so, or when the GPU was asked for and the note is about it)."""
    warning = level == "warning" or args.device.strip().lower() != "auto"
    events.emit("log", message=message, level="warning" if warning else "info")
    if args.events != "-":
        print(f"warning: {message}" if warning else message, file=sys.stderr if warning else sys.stdout, flush=True)


def _parse_point(text: str, option: str) -> tuple[float, float, float]:
    from ..errors import InputError

    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{option} {text!r} must be three numbers R,A,S (or I,J,K with --ijk).")
    return values  # type: ignore[return-value]


def _segment_with_points(args: argparse.Namespace, bundle, device: str, watch) -> int:
    """Click mode: one structure as a 0/1 label map (named after the bundle's class at the click)."""
    from ..errors import InputError
    from ..events import EventWriter
    from ..io import read_volume
    from .interactive import points_session
    from .segment import SegmentResult, write_outputs

    points = [_parse_point(p, "--point") for p in args.point]
    negatives = [_parse_point(p, "--negative") for p in args.negative]
    volume = read_volume(args.input)
    with EventWriter(args.events) as events:
        events.emit("start", step=0, message=f"segment {args.input} with points")
        note = lambda message, level=None: _device_note(args, events, message, level)  # noqa: E731
        session = points_session(bundle, volume, points, negatives, device, ijk=args.ijk, log=note)
        mask = session.mask.like(session.mask.array.copy())
        if not mask.array.any():
            where = "the model finds no structure there (class 0, background)" if bundle.task == "segmentation" else "the model's mask is empty"
            raise InputError(f"{args.input}: nothing found at the point(s): {where}; click inside a structure. Nothing was written.")
        watch.check()
        with watch.final():
            outputs = write_outputs(SegmentResult(mask, [(1, *_structure_entry(bundle, session.last_label))], {}), args.output)
        events.emit("done", step=1, total=1, outputs=outputs)
    if args.events != "-":
        print(f"{int(mask.array.sum())} voxels selected")
        for name, path in outputs.items():
            print(f"{name}: {path}")
    return 0


def _structure_entry(bundle, label: int | None) -> tuple[str, tuple[int, int, int]]:
    """(name, colour) of a clicked structure: the segmentation bundle's class, else a generic one."""
    for entry in bundle.meta.get("labels", []):
        if label is not None and entry.get("value") == label:
            return str(entry["name"]), tuple(entry["color"])  # type: ignore[return-value]
    return "structure", (230, 25, 75)


def _unique(array):
    import numpy as np

    return np.flatnonzero(np.bincount(array.ravel(), minlength=1)) if array.dtype.kind == "u" else np.unique(array)


def _add_evaluate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, metavar="DIR_OR_FILE", help="predicted label map, or a folder of them")
    parser.add_argument("--ref", required=True, metavar="DIR_OR_FILE", help="reference label map, or a folder of them (pairing by file name)")
    parser.add_argument("--labels", help='classes to score, e.g. "1:liver,2:spleen" [every non-zero value, named "label N"]')
    parser.add_argument("--out", required=True, metavar="REPORT.csv", help="CSV report; the JSON summary goes beside it (REPORT.json)")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")


def _run_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate import check_report_path, evaluate_folders, pair_cases, parse_label_names
    from ..events import EventWriter

    from ..io import check_writable

    out = check_report_path(args.out)
    check_writable(out, "--out")
    labels = parse_label_names(args.labels) if args.labels else None
    cases = pair_cases(args.pred, args.ref)
    with EventWriter(args.events) as events:
        events.emit("start", step=0, total=len(cases))
        done = iter(range(1, len(cases) + 1))
        report = lambda case, scores: events.emit("progress", step=next(done), total=len(cases), message=case)  # noqa: E731
        summary = evaluate_folders(args.pred, args.ref, labels, out, progress=report)
        mean = summary["mean"]
        per_class = {name: m["dice"] for name, m in mean.items() if name != "all"}
        events.emit("metric", step=len(cases), name="dice", value=mean.get("all", {}).get("dice"), per_class=per_class)
        events.emit("done", step=len(cases), total=len(cases), outputs=summary["outputs"])
    if args.events != "-":
        _print_summary(summary, len(cases))
    return 0


def _print_summary(summary: dict, n_cases: int) -> None:
    def cell(value: float) -> str:
        return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"

    rows = [(name, summary["mean"][name], summary["std"][name]) for name in summary["mean"]]
    width = max([len("class")] + [len(name) for name, _, _ in rows])
    print(f"{n_cases} case{'s' if n_cases != 1 else ''}; mean ± std")
    print(f"{'class':<{width}}  {'Dice':>15}  {'HD95 mm':>17}  {'ASSD mm':>17}")
    for name, mean, std in rows:
        print(f"{name:<{width}}  " + "  ".join(f"{cell(mean[m]) + ' ± ' + cell(std[m]):>{w}}" for m, w in (("dice", 15), ("hd95", 17), ("assd", 17))))
    for name, path in summary["outputs"].items():
        print(f"{name}: {path}")
    sys.stdout.flush()


register_command("segment", "segment a volume with a segmentation bundle (sliding windows, exact input geometry)", _add_segment, _run_segment, _SEGMENT_HELP)
register_command("evaluate", "Dice, HD95 and ASSD of predicted label maps against references", _add_evaluate, _run_evaluate, _EVALUATE_HELP)
