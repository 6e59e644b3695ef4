"""Shared by voco_step.py and vf_step.py: time training steps and the share spent making the batch.

Not a benchmark itself (``make bench`` skips it).
"""

from __future__ import annotations

import argparse
import time

import torch

from ssl3d.train.optim import build_optimizer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(task, ctx, steps: int, warmup: int):
    """Run ``warmup + steps`` loop steps of a set-up ``task``; (generator s, step s) summed over the timed ones,
    and the last batch. The device is synchronised around the generator, as the loop would wait for it."""
    preset, device = ctx.preset, ctx.device
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = build_optimizer(params, preset.optim)
    scaler = torch.amp.GradScaler("cuda", enabled=ctx.amp)
    gen = total = 0.0
    batch = None
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        batch = task.batch(ctx, step, range(preset.train.batch_size))
        _sync(device)
        made = time.perf_counter()
        with torch.autocast(device.type, enabled=ctx.amp):
            losses = task.losses(ctx, batch, step)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(losses["total"]).backward()
        scaler.step(optimizer)
        scaler.update()
        _sync(device)
        if step >= warmup:
            gen, total = gen + made - start, total + time.perf_counter() - start
    return gen, total, batch


def parse_runs(description: str, cpu_presets: tuple[str, ...], gpu_presets: tuple[str, ...], steps: int, warmup: int):
    """The step benchmarks' command line: ``(args, [(preset, device), ...])`` for ``--device auto|cpu|cuda``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps per preset (default {steps})")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the CPU presets, and the GPU ones when CUDA is there; cpu or cuda: only those [auto]")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device")
    runs = []
    if args.device != "cuda":
        runs += [(name, torch.device("cpu")) for name in cpu_presets]
    if args.device != "cpu" and torch.cuda.is_available():
        runs += [(name, torch.device("cuda")) for name in gpu_presets]
    return args, runs


def print_header(title: str) -> None:
    """The first line of a step benchmark's table: what ran and on which machine."""
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    print(f"{title} (torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu})")
