"""``charter constitution infer``: recover the principles behind a preference dataset.

Inverse Constitutional AI, in four steps over pairs whose ``chosen`` reply is the preferred
one (TRL format; :func:`charter.pairs.load_pairs` puts it first in ``responses``). The pairs
are split three ways by a seeded shuffle: **propose**, **select** and **test**.

1. **Propose** (propose split; the prompts: :mod:`charter.stages.infer_prompts`): after two
   worked examples (ours, on requests unlike any dataset's), the model sees the two replies,
   in an order drawn per pair, is told which one a reviewer preferred, and writes one
   principle as a comparison question ("Which response …?") that would explain it. Replies
   that are not such a question are dropped and counted, and so are questions that restate
   the request (two or more of its content words) instead of naming a quality of replies.
2. **Cluster**: the proposals are embedded (all-MiniLM-L6-v2) and grouped (agglomerative,
   cosine, average linkage) into at most ``candidates`` clusters; each cluster's candidate is
   its member nearest the cluster's mean, with the cluster's size as its support.
3. **Score** (select split): each candidate labels every pair alone, as a one-principle
   constitution through the labeller of ``charter label`` (soft labels, both orders): its
   accuracy (the preferred reply gets p > 0.5) with a Wilson interval, its relevance (mean
   decisiveness, 2·|p − 0.5|) and its position bias (mean P(option A)).
4. **Keep** the candidates whose accuracy's lower bound is above 0.5, best first, up to
   ``budget``; the kept set is the inferred constitution.

The **test** split, touched by no step above, reports the inferred constitution's accuracy
(each kept principle labels each pair; the mean of their soft labels decides), and again
labelled as ``charter label`` labels (one principle drawn per pair), beside three others on
the same pairs: a constant (always the first shown: 50% by construction of the random
order), the length rule (the longer reply, or the shorter where the select split prefers
shorter ones: :func:`~charter.stages.infer_figures.length_rule`), and a reference
constitution, labelled as ``charter label`` does too; each inferred labelling's paired
difference from the others (Bonett–Price interval, McNemar p) is in ``differences``. A pair
read from a labelled file draws its principle by the id it was labelled under
(:attr:`PreferencePair.draw_key`), so on a round trip the reference asks each pair the
principle that labelled it. The reference's brief and worked examples come with it; the
inferred constitution has none. With the reference known to have labelled the pairs (the
round trip), :func:`~charter.stages.infer_figures.recovery` says which of its principles the
kept set recovers, and which of those matches are as close to a proposal's worked example
(proposals sharing 8 words with one are dropped as copies). Ties (p = 0.5) count as wrong,
for every labeller and the length rule alike; a labelled file's soft labels are read as hard
ones (the chosen reply is the one to reconstruct). ``infer.json`` holds every figure and
candidate.
Every model call is cached (``cached``/``store``: proposals and soft labels keyed by model,
request and pair), so a rerun asks nothing twice. Each cached row keeps its tokens and model
seconds, and the report's ``cost`` sums the rows the result read: what it took to make,
across every session that made it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.backends import Backend, GenerationConfig
from charter.backends.base import token_totals
from charter.constitution import Constitution
from charter.records import PreferencePair, content_id, render_messages
from charter.stages.infer_figures import (
    Candidate,
    differences,
    keep,
    length_rule,
    recovery,
    scores,
)
from charter.stages.infer_prompts import (
    copied_from_examples,
    propose_call,
    proposed_principle,
    restates,
)
from charter.stages.infer_replies import Cached, Replies, spent_since, split_cost

VERSION = 2  # in cache keys: bump when what this stage asks or writes changes


@dataclass
class InferConfig:
    shares: tuple[float, float, float] = (0.4, 0.3, 0.3)  # propose, select, test
    candidates: int = 24
    budget: int = 8
    seed: int = 0
    max_tokens: int = 60


def split(pairs: Sequence[PreferencePair], config: InferConfig) -> tuple[list[PreferencePair], ...]:
    """The propose, select and test splits (seeded shuffle by pair id)."""
    order = sorted(pairs, key=lambda p: p.id)
    random.Random(config.seed).shuffle(order)
    a = round(config.shares[0] * len(order))
    b = a + round(config.shares[1] * len(order))
    return order[:a], order[a:b], order[b:]


def propose(
    pairs: Sequence[PreferencePair], model: Backend, identity: str, config: InferConfig,
    replies: Replies,
) -> tuple[list[str], dict[str, int]]:  # fmt: skip
    """One principle per pair (those the model states as a question about replies), and how
    many replies were dropped, by reason."""
    asks = [propose_call(pair, config.seed) for pair in pairs]
    generation = GenerationConfig(temperature=0.0, max_tokens=config.max_tokens, seed=config.seed)
    keys = [content_id([identity, VERSION, [m.model_dump() for m in a], config.max_tokens])
            for a in asks]  # fmt: skip
    missing = [i for i, key in enumerate(keys) if key not in replies]
    for start in range(0, len(missing), 16):
        batch = missing[start : start + 16]
        began = time.monotonic()
        completions = model.generate([asks[i] for i in batch], generation)
        seconds = (time.monotonic() - began) / len(batch)
        for i, completion in zip(batch, completions, strict=True):
            replies.put(Cached(id=keys[i], kind="propose", text=completion.text,
                               usage=completion.usage(), seconds=seconds))  # fmt: skip
    principles = [proposed_principle(replies[key].text) for key in keys]
    questions = [(p, pair) for p, pair in zip(principles, pairs, strict=True) if p is not None]
    own = [p for p, pair in questions if not restates(p, pair)]
    copies = copied_from_examples(own)
    kept = [p for i, p in enumerate(own) if i not in copies]
    return kept, {"not_a_question": len(pairs) - len(questions),
                  "restates_request": len(questions) - len(own),
                  "copies_example": len(own) - len(kept)}  # fmt: skip


def label_mismatches(labelled: dict[str, Any], model: str, reference: Constitution) -> list[str]:
    """What differs between how a ``charter label`` file was labelled (:func:`charter.pairs.
    labelled_by`) and how infer labels its reference: where anything does, the reference is
    not the labeller that made the labels, and a round trip's "how much of the original" reads
    lower than it is."""
    from charter.stages.label import LabelConfig

    asked = LabelConfig()
    settings = [
        ("labeller (infer's --model)", labelled["labeller"], model),
        ("mode", labelled["mode"], asked.mode),
        ("seed", labelled["seed"], asked.seed),
        ("principles per label", labelled["principles"], asked.principles_per_label),
    ]
    lines = [
        f"the pairs were labelled with {what} {theirs}, infer labels with {ours}"
        for what, theirs, ours in settings
        if theirs is not None and theirs != ours
    ]
    if labelled["constitution_sha256"] not in (None, reference.sha256):
        lines.append(f"the pairs were labelled with another constitution (--reference "
                     f"{reference.name})")  # fmt: skip
    return lines


def dry_run(pairs: Sequence[PreferencePair], config: InferConfig, reference: Constitution) -> str:
    """What :func:`run_infer` would send, without a model: the proposal asked for the first
    propose pair, a candidate's scoring calls on the first select pair (the candidate a
    placeholder), and the calls counted, each an upper bound."""
    from charter.stages.label import LabelConfig, feedback_prefix, pair_prompts

    proposing, selecting, testing = _splits(pairs, config, "the pairs")
    candidate = one_principle("<a candidate principle: Which response …?>")
    labelling = LabelConfig()  # as soft_labels labels
    pair = selecting[0]
    scoring = "\n".join(
        [
            render_messages(feedback_prefix(candidate, labelling.mode)),
            *pair_prompts(pair, 1, constitution=candidate, config=labelling),
        ]
    )
    select = config.candidates * len(selecting) * 2
    kept = config.budget * len(testing) * 2
    per_pair = len(testing) * 2  # the inferred set one principle a pair; the reference alike
    return (
        f"=== proposal call, pair {proposing[0].id} (one per propose pair: {len(proposing)}) "
        f"===\n{render_messages(propose_call(proposing[0], config.seed))}\n\n"
        f"=== scoring calls, pair {pair.id} (each candidate on each select pair, both orders, "
        f"as charter label asks them) ===\n{scoring}\n\n"
        f"calls, at most: {len(proposing)} proposals (generated, ≤ {config.max_tokens} tokens "
        f"each); {select:,} select scorings ({config.candidates} candidates × {len(selecting)} "
        f"pairs × 2 orders); {kept + 2 * per_pair:,} test scorings ({config.budget} kept × "
        f"{len(testing)} pairs × 2, then the inferred set and the reference "
        f"({reference.name}) labelling as charter label does, {per_pair} each); "
        f"{len(proposing) + select + kept + 2 * per_pair:,} in all. Cached: a rerun asks "
        "only what is missing."
    )


def _splits(pairs: Sequence[PreferencePair], config: InferConfig,
            source: str) -> tuple[list[PreferencePair], ...]:  # fmt: skip
    """The three splits, each at least two pairs."""
    splits = split(pairs, config)
    if min(map(len, splits)) < 2:
        from charter.errors import CharterError

        raise CharterError(f"{source}: {len(pairs)} pairs is too few to split three ways "
                           "(propose, select, test); give at least 10")  # fmt: skip
    return splits


def cluster(texts: Sequence[str], embed: Callable[[Sequence[str]], list[list[float]]],
            k: int) -> list[Candidate]:  # fmt: skip
    """At most ``k`` candidates: each cluster's member nearest its mean, biggest first."""
    import numpy as np
    from sklearn.cluster import AgglomerativeClustering

    unique = list(dict.fromkeys(texts))
    if len(unique) <= 1:
        return [Candidate(t, len(texts)) for t in unique]
    vectors = np.asarray(embed(unique), dtype=float)
    labels = AgglomerativeClustering(n_clusters=min(k, len(unique)), metric="cosine",
                                     linkage="average").fit_predict(vectors)  # fmt: skip
    counts = {t: texts.count(t) for t in unique}
    out = []
    for label in sorted(set(labels)):
        members = [i for i, x in enumerate(labels) if x == label]
        centre = vectors[members].mean(axis=0)
        best = max(members, key=lambda i: float(vectors[i] @ centre))
        out.append(Candidate(unique[best], sum(counts[unique[i]] for i in members)))
    return sorted(out, key=lambda c: (-c.support, c.text))


