"""The demo's fine-tuning stage as a small study: random init against the demo's own VoCo and VF bundles, on
phantoms with ``seg-cpu``, several seeds and two numbers of labelled cases; its table shows means with
intervals and says whether a difference is shown."""

from __future__ import annotations

import shutil

from .plan import RANDOM

__all__ = ["demo_stage", "STUDY_FOLDER"]

STUDY_FOLDER = "finetune_study"


def _settings(quick: bool) -> dict:
    """Full: 1 and 4 labelled cases x 3 seeds x 3 inits, 120 steps (18 cells); quick: random and VoCo init,
    1 case x 2 seeds, 16 steps (4 cells: the quick demo stays within its minute)."""
    if quick:
        return {"cases": "1", "seeds": 2, "steps": 16, "held_out": 2, "phantoms": range(100, 106), "methods": ("voco",)}
    return {"cases": "1,4", "seeds": 3, "steps": 120, "held_out": 4, "phantoms": range(100, 112), "methods": ("voco", "vf")}


def demo_stage(ctx) -> None:
    """Run the study into ``demo_out/finetune_study``; leave its summary, plot and best bundle for later stages."""
    from ..data.phantoms import LABELS, write_phantom_dataset
    from .study import StudyOptions, run_study

    settings = _settings(ctx.quick)
    data = write_phantom_dataset(ctx.out / "data" / "phantoms_seg", settings["phantoms"])
    out = ctx.out / STUDY_FOLDER
    shutil.rmtree(out, ignore_errors=True)  # a previous demo's study: its bundles came from other pretrainings
    inits = [RANDOM, *(f"{method}={ctx.shared[f'{method}_bundle']}" for method in settings["methods"] if ctx.shared.get(f"{method}_bundle"))]
    options = StudyOptions(data, out, inits, settings["cases"], settings["seeds"], "seg-cpu", settings["steps"], None, settings["held_out"],
                           ",".join(f"{v}:{n}" for v, n in LABELS.items()), ctx.device)
    outputs = run_study(options)
    _leave_results(ctx, out, outputs)


def _leave_results(ctx, out, outputs: dict) -> None:
    """The summary for the report, the plot, and the bundle of the best cell at the most labelled cases."""
    from .report import means_grid
    from .results import read_results
    from .summary import summarize_study

    rows = read_results(outputs["results"])
    summary = summarize_study(rows)
    for line in summary.statements() or ["(random init only: nothing to compare)"]:
        ctx.say(line)
    ctx.shared["study"] = {"grid": means_grid(summary), "statements": summary.statements(), "report": outputs["report"]}
    ctx.outputs["fine-tuning study: Dice vs labelled cases"] = outputs["plot"]
    ctx.outputs["fine-tuning study report"] = outputs["report"]
    most = max(r["cases"] for r in rows)
    cells = {r["cell"] for r in rows if r["cases"] == most}
    best = max(sorted(cells), key=lambda c: sum(r["dice"] for r in rows if r["cell"] == c))
    ctx.shared["seg_bundle"] = out / "cells" / best / "bundle"
    ctx.shared["picture_init"] = f"cell {best}, the best held-out Dice with {most} labelled cases"
