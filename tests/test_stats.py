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
    same = paired_difference({"a": 0.5, "b": 0.2}, {"a": 0.5, "b": 0.2})
    assert same is not None and (same.low, same.value, same.high) == (0.0, 0.0, 0.0)


def test_a_paired_yes_no_difference_keeps_its_width_on_few_items() -> None:
    """One prompt that flipped is not "+1 [1, 1]": with Bonett and Price's interval one item
    says little, and no discordant item in two is not certainty either."""
    one = paired_difference({"q": 0.0}, {"q": 1.0})
    assert one is not None and one.value == 1.0 and one.low < 0.0 and one.high == 1.0
    none = paired_difference({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    assert none is not None and none.value == 0.0 and none.low < -0.5 and none.high > 0.5
    # Bonett & Price's formula by hand: 2 lost, 9 gained of 40
    many = paired_difference({f"q{i}": float(i < 2) for i in range(40)},
                             {f"q{i}": float(2 <= i < 11) for i in range(40)})  # fmt: skip
    p_lost, p_gained = 3 / 42, 10 / 42
    half = 1.959964 * ((p_lost + p_gained - (p_gained - p_lost) ** 2) / 42) ** 0.5
    assert many is not None and many.value == pytest.approx(7 / 40)
    assert (many.low, many.high) == pytest.approx((p_gained - p_lost - half,
                                                   p_gained - p_lost + half))  # fmt: skip