def soft_labels(
    constitution: Constitution, tag: str, pairs: Sequence[PreferencePair], labeller: Backend,
    identity: str, replies: Replies,
) -> list[tuple[float, float]]:  # fmt: skip
    """Per pair: P(the preferred reply is better) under ``constitution``, labelled as
    ``charter label`` does (soft, both orders), and P(option A) over its scorings; cached by
    ``tag`` (a candidate's text, a constitution's hash) and pair."""
    from charter.label_stats import LabelStats
    from charter.stages.label import LabelConfig, label, template_digest

    keys = [content_id([identity, VERSION, "label", template_digest(), tag, p.id, p.origin])
            for p in pairs]  # fmt: skip
    todo = [(p, key) for p, key in zip(pairs, keys, strict=True) if key not in replies]
    before, began = token_totals(labeller), time.monotonic()
    results = list(label([p for p, _ in todo], constitution=constitution, labeller=labeller,
                         config=LabelConfig()))  # fmt: skip
    costs = split_cost(spent_since(labeller, before), time.monotonic() - began, len(todo))
    for (_, key), result, (usage, seconds) in zip(todo, results, costs, strict=True):
        stats = LabelStats()
        stats.add(result)
        replies.put(Cached(id=key, kind="label", usage=usage, seconds=seconds,
                           text=f"{result.p_first:.6f} {stats.prefers_a:.6f}"))  # fmt: skip
    return [tuple(map(float, replies[key].text.split()))  # type: ignore[misc]
            for key in keys]  # fmt: skip


