"""Demo stage: fine-tuning as a small study (random init against the demo's own VoCo and VF bundles, on
phantoms with ``seg-cpu``, several seeds and two numbers of labelled cases; its table shows means with
intervals and says whether a difference is shown), then the best cell's segmentations of a held-out
phantom and of a real CT."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run", "STUDY_FOLDER"]

STUDY_FOLDER = "finetune_study"


def run(ctx: DemoContext) -> None:
    """A small fine-tuning study (random init vs the VoCo and VF bundles), then segmentations of a held-out
    phantom and a real CT sample by the best cell's bundle."""
    from ..data.phantoms import LABEL_COLORS, make_phantom
    from ..device import resolve_device
    from ..infer.segment import segment_volume
    from ..pictures import axial_montage, save_montage

    _run_study(ctx)
    device, bundle = resolve_device(ctx.device), ctx.shared["seg_bundle"]
    ctx.outputs["fine-tuned bundle (best study cell)"] = bundle
    ctx.say(f"segmentation pictures from {ctx.shared['picture_init']}")
    image, truth = make_phantom(999, shape=(32, 48, 48))
    pred = segment_volume(bundle, image, device)
    rows = [axial_montage(image, truth, colors=LABEL_COLORS), axial_montage(image, pred, colors=LABEL_COLORS)]
    ctx.outputs["segmentation of a held-out phantom"] = save_montage(rows, ctx.out / "segmentation_phantom.png")
    _segment_real_ct(ctx, bundle, device)


def _segment_real_ct(ctx: DemoContext, bundle, device) -> None:
    """Segment the pyradiomics lung1 CT (skipped with a message when it cannot be fetched)."""
    from ..data.samples import SampleUnavailable, load_sample
    from ..infer.segment import segment_volume
    from ..io import write_volume
    from ..pictures import axial_montage, save_montage

    try:
        image, _ = load_sample("lung1")
    except SampleUnavailable as exc:
        ctx.say(f"real CT sample skipped: {exc}")
        return
    labels = segment_volume(bundle, image, device)
    ctx.say(f"lung1 CT {image.shape}: label map on the input grid: {labels.same_grid(image)} (a phantom-trained model: expect nonsense labels)")
    write_volume(labels, ctx.out / "lung1_labels.nii.gz")
    ctx.outputs["segmentation of the lung1 CT"] = save_montage([axial_montage(image, labels, window=(-1000, 500))], ctx.out / "segmentation_lung1.png", scale=1)


def _settings(quick: bool) -> dict:
    """Full: 1 and 4 labelled cases x 3 seeds x 3 inits, 120 steps (18 cells); quick: random and VoCo init,
    1 case x 2 seeds, 16 steps (4 cells: the quick demo stays within its minute)."""
    if quick:
        return {"cases": "1", "seeds": 2, "steps": 16, "held_out": 2, "phantoms": range(100, 106), "methods": ("voco",)}
    return {"cases": "1,4", "seeds": 3, "steps": 120, "held_out": 4, "phantoms": range(100, 112), "methods": ("voco", "vf")}


def _run_study(ctx: DemoContext) -> None:
    """Run the study into ``demo_out/finetune_study``; leave its summary, plot and best bundle for later stages."""
    from ..data.phantoms import LABELS, write_phantom_dataset
    from ..study.plan import RANDOM
    from ..study.study import StudyOptions, run_study

    settings = _settings(ctx.quick)
    data = write_phantom_dataset(ctx.out / "data" / "phantoms_seg", settings["phantoms"])
    out = ctx.out / STUDY_FOLDER
    shutil.rmtree(out, ignore_errors=True)  # a previous demo's study: its bundles came from other pretrainings
    inits = [RANDOM, *(f"{method}={ctx.shared[f'{method}_bundle']}" for method in settings["methods"] if ctx.shared.get(f"{method}_bundle"))]
    options = StudyOptions(data, out, inits, settings["cases"], settings["seeds"], "seg-cpu", settings["steps"], None, settings["held_out"],
                           ",".join(f"{v}:{n}" for v, n in LABELS.items()), ctx.device)
    outputs = run_study(options)
    _leave_results(ctx, out, outputs)


def _leave_results(ctx: DemoContext, out: Path, outputs: dict) -> None:
    """The summary for the report, the plot, and the bundle of the best cell at the most labelled cases."""
    from ..study.report import means_grid
    from ..study.results import read_results
    from ..study.summary import summarize_study

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
