"""The statistics of a study: means with confidence intervals and paired comparisons to a reference init.

Pure functions of numbers (numpy and scipy only), so they are tested on synthetic results with known answers.

- :func:`mean_interval`: the mean and its Student-t confidence interval, ``mean ± t(1 - a/2, n - 1) · s / √n``.
- :func:`compare_paired`: the mean of the paired differences (an init minus the reference, pair by pair:
  the same seed and held-out case) with its t interval, and the two-sided Wilcoxon signed-rank p-value
  (exact for small samples without ties, scipy's normal approximation otherwise).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (comparisons of one study), so that the
  chance of any false "better" or "worse" in the family stays at ``alpha``.

A difference is *shown* when its interval excludes 0 and its Holm-adjusted p-value is below ``alpha``.
The intervals and tests treat the pairs as independent draws; in a study the pairs share seeds and
held-out cases, so they are approximate: more seeds and more held-out cases make them trustworthy.

Example::

    compare_paired([0.8, 0.7, 0.9, 0.75], [0.6, 0.65, 0.7, 0.6]).difference.mean   # 0.15
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

__all__ = ["CONFIDENCE", "ALPHA", "Interval", "Comparison", "mean_interval", "compare_paired", "signed_rank_p", "holm", "with_holm"]

CONFIDENCE = 0.95
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values and its two-sided confidence interval (NaN bounds for fewer than two values)."""

    mean: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Comparison:
    """Paired differences (init minus reference): their mean with its interval, the raw and the adjusted p."""

    difference: Interval
    p_value: float
    p_adjusted: float

    def shown(self, alpha: float = ALPHA) -> bool:
        return self.difference.excludes_zero() and self.p_adjusted < alpha


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    return array[np.isfinite(array)]


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Mean and t confidence interval of the finite ``values``.

    Raises:
        ValueError: ``confidence`` not in (0, 1).
    """
    from scipy import stats

    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    array = _finite(values)
    n = len(array)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(array.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return Interval(mean, mean - half, mean + half, n)


def signed_rank_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences; 1 when every difference is 0 (or none)."""
    from scipy import stats

    array = _finite(differences)
    if not np.any(array != 0):
        return 1.0
    return float(stats.wilcoxon(array, zero_method="wilcox").pvalue)


def compare_paired(values: Sequence[float], reference: Sequence[float], confidence: float = CONFIDENCE) -> Comparison:
    """``values[i] - reference[i]`` over the pairs where both are finite; p not yet adjusted (see :func:`with_holm`).

    Raises:
        ValueError: the two sequences differ in length.
    """
    a, b = np.asarray(values, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {len(a)} and {len(b)}.")
    differences = (a - b)[np.isfinite(a) & np.isfinite(b)]
    p = signed_rank_p(differences)
    return Comparison(mean_interval(differences, confidence), p, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: sorted ascending, the k-th smallest (k from 0) becomes
    ``max over j <= k of min(1, (m - j) · p_(j))``."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def with_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The comparisons of one family with their ``p_adjusted`` set by :func:`holm`."""
    adjusted = holm([c.p_value for c in comparisons])
    return [replace(c, p_adjusted=p) for c, p in zip(comparisons, adjusted)]
