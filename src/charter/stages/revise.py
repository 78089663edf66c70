"""SL-CAI, the supervised stage of Constitutional AI: critique and revise, round by round.

For every prompt (DESIGN.md §1):

1. sample an initial answer from the model (temperature 1 by default);
2. for each of ``rounds`` rounds, draw a principle uniformly at random *with replacement*,
   ask the model to critique its latest answer under that principle, then to revise it;
   the next round critiques the latest revision;
3. emit SFT rows from the final revision (``train_on="final"``) or from every revision
   (``train_on="all"``).

A revision that merely says no change is needed never replaces the answer, and with
``skip_unneeded`` a critique that finds nothing saves the revision call.

Every critique and revision call starts with the same prefix: :data:`CRITIC_SYSTEM` with
the constitution's brief (:attr:`~charter.constitution.Constitution.brief`), then the
constitution's demonstrations as earlier chat turns. Keeping it first and identical lets an
engine's prompt cache serve it. Run ``charter revise --dry-run`` to see every prompt this
module sends; the templates are part of a run's fingerprint (:func:`template_digest`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from charter.backends import Backend, Completion, GenerationConfig
from charter.constitution import Constitution, Principle
from charter.errors import CharterError
from charter.iterate import batched
from charter.records import (
    Message,
    Prompt,
    SFTRow,
    Trace,
    TraceStep,
    Usage,
    messages_id,
)

CRITIC_SYSTEM = (
    "You are an AI assistant that reviews its own answers. When asked for a critique, point "
    "out concrete problems in your previous answer, as the request asks. When asked for a "
    "revision, reply with the improved answer itself, written to the user, and nothing else."
)
CRITIC_BRIEF = "\n\nThe constitution you review against:\n\n{brief}"
CRITIQUE_REQUEST = "{critique}"
REVISION_REQUEST = "{revision} Reply with the rewritten response only."

# Labels and preambles models put before a revision; they are not part of the answer.
_LEADING_LABEL = re.compile(
    r"^\s*(?:\*\*)?(?:revision|revised (?:response|answer)|rewritten response|critique)"
    r"(?:\*\*)?\s*:\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^\s*(?:sure[,.!]?\s*)?here(?:'s| is) (?:the |a |my )?(?:revised|rewritten|improved|updated)"
    r"[^\n:]{0,60}:\s*\n",
    re.IGNORECASE,
)
# A "revision" that only says the answer needs no change (must never replace the answer).
_NO_CHANGE = re.compile(
    r"\bno (?:revisions?|changes?|edits?|rewrites?|modifications?) (?:is |are )?"
    r"(?:needed|necessary|required)"
    r"|\b(?:does|do)(?: not|n't) need (?:any |to be )?(?:revis|chang|rewrit|edit)"
    r"|\bnothing (?:needs to be|to) (?:revise|change|rewrite)"
    r"|\b(?:is|was) (?:already )?(?:fine|acceptable|appropriate) as (?:it is|is)"
    r"|\bleave (?:it|the (?:response|answer)) (?:as is|unchanged)",
    re.IGNORECASE,
)
# A critique that finds nothing to fix (used only with skip_unneeded).
_NO_ISSUE = re.compile(
    r"\bno (?:issues?|problems?|concerns?|harm)\b"
    r"|\bnothing (?:harmful|wrong|problematic|unethical|dangerous|to (?:critique|criticize|fix))"
    r"|\b(?:is|was)(?: not|n't) (?:harmful|unethical|dangerous|problematic)"
    r"|\bdoes(?: not|n't) contain (?:any(?:thing)? )?(?:harmful|problematic|unethical|dangerous)",
    re.IGNORECASE,
)
_CONTRAST = re.compile(r"\b(?:but|however|although|though|could be|should|would be better)\b", re.I)
_HEAD = 200  # characters of a reply the detectors look at


class ReviseConfig(BaseModel):
    """Settings of one ``revise`` run (all recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(default=4, ge=0, le=64, description="0: answers only")
    train_on: Literal["final", "all"] = "final"
    skip_unneeded: bool = False
    seed: int = 0
    answer: GenerationConfig = GenerationConfig(temperature=1.0, max_tokens=256)
    critique: GenerationConfig = GenerationConfig(temperature=0.7, max_tokens=256)
    revision: GenerationConfig = GenerationConfig(temperature=0.7, max_tokens=256)
    batch_size: int = Field(default=16, ge=1, description="prompts in flight; not in outputs")


# --- prompts -------------------------------------------------------------------------------


def template_digest() -> str:
    """A hash of every prompt template here: editing one makes an old run refuse to resume."""
    text = "\x00".join((CRITIC_SYSTEM, CRITIC_BRIEF, CRITIQUE_REQUEST, REVISION_REQUEST))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def critic_system(constitution: Constitution) -> str:
    """:data:`CRITIC_SYSTEM`, then the constitution's brief when it has one."""
    brief = constitution.brief
    return CRITIC_SYSTEM + CRITIC_BRIEF.format(brief=brief) if brief else CRITIC_SYSTEM


def fewshot_prefix(constitution: Constitution) -> list[Message]:
    """The system message and demonstrations that open every critique and revision call."""
    messages = [Message(role="system", content=critic_system(constitution))]
    for demo in constitution.demonstrations:
        principle = constitution.principle(demo.principle)
        messages += [m for m in demo.messages if m.role != "system"]
        messages += [
            Message(role="user", content=critique_request(principle)),
            Message(role="assistant", content=demo.critique),
            Message(role="user", content=revision_request(principle)),
            Message(role="assistant", content=demo.revision),
        ]
    return messages


def critique_request(principle: Principle) -> str:
    return CRITIQUE_REQUEST.format(critique=principle.critique)


def revision_request(principle: Principle) -> str:
    return REVISION_REQUEST.format(revision=principle.revision)


def critique_conversation(
    prefix: Sequence[Message], prompt: Sequence[Message], answer: str, principle: Principle
) -> list[Message]:
    """Prefix, the conversation with ``answer`` as the last assistant turn, the critique ask."""
    system = [m for m in prompt if m.role == "system"]
    head = list(prefix)
    if system:  # the prompt's own system prompt joins ours: chat templates take one, first
        merged = "\n\n".join([head[0].content, *(m.content for m in system)])
        head[0] = Message(role="system", content=merged)
    turns = [m for m in prompt if m.role != "system"]
    return [
        *head,
        *turns,
        Message(role="assistant", content=answer),
        Message(role="user", content=critique_request(principle)),
    ]


def revision_conversation(
    critique_call: Sequence[Message], critique: str, principle: Principle
) -> list[Message]:
    """The critique call, its critique, and the matching revision ask."""
    return [
        *critique_call,
        Message(role="assistant", content=critique),
        Message(role="user", content=revision_request(principle)),
    ]


# --- reading replies -----------------------------------------------------------------------


def clean_reply(text: str) -> str:
    """Strip labels such as "Revision:" or "Here is the revised response:" from a reply."""
    text = _PREAMBLE.sub("", text, count=1)
    return _LEADING_LABEL.sub("", text, count=1).strip()


def says_no_change(revision: str, previous: str) -> bool:
    """True when a revision is empty, identical, or only says no change is needed."""
    text = revision.strip()
    return not text or text == previous.strip() or bool(_NO_CHANGE.search(text[:_HEAD]))


def finds_nothing(critique: str) -> bool:
    """True when a critique plainly finds nothing to fix (conservative: any "but" says no)."""
    return bool(_NO_ISSUE.search(critique[:_HEAD])) and not _CONTRAST.search(critique)


# --- the stage -----------------------------------------------------------------------------


def draw_principles(
    constitution: Constitution, seed: int, prompt_id: str, rounds: int
) -> list[Principle]:
    """The principles of every round for one prompt: uniform, with replacement, reproducible."""
    rng = random.Random(f"{seed}:{prompt_id}")
    return [constitution.sample(rng) for _ in range(rounds)]


@dataclass
class _Work:
    prompt: Prompt
    principles: list[Principle]
    answer: str = ""
    initial: str = ""
    steps: list[TraceStep] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)


