"""The figures of ``charter constitution infer`` (:mod:`charter.stages.infer`): a labeller's
accuracy, relevance and position bias; which candidates are kept; the length rule it is
compared with; paired differences on the test split; and how much of a reference
constitution the kept principles recover.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from charter.constitution import Constitution
from charter.records import PreferencePair


@dataclass
class Candidate:
    """A candidate principle, how many proposals its cluster holds, and its select figures."""

    text: str
    support: int
    scores: dict[str, Any] = field(default_factory=dict)


def scores(labels: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Accuracy (Wilson interval), relevance and position bias of one labeller's labels."""
    from charter.stages.evaluate.stats import rate

    accuracy = rate([p > 0.5 for p, _ in labels]).as_dict()
    return {"accuracy": accuracy,
            "relevance": round(sum(2 * abs(p - 0.5) for p, _ in labels) / max(1, len(labels)), 4),
            "position_bias": round(sum(a for _, a in labels) / max(1, len(labels)), 4)}  # fmt: skip


def keep(candidates: Sequence[Candidate], budget: int) -> list[Candidate]:
    """The candidates whose accuracy's lower bound is above 0.5, best first, up to ``budget``."""
    good = [c for c in candidates if c.scores["accuracy"]["low"] > 0.5]
    return sorted(good, key=lambda c: -c.scores["accuracy"]["low"])[:budget]


def length_rule(
    selecting: Sequence[PreferencePair], testing: Sequence[PreferencePair]
) -> tuple[str, list[bool]]:
    """The naive preference model: prefer the longer reply, or the shorter where the select
    split prefers shorter ones more often (harmlessness data often does), chosen there as the
    candidates are; its outcomes on ``testing`` (equal lengths count as wrong)."""

    def right(pairs: Sequence[PreferencePair], sign: int) -> list[bool]:
        return [sign * (len(p.responses[0]) - len(p.responses[1])) > 0 for p in pairs]

    sign = 1 if sum(right(selecting, 1)) >= sum(right(selecting, -1)) else -1
    return ("longer" if sign > 0 else "shorter"), right(testing, sign)


def differences(outcomes: dict[str, list[bool]], ids: Sequence[str]) -> dict[str, Any]:
    """Each inferred labelling minus each other labeller, paired on the same test pairs:
    Bonett–Price interval and exact McNemar p (:func:`~charter.stages.evaluate.stats.
    paired_difference`)."""
    from charter.stages.evaluate.stats import paired_difference

    def scored(name: str) -> dict[str, float]:
        return {i: float(ok) for i, ok in zip(ids, outcomes[name], strict=True)}

    ours = [name for name in outcomes if name.startswith("inferred")]
    out = {}
    for name in ours:
        for other in (o for o in outcomes if o not in ours):
            estimate = paired_difference(scored(other), scored(name))
            if estimate is not None:
                out[f"{name} − {other}"] = estimate.as_dict()
    return out


RECOVERED = 0.7  # cosine (all-MiniLM-L6-v2) at which an inferred principle counts as a match


def recovery(reference: Constitution, kept: Sequence[str],
             embed: Callable[[Sequence[str]], list[list[float]]]) -> dict[str, Any]:  # fmt: skip
    """For each comparison principle of ``reference``, the kept principle nearest in meaning
    and their cosine; recovered at ``RECOVERED`` or above. Read it on a round trip, where
    ``reference`` labelled the pairs. Each row also gives the nearest kept principle's cosine
    to the proposals' worked examples (:data:`~charter.stages.infer_prompts.EXAMPLES`): a
    match that is as close to an example counts apart, since a model copying the example
    would make it whatever the pairs say (``recovered_unlike_examples``)."""
    import numpy as np

    from charter.stages.infer_prompts import EXAMPLES

    ours = [(p.id, p.comparison) for p in reference.principles if p.comparison]
    if not ours or not kept:
        return {"threshold": RECOVERED, "recovered": 0, "recovered_unlike_examples": 0,
                "of": len(ours), "principles": []}  # fmt: skip
    examples = [example[-1] for example in EXAMPLES]
    vectors = np.asarray(embed([text for _, text in ours] + list(kept) + examples), dtype=float)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    theirs, mine = vectors[: len(ours)], vectors[len(ours) : len(ours) + len(kept)]
    similar = theirs @ mine.T
    like_example = (mine @ vectors[len(ours) + len(kept) :].T).max(axis=1)
    rows: list[dict[str, Any]] = []
    for (pid, _), row in zip(ours, similar, strict=True):
        nearest = int(row.argmax())
        rows.append({"reference": pid, "nearest": kept[nearest],
                     "cosine": round(float(row.max()), 4),
                     "example_cosine": round(float(like_example[nearest]), 4)})  # fmt: skip
    found = [r for r in rows if r["cosine"] >= RECOVERED]
    return {"threshold": RECOVERED, "recovered": len(found),
            "recovered_unlike_examples": sum(r["example_cosine"] < RECOVERED for r in found),
            "of": len(ours), "principles": rows}  # fmt: skip