def one_principle(text: str) -> Constitution:
    """A candidate as a constitution of its own: one comparison principle."""
    return Constitution.from_data({
        "name": "candidate", "version": "1", "description": "one inferred principle",
        "principles": [{"id": "candidate", "comparison": text}]},
        path=Path("candidate.yaml"))  # fmt: skip


def constitution_data(name: str, kept: Sequence[Candidate], source: str) -> dict[str, Any]:
    """The inferred constitution (comparison principles, each with its figures in a tag)."""
    principles = []
    for i, c in enumerate(kept, start=1):
        acc = c.scores["accuracy"]
        principles.append({
            "id": f"inferred-{i}", "comparison": c.text,
            "tags": ["inferred", f"accuracy {acc['value']:.2f} on the select split",
                     f"support {c.support}"],
        })  # fmt: skip
    return {"name": name, "version": "1.0",
            "description": f"Principles inferred from {source} by charter constitution infer.",
            "principles": principles}  # fmt: skip


def run_infer(
    pairs: Sequence[PreferencePair], *, name: str, source: str, model: Backend, identity: str,
    embed: Callable[[Sequence[str]], list[list[float]]] | None, reference: Any,
    config: InferConfig,
    cached: dict[str, Cached], store: Callable[[Cached], None],
    say: Callable[[str], None] = lambda line: None,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The inferred constitution's data and the report (module docstring). ``embed``: the
    sentence encoder (default: all-MiniLM-L6-v2, loaded when the proposals are clustered)."""
    from charter.stages.evaluate.stats import rate

    if embed is None:
        from charter.stages.evaluate.refusal import encoder

        embed = encoder()

    if not reference.comparison_principles:
        from charter.errors import CharterError

        raise CharterError(f"reference constitution '{reference.name}' has no comparison "
                           "principles to label with; give one that has")  # fmt: skip
    proposing, selecting, testing = _splits(pairs, config, source)
    say(f"propose: {len(proposing)} pairs")
    replies = Replies(cached, store)
    proposals, dropped = propose(proposing, model, identity, config, replies)
    candidates = cluster(proposals, embed, config.candidates)
    say(f"score: {len(candidates)} candidates on {len(selecting)} pairs")

    def labels_of(chosen: Sequence[Candidate], on: Sequence[PreferencePair]) -> list[Any]:
        """Each candidate's soft labels on ``on``, asked pair by pair (every candidate on one
        pair, then the next), so the engine's prompt cache keeps each pair's conversation."""
        rules = [(one_principle(c.text), c.text) for c in chosen]
        for pair in on:
            for rule, tag in rules:
                soft_labels(rule, tag, [pair], model, identity, replies)
        return [soft_labels(rule, tag, on, model, identity, replies) for rule, tag in rules]

    for c, labels in zip(candidates, labels_of(candidates, selecting), strict=True):
        c.scores = scores(labels)
    kept = keep(candidates, config.budget)
    data = constitution_data(name, kept, source)
    test_labels = labels_of(kept, testing)

    def as_labelled(constitution: Constitution) -> list[bool]:
        """Labelled as ``charter label`` does: one principle drawn per pair (by the id the
        pair was labelled under, so a round trip's reference asks what labelled it)."""
        soft = soft_labels(constitution, constitution.sha256, testing, model, identity, replies)
        return [p > 0.5 for p, _ in soft]

    outcomes: dict[str, list[bool]] = {}
    if kept:  # the mean of the kept principles' soft labels decides (an exact tie is wrong)
        outcomes["inferred"] = [round(sum(votes[i][0] for votes in test_labels)
                                      / len(test_labels), 6) > 0.5
                                for i in range(len(testing))]  # fmt: skip
        inferred = Constitution.from_data(data, path=Path(f"{name}.yaml"))
        outcomes["inferred, one principle per pair"] = as_labelled(inferred)
    rule, outcomes["length"] = length_rule(selecting, testing)
    outcomes[f"reference ({reference.name})"] = as_labelled(reference)
    rows: dict[str, dict[str, Any]] = {k: rate(v).as_dict() for k, v in outcomes.items()}
    rows["length"].update(rule=rule, note=f"the {rule} reply, as the select split favours")
    report = {
        "pairs": {"propose": len(proposing), "select": len(selecting), "test": len(testing)},
        "proposals": len(proposals), **dropped,
        "candidates": [{"text": c.text, "support": c.support, **c.scores} for c in candidates],
        "kept": [c.text for c in kept],
        "test": {
            "inferred": rows.get("inferred"),
            "inferred, one principle per pair": rows.get("inferred, one principle per pair"),
            "constant": {"value": 0.5, "n": len(testing),
                         "note": "always the first shown, in a random order: 50% expected"},
            "length": rows["length"],
            f"reference ({reference.name})": rows[f"reference ({reference.name})"],
            "per_principle": {c.text: scores(labels)
                              for c, labels in zip(kept, test_labels, strict=True)},
        },
        "differences": differences(outcomes, [p.id for p in testing]),
        "recovery": recovery(reference, [c.text for c in kept], embed),
    }  # fmt: skip
    report["cost"] = replies.bill()
    return data, report
