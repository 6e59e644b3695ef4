"""Demo stage: a click-to-segment model and two clicks on a held-out phantom's liver."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """A click-to-segment model (interactive-cpu) and two clicks on a held-out phantom's liver."""
    import shutil

    import numpy as np

    from ..config import apply_overrides, get_preset
    from ..data.phantoms import make_phantom, write_phantom_dataset
    from ..device import resolve_device
    from ..infer.interactive import InteractiveSession
    from ..pictures import axial_montage, save_montage
    from ..train.interactive import InteractiveTask
    from ..train.loop import train

    device = resolve_device(ctx.device)
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
