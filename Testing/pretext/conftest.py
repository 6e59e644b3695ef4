"""Session fixtures of the pretext tests: a VoCo bundle trained once on phantoms, shared with other suites.

``voco_cpu_bundle`` is the bundle folder (a ``voco-v1-cpu`` run on 8 phantoms); ``voco_cpu_run`` adds the
run folder, the training and held-out phantom folders (imagesTr) and the logged losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

VOCO_CPU_STEPS = 40
VOCO_TRAIN_SEEDS = range(8)
VOCO_HELD_OUT_SEEDS = range(900, 904)


@dataclass(frozen=True)
class VoCoRun:
    """A finished ``voco-v1-cpu`` run.

    Attributes:
        bundle: the pretext bundle folder.
        run_dir: the run folder (checkpoints, events.jsonl, run.json).
        data: the training images (an imagesTr folder of phantoms, seeds 0-7, (32, 48, 48)).
        held_out: phantoms of other seeds (900-903), same layout.
        losses: the logged loss terms per step (``{"pos", "neg", "reg", "total"}``), step 1 first.
    """

    bundle: Path
    run_dir: Path
    data: Path
    held_out: Path
    losses: list[dict]


@pytest.fixture(scope="session")
def voco_cpu_run(tmp_path_factory) -> VoCoRun:
    import torch

    from ssl3d.config import apply_overrides, get_preset
    from ssl3d.demo import write_phantom_dataset
    from ssl3d.events import read_events
    from ssl3d.pretext.voco_task import VoCoTask
    from ssl3d.train.loop import train

    root = tmp_path_factory.mktemp("voco_cpu")
    data = write_phantom_dataset(root / "train", VOCO_TRAIN_SEEDS, shape=(32, 48, 48)) / "imagesTr"
    held = write_phantom_dataset(root / "held", VOCO_HELD_OUT_SEEDS, shape=(32, 48, 48)) / "imagesTr"
    overrides = {"train.steps": VOCO_CPU_STEPS, "train.checkpoint_every": VOCO_CPU_STEPS, "train.log_every": 1}
    preset = apply_overrides(get_preset("voco-v1-cpu"), overrides)
    run = root / "run"
    outputs = train(VoCoTask(data, root / "cache"), preset, run, torch.device("cpu"))
    losses = [e["loss"] for e in read_events(run / "events.jsonl") if e["event"] == "progress"]
    return VoCoRun(outputs["bundle"], run, data, held, losses)


@pytest.fixture(scope="session")
def voco_cpu_bundle(voco_cpu_run) -> Path:
    """A trained ``voco-v1-cpu`` pretext bundle (cnn-small backbone, 4x4 grid, student + EMA teacher)."""
    return voco_cpu_run.bundle
