"""Estimates with 95% intervals, and the difference between two models with its interval.

- A rate of yes/no outcomes (attack success, refusal, pass@1) gets a Wilson interval.
- A mean of per-item scores in [0, 1] (a soft probability, a share of instructions) gets a
  percentile bootstrap interval.
- The difference between two models on the same items is bootstrapped over items, paired: each
  resample draws items, not answers, so the difference keeps the items' shared difficulty.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from charter.calibrate import wilson_interval

BOOTSTRAP = 2000


@dataclass(frozen=True)
class Estimate:
    """A metric's value with its 95% interval over ``n`` items."""

    value: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def rate(outcomes: Sequence[bool]) -> Estimate:
    """The share of true outcomes, with its Wilson interval."""
    n = len(outcomes)
    hits = sum(outcomes)
    low, high = wilson_interval(hits, n)
    return Estimate(hits / n if n else 0.0, low, high, n)


def mean(scores: Sequence[float], seed: int = 0) -> Estimate:
    """The mean score, with a percentile bootstrap interval."""
    n = len(scores)
    if n == 0:
        return Estimate(0.0, 0.0, 1.0, 0)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(scores, k=n)) / n for _ in range(BOOTSTRAP))
    return Estimate(sum(scores) / n, *_percentiles(means), n)


def paired_difference(
    first: Mapping[str, float], second: Mapping[str, float], seed: int = 0
) -> Estimate | None:
    """Mean of ``second − first`` over the items both scored, bootstrapped over items.

    ``None`` when the two share no item (different prompt files, say).
    """
    shared = sorted(first.keys() & second.keys())
    if not shared:
        return None
    deltas = [second[k] - first[k] for k in shared]
    n = len(deltas)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(BOOTSTRAP))
    return Estimate(sum(deltas) / n, *_percentiles(means), n)


def _percentiles(sorted_values: Sequence[float]) -> tuple[float, float]:
    count = len(sorted_values)
    return sorted_values[int(0.025 * count)], sorted_values[min(count - 1, int(0.975 * count))]
