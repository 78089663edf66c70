"""Intervals and paired tests (charter.stages.evaluate.stats)."""

from __future__ import annotations

import pytest

from charter.stages.evaluate.stats import mcnemar, paired_difference, rate


def test_mcnemar_matches_the_exact_binomial_tail() -> None:
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(5, 5) == 1.0
    # 10 discordant items all one way: 2 * 0.5**10
    assert mcnemar(10, 0) == pytest.approx(2 / 1024)
    # 8 vs 2: 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * 56/1024
    assert mcnemar(8, 2) == pytest.approx(112 / 1024)
    assert mcnemar(2, 8) == mcnemar(8, 2)


def test_paired_difference_of_yes_no_outcomes_carries_a_p_value() -> None:
    before = {f"q{i}": 1.0 for i in range(40)}
    after = {f"q{i}": 1.0 if i < 10 else 0.0 for i in range(40)}
    delta = paired_difference(before, after)
    assert delta is not None
    assert delta.value == pytest.approx(-0.75) and delta.high < 0
    assert delta.p_value == pytest.approx(mcnemar(0, 30)) and delta.p_value < 1e-8
    assert "p_value" in delta.as_dict()


def test_soft_scores_get_no_mcnemar_and_rates_get_wilson() -> None:
    delta = paired_difference({"a": 0.2, "b": 0.9}, {"a": 0.4, "b": 0.9})
    assert delta is not None and delta.p_value is None and "p_value" not in delta.as_dict()
    estimate = rate([True] * 3 + [False] * 7)
    assert estimate.value == pytest.approx(0.3) and 0.1 < estimate.low < 0.3 < estimate.high


def test_our_wilson_interval_agrees_with_scipy_on_whole_counts() -> None:
    from scipy.stats import binomtest

    for hits, n in [(0, 10), (3, 10), (60, 100), (149, 150)]:
        ours = rate([True] * hits + [False] * (n - hits))
        theirs = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), abs=1e-3)


def test_bootstrap_intervals_cover_the_mean_and_collapse_on_constant_data() -> None:
    scores = [0.1 * (i % 10) for i in range(200)]
    estimate = paired_difference({f"q{i}": 0.0 for i in range(200)},
                                 {f"q{i}": s for i, s in enumerate(scores)})  # fmt: skip
    assert estimate is not None and estimate.low < estimate.value < estimate.high
    assert estimate.high - estimate.low < 0.1
    same = paired_difference({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    assert same is not None and (same.low, same.value, same.high) == (0.0, 0.0, 0.0)
