"""Demo stage: the VoCo and VF bundles of earlier stages inspected on a held-out phantom (pictures, maps)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """Demo: inspect the demo's VoCo and VF bundles (``ctx.shared["voco_bundle"]``, ``["vf_bundle"]``, when
    present) on a held-out phantom; the pictures go to ``ctx.outputs``."""
    from ..data.phantoms import make_phantom
    from ..inspect.commands import write_inspection
    from ..inspect.fusion_map import inspect_fusion
    from ..inspect.voco_map import inspect_voco

    image = make_phantom(ctx.seed + 950, shape=(32, 48, 48))[0]
    root = ctx.out / "inspect"
    if ctx.shared.get("voco_bundle"):
        result = inspect_voco(ctx.shared["voco_bundle"], image, dense=True, seed=ctx.seed, device=ctx.device)
        files = write_inspection(result, root / "voco", {"bundle": str(ctx.shared["voco_bundle"]), "phantom_seed": ctx.seed + 950}, "ssl3d demo")
        s = result.summary
        ctx.say(f"VoCo inspection of a held-out phantom: top-1 {s['top1_accuracy']:.2f} over {len(s['crops'])} crops (chance {s['chance']:.3f}), "
                f"dense localisation {s['dense']['mean_localisation']:.2f}")
        ctx.outputs["VoCo inspection"] = files["voco"]
    if ctx.shared.get("vf_bundle"):
        result = inspect_fusion(ctx.shared["vf_bundle"], image, seed=ctx.seed, device=ctx.device)
        files = write_inspection(result, root / "vf", {"bundle": str(ctx.shared["vf_bundle"]), "phantom_seed": ctx.seed + 950}, "ssl3d demo")
        s = result.summary
        ctx.say(f"VF inspection of a held-out phantom: balanced accuracy {s['balanced_accuracy']:.2f} "
                f"(chance {s['chance_balanced_accuracy']:.2f}), fg Dice {s['fg_dice'] or 0:.2f}")
        ctx.outputs["VF inspection"] = files["fusion"]
    if not ctx.shared.get("voco_bundle") and not ctx.shared.get("vf_bundle"):
        ctx.say("no pretext bundle from earlier stages: nothing to inspect")
