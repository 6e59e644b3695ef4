"""``summary.csv``: mean and 95 % interval per (init, cases, label, metric), and the paired comparison of each
init to random init, with the sentence that says what it shows.

Pairs are (seed, held-out case): the same training subset and seed, scored on the same case. The
``all labels`` rows average each pair's labels first (finite values only). Comparisons are of Dice; their
p-values are Holm-adjusted within two families (see :mod:`ssl3d.study.stats`): the ``all labels`` rows (the
study's answer: every init x number of cases) and the per-label rows (every init x cases x label).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .plan import RANDOM
from .results import write_text
from .stats import ALPHA, Comparison, Interval, compare_paired, mean_interval, with_holm

__all__ = ["ALL_LABELS", "METRICS", "SummaryRow", "StudySummary", "bounds", "summarize_study", "write_summary"]

ALL_LABELS = "all labels"
METRICS = {"dice": "Dice", "hd95_mm": "HD95 (mm)", "assd_mm": "ASSD (mm)"}
COMPARED = "dice"
_COLUMNS = ("init", "cases", "label", "metric", "n", "mean", "ci_low", "ci_high", "difference", "difference_ci_low",
            "difference_ci_high", "pairs", "p_wilcoxon", "p_holm", "shown", "statement")
Key = tuple[str, int, str, str]  # init, cases, label, metric


@dataclass(frozen=True)
class SummaryRow:
    init: str
    cases: int
    label: str
    metric: str
    interval: Interval
    comparison: Comparison | None = None  # to random init (Dice rows of the other inits)

    @property
    def statement(self) -> str:
        return statement(self)


@dataclass(frozen=True)
class StudySummary:
    rows: list[SummaryRow]
    reference: str | None  # the init compared against (random), None when the study has none

    def find(self, init: str, cases: int, label: str = ALL_LABELS, metric: str = COMPARED) -> SummaryRow | None:
        return next((r for r in self.rows if (r.init, r.cases, r.label, r.metric) == (init, cases, label, metric)), None)

    def statements(self, label: str = ALL_LABELS) -> list[str]:
        return [r.statement for r in self.rows if r.comparison is not None and r.label == label]

    @property
    def inits(self) -> list[str]:
        return list(dict.fromkeys(r.init for r in self.rows))

    @property
    def cases(self) -> list[int]:
        return sorted({r.cases for r in self.rows})

    @property
    def labels(self) -> list[str]:
        return list(dict.fromkeys(r.label for r in self.rows))


def _pair_values(rows: Sequence[dict]) -> dict[Key, dict[tuple[int, str], float]]:
    """{(init, cases, label, metric): {(seed, case): value}}, with the ``all labels`` mean of each pair."""
    values: dict[Key, dict[tuple[int, str], float]] = defaultdict(dict)
    per_pair: dict[tuple, list[float]] = defaultdict(list)
    for row in rows:
        for metric in METRICS:
            pair = (row["seed"], row["case"])
            values[(row["init"], row["cases"], row["label"], metric)][pair] = float(row[metric])
            per_pair[(row["init"], row["cases"], metric, pair)].append(float(row[metric]))
    for (init, cases, metric, pair), found in per_pair.items():
        finite = [v for v in found if math.isfinite(v)]
        values[(init, cases, ALL_LABELS, metric)][pair] = sum(finite) / len(finite) if finite else math.nan
    return values


def summarize_study(rows: Sequence[dict], reference: str = RANDOM) -> StudySummary:
    """Intervals for every (init, cases, label, metric); comparisons of each init's Dice to ``reference``."""
    values = _pair_values(rows)
    inits = sorted(dict.fromkeys(r["init"] for r in rows), key=lambda name: name != reference)  # the reference first
    labels = [ALL_LABELS, *dict.fromkeys(r["label"] for r in rows)]
    keys = sorted(values, key=lambda k: (inits.index(k[0]), k[1], labels.index(k[2]), list(METRICS).index(k[3])))
    compared = [k for k in keys if k[3] == COMPARED and k[0] != reference and (reference, *k[1:]) in values]
    found = {}
    for family in ([k for k in compared if k[2] == ALL_LABELS], [k for k in compared if k[2] != ALL_LABELS]):
        found.update(zip(family, with_holm([_compare(values[k], values[(reference, *k[1:])]) for k in family])))
    summary = [SummaryRow(*k, mean_interval(list(values[k].values())), found.get(k)) for k in keys]
    return StudySummary(summary, reference if any(r["init"] == reference for r in rows) else None)


def _compare(values: dict, reference: dict) -> Comparison:
    pairs = sorted(set(values) & set(reference))
    return compare_paired([values[p] for p in pairs], [reference[p] for p in pairs])


def bounds(low: float, high: float) -> str:
    """``0.05–0.19``; with a negative bound ``-0.09 to -0.01`` (a dash next to a minus reads as a range of its own)."""
    return f"{low:.2f}–{high:.2f}" if low >= 0 else f"{low:.2f} to {high:.2f}"


def _cases_text(n: int) -> str:
    return f"{n} labelled case{'' if n == 1 else 's'}"


def statement(row: SummaryRow, reference: str = RANDOM, alpha: float = ALPHA) -> str:
    """The plain sentence of a row's comparison: better or worse by how much, or no difference shown ("" without one)."""
    c = row.comparison
    if c is None:
        return ""
    d = c.difference
    where = f"with {_cases_text(row.cases)}" + ("" if row.label == ALL_LABELS else f" ({row.label})")
    if c.shown(alpha):
        better = d.mean > 0
        size, low, high = (d.mean, d.low, d.high) if better else (-d.mean, -d.high, -d.low)
        return (f"{row.init} init is {'better' if better else 'worse'} than {reference} init by {size:.2f} Dice "
                f"(CI {bounds(low, high)}) {where} (Holm-adjusted p = {c.p_adjusted:.2g}, {d.n} pairs)")
    interval = "" if math.isnan(d.low) else f", CI {bounds(d.low, d.high)}"
    return (f"{row.init} init vs {reference} init {where}: no difference shown "
            f"({d.mean:+.2f} Dice{interval}, Holm-adjusted p = {c.p_adjusted:.2g}, {d.n} pairs)")


def _fmt(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.6g}"


def write_summary(summary: StudySummary, path: Path) -> Path:
    """Write ``summary.csv`` atomically: one row per (init, cases, label, metric)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for r in summary.rows:
        i, c = r.interval, r.comparison
        compared = ["", "", "", "", "", "", "", ""] if c is None else [
            _fmt(c.difference.mean), _fmt(c.difference.low), _fmt(c.difference.high), c.difference.n,
            _fmt(c.p_value), _fmt(c.p_adjusted), "yes" if c.shown() else "no", r.statement]
        writer.writerow([r.init, r.cases, r.label, r.metric, i.n, _fmt(i.mean), _fmt(i.low), _fmt(i.high), *compared])
    return write_text(path, text.getvalue())
