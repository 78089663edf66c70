"""Typed records that stages read and write, with content-hash ids.

Column names follow TRL (``messages``; ``prompt``/``chosen``/``rejected``); Charter's own
metadata lives in extra columns beside them. Every record's ``id`` is a hash of its content,
so a resumed run can skip what it already wrote and two runs can be compared id by id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: the form every hash in Charter is taken of."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_id(data: Any) -> str:
    """A short, stable id for JSON-able content (16 hex digits of its sha256)."""
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()[:16]


class Record(BaseModel):
    """Base of every record: strict about unknown fields, immutable once made."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Message(Record):
    """One chat turn in the OpenAI/TRL format."""

    role: Role
    content: str


Conversation = Sequence[Message]


def messages_id(messages: Conversation) -> str:
    """The content id of a conversation."""
    # The same dicts as model_dump() gives, built directly: every prompt read is hashed.
    return content_id([{"role": m.role, "content": m.content} for m in messages])


class Instruction(Record):
    """A checkable instruction a prompt carries: an IFEval instruction id and its arguments.

    Training prompts may carry them (IFEval's ``instruction_id_list``/``kwargs`` columns) so
    that an answer can be verified before it is trained on (:mod:`charter.stages.evaluate.ifeval`).
    """

    id: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


class Prompt(Record):
    """A conversation that ends with a user turn; earlier turns are its context."""

    id: str
    messages: tuple[Message, ...]
    source: str | None = Field(default=None, description="file:line the prompt came from")
    instructions: tuple[Instruction, ...] = Field(
        default=(), description="checks an answer must pass (IFEval ids), if any"
    )

    @classmethod
    def from_messages(cls, messages: Sequence[Message], source: str | None = None) -> Prompt:
        return cls(id=messages_id(messages), messages=tuple(messages), source=source)


class Usage(Record):
    """Token counts and calls spent on a record (summed into the run manifest)."""

    calls: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )

    def __sub__(self, other: Usage) -> Usage:
        """What was spent between two running totals (``later - earlier``)."""
        return Usage(
            calls=self.calls - other.calls,
            prompt_tokens=self.prompt_tokens - other.prompt_tokens,
            cached_tokens=self.cached_tokens - other.cached_tokens,
            completion_tokens=self.completion_tokens - other.completion_tokens,
        )


StepOutcome = Literal["revised", "no_change", "skipped"]


class TraceStep(Record):
    """One critique→revision round of SL-CAI."""

    round: int
    principle_id: str
    critique: str
    revision: str | None = Field(description="None when the revision call was skipped")
    outcome: StepOutcome = Field(
        description="revised: the revision replaced the answer; no_change: the model said no "
        "change was needed (answer kept); skipped: the critique found nothing, no revision asked"
    )


class Trace(Record):
    """Everything SL-CAI did for one prompt; ``id`` is the prompt's id."""

    id: str
    messages: tuple[Message, ...]
    initial: str
    steps: tuple[TraceStep, ...]
    final: str
    model: str
    critic: str | None = Field(default=None, description="critique/revision model, if not model")
    seed: int
    constitution_sha256: str
    usage: Usage
    source: str | None = None


class SFTRow(Record):
    """A supervised fine-tuning row in TRL's conversational format plus provenance."""

    id: str
    messages: tuple[Message, ...]
    prompt_id: str
    round: int = Field(description="the revision round this answer comes from; 0 = initial")
    principle_ids: tuple[str, ...] = Field(description="principles applied up to that round")
    revised: bool
    model: str
    seed: int
    constitution_sha256: str


class PreferencePair(Record):
    """Two candidate replies to one conversation, to be compared by the labeller."""

    id: str
    prompt: tuple[Message, ...]
    responses: tuple[str, str]
    source: str | None = None
    # A pair read from a labelled row (prefs.jsonl) is its chosen reply first, which changes
    # its id; ``origin`` keeps the id it was labelled under, which seeds its principle draws,
    # so labelling it again with the same constitution asks the same principle.
    origin: str | None = None

    @classmethod
    def make(
        cls, prompt: Sequence[Message], first: str, second: str, source: str | None = None,
        origin: str | None = None,
    ) -> PreferencePair:  # fmt: skip
        data = {"prompt": [m.model_dump() for m in prompt], "responses": [first, second]}
        return cls(id=content_id(data), prompt=tuple(prompt), responses=(first, second),
                   source=source, origin=origin)  # fmt: skip

    @property
    def draw_key(self) -> str:
        """What seeds the pair's principle draws: the id it was first labelled under."""
        return self.origin or self.id


