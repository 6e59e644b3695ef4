"""``ssl3d demo``: the main job (see :mod:`ssl3d.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_common_options, register_command

__all__: list[str] = []


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder [demo_out]")
    parser.add_argument("--quick", action="store_true", help="the short variant used by the test suite (about a minute)")
    add_common_options(parser, preset=False, seed=0)  # no presets: each stage uses its own recipe


def _run(args: argparse.Namespace) -> int:
    from ..events import EventWriter
    from .runner import run_demo

    with EventWriter(args.events) as events:
        run_demo(Path(args.out), quick=args.quick, device=args.device, seed=args.seed, events=events)
    return 0


register_command("demo", "run the demonstration: phantoms, pretraining, fine-tuning, segmentation", _add, _run)
