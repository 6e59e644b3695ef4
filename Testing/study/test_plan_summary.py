"""The study's plan (inits, cases, split, nested subsets) and its summary sentences, without training."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from ssl3d.errors import BundleError, ConfigError, DatasetError
from ssl3d.study.plan import Cell, InitSpec, held_out_split, parse_cases, parse_init, plan_cells, training_subset
from ssl3d.study.results import read_results, write_results
from ssl3d.study.summary import ALL_LABELS, bounds, summarize_study


def test_init_specs(tmp_path):
    assert parse_init("random") == InitSpec("random")
    bundle = tmp_path / "b"
    bundle.mkdir()
    assert parse_init(f"voco={bundle}") == InitSpec("voco", bundle=bundle)
    spec = parse_init("vf=vf-v2-cpu:/data/unlabelled")
    assert spec.pretrains and spec.preset == "vf-v2-cpu" and str(spec.data) == "/data/unlabelled"


@pytest.mark.parametrize("text, error, match", [
    ("voco", ConfigError, "must be 'random'"),
    ("2x=somewhere", ConfigError, "must start with a letter"),
    ("random=x", ConfigError, "not be 'random'"),
    ("voco=/no/such/bundle", BundleError, "no such bundle"),
    ("voco=seg-cpu:/data", ConfigError, "pretraining takes a VoCo or Volume Fusion preset"),
    ("voco=voco-v9-cpu:/data", ConfigError, "Did you mean"),
])
def test_ill_init_specs(text, error, match):
    with pytest.raises(error, match=match):
        parse_init(text)


def test_cases():
    assert parse_cases("5,1,2,all,2", pool=12) == [1, 2, 5, 12]
    with pytest.raises(DatasetError, match="asks for 13 labelled cases, but only 12 remain"):
        parse_cases("1,13", pool=12)
    for bad in ("0", "two", ","):
        with pytest.raises(ConfigError):
            parse_cases(bad, pool=12)


def test_split_is_fixed_and_subsets_nested_and_shared():
    cases = [f"case{i}" for i in range(10)]
    held, pool = held_out_split(cases, None)
    assert len(held) == 2 and len(pool) == 8 and not set(held) & set(pool)
    assert held_out_split(cases, None) == (held, pool)  # the same split on every call (and seed)
    for seed in range(3):
        subsets = [training_subset(pool, seed, n) for n in (1, 2, 5, 8)]
        assert all(small == big[: len(small)] for small, big in zip(subsets, subsets[1:]))  # nested
        assert set(subsets[-1]) == set(pool)
    assert training_subset(pool, 0, 2) != training_subset(pool, 1, 2)  # seeds draw other cases
    with pytest.raises(DatasetError, match="held-out split would be empty"):
        held_out_split(["only"], None)
    with pytest.raises(DatasetError, match="held-out split would be empty"):
        held_out_split(cases, 0)
    with pytest.raises(DatasetError, match="leaves no training case"):
        held_out_split(cases, 10)


def test_cells_are_named_and_ordered_seed_first():
    cells = plan_cells(["random", "voco"], [1, 4], [0, 1])
    assert [c.name for c in cells[:4]] == ["random-1-s0", "voco-1-s0", "random-4-s0", "voco-4-s0"]
    assert Cell("voco", 4, 1) in cells and len(cells) == 8


def _rows(planted: float, seeds: int = 3, cases: int = 8, seed: int = 0) -> list[dict]:
    """Synthetic results.csv rows: random and voco init, 2 labels, voco better by ``planted`` Dice."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for c in range(cases):
            for value, label in ((1, "liver"), (2, "spleen")):
                hard = rng.normal(0.6, 0.1)
                for init, shift in (("random", 0.0), ("voco", planted)):
                    rows.append({"init": init, "cases": 2, "seed": s, "cell": f"{init}-2-s{s}", "case": f"c{c}", "label": label,
                                 "value": value, "dice": hard + shift + rng.normal(0, 0.02), "hd95_mm": math.nan, "assd_mm": 3.0,
                                 "pred_voxels": 10, "ref_voxels": 10})
    return rows


def test_a_planted_difference_gets_its_sentence():
    summary = summarize_study(_rows(planted=0.1))
    row = summary.find("voco", 2)
    assert row.comparison.shown() and row.interval.n == 24
    assert row.comparison.difference.mean == pytest.approx(0.1, abs=0.02)
    found = re.fullmatch(r"voco init is better than random init by (0\.\d\d) Dice \(CI (0\.\d\d)–(0\.\d\d)\) with 2 labelled cases "
                         r"\(Holm-adjusted p = \S+, 24 pairs\)", row.statement)
    assert found, row.statement
    low, mean, high = float(found.group(2)), float(found.group(1)), float(found.group(3))
    assert low <= mean <= high and low > 0
    assert summary.find("random", 2).comparison is None
    assert len(summary.statements()) == 1 and len(summary.statements("liver")) == 1
    assert math.isnan(summary.find("voco", 2, metric="hd95_mm").interval.mean)  # no finite value: no mean


def test_no_planted_difference_says_none_is_shown():
    summary = summarize_study(_rows(planted=0.0, seed=1))  # the false-positive rate is test_stats.py's
    assert all("no difference shown" in s for label in ("liver", "spleen", ALL_LABELS) for s in summary.statements(label))


def test_interval_bounds_read_as_a_range():
    assert bounds(0.05, 0.19) == "0.05–0.19" and bounds(-0.09, -0.01) == "-0.09 to -0.01" and bounds(-0.1, 0.2) == "-0.10 to 0.20"


def test_results_csv_reads_back_to_the_same_summary(tmp_path):
    rows = _rows(planted=0.05)
    path = write_results(rows, tmp_path / "results.csv")
    again = read_results(path)
    assert len(again) == len(rows) and math.isnan(again[0]["hd95_mm"]) and again[0]["cases"] == 2
    assert summarize_study(again).statements() == summarize_study(rows).statements()
