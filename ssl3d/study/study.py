"""``run_study``: check everything, write the plan, pretrain what must be, run the cells, analyse.

Order matters for the promises of the command:

1. :func:`prepare` checks every input (preset, data, split, cases, inits and whether each bundle's encoder
   loads into the fine-tune network, devices, a previous study in the folder) and writes nothing: a user
   error is one ``error:`` line and no output;
2. the plan goes into ``STUDY/study.json`` (a rerun with other settings is refused; the same settings
   continue the study) with the held-out split and one datalist per (seed, cases) in ``STUDY/splits/``;
3. inits given as PRESET:DATA are pretrained into ``STUDY/pretrain/<name>/`` (resumed when killed);
4. unfinished cells run (a killed cell resumes from its checkpoint); finished ones are skipped;
5. ``results.csv``, ``summary.csv``, ``dice_vs_cases.png`` and ``report.html`` are written from every cell.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Cancelled, ConfigError, InputError
from .cells import CellSetup, is_finished, subset_file
from .plan import RANDOM, Cell, InitSpec, check_init_names, held_out_split, parse_cases, parse_init, plan_cells

__all__ = ["StudyOptions", "Study", "prepare", "run_study"]

STUDY_FILE = "study.json"
CANCEL_FILE = "cancel"


@dataclass
class StudyOptions:
    """The settings of ``ssl3d study`` (the command line's, with its defaults)."""

    data: Path
    out: Path
    inits: list[str] = field(default_factory=lambda: [RANDOM])
    cases: str = "1,2,5,all"
    seeds: int = 3
    preset: str = "seg-cpu"
    steps: int | None = None
    batch_size: int | None = None
    held_out: int | None = None
    labels: str | None = None
    devices: str = "auto"
    pretrain_steps: int | None = None


@dataclass
class Study:
    """A checked study: what :func:`run_study` runs."""

    options: StudyOptions
    inits: list[InitSpec]
    cases: list[int]
    seeds: list[int]
    held_out: list  # data.datasets.Case
    pool: list
    setup: CellSetup
    devices: list[str]

    @property
    def cells(self) -> list[Cell]:
        return plan_cells([init.name for init in self.inits], self.cases, self.seeds)

    def record(self) -> dict:
        """What ``study.json`` holds: every setting that changes a cell's numbers."""
        from ..config import to_dict

        return {
            "data": str(Path(self.options.data).resolve()), "preset": to_dict(self.setup.preset),
            "inits": [init.to_dict() for init in self.inits], "cases": self.cases, "seeds": self.seeds,
            "held_out": [c.name for c in self.held_out], "pool": [c.name for c in self.pool],
            "labels": {str(v): n for v, n in self.setup.label_names.items()}, "pretrain_steps": self.options.pretrain_steps,
        }


# ---------------------------------------------------------------------------------------------- checks


def prepare(options: StudyOptions) -> Study:
    """Check every input of a study and resolve it; nothing is written.

    Raises:
        ConfigError: a bad preset, seed count, step count, init, --cases item or device; a study folder
            that holds a study with other settings.
        DatasetError: unreadable data, fewer labelled cases than asked, an empty held-out split.
        BundleError: an init bundle whose encoder does not load into the fine-tune network.
    """
    from ..data.datasets import find_cases

    out = Path(options.out)
    if os.path.lexists(out) and not out.is_dir():
        raise InputError(f"--out {out}: is a file; a study writes a folder there.")
    preset = _fine_tune_preset(options)
    if options.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {options.seeds}.")
    inits = [parse_init(text) for text in options.inits]
    check_init_names(inits)
    cases = find_cases(options.data, labels=True)
    held_out, pool = held_out_split(cases, options.held_out)
    numbers = parse_cases(options.cases, len(pool))
    devices = _devices(options.devices)
    names = _label_names(options, held_out)
    bundles = {init.name: init.bundle for init in inits}
    for init in inits:
        _check_init(init, preset, out)
    setup = CellSetup(out, preset, bundles, tuple((c.image, c.label) for c in held_out), names, options.labels)
    study = Study(options, inits, numbers, list(range(options.seeds)), held_out, pool, setup, devices)
    _check_previous(study)
    return study


def _fine_tune_preset(options: StudyOptions):
    from ..config import apply_overrides, fine_tune_preset, get_preset

    preset = fine_tune_preset(get_preset(options.preset), "segmentation")
    preset = apply_overrides(preset, {"train.steps": options.steps, "train.batch_size": options.batch_size})
    for name in ("steps", "batch_size"):
        if getattr(preset.train, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(preset.train, name)}.")
    if options.pretrain_steps is not None and options.pretrain_steps < 1:
        raise ConfigError(f"--pretrain-steps must be >= 1, got {options.pretrain_steps}.")
    return preset


def _devices(text: str) -> list[str]:
    from ..device import resolve_device

    devices = [str(resolve_device(part)) for part in filter(None, (p.strip() for p in text.split(",")))]
    if not devices:
        raise ConfigError(f"--devices {text!r} names no device; use e.g. cpu, cuda:0 or cuda:0,cuda:1.")
    return devices


def _label_names(options: StudyOptions, held_out: list) -> dict[int, str]:
    """Every label value of the held-out references, named by --labels, else the dataset.json, else "label N"."""
    import numpy as np

    from ..data.datasets import dataset_label_names
    from ..evaluate import parse_label_names
    from ..io import read_volume

    names = parse_label_names(options.labels) if options.labels else dataset_label_names(options.data)
    values = sorted(set().union(*(np.unique(read_volume(c.label).array).tolist() for c in held_out)) - {0})
    return {int(v): names.get(int(v), f"label {int(v)}") for v in values}


def _check_init(init: InitSpec, preset, out: Path) -> None:
    """A bundle's encoder must load into the network its cells build; pretraining data must hold volumes."""
    from ..data.datasets import find_cases

    if init.bundle is not None:
        check_bundle_fits(init.bundle, preset, f"--init {init.name}")
    elif init.pretrains:
        find_cases(init.data, labels=False)  # DatasetError naming the folder when it holds nothing


def check_bundle_fits(bundle: Path, preset, where: str) -> None:
    """Build the fine-tune network of ``bundle`` and load its encoder (BundleError naming ``where`` if it does not fit)."""
    from ..config import from_dict, to_dict
    from ..errors import BundleError
    from ..nets.builders import build_network
    from ..train.init import load_pretext_weights, preset_for_init

    try:
        network = preset_for_init(from_dict(to_dict(preset)), bundle).network
        load_pretext_weights(build_network(network.name, 1, 2, **network.kwargs), bundle)
    except BundleError as exc:
        raise BundleError(f"{where}: {exc}") from None


def _check_previous(study: Study) -> None:
    path = study.setup.out / STUDY_FILE
    if not path.is_file():
        return
    before = json.loads(path.read_text(encoding="utf-8"))
    differ = sorted(k for k, v in study.record().items() if json.loads(json.dumps(v)) != before.get(k))
    if differ:
        raise ConfigError(f"{study.setup.out}: holds a study with other settings ({', '.join(differ)} differ); "
                          "give the same options to continue it, or another --out for a new study.")


# ---------------------------------------------------------------------------------------------- running


def run_study(options: StudyOptions, events=None) -> dict[str, Path]:
    """Run (or continue) a study; returns its outputs {name: path}.

    Raises:
        InputError: see :func:`prepare` (before anything is written).
        Cancelled: a cancel; the running cell has written its checkpoint and the study continues on a rerun.
    """
    from ..cancel_watch import ENV_JOB_TOKEN, CancelWatch
    from .cancel_relay import CancelRelay

    study = prepare(options)
    _write_plan(study)
    log = _StudyLog(study.setup.out, events)
    cells = study.cells
    done = sum(is_finished(study.setup.out, cell) for cell in cells)
    log.emit("start", step=done, total=len(cells), schema=1, command="study",
             config={"cells": len(cells), "finished": done, "devices": study.devices, "preset": study.setup.preset.name})
    token = os.environ.get(ENV_JOB_TOKEN) or None
    try:  # the watch records (no exception thrown at us); the relay passes a cancel on to the running run
        with CancelWatch(study.setup.out / CANCEL_FILE, token, interrupt=False, ctrl_c=True) as watch, CancelRelay(watch, token) as relay:
            _pretrain(study, log, relay)
            _run_cells(study, log, relay)
            relay.check()
            with watch.final():
                outputs = _analyse(study, log)
        log.emit("done", step=len(study.cells), total=len(study.cells), outputs={k: str(v) for k, v in outputs.items()})
        return outputs
    finally:
        log.close()


def _write_plan(study: Study) -> None:
    """study.json, the held-out list and one datalist per (seed, cases); a stale cancel file is removed."""
    from ..cancel_watch import ENV_JOB_TOKEN, cancel_file_names_token

    out = study.setup.out
    (out / "splits").mkdir(parents=True, exist_ok=True)
    token = os.environ.get(ENV_JOB_TOKEN)
    if not (token and cancel_file_names_token(out / CANCEL_FILE, token)):
        (out / CANCEL_FILE).unlink(missing_ok=True)  # an earlier job's
    names = {str(v): n for v, n in study.setup.label_names.items()}
    _write_json(out / "splits" / "held_out.json", {"labels": names, "test": [_entry(c) for c in study.held_out]})
    from .plan import training_subset

    for seed in study.seeds:
        for n in study.cases:
            _write_json(subset_file(out, seed, n), {"labels": names, "training": [_entry(c) for c in training_subset(study.pool, seed, n)]})
    _write_json(out / STUDY_FILE, study.record())


def _entry(case) -> dict:
    return {"image": str(Path(case.image).resolve()), "label": str(Path(case.label).resolve())}


def _write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class _StudyLog:
    """The study's own events (``STUDY/events.jsonl`` and ``--events``) and a line per cell on stderr."""

    def __init__(self, out: Path, target: str | None) -> None:
        from ..events import EventWriter

        self.writers = [EventWriter(out / "events.jsonl")]
        if target and (target == "-" or Path(target).resolve() != (out / "events.jsonl").resolve()):
            self.writers.append(EventWriter(target))
        self.quiet = target == "-"

    def emit(self, event: str, **fields) -> None:
        for writer in self.writers:
            writer.emit(event, **fields)

    def say(self, message: str) -> None:
        self.emit("log", message=message, level="info")
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


def _pretrain(study: Study, log: _StudyLog, relay) -> None:
    """Pretrain every PRESET:DATA init (resuming a killed run), then check that its encoder fits."""
    import torch

    from ..config import apply_overrides, get_preset
    from ..train.loop import train

    for init in (i for i in study.inits if i.pretrains):
        run = study.setup.out / "pretrain" / init.name
        bundle = run / "bundle"
        if not (bundle / "bundle.json").is_file():
            preset = apply_overrides(get_preset(init.preset), {"train.steps": study.options.pretrain_steps})
            log.say(f"pretraining {init.name}: {init.preset} on {init.data}, {preset.train.steps} steps")
            try:
                with relay.running(run):
                    outputs = train(_pretext_task(init, study.setup.out / "cache"), preset, run, torch.device(study.devices[0]),
                                    resume=(run / "checkpoints" / "last.pt").is_file())
            except Cancelled:
                raise Cancelled(f"pretraining {init.name} stopped with a checkpoint; run the same ssl3d study command again to continue") from None
            bundle = outputs["bundle"]
        check_bundle_fits(bundle, study.setup.preset, f"--init {init.name} (pretrained in {run})")
        study.setup.bundles[init.name] = bundle


def _pretext_task(init: InitSpec, cache: Path):
    from ..config import get_preset

    if get_preset(init.preset).method == "voco":
        from ..pretext.voco_task import VoCoTask

        return VoCoTask(init.data, cache)
    from ..pretext.vf_task import FusionTask

    return FusionTask(init.data, cache)


def _run_cells(study: Study, log: _StudyLog, relay) -> None:
    from .pool import run_cells

    cells = study.cells
    todo = [cell for cell in cells if not is_finished(study.setup.out, cell)]
    done = len(cells) - len(todo)
    if done:
        log.say(f"{done} of {len(cells)} cells already finished: skipped")
    started = time.monotonic()
    for cell, summary in run_cells(study.setup, todo, study.devices, relay):
        done += 1
        elapsed = time.monotonic() - started
        remaining = len(cells) - done
        eta = elapsed / (done - (len(cells) - len(todo))) * remaining
        dice = summary["mean"].get("all", {}).get("dice", float("nan"))
        log.emit("progress", step=done, total=len(cells), eta_s=round(eta, 1), message=f"cell {cell.name} done")
        log.say(f"cell {done}/{len(cells)} {cell.name}: held-out mean Dice {dice:.3f}")


def _analyse(study: Study, log: _StudyLog) -> dict[str, Path]:
    from .report import write_study_report
    from .results import collect_results, write_results
    from .summary import summarize_study, write_summary

    out = study.setup.out
    rows = collect_results(out, study.cells)
    summary = summarize_study(rows)
    outputs = {"results": write_results(rows, out / "results.csv"), "summary": write_summary(summary, out / "summary.csv")}
    outputs.update(write_study_report(study, summary, out))
    for line in summary.statements():
        log.say(line)
    return outputs
