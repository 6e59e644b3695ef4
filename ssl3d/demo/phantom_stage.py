"""Demo stage 1: phantoms (one oblique) through NIfTI and preprocessing and back, exactly."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """Phantoms (one oblique) -> NIfTI -> preprocessing -> montage; checks the exact round trip."""
    import numpy as np

    from ..config import get_preset
    from ..data.phantoms import LABEL_COLORS, make_phantom
    from ..data.preprocess import preprocess
    from ..io import read_volume, write_volume
    from ..pictures import axial_montage, save_montage

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
