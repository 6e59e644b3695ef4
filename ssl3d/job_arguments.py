"""The engine command lines the Slicer modules start, and the status line they show of a running job.

Standard library only: Slicer's process imports it before the engine's packages are installed. Arguments
left at 0 or "" leave a setting to the preset, so a command line holds only what the user chose.

Example::

    args = pretrain_arguments("voco", "voco-v1-cpu", Path("data"), Path("run"), steps=50)
    # ["pretrain", "--method", "voco", "--preset", "voco-v1-cpu", "--data", "data", "--out", "run",
    #  "--steps", "50", "--device", "auto"]
    progress_text({"event": "progress", "step": 120, "total": 1000, "loss": {"total": 0.532}})
    # "step 120/1000 · loss 0.532"
"""

from __future__ import annotations

import math
import os
from typing import Any, Mapping, Union

from .errors import InputError

__all__ = ["PRETEXT_METHODS", "pretrain_arguments", "inspect_arguments", "segment_arguments", "finetune_arguments",
           "progress_text", "number"]

#: The pretext methods ``ssl3d pretrain --method`` and ``ssl3d inspect`` take.
PRETEXT_METHODS = ("voco", "vf")

PathArg = Union[str, os.PathLike, None]  # a folder or file argument; None where the user chose none


def pretrain_arguments(method: str, preset: str, data: PathArg, out: PathArg, steps: int = 0, batch_size: int = 0,
                       network: str = "", device: str = "auto", resume: bool = False) -> list[str]:
    """``ssl3d pretrain`` arguments.

    Raises:
        InputError: an unknown method, or no data or output folder.
    """
    if method not in PRETEXT_METHODS:
        raise InputError(f"method must be one of {sorted(PRETEXT_METHODS)}, got {method!r}.")
    if data is None or out is None:
        raise InputError("Choose the data and the output folder.")
    args = ["pretrain", "--method", method, "--preset", preset, "--data", str(data), "--out", str(out)]
    args += ["--steps", str(steps)] if steps else []
    args += ["--batch-size", str(batch_size)] if batch_size else []
    args += ["--network", network] if network else []
    args += ["--device", device]
    return args + (["--resume"] if resume else [])


def inspect_arguments(method: str, model: PathArg, input_file: PathArg, out: PathArg, box: str | None = None,
                      seed: int = 0, dense: bool = False) -> list[str]:
    """``ssl3d inspect voco|vf`` arguments; ``box`` (``"R,A,S"``) and ``dense`` (the localisation map) are
    VoCo's, ``seed`` is Volume Fusion's."""
    args = ["inspect", method, "--model", str(model), "--input", str(input_file), "--out", str(out)]
    if method == "voco" and box:
        args += ["--box", box]
    if method == "voco" and dense:
        args += ["--dense"]
    if method == "vf":
        args += ["--seed", str(seed)]
    return args


def segment_arguments(model: PathArg, input_file: PathArg, output_file: PathArg, device: str = "auto") -> list[str]:
    """``ssl3d segment`` arguments.

    Raises:
        InputError: no model bundle.
    """
    if model is None:
        raise InputError("Choose a model bundle.")
    return ["segment", "--model", str(model), "--input", str(input_file), "--output", str(output_file), "--device", device]


def finetune_arguments(data: PathArg, out: PathArg, init: PathArg = None, task: str = "segmentation", steps: int = 0,
                       labels: Mapping[Any, str] | None = None) -> list[str]:
    """``ssl3d finetune`` arguments; no ``init`` starts from random weights, 0 steps = the preset's.

    ``labels``: dataset.json-style names ``{"1": "liver", ...}``, passed as ``--labels 1:liver,...`` (commas
    and colons in names become spaces; background 0 is left out).

    Raises:
        InputError: no training data or output folder.
    """
    if data is None or out is None:
        raise InputError("Choose the training data and the output folder.")
    args = ["finetune", "--data", str(data), "--out", str(out)]
    args += ["--task", task] if task != "segmentation" else []  # segmentation is the engine's default
    args += ["--init", str(init)] if init else []
    args += ["--steps", str(steps)] if steps else []
    names = sorted((int(value), str(name)) for value, name in (labels or {}).items() if int(value) != 0)
    if names:
        clean = [(value, " ".join(name.replace(",", " ").replace(":", " ").split())) for value, name in names]
        args += ["--labels", ",".join(f"{value}:{name}" for value, name in clean)]
    return args


def progress_text(event: Mapping[str, Any]) -> str:
    """One status line from a progress event: ``step 120/1000 · loss 0.532 · 3.1 samples/s · 4 min 10 s left``
    (a progress event with a ``message`` and no loss, as the cache build's, shows the message instead of the step)."""
    parts = []
    loss = event.get("loss")
    if event.get("message") and not loss:  # another phase of a run: the cache build ("cache: 3 of 12 volumes ...")
        parts.append(str(event["message"]))
    elif event.get("step") is not None:
        parts.append(f"step {event['step']}" + (f"/{event['total']}" if event.get("total") else ""))
    if isinstance(loss, Mapping) and loss:
        key = "total" if "total" in loss else next(iter(loss))
        value = number(loss[key])
        parts.append(("loss" if key == "total" or len(loss) == 1 else key) + f" {value:.4g}")
    if event.get("samples_per_s"):
        parts.append(f"{number(event['samples_per_s']):.3g} samples/s")
    if event.get("eta_s") is not None:
        parts.append(f"{_duration(number(event['eta_s']))} left")
    return " · ".join(parts)


def number(value: Any) -> float:
    """``value`` as a float; NaN for what is not a number (events from other tools may hold anything)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
