"""The demo's run: its stages in order, each timed, into one output folder with ``demo.json`` and events."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import finetune_stage, inspect_stage, interactive_stage, phantom_stage, report_stage, vf_stage, voco_stage
from .context import DemoContext

__all__ = ["Stage", "STAGES", "run_demo"]


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[DemoContext], None]


STAGES: list[Stage] = [
    Stage("phantoms", "Phantoms, geometry-exact I/O and preprocessing", phantom_stage.run),
    Stage("voco", "VoCo pretraining on phantoms (voco-v1-cpu): loss and position accuracy vs chance", voco_stage.run),
    Stage("vf", "Volume Fusion pretraining on phantoms (vf-v2-cpu): balanced fusion-class accuracy vs 0.2", vf_stage.run),
    Stage("finetune", "Fine-tuning study on phantoms: random init vs VoCo and VF over seeds; segmentation of a phantom and a real CT", finetune_stage.run),
    Stage("interactive", "Click-to-segment: an interactive model and two clicks on a held-out phantom", interactive_stage.run),
    Stage("inspect", "Pretext inspection: VoCo position maps (and Volume Fusion maps when trained)", inspect_stage.run),
    Stage("report", "Report: demo_out/report.html", report_stage.run),
]
"""The stages, in the order they run (later ones use what earlier ones leave in ``ctx.shared``)."""


def _make_out(out: Path) -> None:
    """Create the output folder, or refuse it with a typed error naming it (before any stage runs)."""
    from ..errors import InputError

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file; the demo writes a folder of results there (default demo_out).")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--out {out}: cannot create the folder: {exc.strerror or exc} ({exc.filename}).") from None


def run_demo(out: Path, quick: bool = False, device: str = "auto", seed: int = 0, events=None) -> dict:
    """Run every registered stage into ``out``; returns the summary written to ``out/demo.json``.

    Raises:
        InputError: a bad ``device``, or ``out`` is a file or cannot be created (nothing written then).
    """
    from ..device import resolve_device
    from ..events import EventWriter, write_run_json

    device, out = str(resolve_device(device)), Path(out)
    _make_out(out)
    events = events or EventWriter(None)
    ctx = DemoContext(out, quick, device, seed, events)
    write_run_json(out, {"quick": quick, "device": device, "seed": seed, "stages": [s.name for s in STAGES]})
    events.emit("start", step=0, total=len(STAGES))
    times = {}
    for n, stage in enumerate(STAGES, 1):
        print(f"[{n}/{len(STAGES)}] {stage.title}", flush=True)
        start = time.perf_counter()
        stage.run(ctx)
        times[stage.name] = round(time.perf_counter() - start, 2)
        print(f"      {stage.name}: {times[stage.name]:.1f} s", flush=True)
        events.emit("progress", step=n, total=len(STAGES), message=stage.name)
    summary = {"stages": times, "total_s": round(sum(times.values()), 2), "outputs": {k: str(v) for k, v in ctx.outputs.items()}}
    (out / "demo.json").write_text(json.dumps(summary, indent=2) + "\n")
    events.emit("done", step=len(STAGES), total=len(STAGES), outputs=summary["outputs"])
    print(f"Demo finished in {summary['total_s']:.1f} s. Look at:")
    for name, path in ctx.outputs.items():
        print(f"  {name}: {path}")
    return summary
