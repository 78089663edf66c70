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
