"""``ssl3d import-weights``: a released checkpoint as a bundle (:func:`ssl3d.weights.import_weights`)."""

from __future__ import annotations

import argparse

from ..cli import register_command
from . import FORMATS

__all__: list[str] = []

def _add_import(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the released checkpoint (.pt/.pth), read with torch.load(weights_only=True)")
    parser.add_argument("--format", required=True, choices=list(FORMATS), help="checkpoint layout")
    parser.add_argument("--preset", help="preset whose network and preprocessing the weights belong to: voco-v1|voco-v2 for voco, vf-v1|vf-v2 (PCT-Net) for mis-fm [voco-v1 / vf-v1]")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--branch", choices=["teacher", "student"], default="teacher", help="VoCo: which branch of a student/teacher file [teacher]")
    parser.add_argument("--labels", help='swinunetr-seg: label names: "btcv" or "1:liver,2:spleen,..." [label N]')
    parser.add_argument("--allow-partial", action="store_true", help="accept a file that fills only part of the network (reported)")
    parser.add_argument("--events", metavar="FILE|-", help="write JSON-lines events")


def _run_import(args: argparse.Namespace) -> int:
    from ..events import EventWriter
    from . import import_weights

    with EventWriter(args.events) as events:
        events.emit("start", step=0, total=1, message=f"import-weights {args.file}")
        report = import_weights(args.file, args.format, args.out, args.preset, args.branch, args.labels, args.allow_partial)
        lines = [report.summary(), *report.details()]  # details name what --allow-partial let through
        for line in lines:
            events.emit("log", level="info", message=line)
        events.emit("done", step=1, total=1, outputs={"bundle": str(args.out)})
    if args.events != "-":
        print("\n".join(lines))
        print(f"bundle: {args.out}")
    return 0


register_command("import-weights", "turn a released VoCo, MIS-FM or SwinUNETR segmentation checkpoint into a bundle", _add_import, _run_import)
