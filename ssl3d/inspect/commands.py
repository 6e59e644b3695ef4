"""``ssl3d inspect voco|vf``: pretext overlays of one volume, written all-or-nothing.

Every argument, the bundle and the volume are checked and the whole inspection is computed before the
first file is written; the files go into a temporary folder beside ``--out`` that is renamed into place,
so a user error prints one ``error:`` line, exits 2 and leaves nothing behind. A cancel (SIGTERM, or the
cancel file of the Slicer job that started it: :mod:`ssl3d.cancel_watch`) stops the command within a
second, with exit 130 and nothing written; the finished folder is moved into place as one uncut step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..cli import register_command
from ..errors import InputError
from .inspection import Inspection

__all__ = ["parse_ras", "check_out_dir", "write_inspection"]

_JOB_FILES = ("cancel", "events.jsonl")  # what a cancelled Slicer job may leave in its run folder

_VOCO_HELP = """\
Where does a VoCo pretext bundle think a crop lies among its base crops? The volume is preprocessed as
the bundle's preset does, the base-crop grid is laid over it, and the crop (--box, or --random N seeded
crops) is scored against every base cell with the training score p. The heads normalise over each forward
pass (BatchNorm batch statistics), so crops are scored in the training batch layout: a --box crop shares
its pass with seeded random companion crops (--seed); summary.json's "layout" records the passes.

Outputs in --out (volumes on the input's exact grid, 0 where the grid does not reach):
  grid.nrrd          base cell index + 1 (label map)
  predicted.nrrd     p of the cell each voxel lies in, for crop 0: the heat map to overlay
  truth.nrrd         the true overlap label of that cell
  localisation.nrrd  (--dense) per voxel, the share of p on the right cells for a crop centred there
  boxes.json         every crop's effective box (8 RAS corners; Slicer draws it as an oriented ROI) and the grid's
  summary.json       per crop p, labels, L1, top-1, entropy; top-1 accuracy and chance (1/grid^2)
  voco.png           the grid on an axial slice with p and the labels written in each cell

Example:
  ssl3d inspect voco --model runs/voco/bundle --input ct.nii.gz --out inspect_voco --box 12.5,-30,40 --dense
"""

_VF_HELP = """\
What does a Volume Fusion pretext bundle predict? The input is fused with itself as the bundle's preset
fuses samples (seeded; --fusion takes another VF preset's generator), and the network predicts the
fusion class (alpha = 0, 1/4, 1/2, 3/4, 1) of every voxel.

Outputs in --out (volumes on the input's exact grid):
  fused.nrrd, background.nrrd, foreground.nrrd   the sample (model intensities)
  truth.nrrd, predicted.nrrd                      fusion class 0..4 (label maps)
  error.nrrd                                      |predicted - truth| in class steps (1 = alpha off by 1/4)
  confidence.nrrd                                 max softmax
  alpha.ctbl                                      the Slicer colour table of the three label maps
  summary.json                                    per-class accuracy and Dice, balanced accuracy, confusion matrix
  fusion.png                                      fused | truth | prediction | error on axial slices

Example:
  ssl3d inspect vf --model runs/vf/bundle --input ct.nii.gz --out inspect_vf --seed 3
"""


def parse_ras(text: str, option: str = "--box") -> tuple[float, float, float]:
    """``"12.5,-30,40"`` -> (12.5, -30.0, 40.0) RAS mm; InputError naming the option otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"{option} must be R,A,S: three numbers in mm, got {text!r}.")
    return values  # type: ignore[return-value]


def check_out_dir(out: str | os.PathLike) -> Path:
    """``--out`` may be new, an empty folder (but for a job's ``cancel`` or ``events.jsonl``) or an earlier
    inspection (it is replaced); nothing else.

    Raises:
        InputError: a file, or a non-empty folder without ``summary.json``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; give a folder.")
    others = [p for p in out.iterdir() if p.name not in _JOB_FILES] if out.is_dir() else []
    if others and not (out / "summary.json").is_file():
        raise InputError(f"--out {out}: exists and is not an inspection folder (no summary.json); choose a new or empty folder.")
    return out


def write_inspection(inspection: Inspection, out: str | os.PathLike, config: dict | None = None,
                     command: list[str] | str | None = None) -> dict[str, Path]:
    """Write an inspection into ``out`` all-or-nothing (a temporary folder beside it, renamed into place).

    Files: ``NAME.nrrd`` per volume, the pictures (PNG), the text files, ``summary.json`` (with the file
    list) and ``run.json`` (``config``, the command). An earlier inspection in ``out`` is replaced.

    Returns:
        ``{name: path}`` of every file, paths inside ``out``.

    Raises:
        InputError: ``out`` is a file or a non-inspection folder (see :func:`check_out_dir`).
    """
    from ..events import write_run_json
    from ..io import write_volume
    from ..pictures import save_montage

    out = check_out_dir(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    names = {**{k: f"{k}.nrrd" for k in inspection.volumes}, **{Path(k).stem: k for k in [*inspection.pictures, *inspection.texts]},
             "summary": "summary.json", "run": "run.json"}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a folder like any other, not mkdtemp's private 0700
    try:
        for key, volume in inspection.volumes.items():
            write_volume(volume, tmp / names[key], compress="auto")  # noisy float maps: gzip costs 5 s, saves 10 %
        for name, picture in inspection.pictures.items():
            save_montage([picture], tmp / name, scale=1)
        for name, text in inspection.texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        summary = {**inspection.summary, "files": sorted(names.values())}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        write_run_json(tmp, config or {}, command)
        _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {key: out / name for key, name in names.items()}


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished folder into place; an earlier one is moved aside first and removed after (its
    ``events.jsonl``, which the running command may be writing, moves into the new folder)."""
    old = None
    if (out / "events.jsonl").is_file():
        os.replace(out / "events.jsonl", tmp / "events.jsonl")
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}-old-", dir=out.parent))
        os.replace(out, old / out.name)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the command


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="BUNDLE", help="pretext bundle folder (from 'ssl3d pretrain')")
    parser.add_argument("--input", required=True, metavar="FILE", help="the volume: NIfTI, NRRD, MHA/MHD or a DICOM folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (new, empty, or an earlier inspection: replaced)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N [auto]")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events to FILE, or to stdout with '-'")


