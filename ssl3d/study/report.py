"""The study's picture (Dice against the number of labelled cases, one line per init with its 95 % band)
and ``report.html``: the settings, the sentences, the picture, the tables and how to read them."""

from __future__ import annotations

import math
from pathlib import Path

from .stats import CONFIDENCE
from .summary import ALL_LABELS, COMPARED, METRICS, StudySummary, bounds

__all__ = ["plot_dice", "interval_text", "means_grid", "comparison_grid", "write_study_report", "HOW_TO_READ"]

PLOT = "dice_vs_cases.png"
HOW_TO_READ = (
    "Every cell fine-tunes the same network with the same preset (steps, patch sampler, optimiser, no in-training "
    "validation) on a training subset drawn once per seed and shared by every init, and is scored on the same held-out "
    "cases. Means carry a 95 % t interval over the seed x held-out-case pairs. Each init is compared to random init pair by "
    "pair (same seed, same case): the mean difference with its 95 % t interval and a two-sided Wilcoxon signed-rank test, "
    "Holm-adjusted over the study's comparisons (the mean-over-labels rows form one family, the per-label rows another). A difference is shown only when its interval excludes 0 and its "
    "adjusted p is below 0.05. The pairs share seeds and held-out cases, so the intervals are approximate; with few seeds "
    "or held-out cases no difference may be shown even where one exists."
)


def interval_text(interval) -> str:
    """``0.62 (0.55–0.69)``, or the mean alone where there is no interval."""
    if math.isnan(interval.mean):
        return "–"
    if math.isnan(interval.low):
        return f"{interval.mean:.2f}"
    return f"{interval.mean:.2f} ({bounds(interval.low, interval.high)})"


def plot_dice(summary: StudySummary, path: Path, label: str = ALL_LABELS) -> Path:
    """Mean Dice against labelled cases, one line per init, its interval as a band (PNG)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for init in summary.inits:
        rows = [r for r in (summary.find(init, n, label) for n in summary.cases) if r is not None]
        x = [r.cases for r in rows]
        (line,) = axes.plot(x, [r.interval.mean for r in rows], marker="o", label=f"{init} init")
        axes.fill_between(x, [r.interval.low for r in rows], [r.interval.high for r in rows], color=line.get_color(), alpha=0.2)
    axes.set_xlabel("labelled training cases")
    axes.set_ylabel(f"held-out Dice ({label})")
    axes.set_xticks(summary.cases)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    axes.set_title(f"mean and {CONFIDENCE:.0%} interval over seeds x held-out cases")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def means_grid(summary: StudySummary, label: str = ALL_LABELS, metric: str = COMPARED) -> list[list[str]]:
    """Rows: inits; columns: numbers of labelled cases; cells: mean (95 % interval)."""
    header = [f"{METRICS[metric]}, {label}", *(f"{n} case{'' if n == 1 else 's'}" for n in summary.cases)]
    rows = [[f"{init} init", *(interval_text(r.interval) if (r := summary.find(init, n, label, metric)) else "–" for n in summary.cases)]
            for init in summary.inits]
    return [header, *rows]


def comparison_grid(summary: StudySummary) -> list[list[str]]:
    header = ["init", "cases", "label", "difference (95 % CI)", "pairs", "p (Wilcoxon)", "p (Holm)", "shown"]
    rows = [[r.init, str(r.cases), r.label, interval_text(c.difference), str(c.difference.n), f"{c.p_value:.3g}",
             f"{c.p_adjusted:.3g}", "yes" if c.shown() else "no"] for r in summary.rows if (c := r.comparison) is not None]
    return [header, *rows]


def _settings(study) -> str:
    options, preset = study.options, study.setup.preset
    inits = ", ".join(i.name + ("" if i.bundle is None and not i.pretrains else f" ({i.bundle or f'{i.preset} on {i.data}'})") for i in study.inits)
    return (f"Data {options.data}: {len(study.pool)} training cases, {len(study.held_out)} held-out case{'' if len(study.held_out) == 1 else 's'} "
            f"({', '.join(c.name for c in study.held_out)}). Preset {preset.name}, {preset.train.steps} steps, batch "
            f"{preset.train.batch_size}; {len(study.seeds)} seeds; labelled cases {', '.join(map(str, study.cases))}; inits: {inits}.")


def write_study_report(study, summary: StudySummary, out: Path) -> dict[str, Path]:
    from ..report import write_report

    picture = plot_dice(summary, out / PLOT)
    answer = summary.statements() or ["No random init in this study: there is nothing to compare to (means only)."]
    sections = [
        {"title": "Settings", "text": _settings(study)},
        {"title": "Does pretraining help? (Dice, mean over labels)", "items": answer},
        {"title": "Held-out Dice against the number of labelled cases", "images": [picture]},
        {"title": "Held-out Dice, mean (95 % interval)", "grid": means_grid(summary)},
        *({"title": f"{METRICS[m]}, mean over labels (95 % interval)", "grid": means_grid(summary, metric=m)} for m in METRICS if m != COMPARED),
    ]
    if summary.reference is not None and len(summary.inits) > 1:
        per_label = [s for label in summary.labels if label != ALL_LABELS for s in summary.statements(label)]
        sections += [{"title": "Every comparison to random init (Dice)", "grid": comparison_grid(summary)},
                     {"title": "Per label", "items": per_label}]
    sections.append({"title": "How to read this", "text": HOW_TO_READ})
    return {"plot": picture, "report": write_report(out / "report.html", "SSL3D study: does pretraining help on this data?", sections)}
