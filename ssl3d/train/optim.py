"""Optimizers and learning-rate schedules (counted in iterations) from a preset."""

from __future__ import annotations

import math
from typing import Iterable

import torch

from ..config import OptimConfig, ScheduleConfig, look_up

__all__ = ["build_optimizer", "build_scheduler", "lr_factor"]


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimConfig) -> torch.optim.Optimizer:
    name = look_up(config.name, ("adamw", "adam", "sgd"), "optimizer")
    params = [p for p in parameters if p.requires_grad]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, amsgrad=config.amsgrad)
    if name == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay, amsgrad=config.amsgrad)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay, nesterov=True)


def lr_factor(step: int, config: ScheduleConfig, total_steps: int) -> float:
    """Multiplier of the base lr at iteration ``step`` (0-based).

    warmup_cosine: linear 0 -> 1 over ``warmup_steps``, then 0.5 (1 + cos(pi * progress)) (VoCo's schedule);
    with ``cosine_steps`` shorter than the run the cosine continues past zero and rises again (the periodic
    schedule of VoCo's BTCV fine-tuning, which steps an epoch-based scheduler per iteration);
    step: gamma ** (step // step_size) (PyMIC StepLR); poly: (1 - t / total) ** power on a staircase of
    ``interval`` iterations (PyMIC steps its scheduler once per validation round).
    """
    name = look_up(config.name, ("constant", "warmup_cosine", "step", "poly"), "schedule")
    if name == "warmup_cosine":
        if step < config.warmup_steps:
            return step / max(1, config.warmup_steps)
        span = (config.cosine_steps or total_steps) - config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, span)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    if name == "step":
        return config.gamma ** (step // config.step_size) if config.step_size > 0 else 1.0
    if name == "poly":
        interval = max(1, config.interval)
        done = (step // interval) * interval
        return max(0.0, 1.0 - done / max(1, total_steps)) ** config.power
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    look_up(config.name, ("constant", "warmup_cosine", "step", "poly"), "schedule")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config, total_steps))
