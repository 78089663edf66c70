"""Bradley–Terry ratings on the Elo scale, from soft pairwise judgements, with bootstrap CIs.

Each comparison says how likely the judge found model ``a``'s answer better than ``b``'s
(``p_a``, a soft label: position-swapped and normalised by the caller). Bradley–Terry models
P(a beats b) = πa / (πa + πb); the strengths are fitted by Hunter's minorise–maximise
iteration on soft win counts, with ``prior`` pseudo-comparisons at even odds between every
pair so that a model that always wins or always loses keeps a finite rating. Ratings are
reported as Elo: 400·log10(π), centred on 1000, so a 75% win rate is ~191 points.
Confidence intervals come from resampling comparisons with replacement.

Why our own fit: the libraries that fit Bradley–Terry (choix, and the logistic regressions
people press into service) take hard wins; a soft label would have to be thresholded or
duplicated into fractional pseudo-games. The MM iteration on soft counts is a dozen lines.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

ELO_CENTRE, ELO_SCALE = 1000.0, 400.0


@dataclass(frozen=True)
class Comparison:
    """One judged pair: ``p_a`` is the probability that ``a``'s answer is the better one."""

    a: str
    b: str
    p_a: float


@dataclass(frozen=True)
class Rating:
    """A model's Elo rating with its bootstrap interval, and its mean soft win rate."""

    elo: float
    low: float
    high: float
    win_rate: float
    comparisons: int


def bradley_terry(
    comparisons: Sequence[Comparison], prior: float = 0.5, iterations: int = 500
) -> dict[str, float]:
    """Elo-scale ratings (centred on 1000) fitted to ``comparisons``."""
    models = sorted({c.a for c in comparisons} | {c.b for c in comparisons})
    wins = dict.fromkeys(models, 0.0)
    games: dict[tuple[str, str], float] = {}
    for c in comparisons:
        if not 0.0 <= c.p_a <= 1.0 or c.a == c.b:
            raise ValueError(f"bad comparison {c}: p_a must be in [0, 1] between two models")
        wins[c.a] += c.p_a
        wins[c.b] += 1.0 - c.p_a
        key = (min(c.a, c.b), max(c.a, c.b))
        games[key] = games.get(key, 0.0) + 1.0
    for pair in combinations(models, 2):  # the prior: even-odds games between every pair
        games[pair] = games.get(pair, 0.0) + 2 * prior
        wins[pair[0]] += prior
        wins[pair[1]] += prior
    strength = dict.fromkeys(models, 1.0)
    for _ in range(iterations):
        updated = {}
        for m in models:
            denominator = sum(
                n / (strength[i] + strength[j]) for (i, j), n in games.items() if m in (i, j)
            )
            updated[m] = wins[m] / denominator if denominator else 1.0
        centre = math.exp(sum(math.log(v) for v in updated.values()) / len(updated))
        change = max(abs(updated[m] / centre - strength[m]) for m in models)
        strength = {m: v / centre for m, v in updated.items()}
        if change < 1e-10:
            break
    return {m: ELO_CENTRE + ELO_SCALE * math.log10(strength[m]) for m in models}


def elo_ratings(
    comparisons: Sequence[Comparison], bootstrap: int = 1000, seed: int = 0, prior: float = 0.5
) -> dict[str, Rating]:
    """Ratings with 95% bootstrap intervals (comparisons resampled ``bootstrap`` times)."""
    if not comparisons:
        return {}
    point = bradley_terry(comparisons, prior)
    rng = random.Random(seed)
    samples: dict[str, list[float]] = {m: [] for m in point}
    for _ in range(bootstrap):
        resample = rng.choices(comparisons, k=len(comparisons))
        fitted = bradley_terry(resample, prior, iterations=200)
        for m in point:  # a model missing from a resample sits at its prior-only rating
            samples[m].append(fitted.get(m, ELO_CENTRE))
    ratings = {}
    for m, elo in point.items():
        values = sorted(samples[m])
        played = [c for c in comparisons if m in (c.a, c.b)]
        won = sum(c.p_a if c.a == m else 1.0 - c.p_a for c in played)
        low, high = (
            (values[int(0.025 * len(values))], values[int(0.975 * len(values)) - 1])
            if values
            else (elo, elo)
        )
        ratings[m] = Rating(elo, low, high, won / len(played), len(played))
    return ratings
