"""Preference pairs from verdicts: the teacher recipe's DPO data.

The pairwise labeller (:mod:`charter.stages.label`) asks the teacher which of two answers
follows the constitution better. The 1.5B teacher answers that barely better than a coin (mean
p_chosen 0.57 over the first effect run's 64 pairs, docs/results.md). What it does judge well
is the request itself (its verdict separates gold harmful from contrast prompts with AUC 0.99),
and whether an answer declines is read reliably by the refusal classifier. So this stage builds
pairs along the one axis both can see, the way rule-based rewards split a constitution into
checks a weak judge can answer:

* the SFT model samples ``samples`` answers to each training prompt the guided stage kept;
* each prompt's desired behaviour: **decline** for the red-team requests the teacher flagged
  (its calibrated verdict, from the guided stage), **answer** for contrast and helpful
  prompts (written to be safe; the policy answered them without refusing);
* an answer to a prompt that carries checkable instructions (IFEval ids, e.g. "exactly 3
  bullet points") behaves as desired only when it also passes them
  (:func:`charter.stages.checks.answer_problem`): a verifiable check, like the refusal read;
* **chosen**: a sample that behaves as desired, else the verified reply from the guided stage
  (the teacher's revision, or the policy's own earlier answer); **rejected**: a sample that
  does not. A prompt whose samples all behave as desired gives no pair; it is counted.

So DPO pushes the SFT model away from the mistakes the evaluation measures, complying with a
harmful request, refusing a safe one and ignoring an instruction, from its own samples.
``confidence`` is the soft label of every pair (below 1: the classifier and the verdict are
sometimes wrong). With a ``veto`` (the teacher's hard-constraint check,
:class:`charter.stages.hard.Veto`), a chosen sample that crosses a hard constraint is replaced
by the guided stage's reply (already checked there), so no pair ever chooses one.

``samples.jsonl`` is appended batch by batch (a killed run resumes without sampling again);
``prefs.jsonl`` (what DPO reads) and the manifest's counts are derived from it at the end.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from charter.backends import Backend, GenerationConfig
from charter.iterate import interleave
from charter.records import Instruction, Message, Prompt, Record, Samples
from charter.stages.guided import GuidedRow
from charter.stages.hard import Veto

SAMPLES, PREFS = "samples.jsonl", "prefs.jsonl"
VERSION = 2  # in the stage's cache key: bump when the pairing rule changes (2: instructions)
DESIRED = {"redteam": "decline", "contrast": "answer", "helpful": "answer"}


class VerdictPairsConfig(BaseModel):
    """Settings of one verdict-pairs run (all recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(default=2, ge=1, description="answers sampled per prompt")
    limit: int | None = Field(default=None, ge=1, description="prompts, kinds taken in turn")
    confidence: float = Field(default=0.9, gt=0.5, le=1.0, description="every pair's p_chosen")
    generation: GenerationConfig = GenerationConfig(temperature=1.0, max_tokens=96)
    seed: int = 0
    batch_size: int = Field(default=16, ge=1, description="prompts in flight; not in outputs")


class VerdictPair(Record):
    """One preference row (``prefs.jsonl``): TRL's conversational format plus provenance."""

    id: str
    kind: str
    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    p_chosen: float
    chosen_from: str  # "sample" | "guided" (the guided stage's verified reply)
    desired: str  # "decline" | "answer"


def chosen_prompts(rows: Sequence[GuidedRow], limit: int | None) -> list[GuidedRow]:
    """The guided rows that kept a reply, kinds taken in turn up to ``limit``."""
    by_kind: dict[str, list[GuidedRow]] = {}
    for row in rows:
        if row.kept is not None and row.kind in DESIRED:
            by_kind.setdefault(row.kind, []).append(row)
    return interleave(by_kind.values())[:limit]


def behaves(kind: str, instructions: Sequence[Instruction], answer: str, refused: bool) -> bool:
    """Whether ``answer`` does what a prompt of ``kind`` with ``instructions`` asks of the
    policy (module docstring)."""
    from charter.stages.checks import answer_problem

    if DESIRED[kind] == "decline":
        return refused
    return answer_problem(answer, refused, instructions) is None


def pair(
    row: GuidedRow, answers: Sequence[str], refused: Sequence[bool], config: VerdictPairsConfig
) -> VerdictPair | str:
    """The pair for one prompt, or why there is none."""
    desired = DESIRED[row.kind]
    ok = [behaves(row.kind, row.instructions, a, r) for a, r in zip(answers, refused, strict=True)]
    good = [a for a, fine in zip(answers, ok, strict=True) if fine and a]
    bad = [a for a, fine in zip(answers, ok, strict=True) if not fine and a]
    if not bad:
        return "already declines" if desired == "decline" else "already answers"
    rng = random.Random(f"{config.seed}:{row.id}")
    chosen, source = (rng.choice(good), "sample") if good else (str(row.kept), "guided")
    rejected = rng.choice(bad)
    prompt = tuple(row.messages)
    return VerdictPair(
        id=hashlib.sha256(f"{row.id}\x00{chosen}\x00{rejected}".encode()).hexdigest()[:16],
        kind=row.kind, prompt=prompt,
        chosen=(Message(role="assistant", content=chosen),),
        rejected=(Message(role="assistant", content=rejected),),
        p_chosen=config.confidence, chosen_from=source, desired=desired,
    )  # fmt: skip


def run_verdict_pairs(
    guided: Path,
    *,
    out: Path,
    policy: Backend,
    refuses: Callable[[Sequence[str]], list[bool]],
    config: VerdictPairsConfig,
    fingerprint: dict[str, Any],
    veto: Veto | None = None,
) -> dict[str, int]:
    """Sample, classify and pair (module docstring) into ``out``; resumes by prompt id."""
    from charter.pairs import sample_answers
    from charter.progress import progress_bar
    from charter.runs import JsonlAppender, Run, read_jsonl, read_stored, write_atomic

    rows = chosen_prompts(list(read_jsonl(guided / "guided.jsonl", GuidedRow)), config.limit)
    if veto is not None:
        fingerprint = {**fingerprint, "hard": veto.fingerprint()}
    run = Run.open(out, "verdict-pairs", {**fingerprint, "config": config.model_dump(
        mode="json", exclude={"batch_size"})})  # fmt: skip
    path = out / SAMPLES
    done = {s.id: s for s in read_stored(path, Samples)}
    todo = [Prompt(id=r.id, messages=r.messages, source=r.source) for r in rows if r.id not in done]
    generation = config.generation.model_copy(update={"seed": config.seed})
    bar = progress_bar(
        total=len(rows), initial=len(rows) - len(todo), desc="verdict pairs", unit="prompt"
    )
    sampled = sample_answers(todo, policy, samples=config.samples, config=generation,
                             batch_size=config.batch_size)  # fmt: skip
    try:
        with JsonlAppender(path) as sink, bar:
            for samples in sampled:
                sink.write(samples)
                done[samples.id] = samples
                bar.update(1)
    except BaseException:
        run.update(counts={"sampled": len(done)}, usage={}, status="interrupted")
        raise
    answers = [list(done[r.id].answers) for r in rows]
    flat = refuses([a for group in answers for a in group])
    counts: Counter[str] = Counter()
    pairs: list[VerdictPair] = []
    at = 0
    for row, group in zip(rows, answers, strict=True):
        refused = flat[at : at + len(group)]
        at += len(group)
        counts[f"{row.kind}_prompts"] += 1
        counts[f"{row.kind}_samples_refused"] += sum(refused)
        made = pair(row, group, refused, config)
        if isinstance(made, str):
            counts[f"{row.kind}: {made}"] += 1
        else:
            pairs.append(made)
            counts[f"{row.kind}_pairs"] += 1
            counts["pairs on prompts with instructions"] += bool(row.instructions)
            counts[f"chosen from {made.chosen_from}"] += 1
    if veto is not None:
        pairs = _vetoed(pairs, rows, veto, counts)
    text = "".join(json.dumps(p.model_dump(mode="json"), ensure_ascii=False) + "\n" for p in pairs)
    write_atomic(out / PREFS, text)
    calls = sum(s.usage.calls for s in done.values())
    tokens = sum(s.usage.completion_tokens for s in done.values())
    final = {**dict(sorted(counts.items())), "pairs": len(pairs)}
    run.update(counts=final, usage={"policy": {"calls": calls, "completion_tokens": tokens}},
               status="complete")  # fmt: skip
    return final


def _vetoed(
    pairs: list[VerdictPair], rows: Sequence[GuidedRow],
    crosses: Callable[[Sequence[tuple[Sequence[Message], str]]], list[bool]],
    counts: Counter[str],
) -> list[VerdictPair]:  # fmt: skip
    """Pairs whose chosen sample crosses a hard constraint take the guided stage's reply as
    chosen instead (every paired prompt has one, checked when it was kept)."""
    sampled = [p for p in pairs if p.chosen_from == "sample"]
    verdicts = crosses([(p.prompt, p.chosen[0].content) for p in sampled])
    crossing = {p.id for p, no in zip(sampled, verdicts, strict=True) if no}
    kept = {row.messages: str(row.kept) for row in rows}
    counts["chosen crossed a hard constraint"] += len(crossing)
    return [
        made.model_copy(update={
            "chosen": (Message(role="assistant", content=kept[made.prompt]),),
            "chosen_from": "guided",
        }) if made.id in crossing else made
        for made in pairs
    ]  # fmt: skip
