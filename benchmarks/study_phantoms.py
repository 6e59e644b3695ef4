"""Does pretraining help on phantoms? ``ssl3d study`` as the README documents it, measured end to end.

Pretrains VoCo (voco-v1-cpu) and Volume Fusion (vf-v2-cpu) on 24 unlabelled phantoms for ``--pretrain-steps``
CPU steps each (inside the study: ``--init NAME=PRESET:DATA``), then fine-tunes seg-cpu from random init and
from both bundles with 1, 2 and 4 labelled phantoms x 3 seeds (27 cells, ``--steps`` each) and evaluates every
cell on the same 4 held-out phantoms. Prints the study's sentences, the table of means with 95 % intervals
and the time of each part; the study folder (report.html, results.csv, summary.csv) is kept in ``--out``.

The result is whatever it is: the target line says only whether the study ran to its report.

Run: ``nice -n 10 .venv/bin/python benchmarks/study_phantoms.py [--out study_phantoms] [--pretrain-steps 300] [--steps 120]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from ssl3d.data.phantoms import LABELS, write_phantom_dataset
from ssl3d.study.results import read_results
from ssl3d.study.study import StudyOptions, run_study
from ssl3d.study.summary import summarize_study
from ssl3d.study.report import means_grid

UNLABELLED = range(600, 624)  # 24 phantoms for pretraining (their labels are never read)
LABELLED = range(700, 712)  # 12 labelled phantoms: 4 held out, 8 to draw the training cases from


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("study_phantoms"), help="study folder (a rerun continues it) [study_phantoms]")
    parser.add_argument("--pretrain-steps", type=int, default=300, help="VoCo and VF pretraining steps [300]")
    parser.add_argument("--steps", type=int, default=120, help="fine-tuning steps per cell [120, seg-cpu's]")
    parser.add_argument("--seeds", type=int, default=3, help="seeds [3]")
    parser.add_argument("--device", default="cpu", help="device(s) for the study's --devices [cpu]")
    return parser.parse_args()


def _cell_times(out: Path) -> list[float]:
    times = []
    for events in sorted((out / "cells").glob("*/events.jsonl")):
        lines = [json.loads(line) for line in events.read_text().splitlines() if line.startswith("{")]
        times.append(lines[-1]["time"] - lines[0]["time"])
    return times


def main() -> None:
    args = _args()
    data = args.out.parent / f"{args.out.name}_data"
    unlabelled = write_phantom_dataset(data / "unlabelled", UNLABELLED) / "imagesTr"
    labelled = write_phantom_dataset(data / "labelled", LABELLED)
    options = StudyOptions(labelled, args.out, ["random", f"voco=voco-v1-cpu:{unlabelled}", f"vf=vf-v2-cpu:{unlabelled}"], "1,2,4",
                           args.seeds, "seg-cpu", args.steps, None, 4, ",".join(f"{v}:{n}" for v, n in LABELS.items()), args.device,
                           args.pretrain_steps)
    start = time.perf_counter()
    outputs = run_study(options)
    total = time.perf_counter() - start
    summary = summarize_study(read_results(outputs["results"]))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; device {args.device}")
    print(f"study: {len(summary.inits)} inits x {len(summary.cases)} case counts x {args.seeds} seeds, {args.steps} fine-tuning steps, "
          f"{args.pretrain_steps} pretraining steps; {total / 60:.1f} min in this run")
    cells = _cell_times(args.out)
    if cells:
        print(f"cells: {len(cells)}, training {sum(cells) / 60:.1f} min in all, {sum(cells) / len(cells):.0f} s each on average")
    for row in means_grid(summary):
        print(" | ".join(f"{cell:>20}" for cell in row))
    for line in summary.statements():
        print(line)
    print(f"report: {outputs['report']}")
    print(f"target study-phantoms-report: {'written' if outputs['report'].is_file() else 'missing'} (goal written) "
          f"{'ok' if outputs['report'].is_file() else 'short'}")


if __name__ == "__main__":
    main()
