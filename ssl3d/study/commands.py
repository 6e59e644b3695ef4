"""``ssl3d study``: the command line of :func:`ssl3d.study.study.run_study`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import register_command

__all__: list[str] = []


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="labelled cases: an imagesTr/labelsTr folder or a dataset.json")
    parser.add_argument("--out", required=True, help="study folder: cells/, results.csv, summary.csv, report.html (a rerun continues it)")
    parser.add_argument("--init", action="append", metavar="SPEC",
                        help="random | NAME=PRETEXT_BUNDLE (trained or imported) | NAME=PRESET:UNLABELLED_DATA (pretrained first); "
                             "repeat for each init [random]")
    parser.add_argument("--cases", default="1,2,5,all", help="numbers of labelled training cases, 'all' = every training case [1,2,5,all]")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per (init, cases): training subset and training randomness [3]")
    parser.add_argument("--preset", default="seg-cpu", help="fine-tune preset of every cell [seg-cpu]")
    parser.add_argument("--steps", type=int, help="fine-tuning steps of every cell [the preset's]")
    parser.add_argument("--batch-size", type=int, help="patches per step [the preset's]")
    parser.add_argument("--held-out", type=int, metavar="N", help="cases held out for evaluation, drawn once [a fifth, at least 1]")
    parser.add_argument("--labels", help='label names, e.g. "1:liver,2:spleen" [dataset.json, else "label N"]')
    parser.add_argument("--devices", default="auto", help="one device, or a list (cuda:0,cuda:1) to run one cell per device at a time [auto]")
    parser.add_argument("--pretrain-steps", type=int, metavar="N", help="steps of the PRESET:DATA pretrainings [the preset's]")
    parser.add_argument("--events", metavar="FILE|-", help="write the study's JSON-lines events to FILE, or to stdout with '-'")


def _run(args: argparse.Namespace) -> int:
    from .study import StudyOptions, run_study

    options = StudyOptions(Path(args.data), Path(args.out), args.init or ["random"], args.cases, args.seeds, args.preset, args.steps,
                           args.batch_size, args.held_out, args.labels, args.devices, args.pretrain_steps)
    outputs = run_study(options, events=args.events)
    if args.events != "-":
        for name, path in outputs.items():
            print(f"{name}: {path}")
    return 0


register_command(
    "study",
    "does pretraining help on my data? fine-tune every init x labelled cases x seed and compare on a held-out split",
    _add,
    _run,
    "Fine-tune every (init, number of labelled cases, seed) cell with the same preset, evaluate each on one fixed held-out\n"
    "split (Dice, HD95, ASSD) and write results.csv, summary.csv (means with 95 % intervals, paired comparisons to random\n"
    "init) and report.html. Rerun the same command to continue a killed or cancelled study.\n"
    "Example: ssl3d study --data labelled/ --init random --init voco=runs/voco/bundle --cases 1,2,5,all --seeds 3 --out study/",
)
