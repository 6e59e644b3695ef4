"""Last demo stage: ``report.html`` with every picture of the run, each with how to read it, and the study's table."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import DemoContext

__all__ = ["run"]


def run(ctx: DemoContext) -> None:
    """demo_out/report.html: every picture of the run, each with a heading and how to read it, and the
    SSL-vs-random Dice table, stated plainly."""
    from ..report import write_report

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


def _picture_sections(init: str = "random init") -> dict[str, tuple[str, str]]:
    from ..report import VF_GUIDE, VOCO_GUIDE

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
