"""``ssl3d demo``: the main job, a registry of stages that each feature extends.

Each stage gets a :class:`DemoContext` (output folder, quick flag, device, seed, events) and records the
files it wrote; the stage times are printed and saved in ``demo_out/demo.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .cli import add_common_options, register_command

__all__ = ["DemoContext", "register_stage", "STAGES", "run_demo"]


@dataclass
class DemoContext:
    out: Path
    quick: bool
    device: str
    seed: int
    events: object  # EventWriter
    outputs: dict = field(default_factory=dict)  # name -> path, shown at the end
    shared: dict = field(default_factory=dict)  # what a stage leaves for later ones (bundles, volumes)

    def say(self, message: str) -> None:
        print(f"  {message}", flush=True)
        self.events.emit("log", message=message)


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[DemoContext], None]


STAGES: list[Stage] = []


def register_stage(name: str, title: str, run: Callable[[DemoContext], None]) -> None:
    """Add a stage; stages run in registration order."""
    STAGES.append(Stage(name, title, run))


def _make_out(out: Path) -> None:
    """Create the output folder, or refuse it with a typed error naming it (before any stage runs)."""
    from .errors import InputError

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
    from .device import resolve_device
    from .events import EventWriter, write_run_json

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


# ---------------------------------------------------------------------------------------------- stages


def _phantom_stage(ctx: DemoContext) -> None:
    """Phantoms (one oblique) -> NIfTI -> preprocessing -> montage; checks the exact round trip."""
    import numpy as np

    from .config import get_preset
    from .data.phantoms import LABEL_COLORS, make_phantom
    from .data.preprocess import preprocess
    from .io import read_volume, write_volume
    from .pictures import axial_montage, save_montage

    data = ctx.out / "data"
    data.mkdir(exist_ok=True)
    shape = (32, 48, 48) if ctx.quick else (48, 64, 64)
    rows = []
    for n, oblique in enumerate((False, True)):
        image, labels = make_phantom(ctx.seed + n, shape=shape, oblique=oblique)
        image_path = write_volume(image, data / f"phantom{n}.nii.gz")
        write_volume(labels, data / f"phantom{n}_labels.nii.gz")
        image = read_volume(image_path)
        config = get_preset("seg-cpu").preprocess
        config.spacing, config.resize = None, None  # the montage shows the exact (orientation-only) round trip
        _, model_labels, mapping = preprocess(image, config, labels)
        back = mapping.to_input_grid(model_labels[0, 0], label=True)
        exact = back.same_grid(image) and np.array_equal(back.array, labels.array)
        ctx.say(f"phantom{n}{' (oblique)' if oblique else ''}: {image.shape} -> model {tuple(model_labels.shape[2:])}, round trip exact: {exact}")
        rows.append(axial_montage(image, labels, colors=LABEL_COLORS))
        ctx.shared.setdefault("phantoms", []).append((image_path, data / f"phantom{n}_labels.nii.gz"))
    ctx.outputs["phantom montage"] = save_montage(rows, ctx.out / "phantoms.png")


register_stage("phantoms", "Phantoms, geometry-exact I/O and preprocessing", _phantom_stage)


def __getattr__(name: str):
    """``ssl3d.demo.write_phantom_dataset``, where tests and scripts import it from (it lives in
    :mod:`ssl3d.data.phantoms`; imported on use, so the CLI's start does not load numpy)."""
    if name == "write_phantom_dataset":
        from .data.phantoms import write_phantom_dataset

        return write_phantom_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _finetune_stage(ctx: DemoContext) -> None:
    """A small fine-tuning study (random init vs the VoCo and VF bundles; ssl3d.study.demo_stage), then
    segmentations of a held-out phantom and a real CT sample by the best cell's bundle."""
    from .data.phantoms import LABEL_COLORS, make_phantom
    from .device import resolve_device
    from .infer.segment import segment_volume
    from .pictures import axial_montage, save_montage
    from .study.demo_stage import demo_stage

    demo_stage(ctx)
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
    from .data.samples import SampleUnavailable, load_sample
    from .infer.segment import segment_volume
    from .io import write_volume
    from .pictures import axial_montage, save_montage

    try:
        image, _ = load_sample("lung1")
    except SampleUnavailable as exc:
        ctx.say(f"real CT sample skipped: {exc}")
        return
    labels = segment_volume(bundle, image, device)
    ctx.say(f"lung1 CT {image.shape}: label map on the input grid: {labels.same_grid(image)} (a phantom-trained model: expect nonsense labels)")
    write_volume(labels, ctx.out / "lung1_labels.nii.gz")
    ctx.outputs["segmentation of the lung1 CT"] = save_montage([axial_montage(image, labels, window=(-1000, 500))], ctx.out / "segmentation_lung1.png", scale=1)


def _voco_stage(ctx: DemoContext) -> None:
    """Demo: a short VoCo (voco-v1-cpu) pretraining on phantoms, loss first -> last, top-1 vs chance.

    Leaves the bundle in ``ctx.shared["voco_bundle"]`` and ``ctx.outputs["voco bundle"]``.
    """
    import shutil

    import numpy as np

    from .config import apply_overrides, get_preset
    from .data.phantoms import write_phantom_dataset
    from .device import resolve_device
    from .events import read_events
    from .pretext.voco_bundle import position_accuracy
    from .pretext.voco_task import VoCoTask
    from .train.loop import train

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


register_stage("voco", "VoCo pretraining on phantoms (voco-v1-cpu): loss and position accuracy vs chance", _voco_stage)


def _interactive_stage(ctx: DemoContext) -> None:
    """A click-to-segment model (interactive-cpu) and two clicks on a held-out phantom's liver."""
    import shutil

    import numpy as np

    from .config import apply_overrides, get_preset
    from .data.phantoms import make_phantom
    from .device import resolve_device
    from .infer.interactive import InteractiveSession
    from .pictures import axial_montage, save_montage
    from .train.interactive import InteractiveTask
    from .train.loop import train

    device = resolve_device(ctx.device)
    from .data.phantoms import write_phantom_dataset

    data = write_phantom_dataset(ctx.out / "data" / "phantoms_seg", range(100, 106 if ctx.quick else 112))
    steps = 10 if ctx.quick else 80
    preset = apply_overrides(get_preset("interactive-cpu"), {"train.steps": steps, "train.val_every": 0, "train.checkpoint_every": steps, "train.log_every": 5})
    run = ctx.out / "interactive"
    shutil.rmtree(run, ignore_errors=True)
    bundle = train(InteractiveTask(data, run / "cache", val_fraction=0.0), preset, run, device)["bundle"]
    image, truth = make_phantom(998, shape=(32, 48, 48))
    liver = np.argwhere(truth.array == 1)
    session = InteractiveSession(bundle, device)
    session.set_volume(image)
    dice = []
    for k, j, i in (liver[len(liver) // 2], liver[len(liver) // 4]):
        mask = session.add_point((image.ijk_to_ras @ [i, j, k, 1.0])[:3], positive=True)
        dice.append(2 * np.sum((mask.array > 0) & (truth.array == 1)) / max(1, np.sum(mask.array > 0) + np.sum(truth.array == 1)))
    ctx.say(f"interactive model, {steps} steps: liver Dice after 1 and 2 clicks: {dice[0]:.2f}, {dice[1]:.2f}")
    ctx.outputs["interactive bundle"] = bundle
    ctx.outputs["click to segment (two clicks in the liver)"] = save_montage([axial_montage(image, mask)], ctx.out / "interactive.png")


def _vf_stage(ctx: DemoContext) -> None:
    from .pretext.vf_task import demo_stage

    demo_stage(ctx)


register_stage("vf", "Volume Fusion pretraining on phantoms (vf-v2-cpu): balanced fusion-class accuracy vs 0.2", _vf_stage)
register_stage("finetune", "Fine-tuning study on phantoms: random init vs VoCo and VF over seeds; segmentation of a phantom and a real CT", _finetune_stage)
register_stage("interactive", "Click-to-segment: an interactive model and two clicks on a held-out phantom", _interactive_stage)


def _inspect_stage(ctx: DemoContext) -> None:
    from .inspect.commands import demo_stage

    demo_stage(ctx)


register_stage("inspect", "Pretext inspection: VoCo position maps (and Volume Fusion maps when trained)", _inspect_stage)


# The report's picture sections: demo output name -> (heading, how to read it); other pictures go last.
def _picture_sections(init: str = "random init") -> dict[str, tuple[str, str]]:
    from .report import VF_GUIDE, VOCO_GUIDE

    return {
        "phantom montage": ("Phantoms", "CT-like phantoms (second row: an oblique one) with their organ labels, read back from "
                            "NIfTI; preprocessing and the way back to the input grid reproduce the label map exactly."),
        "fine-tuning study: Dice vs labelled cases": ("Fine-tuning study: Dice against the number of labelled phantoms",
                                                      "Mean held-out Dice over the organs, one line per init, its 95 % interval "
                                                      "as a band."),
        "segmentation of a held-out phantom": ("Segmentation of a held-out phantom", "Top row: the true organ labels; bottom "
                                               f"row: the labels of the fine-tuned model ({init})."),
        "segmentation of the lung1 CT": ("Segmentation of a real CT (pyradiomics lung1)", "The phantom-trained model on a real "
                                         "chest CT: the labels are expected to be wrong; the picture shows that the label map "
                                         "lands on the CT's own grid."),
        "click to segment (two clicks in the liver)": ("Click to segment", "The mask of the interactive model after two "
                                                       "positive clicks in the liver of a held-out phantom."),
        "VoCo inspection": ("VoCo inspection: where does the model place a crop?", VOCO_GUIDE),
        "VF inspection": ("Volume Fusion inspection: which fusion coefficient per voxel?", VF_GUIDE),
    }


def _report_stage(ctx: DemoContext) -> None:
    """demo_out/report.html: every picture of the run, each with a heading and how to read it, and the
    SSL-vs-random Dice table, stated plainly."""
    from .report import write_report

    pictures = {k: v for k, v in ctx.outputs.items() if str(v).endswith(".png")}
    known = _picture_sections(ctx.shared.get("picture_init", "random init"))
    sections = [{"title": title, "text": text, "images": [pictures[key]]} for key, (title, text) in known.items() if key in pictures]
    if "study" in ctx.shared:
        study = ctx.shared["study"]
        sections.insert(min(1, len(sections)), {
            "title": "Fine-tuning study: self-supervised init vs random init (held-out phantoms, Dice)",
            "text": "Every cell fine-tunes seg-cpu with the same steps on training phantoms drawn once per seed and shared by "
                    "every init, and is scored on the same held-out phantoms: mean Dice over the organs with its 95 % interval "
                    "over seeds x held-out phantoms. At this scale (a few phantoms, a hundred CPU steps, a few seeds) only a "
                    "large difference can be shown; the sentences below say what this run shows, whatever it is "
                    "(details: finetune_study/report.html).",
            "items": study["statements"] or ["random init only: nothing to compare"],
            "grid": study["grid"],
        })
    others = {k: p for k, p in pictures.items() if k not in known}
    if others:
        sections.append({"title": "Other pictures", "text": ", ".join(others), "images": list(others.values())})
    ctx.outputs["report"] = write_report(ctx.out / "report.html", "SSL3D demo", sections)


register_stage("report", "Report: demo_out/report.html", _report_stage)


def _add(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder [demo_out]")
    parser.add_argument("--quick", action="store_true", help="the short variant used by the test suite (about a minute)")
    add_common_options(parser, preset=False, seed=0)  # no presets: each stage uses its own recipe


def _run(args: argparse.Namespace) -> int:
    from .events import EventWriter

    with EventWriter(args.events) as events:
        run_demo(Path(args.out), quick=args.quick, device=args.device, seed=args.seed, events=events)
    return 0


register_command("demo", "run the demonstration: phantoms, pretraining, fine-tuning, segmentation", _add, _run)