def revise(
    prompts: Iterable[Prompt],
    *,
    constitution: Constitution,
    backend: Backend,
    config: ReviseConfig,
    on_calls: Callable[[int], object] | None = None,
    critic: Backend | None = None,
) -> Iterator[Trace]:
    """Run SL-CAI over ``prompts``, yielding one :class:`Trace` per prompt, in order.

    ``backend`` writes the initial answers; ``critic`` (default: the same model) writes the
    critiques and revisions. ``on_calls(n)`` is told each time ``n`` model calls finish
    (skipped revisions count as finished), for progress bars: a prompt takes
    ``1 + 2 * rounds`` calls.
    """
    prefix = fewshot_prefix(constitution)
    caller = _Caller(backend, config.seed, on_calls or (lambda n: None))
    reviser = caller if critic is None else _Caller(critic, config.seed, caller.on_calls)
    for batch in batched(prompts, config.batch_size):
        work = [
            _Work(p, draw_principles(constitution, config.seed, p.id, config.rounds)) for p in batch
        ]
        answers = caller.generate([w.prompt.messages for w in work], config.answer, work)
        for w, text in zip(work, answers, strict=True):
            w.initial = w.answer = clean_reply(text)
        for index in range(config.rounds):
            _revise_round(work, index, prefix, reviser, config)
        for w in work:
            yield Trace(
                id=w.prompt.id, messages=w.prompt.messages, initial=w.initial,
                steps=tuple(w.steps), final=w.answer, model=backend.name,
                critic=critic.name if critic else None, seed=config.seed,
                constitution_sha256=constitution.sha256, usage=w.usage, source=w.prompt.source,
            )  # fmt: skip


