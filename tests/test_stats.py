"""Intervals, pass@k and three-valued verdicts (l2s_lib.stats)."""

import math
from itertools import combinations

import numpy as np
import pytest

from l2s_lib import stats


def test_wilson_matches_the_closed_form_and_stays_in_the_unit_interval():
    low, high = stats.wilson(27, 30)
    # Wilson 1927 for 27/30 at 95%: (0.7438, 0.9654), computed independently
    assert low == pytest.approx(0.74378, abs=1e-4) and high == pytest.approx(0.96539, abs=1e-4)
    assert stats.wilson(30, 30)[1] == 1.0 and stats.wilson(30, 30)[0] < 1.0
    assert stats.wilson(0, 30)[0] == 0.0 and stats.wilson(0, 30)[1] > 0.0
    with pytest.raises(ValueError, match="n >= 1"):
        stats.wilson(0, 0)
    with pytest.raises(ValueError, match="successes"):
        stats.wilson(5, 3)


def test_bootstrap_over_problems_brackets_the_mean_and_is_seeded():
    rng = np.random.default_rng(1)
    x = (rng.random(200) < 0.7).astype(float)
    e = stats.bootstrap_ci(x)
    assert e.value == pytest.approx(x.mean()) and e.ci_low < e.value < e.ci_high
    lo, hi = stats.wilson(int(x.sum()), x.size)
    assert e.ci_low == pytest.approx(lo, abs=0.02) and e.ci_high == pytest.approx(hi, abs=0.02)
    assert stats.bootstrap_ci(x) == e  # the same default run gives the same numbers
    assert e.method == "bootstrap over problems" and e.n_seeds == 1 and e.n_problems == 200


def test_seed_variance_widens_the_interval():
    rng = np.random.default_rng(2)
    within = {s: (rng.random(100) < 0.6).astype(float) for s in range(4)}
    spread = {s: (rng.random(100) < p).astype(float) for s, p in enumerate((0.2, 0.5, 0.7, 0.95))}
    tight, wide = stats.bootstrap_ci(within), stats.bootstrap_ci(spread)
    assert wide.method == "bootstrap over seeds and problems" and wide.n_seeds == 4
    assert (wide.ci_high - wide.ci_low) > 2 * (tight.ci_high - tight.ci_low)
    assert wide.value == pytest.approx(np.mean([g.mean() for g in spread.values()]))
    with pytest.raises(ValueError, match="at least one"):
        stats.bootstrap_ci({0: []})


def _pass_at_k_by_enumeration(n, c, k):
    correct = set(range(c))
    subsets = list(combinations(range(n), k))
    return sum(bool(correct & set(s)) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n, c, k", [(5, 0, 1), (5, 2, 1), (5, 2, 3), (6, 1, 6), (8, 3, 2), (10, 7, 4), (16, 4, 8)])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_sample(n, c, k):
    assert stats.pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k), abs=1e-12)
    assert stats.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_sample_accuracy_and_bad_counts_fail():
    assert stats.pass_at_k(16, 5, 1) == pytest.approx(5 / 16)
    with pytest.raises(ValueError):
        stats.pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        stats.pass_at_k(4, 2, 5)


@pytest.mark.parametrize("low, high, expected", [(-3.0, 1.0, "reproduced"), (-9.0, -6.0, "not reproduced"),
                                                 (-7.0, 2.0, "inconclusive"), (float("nan"), 1.0, "inconclusive")])
def test_the_interval_not_the_point_must_clear_the_threshold(low, high, expected):
    gap = stats.Criterion("accuracy gap to System 2 (points)", -5.0, "at_least")
    assert gap.decide(low, high) == expected


def test_a_claim_of_several_criteria():
    shorter = stats.Criterion("length change (%)", -30.0, "at_most")
    assert shorter.decide(-60, -40) == "reproduced" and shorter.decide(-20, -5) == "not reproduced"
    assert shorter.text() == "length change (%) <= -30"
    assert stats.decide_all(["reproduced", "reproduced"]) == "reproduced"
    assert stats.decide_all(["reproduced", "inconclusive"]) == "inconclusive"
    assert stats.decide_all(["inconclusive", "not reproduced"]) == "not reproduced"
    with pytest.raises(ValueError):
        stats.decide_all([])
    with pytest.raises(ValueError):
        stats.Criterion("x", 0, "above")