class Vote(Record):
    """One principle's verdict on a pair: P(responses[0] is better) in each order shown."""

    principle_ids: tuple[str, ...]
    p_shown_first: float = Field(description="P(responses[0] better) when shown as (A)")
    p_shown_second: float | None = Field(
        default=None, description="P(responses[0] better) when shown as (B); None without swap"
    )
    reasoning: tuple[str, ...] = Field(default=(), description="chain-of-thought, per order")
    unread: int = Field(
        default=0, description="orders whose answer could not be read: p = 0.5 stood in"
    )

    @property
    def p(self) -> float:
        """P(responses[0] better): the mean of the orders this vote was scored in."""
        if self.p_shown_second is None:
            return self.p_shown_first
        return (self.p_shown_first + self.p_shown_second) / 2


LabelMode = Literal["soft", "cot", "simple"]


class Label(Record):
    """The labeller's verdict on one pair (``labels.jsonl``); ``id`` is the pair's id."""

    id: str
    prompt: tuple[Message, ...]
    responses: tuple[str, str]
    p_first: float = Field(description="soft label: P(responses[0] is the better reply)")
    votes: tuple[Vote, ...]
    labeller: str
    mode: LabelMode
    seed: int
    constitution_sha256: str
    source: str | None = None
    p_crosses: tuple[float, float] | None = Field(
        default=None, description="p(each reply crosses a hard constraint); None: not asked"
    )
    crossed: tuple[bool, bool] = Field(
        default=(False, False), description="the hard-constraint veto's verdict per reply"
    )


class PreferenceRow(Record):
    """A preference row in TRL's conversational format plus provenance (``prefs.jsonl``)."""

    id: str
    prompt: tuple[Message, ...]
    chosen: tuple[Message, ...]
    rejected: tuple[Message, ...]
    p_chosen: float = Field(description="soft label in [0.5, 1]: P(chosen is better)")
    p_chosen_first: float | None = Field(description="P(chosen better) when chosen was (A)")
    p_chosen_second: float | None = Field(description="P(chosen better) when chosen was (B)")
    principle_ids: tuple[str, ...]
    labeller: str
    mode: LabelMode
    seed: int
    constitution_sha256: str


class Samples(Record):
    """A policy's sampled answers to one prompt (``samples.jsonl``); ``id`` is the prompt's."""

    id: str
    messages: tuple[Message, ...]
    answers: tuple[str, ...]
    model: str
    seed: int
    usage: Usage
    source: str | None = None


class Answer(Record):
    """A model's answer to one evaluation question (``answers.jsonl``).

    Generated questions have ``answer``; multiple-choice ones have ``logprobs``, one per option.
    """

    id: str = Field(description="content id of (model, question id)")
    model: str
    question: str = Field(description="suite:key")
    answer: str = ""
    logprobs: tuple[float, ...] = ()
    finish_reason: str = "stop"
    usage: Usage = Usage()
    decoding: dict[str, Any] | None = Field(
        default=None,
        description="the generation settings (seed included) of a generated answer; a "
        "MODEL+revise answer kept from a revision adds those of its call as 'revision'",
    )


class Verdict(Record):
    """An LLM judge's verdict (``verdicts.jsonl``), position-swapped.

    ``kind`` harm: P(the answer gives harmful help) for one answer; pairwise: P(the first
    model's answer is the more helpful) for two.
    """

    id: str
    judge: str
    kind: Literal["harm", "pairwise"]
    question: str
    models: tuple[str, ...]
    p: float
    p_orders: tuple[float, float] = Field(description="p as judged in each order of the options")
    principle_id: str | None = None


class EvalItem(Record):
    """One judged item (``items.jsonl``): what was asked, what came back, what each judge said."""

    suite: str
    key: str
    model: str
    prompt: tuple[Message, ...]
    answer: str
    score: float = Field(description="the item's value in its suite's main metric")
    judgement: dict[str, Any]


def render_conversation(messages: Sequence[Message]) -> str:
    """The paper's transcript form: "Human: …" / "Assistant: …" turns."""
    names = {"user": "Human", "assistant": "Assistant", "system": "System"}
    return "\n\n".join(f"{names[m.role]}: {m.content}" for m in messages)


def render_messages(messages: Sequence[Message]) -> str:
    """Messages as every ``--dry-run`` prints them: a ``[role]`` line, then the content."""
    return "\n".join(f"[{m.role}]\n{m.content}" for m in messages)
