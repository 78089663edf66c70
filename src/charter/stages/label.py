"""RL-CAI, the feedback stage of Constitutional AI: AI preference labels from the constitution.

For every pair of replies to a conversation (DESIGN.md §1):

1. draw a comparison principle (``principles_per_label`` of them, averaged; or the whole
   constitution in one question with ``ensemble="all"``);
2. put the conversation, the principle and the two replies as options (A) and (B) before the
   labeller, after few-shot examples built from the constitution's demonstrations, and read
   the log-probabilities of " (A)" and " (B)" after "The answer is:" — one scoring pass, no
   generation; the normalised probability is the soft label;
3. with ``swap`` (default) score the other order too and average, removing position bias;
   both orders are recorded so the labeller's bias can be reported;
4. in chain-of-thought mode (``mode="cot"``) the labeller first reasons, then the answer
   probabilities are read after the cue, and the label is clamped into ``clamp``
   (default [0.4, 0.6], the paper's best setting);
5. the **hard-constraint veto** (:mod:`charter.stages.hard`, when the constitution has hard
   constraints): the labeller answers yes/no whether each reply crosses one; a reply that
   crosses loses with p = 1 to one that does not, whatever the soft votes say, and a pair
   where both cross yields no preference row.

The labeller's system message carries the constitution's brief
(:attr:`~charter.constitution.Constitution.brief`): the spec, priority order and hard
constraints that every comparison principle sits under. Run ``charter label --dry-run`` to
see every prompt this module sends; the templates are part of a run's fingerprint
(:func:`template_digest`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from charter.backends import Backend, GenerationConfig
from charter.backends.base import soft_label, unreadable
from charter.constitution import Constitution, Principle
from charter.errors import CharterError
from charter.iterate import batched
from charter.records import (
    Label,
    Message,
    PreferencePair,
    Vote,
    render_conversation,
    render_messages,
)
from charter.stages.hard import HardCheck, crossing, hard_conversation, veto

FEEDBACK_SYSTEM = (
    "You compare two possible assistant responses to a conversation and pick the one that "
    "better follows the stated principle."
)
FEEDBACK_BRIEF = "\n\nThe constitution the principles come from:\n\n{brief}"
FEEDBACK_QUESTION = (
    "Consider the following conversation between a human and an assistant:\n\n"
    "{conversation}\n\n"
    "{principle}\n"
    "Options:\n"
    "(A) {first}\n"
    "(B) {second}"
)
ALL_PRINCIPLES = "Which of these responses better follows all of the following principles?\n{items}"
COT_REQUEST = "\n\nThink step by step about which option better follows the principle, then answer."
ANSWER_CUE = "The answer is:"
COT_ANSWER_CUE = "\nTherefore, the answer is:"
CHOICES = (" (A)", " (B)")


class LabelConfig(BaseModel):
    """Settings of one ``label`` run (all recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["soft", "cot"] = "soft"
    principles_per_label: int = Field(default=1, ge=1)
    ensemble: Literal["sample", "all"] = Field(
        default="sample", description="sample: draw principles per label; all: the whole "
        "constitution in one question (NeMo style)",
    )  # fmt: skip
    swap: bool = True
    combine: Literal["mean", "priority"] = Field(
        default="mean", description="mean: the votes' average; priority: the vote of the "
        "highest-priority principle that prefers one reply by at least `decisive` decides",
    )  # fmt: skip
    decisive: float = Field(default=0.1, gt=0, lt=0.5)
    clamp: tuple[float, float] = (0.4, 0.6)
    hard: HardCheck = HardCheck()
    cot: GenerationConfig = GenerationConfig(temperature=0.0, max_tokens=192)
    seed: int = 0
    batch_size: int = Field(default=16, ge=1, description="pairs in flight; not in outputs")

    @model_validator(mode="after")
    def _clamp_is_a_range(self) -> LabelConfig:
        low, high = self.clamp
        if not 0.0 <= low <= 0.5 <= high <= 1.0:
            raise ValueError(f"clamp must satisfy 0 <= low <= 0.5 <= high <= 1, got {self.clamp}")
        if self.combine == "priority" and (self.ensemble == "all" or self.principles_per_label < 2):
            raise ValueError("combine: priority orders several votes; set principles_per_label "
                             ">= 2 (and ensemble: sample)")  # fmt: skip
        return self


# --- prompts -------------------------------------------------------------------------------


def template_digest() -> str:
    """A hash of every prompt template here: editing one makes an old run refuse to resume."""
    text = "\x00".join((
        FEEDBACK_SYSTEM, FEEDBACK_BRIEF, FEEDBACK_QUESTION, ALL_PRINCIPLES, COT_REQUEST,
        ANSWER_CUE, COT_ANSWER_CUE, *CHOICES,
    ))  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def feedback_system(constitution: Constitution) -> str:
    """:data:`FEEDBACK_SYSTEM`, then the constitution's brief when it has one."""
    brief = constitution.brief
    return FEEDBACK_SYSTEM + FEEDBACK_BRIEF.format(brief=brief) if brief else FEEDBACK_SYSTEM


def feedback_question(
    prompt: Sequence[Message], principle_text: str, first: str, second: str, mode: str
) -> str:
    question = FEEDBACK_QUESTION.format(
        conversation=render_conversation(prompt), principle=principle_text, first=first,
        second=second,
    )  # fmt: skip
    return question + (COT_REQUEST if mode == "cot" else "")


def principle_text(principles: Sequence[Principle]) -> str:
    if len(principles) == 1:
        return principles[0].comparison or ""
    return ALL_PRINCIPLES.format(items="\n".join(f"- {p.comparison}" for p in principles))


def feedback_prefix(constitution: Constitution, mode: str) -> list[Message]:
    """System message and few-shot comparisons built from the constitution's demonstrations.

    Each demonstration gives a worked comparison: its original answer against its revision,
    under its principle's comparison question, the revision being the better option. The
    revision is (A) and (B) in turn, so the examples teach no position.
    """
    messages = [Message(role="system", content=feedback_system(constitution))]
    shots = [
        d for d in constitution.demonstrations if constitution.principle(d.principle).comparison
    ]
    for index, demo in enumerate(shots):
        principle = constitution.principle(demo.principle)
        conversation, original = demo.messages[:-1], demo.messages[-1].content
        better_first = index % 2 == 1
        first, second = (demo.revision, original) if better_first else (original, demo.revision)
        answer = CHOICES[0] if better_first else CHOICES[1]
        reply = f"{ANSWER_CUE}{answer}"
        if mode == "cot":
            reply = f"{demo.critique}{COT_ANSWER_CUE}{answer}"
        question = feedback_question(conversation, principle_text([principle]), first, second, mode)
        messages += [
            Message(role="user", content=question),
            Message(role="assistant", content=reply),
        ]
    return messages


def pair_prompts(
    pair: PreferencePair, number: int, *, constitution: Constitution, config: LabelConfig
) -> Iterator[str]:
    """The feedback prompts of one pair after the shared prefix: each principle drawn for it,
    in both orders where the config swaps, and the hard-constraint checks where active."""
    for principles in draw_principles(constitution, config, pair.draw_key):
        orders = [pair.responses, pair.responses[::-1]] if config.swap else [pair.responses]
        for first, second in orders:
            question = feedback_question(
                pair.prompt, principle_text(principles), first, second, config.mode
            )
            cue = "<reasoning>" + COT_ANSWER_CUE if config.mode == "cot" else ANSWER_CUE
            ids = ", ".join(p.id for p in principles)
            yield (f"=== pair {number} ({pair.source}), principle {ids} ===\n[user]\n"
                   f"{question}\n[assistant]\n{cue}  → scored: P( (A)) vs P( (B))")  # fmt: skip
    if config.hard.active(constitution):  # asked of each reply
        check = hard_conversation(constitution, pair.prompt, pair.responses[0])
        yield (f"=== pair {number}: hard-constraint veto ===\n"
               + render_messages(check) + "\n  → scored: P( Yes) vs P( No)")  # fmt: skip


def draw_principles(
    constitution: Constitution, config: LabelConfig, pair_id: str
) -> list[list[Principle]]:
    """The principle groups of one label: one group per vote, reproducible from the seed."""
    pool = list(constitution.comparison_principles)
    if not pool:
        raise CharterError(f"constitution '{constitution.name}' has no comparison principles")
    if config.ensemble == "all":
        return [pool]
    rng = random.Random(f"{config.seed}:{pair_id}")
    if config.principles_per_label == 1:
        return [[rng.choice(pool)]]
    count = min(config.principles_per_label, len(pool))
    return [[p] for p in rng.sample(pool, count)]


# --- the stage -----------------------------------------------------------------------------


@dataclass
class _Ask:
    """One question to the labeller: a pair, a principle group, an order."""

    pair: int
    vote: int
    swapped: bool
    conversation: list[Message]
    reasoning: str = ""
    p_a: float = 0.5
    unread: bool = False  # the answer's log-probabilities said nothing: p_a is the 0.5 stand-in


def label(
    pairs: Iterable[PreferencePair],
    *,
    constitution: Constitution,
    labeller: Backend,
    config: LabelConfig,
    on_calls: Callable[[int], object] | None = None,
) -> Iterator[Label]:
    """Label every pair, yielding one :class:`Label` per pair, in order."""
    prefix = feedback_prefix(constitution, config.mode)
    report = on_calls or (lambda n: None)
    for batch in batched(pairs, config.batch_size):
        groups = [draw_principles(constitution, config, pair.draw_key) for pair in batch]
        asks = _questions(batch, groups, prefix, config)
        if config.mode == "cot":
            _reason(asks, labeller, config)
            report(len(asks))
        _score(asks, labeller)
        report(len(asks))
        labels = list(_labels(batch, groups, asks, labeller, constitution, config))
        if config.hard.active(constitution):
            labels = _vetoed(labels, labeller, constitution, config.hard)
            report(2 * len(labels))
        yield from labels


def _questions(
    batch: list[PreferencePair], groups: list[list[list[Principle]]], prefix: list[Message],
    config: LabelConfig,
) -> list[_Ask]:  # fmt: skip
    asks = []
    for index, (pair, group) in enumerate(zip(batch, groups, strict=True)):
        for vote, principles in enumerate(group):
            text = principle_text(principles)
            for swapped in (False, True) if config.swap else (False,):
                first, second = pair.responses[::-1] if swapped else pair.responses
                question = feedback_question(pair.prompt, text, first, second, config.mode)
                conversation = [*prefix, Message(role="user", content=question)]
                asks.append(_Ask(index, vote, swapped, conversation))
    return asks


def combine(votes: Sequence[Vote], constitution: Constitution, config: LabelConfig) -> float:
    """P(responses[0] better) from the votes: their mean, or (``combine: priority``) the vote
    of the highest-priority principle that prefers one reply by at least ``decisive``, so a
    conflict between principles is settled by the constitution's order, not by a majority;
    the mean when no vote is decisive. Unranked principles come after ranked ones."""
    mean = sum(v.p for v in votes) / len(votes)
    if config.combine == "mean":
        return mean

    def rank(vote: Vote) -> int:
        ranks = [constitution.principle(i).priority for i in vote.principle_ids]
        return min((r for r in ranks if r is not None), default=10**6)

    for vote in sorted(votes, key=rank):
        if abs(vote.p - 0.5) >= config.decisive:
            return vote.p
    return mean


def _vetoed(
    labels: list[Label], labeller: Backend, constitution: Constitution, hard: HardCheck
) -> list[Label]:
    """Each label after the hard-constraint veto, with p(crosses) of both replies."""
    items = [(entry.prompt, reply) for entry in labels for reply in entry.responses]
    p = crossing(labeller, constitution, items)
    out = []
    for index, entry in enumerate(labels):
        pair = (round(p[2 * index], 4), round(p[2 * index + 1], 4))
        crosses = (hard.crosses(pair[0]), hard.crosses(pair[1]))
        out.append(entry.model_copy(update={
            "p_crosses": pair, "crossed": crosses, "p_first": veto(entry.p_first, crosses),
        }))  # fmt: skip
    return out


def _reason(asks: list[_Ask], labeller: Backend, config: LabelConfig) -> None:
    """Chain-of-thought: let the labeller reason, then cue the answer after its reasoning."""
    replies = labeller.generate(
        [a.conversation for a in asks], config.cot.model_copy(update={"seed": config.seed})
    )
    for ask, reply in zip(asks, replies, strict=True):
        ask.reasoning = reply.text.strip()


def _score(asks: list[_Ask], labeller: Backend) -> None:
    def one(ask: _Ask) -> tuple[float, float]:
        cue = f"{ask.reasoning}{COT_ANSWER_CUE}" if ask.reasoning else ANSWER_CUE
        conversation = [*ask.conversation, Message(role="assistant", content=cue)]
        logprob_a, logprob_b = labeller.choice_logprobs(conversation, CHOICES)
        return logprob_a, logprob_b

    workers = max(1, int(getattr(labeller, "concurrency", 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for ask, (logprob_a, logprob_b) in zip(asks, pool.map(one, asks), strict=True):
            ask.p_a = soft_label(logprob_a, logprob_b)
            ask.unread = unreadable(logprob_a, logprob_b)


def _labels(
    batch: list[PreferencePair], groups: list[list[list[Principle]]], asks: list[_Ask],
    labeller: Backend, constitution: Constitution, config: LabelConfig,
) -> Iterator[Label]:  # fmt: skip
    for index, (pair, group) in enumerate(zip(batch, groups, strict=True)):
        votes = []
        for vote, principles in enumerate(group):
            mine = [a for a in asks if a.pair == index and a.vote == vote]
            # P(responses[0] better): it is (A) in the plain order and (B) when swapped.
            shown_first = next(a.p_a for a in mine if not a.swapped)
            shown_second = next((1.0 - a.p_a for a in mine if a.swapped), None)
            reasoning = tuple(a.reasoning for a in mine if a.reasoning)
            votes.append(Vote(
                principle_ids=tuple(p.id for p in principles), p_shown_first=shown_first,
                p_shown_second=shown_second, reasoning=reasoning,
                unread=sum(a.unread for a in mine),
            ))  # fmt: skip
        p_first = combine(votes, constitution, config)
        if config.mode == "cot":
            p_first = min(max(p_first, config.clamp[0]), config.clamp[1])
        yield Label(
            id=pair.id, prompt=pair.prompt, responses=pair.responses, p_first=p_first,
            votes=tuple(votes), labeller=labeller.name, mode=config.mode, seed=config.seed,
            constitution_sha256=constitution.sha256, source=pair.source,
        )  # fmt: skip
