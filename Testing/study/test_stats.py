"""The study's statistics on synthetic results with known answers (seeded, fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ssl3d.study.stats import Comparison, compare_paired, holm, mean_interval, signed_rank_p, with_holm

PAIRS = 30  # e.g. 3 seeds x 10 held-out cases


def _study(rng: np.random.Generator, planted: float, n: int = PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Reference Dice per pair and an init's Dice with a planted mean difference (case effects shared)."""
    case = rng.normal(0.7, 0.1, n)  # how hard each pair is, common to both inits
    reference = case + rng.normal(0, 0.05, n)
    return reference + planted + rng.normal(0, 0.05, n), reference


def test_interval_of_known_values():
    # mean 2, s = 1, n = 3: half-width t(0.975, 2) / sqrt(3) = 4.302653 / 1.732051
    interval = mean_interval([1.0, 2.0, 3.0])
    assert interval.mean == 2.0 and interval.n == 3
    assert interval.high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert interval.low == pytest.approx(4.0 - interval.high)


def test_interval_drops_nan_and_one_value_has_no_bounds():
    assert mean_interval([0.5, math.nan, 0.7]).n == 2
    one = mean_interval([0.4])
    assert one.mean == 0.4 and math.isnan(one.low) and not one.excludes_zero()
    assert mean_interval([]).n == 0


def test_signed_rank_exact_value():
    # six positive differences of distinct sizes: exact two-sided p = 2 / 2^6
    assert signed_rank_p([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]) == pytest.approx(2 / 64)
    assert signed_rank_p([0.0, 0.0, 0.0]) == 1.0


def test_holm_known_answer():
    assert holm([0.01, 0.04, 0.03, 0.5]) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert holm([]) == []


def test_a_planted_difference_is_found():
    rng = np.random.default_rng(1)
    found = 0
    for _ in range(50):
        result = compare_paired(*_study(rng, planted=0.08))
        assert result.difference.n == PAIRS
        found += result.shown()
    assert found >= 48  # power is ~1 for 0.08 against a paired noise of 0.07


def test_the_sign_of_a_planted_loss_is_kept():
    result = compare_paired(*_study(np.random.default_rng(2), planted=-0.1))
    assert result.shown() and result.difference.high < 0


def test_no_difference_is_found_where_none_was_planted():
    rng = np.random.default_rng(3)
    false = sum(compare_paired(*_study(rng, planted=0.0)).shown() for _ in range(400))
    assert false <= 0.05 * 400 + 3 * math.sqrt(400 * 0.05 * 0.95)  # at most the 5 % level, plus 3 sigma


def test_holm_keeps_the_family_error_rate():
    rng = np.random.default_rng(4)
    any_false = 0
    for _ in range(200):
        family = with_holm([compare_paired(*_study(rng, planted=0.0, n=12)) for _ in range(6)])
        any_false += any(c.shown() for c in family)
    assert any_false <= 0.05 * 200 + 3 * math.sqrt(200 * 0.05 * 0.95)


@pytest.mark.parametrize("n", [3, 10, 30])
def test_intervals_cover_at_the_stated_rate(n):
    rng = np.random.default_rng(n)
    trials = 2000
    mean_hits = diff_hits = 0
    for _ in range(trials):
        values, reference = _study(rng, planted=0.05, n=n)
        mean_hits += mean_interval(values).low <= 0.75 <= mean_interval(values).high
        d = mean_interval(values - reference)  # what compare_paired reports as the difference (without its test)
        diff_hits += d.low <= 0.05 <= d.high
    sigma = math.sqrt(0.95 * 0.05 / trials)
    assert abs(mean_hits / trials - 0.95) < 3.5 * sigma
    assert abs(diff_hits / trials - 0.95) < 3.5 * sigma


def test_ill_inputs():
    with pytest.raises(ValueError, match="equal lengths"):
        compare_paired([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="confidence"):
        mean_interval([0.1, 0.2], confidence=1.5)
    assert isinstance(compare_paired([0.5], [0.5]), Comparison)
