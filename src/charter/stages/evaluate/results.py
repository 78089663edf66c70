"""What ``results.json`` says: each suite's metrics per model with 95% intervals, and each
model's paired difference from the baseline (the first model).

The suites (:mod:`charter.suites`) say which metrics they have and how each item scores; this
module turns the judged items into estimates (:mod:`charter.stages.evaluate.stats`), adds the
Bradley–Terry ratings of the pairwise judgements, and names the metrics where less is better.
``scripts/results_table.py`` recomputes its tables with the same functions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from charter import suites as registry
from charter.records import EvalItem, Verdict
from charter.stages.evaluate.elo import Comparison, elo_ratings
from charter.stages.evaluate.stats import Estimate, mean, paired_difference, rate


def metric_scores(suite: str, items: Iterable[EvalItem]) -> dict[str, tuple[str, dict[str, float]]]:
    """Each metric of ``suite``: its kind (rate or mean) and the per-item scores it averages."""
    return dict(registry.load(suite).metrics(list(items)))


def estimate(kind: str, values: dict[str, float], seed: int) -> Estimate:
    ordered = [values[k] for k in sorted(values)]
    return rate([v >= 0.5 for v in ordered]) if kind == "rate" else mean(ordered, seed)


def summarise(
    models: Sequence[str],
    items: list[EvalItem],
    pairwise: Sequence[Verdict],
    refusal_layer: str,
    chosen: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """``results.json``: every chosen suite's metrics per model, and each model's paired
    difference from the first (the baseline) on the items both answered."""
    suites: dict[str, dict[str, dict[str, Any]]] = {}
    per_item: dict[tuple[str, str, str], dict[str, float]] = {}
    for suite in (s for s in chosen if s in registry.SUITES):
        suites[suite] = {}
        for model in models:
            mine = [i for i in items if i.suite == suite and i.model == model]
            metrics = {}
            for name, (kind, values) in metric_scores(suite, mine).items():
                metrics[name] = estimate(kind, values, seed).as_dict()
                per_item[(suite, model, name)] = values
            suites[suite][model] = metrics
    comparisons = [Comparison(v.models[0], v.models[1], v.p) for v in pairwise]
    for model, rating in elo_ratings(comparisons, seed=seed).items():
        suites["helpfulness"][model]["elo"] = Estimate(
            rating.elo, rating.low, rating.high, rating.comparisons
        ).as_dict()
    differences: dict[str, Any] = {}
    base = models[0]
    for other in models[1:]:
        label = f"{other} − {base}"
        differences[label] = {}
        for (suite, model, name), values in per_item.items():
            if model != other or (suite, base, name) not in per_item:
                continue
            delta = paired_difference(per_item[(suite, base, name)], values, seed)
            if delta is not None:
                differences[label].setdefault(suite, {})[name] = delta.as_dict()
    return {
        "models": list(models), "refusal_layer": refusal_layer,
        "refusal_held_out_accuracy": _held_out(refusal_layer), "suites": suites,
        "differences": differences, "lower_is_better": sorted(lower_is_better()),
        "items": len(items),
    }  # fmt: skip


def lower_is_better() -> set[str]:
    """The metric names, over every registered suite, where less is better."""
    return {m for name in registry.SUITES for m in registry.load(name).lower_is_better}


def _held_out(layer: str) -> dict[str, float] | None:
    """The refusal classifier's leave-one-model-out accuracy, as its head records it."""
    if layer != "classifier":
        return None
    from charter.stages.evaluate.refusal import HEAD

    pooled: dict[str, float] = json.loads(HEAD.read_text("utf-8"))["held_out"]["pooled"]
    return pooled
