"""Estimates with 95% intervals, and the difference between two models with its interval.

- A rate of yes/no outcomes (attack success, refusal, pass@1) gets a Wilson interval.
- A mean of per-item scores in [0, 1] (a soft probability, a share of instructions) gets a
  percentile bootstrap interval.
- The difference between two models on the same items is paired. For yes/no outcomes its
  interval is Bonett and Price's adjusted Wald interval for paired proportions (2012), with an
  exact McNemar test: the two-sided p-value of the discordant items (one model right, the
  other wrong) under "no difference". A bootstrap over items, used for these until
  2026-12-06, collapses to a point when every item moved the same way (one clause, one
  prompt, one flip read "+1 [1, 1]"). Other scores are bootstrapped over items: each
  resample draws items, not answers, so the difference keeps their shared difficulty.

The bootstrap and the exact binomial test are SciPy's (``scipy.stats.bootstrap``,
``scipy.stats.binomtest``), imported when first used. The Wilson interval is our closed form
(:func:`charter.stages.calibrate.wilson_interval`): it takes fractional successes (a tie in
calibration counts half), which SciPy's ``BinomTestResult.proportion_ci`` does not; the two
agree on whole counts (tests/test_stats.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from charter.stages.calibrate import wilson_interval

BOOTSTRAP = 2000
Z = 1.959964  # the normal quantile of a two-sided 95% interval


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
    return Estimate(sum(scores) / n, *_bootstrap(scores, seed), n)


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
    if all(first[k] in (0.0, 1.0) and second[k] in (0.0, 1.0) for k in shared):
        p_value = mcnemar(sum(d > 0 for d in deltas), sum(d < 0 for d in deltas))
        interval = paired_interval([first[k] for k in shared], [second[k] for k in shared])
        return Estimate(sum(deltas) / n, *interval, n, p_value)
    return Estimate(sum(deltas) / n, *_bootstrap(deltas, seed), n)


def paired_interval(first: Sequence[float], second: Sequence[float]) -> tuple[float, float]:
    """The 95% interval of ``mean(second) − mean(first)`` for paired yes/no outcomes: Bonett
    and Price's adjusted Wald interval (2012: one added to each discordant count, two to n),
    which keeps its width when few or no items are discordant."""
    import math

    n = len(first)
    lost = sum(1 for x, y in zip(first, second, strict=True) if x and not y)
    gained = sum(1 for x, y in zip(first, second, strict=True) if not x and y)
    p_lost, p_gained = (lost + 1) / (n + 2), (gained + 1) / (n + 2)
    centre = p_gained - p_lost
    half = Z * math.sqrt((p_lost + p_gained - centre**2) / (n + 2))
    return max(-1.0, centre - half), min(1.0, centre + half)


def mcnemar(up: int, down: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts of a paired yes/no test.

    Under "no difference" each discordant item goes either way with probability 1/2: the
    exact binomial test of ``up`` successes in ``up + down`` trials at 1/2.
    """
    if up + down == 0:
        return 1.0
    from scipy.stats import binomtest

    return min(1.0, float(binomtest(up, up + down, 0.5).pvalue))


def _bootstrap(values: Sequence[float], seed: int) -> tuple[float, float]:
    """The 95% percentile-bootstrap interval of the mean of ``values`` (resampled items)."""
    if min(values) == max(values):  # every resample has the same mean: nothing to draw
        return float(values[0]), float(values[0])
    import numpy as np
    from scipy.stats import bootstrap

    result = bootstrap(
        (np.asarray(values, dtype=float),), np.mean, n_resamples=BOOTSTRAP,
        confidence_level=0.95, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)
