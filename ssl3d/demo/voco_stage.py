"""Demo stage 2: a short VoCo pretraining on phantoms, its loss and held-out position accuracy against chance."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """Demo: a short VoCo (voco-v1-cpu) pretraining on phantoms, loss first -> last, top-1 vs chance.

    Leaves the bundle in ``ctx.shared["voco_bundle"]`` and ``ctx.outputs["voco bundle"]``.
    """
    import shutil

    import numpy as np

    from ..config import apply_overrides, get_preset
    from ..data.phantoms import write_phantom_dataset
    from ..device import resolve_device
    from ..events import read_events
    from ..pretext.voco_bundle import position_accuracy
    from ..pretext.voco_task import VoCoTask
    from ..train.loop import train

    quick = ctx.quick
    folders = {"train": ctx.out / "data" / "phantoms_voco", "held": ctx.out / "data" / "phantoms_voco_held", "run": ctx.out / "voco"}
    for folder in folders.values():  # a previous (quick or full) demo in the same folder
        shutil.rmtree(folder, ignore_errors=True)
    data = write_phantom_dataset(folders["train"], range(300, 306 if quick else 316), shape=(32, 48, 48))
    held = write_phantom_dataset(folders["held"], range(900, 902 if quick else 904), shape=(32, 48, 48))
    steps = 20 if quick else 150
    preset = apply_overrides(get_preset("voco-v1-cpu"), {"train.steps": steps, "train.checkpoint_every": steps, "train.log_every": 1})
    run = folders["run"]
    start = time.perf_counter()
    outputs = train(VoCoTask(data / "imagesTr", run / "cache"), preset, run, resolve_device(ctx.device))
    losses = [e["loss"]["total"] for e in read_events(run / "events.jsonl") if e["event"] == "progress" and "loss" in e]  # not the cache's
    result = position_accuracy(outputs["bundle"], held / "imagesTr", n_crops=200 if quick else 400, seed=ctx.seed)
    ctx.say(f"VoCo v1 (cpu) {steps} steps in {time.perf_counter() - start:.0f} s: loss {np.mean(losses[:5]):.3f} (first 5 steps) -> "
            f"{np.mean(losses[-5:]):.3f} (last 5); "
            f"held-out top-1 position accuracy {result['top1']:.2f} (chance {result['chance']:.2f}, {result['n']} crops)")
    ctx.shared["voco_bundle"] = outputs["bundle"]
    ctx.outputs["voco bundle"] = outputs["bundle"]
