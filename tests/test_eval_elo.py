"""Bradley–Terry / Elo from soft pairwise judgements."""

from __future__ import annotations

import math
import random

import pytest

from charter.stages.evaluate.elo import Comparison, bradley_terry, elo_ratings


def test_two_models_at_three_to_one_are_191_points_apart() -> None:
    comparisons = [Comparison("after", "before", 0.75)] * 400
    ratings = bradley_terry(comparisons, prior=0.0)
    assert ratings["after"] - ratings["before"] == pytest.approx(400 * math.log10(3), abs=1e-6)
    assert (ratings["after"] + ratings["before"]) / 2 == pytest.approx(1000)


def test_even_judgements_give_equal_ratings_whatever_the_order() -> None:
    comparisons = [Comparison("x", "y", 0.5), Comparison("y", "x", 0.5)] * 10
    ratings = elo_ratings(comparisons, bootstrap=200)
    assert ratings["x"].elo == pytest.approx(ratings["y"].elo)
    assert ratings["x"].low <= 1000 <= ratings["x"].high and ratings["x"].win_rate == 0.5


def test_a_model_that_always_wins_keeps_a_finite_rating() -> None:
    ratings = bradley_terry([Comparison("a", "b", 1.0)] * 5)
    assert math.isfinite(ratings["a"]) and ratings["a"] > ratings["b"]


def test_three_models_are_recovered_with_intervals_that_cover_them() -> None:
    truth = {"small": 900.0, "medium": 1000.0, "large": 1100.0}
    rng = random.Random(7)
    comparisons = []
    for _ in range(600):
        a, b = rng.sample(sorted(truth), 2)
        p = 1 / (1 + 10 ** ((truth[b] - truth[a]) / 400))
        comparisons.append(Comparison(a, b, 1.0 if rng.random() < p else 0.0))
    ratings = elo_ratings(comparisons, bootstrap=300, prior=0.0)
    assert ratings["small"].elo < ratings["medium"].elo < ratings["large"].elo
    for model, elo in truth.items():
        assert ratings[model].low <= elo <= ratings[model].high, (model, ratings[model])
        assert ratings[model].high - ratings[model].low < 120  # 600 games pin it down


def test_bad_comparisons_are_refused() -> None:
    with pytest.raises(ValueError, match="p_a must be in"):
        bradley_terry([Comparison("a", "b", 1.5)])
    with pytest.raises(ValueError, match="between two models"):
        bradley_terry([Comparison("a", "a", 0.5)])
    assert elo_ratings([]) == {}
