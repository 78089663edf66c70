"""The backend interface every model provider implements.

Two calls, batch-first and synchronous at the stage boundary:

- ``generate(conversations, config)`` returns one :class:`Completion` per conversation, in
  order. Backends keep as many requests in flight as they can; stages hand them whole
  batches.
- ``choice_logprobs(conversation, choices)`` returns, for each candidate string, the
  log-probability that the assistant's reply continues with it. If the conversation ends
  with an assistant message, that message is a prefix the choices continue; otherwise the
  choices start a new assistant turn. One scoring pass, no generation.

Backends that can count every call's tokens (scoring included) keep the sum in a ``totals``
attribute (a :class:`~charter.records.Usage`); run manifests report it when present.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from charter.errors import CharterError
from charter.records import Conversation, Usage, canonical_json


class GenerationConfig(BaseModel):
    """Sampling settings, recorded in every manifest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=1.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    seed: int = Field(
        default=0,
        description="base seed; backends derive one per conversation with request_seed() so a "
        "result does not depend on which batch the conversation was sent in",
    )
    stop: tuple[str, ...] = ()


class Completion(BaseModel):
    """One generated reply and what it cost."""

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    cached_tokens: int = Field(default=0, description="prompt tokens served from the cache")
    completion_tokens: int = 0
    latency_s: float = 0.0

    def usage(self) -> Usage:
        """This completion as one call's worth of usage."""
        return Usage(
            calls=1, prompt_tokens=self.prompt_tokens, cached_tokens=self.cached_tokens,
            completion_tokens=self.completion_tokens,
        )  # fmt: skip


@runtime_checkable
class Backend(Protocol):
    """A model behind Charter's two calls. ``name`` is ``provider/model``."""

    name: str

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[Completion]: ...

    def choice_logprobs(
        self, conversation: Conversation, choices: Sequence[str]
    ) -> list[float]: ...

    def close(self) -> None: ...


def token_totals(backend: object) -> Usage | None:
    """A backend's running ``totals`` (module docstring), or None where it counts none."""
    totals = getattr(backend, "totals", None)
    return totals if isinstance(totals, Usage) else None


def request_seed(seed: int, conversation: Conversation) -> int:
    """A per-conversation seed: the same conversation and base seed always get the same one."""
    payload = canonical_json([seed, [m.model_dump() for m in conversation]])
    return int.from_bytes(hashlib.sha256(payload.encode("utf-8")).digest()[:4], "big")


def count_from_env(name: str, *, minimum: int, what: str) -> int | None:
    """A whole number from environment variable ``name``, or None when unset or empty.

    The global options (``charter --threads N``, ``--retries N``) set these variables, so
    that every backend a command builds, Ray workers included, reads the same value.
    """
    given = os.environ.get(name, "").strip()
    if not given:
        return None
    if not given.isdigit() or int(given) < minimum:
        raise CharterError(f"{name}={given!r}: give a whole number of {what}, {minimum} or more")
    return int(given)


# --- reading choice log-probabilities (labels, yes/no checks) -----------------------------


def soft_label(logprob_a: float, logprob_b: float) -> float:
    """P(A) from the two choices' log-probabilities (a two-way softmax).

    Numbers that say nothing (:func:`unreadable`) give 0.5, no preference, instead of a
    confident label; the stage counts them.
    """
    if unreadable(logprob_a, logprob_b):
        return 0.5
    margin = logprob_b - logprob_a
    return 1.0 / (1.0 + math.exp(max(-700.0, min(700.0, margin))))


def unreadable(logprob_a: float, logprob_b: float) -> bool:
    """A NaN from a broken server, or both choices impossible (−inf, −inf)."""
    return math.isnan(logprob_b - logprob_a)
