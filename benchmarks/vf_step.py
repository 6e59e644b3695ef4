"""Volume Fusion training step: time per step and the share of it spent making the fused batch on the device.

A step is what the training loop runs: ``task.batch`` (crops of cached volumes on the device, contrast, gamma,
flips, fusion masks and uint8 labels: ``fused_batch``), the network's forward pass, the deep-supervised
Dice+CE loss, backward and the optimizer step (AMP + GradScaler on CUDA when the preset asks). The volumes
are random CT-like intensities written to a temporary folder and cached through the real ``FusionTask``
set-up (not timed). Protocol: ``--warmup`` steps, then ``--steps`` timed steps with the device synchronised
around the generator; the share is (generator time) / (step time), summed over the timed steps.

On CPU: vf-v1-cpu and vf-v2-cpu on 48x96x96 volumes, for information (their tiny UNet makes a step so cheap
that the share says little; v2 sits near 10 %). With CUDA also vf-v1 and vf-v2 (PCT-Net, the official patch
and batch) on 128x256x256 volumes: the target, share < 5 % (issue 5).

Run: ``.venv/bin/python benchmarks/vf_step.py [--steps 10] [--device auto|cpu|cuda]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from ssl3d.config import get_preset
from ssl3d.io import Volume, write_volume
from ssl3d.pretext.vf_task import FusionTask
from ssl3d.train.distributed import DistInfo
from ssl3d.train.logger import RunLogger
from ssl3d.train.loop import TrainContext
from step_timing import parse_runs, print_header, time_steps

GOAL_CUDA = 0.05
VOLUME_SHAPE = {"cpu": (48, 96, 96), "cuda": (128, 256, 256)}  # (k, j, i)


def _write_volumes(folder: Path, shape: tuple[int, int, int], count: int = 3) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for n in range(count):
        array = rng.normal(0, 300, shape).astype(np.int16)  # HU-like spread; the generator's cost ignores values
        write_volume(Volume(array, np.diag([1.0, 1.0, 2.0, 1.0])), folder / f"volume{n}.nii.gz")
    return folder


def measure(name: str, device: torch.device, steps: int, warmup: int) -> dict:
    preset = get_preset(name)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = _write_volumes(root / "data", VOLUME_SHAPE[device.type])
        logger = RunLogger(root, None, False, steps, tensorboard=False)
        ctx = TrainContext(preset, root, device, DistInfo(), logger, 0)
        task = FusionTask(data, root / "cache", val_fraction=0.0, val_samples=2)
        task.setup(ctx)
        gen, total, batch = time_steps(task, ctx, steps, warmup)
        logger.close()
    patch = tuple(batch[0].shape[2:])
    return {"step_s": total / steps, "gen_s": gen / steps, "share": gen / total, "batch": preset.train.batch_size, "patch": patch}


def main() -> None:
    args, runs = parse_runs(__doc__.splitlines()[0], ("vf-v1-cpu", "vf-v2-cpu"), ("vf-v1", "vf-v2"), steps=10, warmup=2)
    rows = {(name, device.type): measure(name, device, args.steps, args.warmup) for name, device in runs}
    print_header("Volume Fusion training step")
    print(f"{'preset':<12}{'device':<8}{'batch x patch':>22}{'step s':>10}{'generator s':>13}{'share':>9}")
    for (name, device), r in rows.items():
        shape = f"{r['batch']} x {'x'.join(str(s) for s in r['patch'])}"
        print(f"{name:<12}{device:<8}{shape:>22}{r['step_s']:>10.4f}{r['gen_s']:>13.5f}{100 * r['share']:>8.2f}%")
    for (name, device), r in rows.items():
        if device == "cuda":
            verdict = "ok" if r["share"] < GOAL_CUDA else "short"
            print(f"target {name}-generator-share-cuda: {100 * r['share']:.2f} % (goal < {100 * GOAL_CUDA:.0f} %) {verdict}")
    if args.device != "cpu" and not torch.cuda.is_available():
        for name in ("vf-v1", "vf-v2"):
            print(f"target {name}-generator-share-cuda: skipped, no CUDA device (goal < {100 * GOAL_CUDA:.0f} %)")


if __name__ == "__main__":
    main()
