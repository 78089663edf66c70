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
    return content_id([m.model_dump() for m in messages])


class Prompt(Record):
    """A conversation that ends with a user turn; earlier turns are its context."""

    id: str
    messages: tuple[Message, ...]
    source: str | None = Field(default=None, description="file:line the prompt came from")

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
