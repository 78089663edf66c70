"""Estimates with 95% intervals, and the difference between two models with its interval.

- A rate of yes/no outcomes (attack success, refusal, pass@1) gets a Wilson interval.
- A mean of per-item scores in [0, 1] (a soft probability, a share of instructions) gets a
  percentile bootstrap interval.
- The difference between two models on the same items is bootstrapped over items, paired: each
  resample draws items, not answers, so the difference keeps the items' shared difficulty.
  When both sides are yes/no outcomes it also carries an exact McNemar test: the two-sided
  p-value of the discordant items (one model right, the other wrong) under "no difference".
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from charter.stages.calibrate import wilson_interval

BOOTSTRAP = 2000


@dataclass(frozen=True)
class Estimate:
    """A metric's value with its 95% interval over ``n`` items."""

    value: float
    low: float
    high: float
    n: int
    p_value: float | None = None  # paired differences of yes/no outcomes: exact McNemar

    def as_dict(self) -> dict[str, float | int]:
        return {
            k: round(v, 4) if isinstance(v, float) and k != "p_value" else v
            for k, v in asdict(self).items()
            if v is not None
        }


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
    p_value = None
    if all(first[k] in (0.0, 1.0) and second[k] in (0.0, 1.0) for k in shared):
        p_value = mcnemar(sum(d > 0 for d in deltas), sum(d < 0 for d in deltas))
    return Estimate(sum(deltas) / n, *_percentiles(means), n, p_value)


def mcnemar(up: int, down: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts of a paired yes/no test.

    Under "no difference" each discordant item goes either way with probability 1/2, so the
    smaller count is binomial(up + down, 1/2); the p-value doubles its tail (at most 1).
    """
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def _percentiles(sorted_values: Sequence[float]) -> tuple[float, float]:
    count = len(sorted_values)
    return sorted_values[int(0.025 * count)], sorted_values[min(count - 1, int(0.975 * count))]
