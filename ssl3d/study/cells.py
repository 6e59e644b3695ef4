"""One cell of a study: fine-tune from one init on one training subset with one seed, then evaluate it.

A cell is a normal fine-tuning run folder (``STUDY/cells/<init>-<cases>-s<seed>/``: config.yaml, run.json,
events.jsonl, checkpoints, bundle) plus ``evaluation.csv`` and ``evaluation.json``, the files
``ssl3d evaluate`` writes, on the study's held-out cases. ``evaluation.json`` marks the cell finished: a
rerun skips it; a cell with a checkpoint but no evaluation resumes from its ``last.pt`` (exactly, as
``finetune --resume``).

Every cell trains with the same preset (steps, patch sampler, optimiser) and no in-training validation:
there is no case to spare for it with one labelled case, and the last checkpoint is what every cell exports.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..config import Preset, apply_overrides, from_dict, to_dict
from .plan import Cell

__all__ = ["CellSetup", "EVALUATION", "cell_dir", "subset_file", "is_finished", "cell_preset", "run_cell", "read_evaluation"]

EVALUATION = "evaluation.json"


@dataclass(frozen=True)
class CellSetup:
    """What every cell of one study shares (picklable: it travels to one process per device).

    Attributes:
        out: the study folder.
        preset: the fine-tune preset, already with the study's steps and batch size.
        bundles: init name -> pretext bundle folder (None for random init).
        held_out: (image, label map) files of the held-out cases.
        label_names: label value -> name, for every label of the held-out references.
        labels_text: ``--labels`` as given (the names the bundles carry).
    """

    out: Path
    preset: Preset
    bundles: dict[str, Path | None]
    held_out: tuple[tuple[Path, Path], ...]
    label_names: dict[int, str]
    labels_text: str | None = None


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def subset_file(out: Path, seed: int, cases: int) -> Path:
    """The datalist of seed ``seed``'s first ``cases`` training cases (written by the study before training)."""
    return out / "splits" / f"s{seed}-{cases}.json"


def is_finished(out: Path, cell: Cell) -> bool:
    return (cell_dir(out, cell) / EVALUATION).is_file()


def cell_preset(setup: CellSetup, cell: Cell) -> Preset:
    """The study's preset with the cell's seed, no validation, and the network and intensity of its init."""
    from ..train.init import preset_for_init

    preset = apply_overrides(from_dict(to_dict(setup.preset)), {"train.seed": cell.seed, "train.val_every": 0})
    preset.train.checkpoint_every = min(preset.train.checkpoint_every, preset.train.steps)
    bundle = setup.bundles[cell.init]
    return preset if bundle is None else preset_for_init(preset, bundle)


def run_cell(setup: CellSetup, cell: Cell, device) -> dict:
    """Train (or resume) and evaluate one cell; returns its evaluation summary (also in ``evaluation.json``)."""
    from ..train.loop import train
    from ..train.segmentation import SegmentationTask

    run = cell_dir(setup.out, cell)
    resume = (run / "checkpoints" / "last.pt").is_file()
    task = SegmentationTask(subset_file(setup.out, cell.seed, cell.cases), setup.out / "cache", val_fraction=0.0,
                            labels=setup.labels_text, label_names=dict(setup.label_names), init=setup.bundles[cell.init])
    outputs = train(task, cell_preset(setup, cell), run, device, resume=resume,
                    run_info={"device": str(device), "study_cell": {"init": cell.init, "cases": cell.cases, "seed": cell.seed, "process": os.getpid()}})
    return evaluate_cell(setup, outputs["bundle"], run, device)


def evaluate_cell(setup: CellSetup, bundle: Path, run: Path, device) -> dict:
    """Segment every held-out case with the cell's bundle and score it as ``ssl3d evaluate`` does."""
    from ..evaluate import evaluate_pair, summarize, write_report
    from ..infer.segment import segment_volume
    from ..io import read_volume

    cases = {}
    for image_path, label_path in setup.held_out:
        image = read_volume(image_path)
        pred = segment_volume(bundle, image, device)
        cases[_case_name(label_path)] = evaluate_pair(pred, read_volume(label_path), setup.label_names, str(image_path), str(label_path))
    summary = {"bundle": str(bundle), "labels": dict(setup.label_names), "cases": cases, **summarize(cases)}
    write_report(summary, run / "evaluation.csv")  # evaluation.csv + evaluation.json, atomically
    return summary


def _case_name(path: Path) -> str:
    from ..io import volume_suffix

    return path.name[: len(path.name) - len(volume_suffix(path))]


def read_evaluation(out: Path, cell: Cell) -> dict[str, dict[str, dict]]:
    """{held-out case: {label: scores}} of a finished cell, with NaN where the JSON holds null."""
    cases = json.loads((cell_dir(out, cell) / EVALUATION).read_text(encoding="utf-8"))["cases"]
    return {case: {label: {k: (math.nan if v is None else v) for k, v in s.items()} for label, s in labels.items()}
            for case, labels in cases.items()}

