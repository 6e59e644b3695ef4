"""Demo stage: a short VolF pretraining on phantoms and its balanced fusion-class accuracy against 0.2."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """Demo: VolF pretraining (vf-v2-cpu, small UNet) on phantoms, then its balanced fusion-class accuracy
    on fused held-out phantoms against the 0.2 of an all-background model (--quick: a short run that
    shows the pipeline; the full run learns beyond background).

    Leaves the bundle in ``ctx.shared["vf_bundle"]`` and ``ctx.outputs["vf bundle"]``.
    """
    import shutil

    from ..config import apply_overrides, get_preset
    from ..data.phantoms import make_phantom, write_phantom_dataset
    from ..device import resolve_device
    from ..train.loop import train
    from ..pretext.vf_bundle import fusion_accuracy
    from ..pretext.vf_task import FusionTask

    shape, steps = ((32, 48, 48), 40) if ctx.quick else ((48, 64, 64), 500)
    data = write_phantom_dataset(ctx.out / "data" / "phantoms_vf", range(200, 206), shape)  # pretraining reads the images only
    preset = apply_overrides(get_preset("vf-v2-cpu"), {"train.steps": steps, "train.val_every": steps // 2, "train.checkpoint_every": steps // 2,
                                                         "train.log_every": 10, "train.seed": ctx.seed, "schedule.step_size": 10 * steps})
    run = ctx.out / "vf"
    if run.exists():
        shutil.rmtree(run)
    device = resolve_device(ctx.device)
    outputs = train(FusionTask(data, run / "cache"), preset, run, device)
    held_out = [make_phantom(seed, shape=shape)[0] for seed in (990, 991)]
    m = fusion_accuracy(outputs["bundle"], held_out, n=64, seed=ctx.seed, device=device)  # 64: a stable figure
    recall = ", ".join(f"{name} {r:.2f}" for name, r in zip(m["class_names"], m["per_class_recall"]))
    ctx.say(f"{steps} steps of VolF ({preset.name}); fused held-out phantoms: balanced accuracy "
            f"{m['balanced_accuracy']:.2f} (all-background model 0.20); recall {recall}")
    ctx.shared["vf_bundle"] = outputs["bundle"]
    ctx.outputs["vf bundle"] = outputs["bundle"]
