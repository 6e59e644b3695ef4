"""VoCo training step: time per step and the share of it spent generating samples on the device.

A step is what the training loop runs: ``task.batch`` (draws, crop cutting, resize, augmentation, labels
from host volumes, what is cut moved to the device), the student forward, the EMA, the teacher forward, the loss,
backward and the optimizer step (AMP + GradScaler on CUDA, as the presets say). Volumes are random
tensors of the preset's model-space size (the generator's cost does not depend on the values).
Protocol: ``--warmup`` steps, then ``--steps`` timed steps with the device synchronised around the
generator; the share is (generator time) / (step time), summed over the timed steps.

On CPU: voco-v1-cpu and voco-v2-cpu (target: generator share <= 10 %). With CUDA also voco-v1 and
voco-v2 (SwinUNETR-v2 B, 64³ crops, the official batch of 2 volumes; target: share < 5 %).

Run: ``.venv/bin/python benchmarks/voco_step.py [--steps 20] [--device auto|cpu|cuda]``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ssl3d.config import get_preset
from ssl3d.pretext.voco_bundle import sample_spec
from ssl3d.pretext.voco_task import VoCoTask
from ssl3d.train.distributed import DistInfo
from ssl3d.train.logger import RunLogger
from ssl3d.train.loop import TrainContext
from step_timing import parse_runs, print_header, time_steps

GOALS = {"cpu": 0.10, "cuda": 0.05}


class _SyntheticTask(VoCoTask):
    """VoCoTask on random host volumes of the preset's size (no dataset, no cache): as in training, the
    volumes stay in host memory and each step moves what it cuts to the device (pinned copies on CUDA)."""

    def _load_volumes(self, ctx):
        size = ctx.preset.voco.window or ctx.preset.preprocess.resize
        g = torch.Generator().manual_seed(0)
        shape = (1, size[2], size[1], size[0])
        return [torch.rand(shape, generator=g) for _ in range(4)], {}


def measure(name: str, device: torch.device, steps: int, warmup: int) -> dict:
    preset = get_preset(name)
    with tempfile.TemporaryDirectory() as tmp:
        logger = RunLogger(Path(tmp), None, False, steps, tensorboard=False)
        ctx = TrainContext(preset, Path(tmp), device, DistInfo(), logger, 0)
        task = _SyntheticTask(tmp, Path(tmp))
        task.setup(ctx)
        gen, total, batch = time_steps(task, ctx, steps, warmup)
    spec = sample_spec(preset)
    crops = preset.train.batch_size * (spec.n_random + spec.n_base)
    return {"step_s": total / steps, "gen_s": gen / steps, "share": gen / total, "crops": crops}


def main() -> None:
    args, runs = parse_runs(__doc__.splitlines()[0], ("voco-v1-cpu", "voco-v2-cpu"), ("voco-v1", "voco-v2"), steps=20, warmup=3)
    rows = {(name, device.type): measure(name, device, args.steps, args.warmup) for name, device in runs}
    print_header("VoCo training step")
    print(f"{'preset':<14}{'device':<8}{'crops/step':>11}{'step s':>10}{'generator s':>13}{'share':>9}")
    for (name, device), r in rows.items():
        print(f"{name:<14}{device:<8}{r['crops']:>11}{r['step_s']:>10.4f}{r['gen_s']:>13.5f}{100 * r['share']:>8.2f}%")
    for (name, device), r in rows.items():
        goal = GOALS[device]
        verdict = "ok" if r["share"] <= goal else "short"
        print(f"target {name}-generator-share-{device}: {100 * r['share']:.2f} % (goal <= {100 * goal:.0f} %) {verdict}")
    if args.device == "auto" and not torch.cuda.is_available():
        for name in ("voco-v1", "voco-v2"):
            print(f"target {name}-generator-share-cuda: skipped, no CUDA device (goal <= {100 * GOALS['cuda']:.0f} %)")


if __name__ == "__main__":
    main()
