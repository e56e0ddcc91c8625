"""Bootstrap intervals and the paired randomisation test on hand-made per-question scores.

Known answers: a difference every question agrees on must exclude zero and be significant; two
methods with equal scores, or scores that swap between questions, must be "within noise" with a
large p-value; a constant metric has a zero-width interval; exact sign-flip p-values are
counted by hand; an interval over 100 fair coin flips has the textbook width.
"""
from __future__ import annotations

import numpy as np
import pytest

from dynaprag.eval.stats import (PairedComparison, StatsError, bootstrap_interval, bootstrap_intervals, pair_by_id,
                                 paired_comparison, paired_comparisons, sign_flip_p_values)

#: method answers 32 of 40 questions, the baseline 16: it wins on 16 and never loses
METHOD = np.array([1.0] * 32 + [0.0] * 8)
BASELINE = np.array([1.0] * 16 + [0.0] * 24)


def test_known_difference_excludes_zero_and_is_significant():
    c = paired_comparison(METHOD, BASELINE, resamples=5000, seed=0)
    assert (c.n, c.mean_a, c.mean_b) == (40, 0.8, 0.4)
    assert c.difference == pytest.approx(0.4)
    assert 0 < c.low < 0.4 < c.high <= 0.6
    # 16 questions differ, all in the method's favour: exact p would be 2 / 2**16
    assert c.p_value < 0.001
    assert not c.within_noise and c.verdict == "better"
    worse = paired_comparison(BASELINE, METHOD, resamples=5000, seed=0)
    assert worse.high < 0 and worse.verdict == "worse" and worse.difference == pytest.approx(-0.4)


def test_identical_scores_are_within_noise():
    scores = np.array([1.0, 0.0, 0.5, 0.25] * 10)
    c = paired_comparison(scores, scores.copy(), resamples=2000)
    assert (c.difference, c.low, c.high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert c.within_noise and c.verdict == "within noise"


def test_swapped_wins_give_zero_difference_and_a_large_p_value():
    a = np.array([1.0, 0.0] * 20)
    b = np.array([0.0, 1.0] * 20)  # each method wins 20 questions
    c = paired_comparison(a, b, resamples=10_000, seed=3)
    assert c.difference == 0.0 and c.low < 0 < c.high
    assert c.p_value > 0.5 and c.within_noise


def test_constant_metric_has_a_zero_width_interval():
    for value in (0.0, 0.7, 1.0):
        iv = bootstrap_interval(np.full(30, value), resamples=1000)
        assert iv.mean == pytest.approx(value) and iv.low == pytest.approx(value) and iv.high == pytest.approx(value)
        assert iv.low <= iv.mean <= iv.high and iv.n == 30
    c = paired_comparison(np.full(25, 0.5), np.full(25, 0.5))
    assert c.p_value == 1.0 and c.within_noise


def test_exact_sign_flip_p_values_counted_by_hand():
    # all 2**4 flips: |sum| >= 4 for ++++ and ---- -> 2/16; [1,1,1,-1] has |sum| >= 2 in 10 of 16
    p = sign_flip_p_values({"a": [1, 1, 1, 1], "b": [1, 1, 1, -1], "c": [0.5, 0, 0, 0]})
    assert p == {"a": 0.125, "b": 0.625, "c": 1.0}


def test_monte_carlo_p_value_is_never_zero_and_agrees_with_the_exact_one():
    assert sign_flip_p_values({"d": [1.0] * 40}, resamples=999)["d"] == pytest.approx(1 / 1000)
    d = {"d": [1, 1, 1, 1, 1, 1, 1, 1, -1, 1, 0, 1, -1, 1]}  # 14 questions: 16384 flips
    exact = sign_flip_p_values(d, resamples=2 ** 14)["d"]
    sampled = sign_flip_p_values(d, resamples=8000, seed=1)["d"]
    assert 0.01 < exact < 0.2 and sampled == pytest.approx(exact, abs=0.02)


def test_interval_of_coin_flips_has_the_textbook_width():
    coin = np.array([1.0, 0.0] * 50)  # p = 0.5, n = 100: normal approximation half-width 1.96 * 0.05
    iv = bootstrap_interval(coin, resamples=10_000)
    assert iv.mean == 0.5
    assert 0.17 < iv.high - iv.low < 0.22 and iv.contains(0.5) and not iv.contains(0.3)
    narrow = bootstrap_interval(coin, confidence=0.5, resamples=10_000)
    assert narrow.high - narrow.low < iv.high - iv.low


def test_pairing_sees_a_small_consistent_gain_that_unpaired_intervals_hide():
    rng = np.random.default_rng(7)
    base = rng.uniform(0.0, 0.9, size=60)
    better = base + 0.05  # every question gains 0.05
    a, b = bootstrap_interval(better), bootstrap_interval(base)
    assert a.low < b.high  # the per-method intervals overlap
    c = paired_comparison(better, base)
    assert c.low == pytest.approx(0.05) and c.high == pytest.approx(0.05) and c.verdict == "better"


def test_seeded_and_one_draw_for_all_metrics():
    rng = np.random.default_rng(0)
    a, b = rng.random(50), rng.random(50)
    assert paired_comparison(a, b, seed=4) == paired_comparison(a, b, seed=4)
    assert bootstrap_interval(a, seed=4) != bootstrap_interval(a, seed=5)
    both = paired_comparisons({"em": a, "f1": a}, {"em": b, "f1": b}, seed=4)
    assert both["em"] == both["f1"] == paired_comparison(a, b, seed=4)
    ivs = bootstrap_intervals({"x": a, "y": a * 0.5})
    assert ivs["y"].low == pytest.approx(ivs["x"].low * 0.5)  # same resampled questions for every metric


def test_bad_inputs_name_the_problem():
    with pytest.raises(StatsError, match="pair_by_id"):
        paired_comparison([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="no scores"):
        bootstrap_interval([])
    with pytest.raises(StatsError, match="finite"):
        bootstrap_interval([0.5, float("nan")])
    with pytest.raises(StatsError, match="confidence"):
        bootstrap_interval([0.5, 1.0], confidence=95)
    with pytest.raises(StatsError, match="resamples"):
        paired_comparison([1, 0], [0, 0], resamples=0)
    with pytest.raises(StatsError, match="equal length"):
        bootstrap_intervals({"em": [1, 0], "f1": [1.0]})


def test_pair_by_id_and_bench_row():
    ids, a, b = pair_by_id({"q1": 1.0, "q2": 0.0, "q3": 0.5}, {"q3": 1.0, "q1": 0.0, "q9": 1.0})
    assert ids == ["q1", "q3"] and a.tolist() == [1.0, 0.5] and b.tolist() == [0.0, 1.0]
    row = PairedComparison(10, 0.5, 0.3, 0.2, 0.05, 0.35, 0.01).as_row("f1_")
    assert row == {"f1_diff": 0.2, "f1_diff_ci_low": 0.05, "f1_diff_ci_high": 0.35, "f1_p_value": 0.01,
                   "f1_within_noise": False, "f1_n_paired": 10}
    assert PairedComparison(10, 0.5, 0.3, 0.2, 0.05, 0.35, 0.2).within_noise  # interval alone is not enough