def _revise_round(
    work: list[_Work], index: int, prefix: list[Message], caller: _Caller, config: ReviseConfig
) -> None:
    """One critique→revision round for every prompt of a batch."""
    calls = [
        critique_conversation(prefix, w.prompt.messages, w.answer, w.principles[index])
        for w in work
    ]
    critiques = caller.generate(calls, config.critique, work)
    pending = []
    for w, call, text in zip(work, calls, critiques, strict=True):
        critique = clean_reply(text)
        if config.skip_unneeded and finds_nothing(critique):
            w.steps.append(_step(index, w, critique, None, "skipped"))
        else:
            pending.append(
                (w, revision_conversation(call, critique, w.principles[index]), critique)
            )
    caller.on_calls(len(work) - len(pending))
    revisions = caller.generate(
        [c for _, c, _ in pending], config.revision, [w for w, _, _ in pending]
    )
    for (w, _, critique), text in zip(pending, revisions, strict=True):
        revision = clean_reply(text)
        if says_no_change(revision, w.answer):
            w.steps.append(_step(index, w, critique, revision, "no_change"))
        else:
            w.answer = revision
            w.steps.append(_step(index, w, critique, revision, "revised"))


def _step(index: int, w: _Work, critique: str, revision: str | None, outcome: str) -> TraceStep:
    return TraceStep.model_validate(
        {"round": index + 1, "principle_id": w.principles[index].id, "critique": critique,
         "revision": revision, "outcome": outcome}
    )  # fmt: skip


@dataclass
class _Caller:
    """Sends a batch to the backend, checks the reply count, books usage and progress."""

    backend: Backend
    seed: int
    on_calls: Callable[[int], object]

    def generate(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig,
        work: Sequence[_Work],
    ) -> list[str]:
        if not conversations:
            return []
        completions: list[Completion] = self.backend.generate(
            conversations, config.model_copy(update={"seed": self.seed})
        )
        if len(completions) != len(conversations):
            raise CharterError(
                f"backend {self.backend.name} returned {len(completions)} completions for "
                f"{len(conversations)} conversations"
            )
        for w, c in zip(work, completions, strict=True):
            w.usage += c.usage()
        self.on_calls(len(conversations))
        return [c.text for c in completions]


def sft_rows(trace: Trace, train_on: Literal["final", "all"]) -> list[SFTRow]:
    """The SFT rows of one trace: the final answer, or every accepted revision.

    A prompt whose answer was never revised still gives one row (its initial answer, with
    ``revised=False``), so the SFT set keeps what the model already did well.
    """
    revised = [s for s in trace.steps if s.outcome == "revised" and s.revision is not None]
    if train_on == "all" and revised:
        answers = [(s.round, s.revision or "") for s in revised]
    else:
        answers = [(revised[-1].round if revised else 0, trace.final)]
    rows: dict[str, SFTRow] = {}
    for round_, answer in answers:
        messages = (*trace.messages, Message(role="assistant", content=answer))
        row_id = messages_id(messages)
        rows.setdefault(
            row_id,
            SFTRow(
                id=row_id, messages=messages, prompt_id=trace.id, round=round_,
                principle_ids=tuple(s.principle_id for s in trace.steps if s.round <= round_),
                revised=round_ > 0, model=trace.model, seed=trace.seed,
                constitution_sha256=trace.constitution_sha256,
            ),
        )  # fmt: skip
    return list(rows.values())