def _add_inspect(parser: argparse.ArgumentParser) -> None:
    from .voco_map import DEFAULT_RANDOM

    sub = parser.add_subparsers(dest="inspect_method", metavar="METHOD", required=True)
    voco = sub.add_parser("voco", help="VoCo position maps", description=_VOCO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(voco)
    crops = voco.add_mutually_exclusive_group()
    crops.add_argument("--box", metavar="R,A,S", help="centre of the crop in RAS mm (e.g. a Slicer ROI's centre); moved into the grid when it sticks out")
    crops.add_argument("--random", type=int, metavar="N", help=f"score N seeded random crops, as in training; maps show crop 0 [{DEFAULT_RANDOM} without --box]")
    voco.add_argument("--dense", action="store_true", help="also slide the crop over the grid (stride crop/4): localisation.nrrd")
    voco.add_argument("--seed", type=int, default=0, help="seed of the random crops and of the companion crops a --box is scored with [0]")
    vf = sub.add_parser("vf", help="Volume Fusion maps", description=_VF_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(vf)
    vf.add_argument("--seed", type=int, default=0, help="seed of the fused sample [0]")
    vf.add_argument("--fusion", metavar="PRESET", help="generate the sample with this VF preset's fusion settings (vf-v1, vf-v2, vf-v1-cpu, vf-v2-cpu) [the bundle's]")


def _prepare(args: argparse.Namespace):
    """Checks that need neither the model nor the volume, then the device and the volume."""
    from ..device import resolve_device
    from ..io import check_writable, read_volume

    check_out_dir(args.out)
    check_writable(args.out, "--out")  # the inspection is written in a temporary folder beside it
    if not Path(args.input).exists():
        raise InputError(f"--input {args.input}: no such file or folder.")
    return resolve_device(args.device), read_volume(args.input)


def _run_inspect(args: argparse.Namespace) -> int:
    from ..cancel_watch import CancelWatch

    with CancelWatch.from_environment() as watch:
        return _inspect(args, watch)


def _inspect(args: argparse.Namespace, watch) -> int:
    from ..events import EventWriter
    from ..progress import TextProgress

    def progress(done: int, total: int) -> None:  # events and shown: opened below, before any call
        events.emit("progress", step=done, total=total)
        shown.update(done, total)

    if args.inspect_method == "voco":
        from .voco_map import DEFAULT_RANDOM, inspect_voco

        box = parse_ras(args.box) if args.box is not None else None
        if args.random is not None and args.random < 1:
            raise InputError(f"--random must be >= 1, got {args.random}.")
        device, volume = _prepare(args)
        run = lambda: inspect_voco(args.model, volume, None if box is None else [box], args.dense,  # noqa: E731
                                   args.random or DEFAULT_RANDOM, args.seed, device, progress)
    else:
        from .fusion_map import inspect_fusion

        device, volume = _prepare(args)
        run = lambda: inspect_fusion(args.model, volume, args.seed, args.fusion, device, progress)  # noqa: E731
    config = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "events"}
    unit = "crop" if args.inspect_method == "voco" else "tile"
    with EventWriter(args.events) as events, TextProgress(f"inspect {args.inspect_method}", None, unit, enabled=args.events != "-") as shown:
        events.emit("start", step=0, total=1, message=f"inspect {args.inspect_method} {args.input}")
        result = run()  # a cancel is raised inside it, between two forward passes
        watch.check()
        with watch.final():  # the finished folder replaces --out in one step
            files = write_inspection(result, args.out, config)
        events.emit("done", step=1, total=1, outputs={k: str(v) for k, v in files.items()})
    if args.events != "-":
        _print(result.summary, files)
    return 0


def _print(summary: dict[str, Any], files: dict[str, Path]) -> None:
    if summary["method"] == "voco":
        crop = summary["crops"][0]
        print(f"crop 0: predicted cell {crop['predicted_cell']} (p {max(crop['predicted']):.2f}), true cell(s) "
              f"{', '.join(map(str, crop['true_cells']))} ({max(crop['true']):.2f}); top-1 {'yes' if crop['top1'] else 'no'}, "
              f"L1 {crop['l1']:.2f}, entropy {crop['entropy']:.2f} of {summary['max_entropy']:.2f} bits"
              + (" (moved into the grid)" if crop["clamped"] else ""))
        print(f"{len(summary['crops'])} crop(s): top-1 {summary['top1_accuracy']:.2f} (chance {summary['chance']:.3f}), "
              f"mean L1 {summary['mean_l1']:.2f}, mass on true cells {summary['mean_mass_on_true']:.2f}")
        if "dense" in summary:
            print(f"dense: mean localisation {summary['dense']['mean_localisation']:.2f} over {summary['dense']['crops']} crops")
    else:
        print(f"balanced accuracy {summary['balanced_accuracy']:.2f} (chance {summary['chance_balanced_accuracy']:.2f}), "
              f"accuracy {summary['accuracy']:.2f}, fg Dice {summary['fg_dice'] or 0:.2f}; seed {summary['seed']}, {summary['fusion_preset']}")
    print(f"outputs: {files['summary'].parent}")


register_command(
    "inspect",
    "pretext overlays: VoCo position maps, Volume Fusion maps",
    _add_inspect,
    _run_inspect,
    "Look inside a pretext task on one volume: 'ssl3d inspect voco ...' or 'ssl3d inspect vf ...'\n"
    "(see 'ssl3d inspect voco --help'). Outputs are volumes on the input's grid, a summary and a picture.",
)
