"""What ``charter serve`` does with one chat request, apart from HTTP: the route's policy.

- ``log``: the backend answers; the decision (nothing checked) is recorded.
- ``guard``: the request is scored by a guard before the backend sees it; a flagged request
  gets a refusal written by the serving model under the constitution (it says plainly that it
  won't help and offers one safe, useful alternative: the teacher recipe's own refusal
  prompt). With an answer threshold, the answer is scored too and replaced the same way when
  flagged.
- ``revise``: the backend answers, then one critique→revision round against a principle
  drawn from the constitution (SL-CAI at answer time, :func:`charter.stages.revise.revise`).

A guard is anything that gives a request, and an answer, a probability of crossing the
constitution. :class:`JudgeGuard` asks a model the run's yes/no questions in one scoring pass
each: the judge's "should the assistant decline this request?" for requests, the
hard-constraint question for answers. Its scores sit in a narrow band for small judges, so
the request threshold is meant to come from a calibration (``charter run``'s
``calibrate/judge.json``); measured on the local 1.5B teacher, its answer question says
"crosses" for 94-100% of harmless replies (docs/results.md), so answers are not checked
unless an answer threshold is given.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution, Principle
from charter.records import Message, Prompt

Policy = Literal["guard", "revise", "log"]
FALLBACK_REFUSAL = (
    "I can't help with that. If it is useful, I'm glad to help with a safer, related question."
)


class ServeConfig(BaseModel):
    """The server's routes, thresholds and limits (``charter serve --config FILE``, then its
    options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: dict[str, Policy] = Field(
        default={"/v1": "guard"},  # pydantic copies it for each instance
        description="URL prefix → policy; a client picks one by its base URL",
    )
    request_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    answer_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    max_tokens: int = Field(default=256, ge=1, description="when a request names none")
    refusal_tokens: int = Field(default=120, ge=1)
    revise_tokens: int = Field(default=160, ge=1, description="critique and revision")
    timeout_s: float = Field(default=120.0, gt=0, description="a backend call past this: 504")

    @field_validator("routes")
    @classmethod
    def _prefixes(cls, routes: dict[str, Policy]) -> dict[str, Policy]:
        for prefix in routes:
            if not prefix.startswith("/") or prefix.rstrip("/") == "":
                raise ValueError(f"route {prefix!r}: a URL prefix such as /v1 or /raw/v1")
        return {prefix.rstrip("/"): policy for prefix, policy in routes.items()}


@dataclass(frozen=True)
class Decision:
    """One check made on a request (logged, counted in /metrics)."""

    check: str  # request | answer | revise | none
    action: str  # pass | refuse | replace | revised | kept | log
    score: float | None = None
    threshold: float | None = None
    principle: str | None = None


@dataclass
class Outcome:
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    decisions: list[Decision] = field(default_factory=list)


class Guard(Protocol):
    """Probabilities that requests, or answers to them, cross the constitution."""

    def requests(self, conversations: Sequence[Sequence[Message]]) -> list[float]: ...

    def answers(
        self, conversations: Sequence[Sequence[Message]], replies: Sequence[str]
    ) -> list[float]: ...


class JudgeGuard:
    """A model as a yes/no judge (module docstring)."""

    def __init__(self, judge: Backend, constitution: Constitution) -> None:
        self.judge, self.constitution = judge, constitution

    def requests(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        from charter.stages.guided import judge_conversation
        from charter.stages.hard import p_yes

        return [p_yes(self.judge, judge_conversation(self.constitution, c[-1].content))
                for c in conversations]  # fmt: skip

    def answers(
        self, conversations: Sequence[Sequence[Message]], replies: Sequence[str]
    ) -> list[float]:
        from charter.stages.hard import hard_conversation, p_yes

        return [p_yes(self.judge, hard_conversation(self.constitution, c, r))
                for c, r in zip(conversations, replies, strict=True)]  # fmt: skip


class Batched:
    """A scorer shared by many threads, in batches: while one batch is scored, the requests
    that arrive meanwhile queue up and go together in the next (no waiting window). An
    encoder scores a batch of 16 short texts in little more than the time of one."""

    def __init__(self, score: Callable[[Sequence[str]], list[float]], max_batch: int = 64) -> None:
        self.score, self.max_batch = score, max_batch
        self.queue: queue.SimpleQueue[tuple[str, Future[float]]] = queue.SimpleQueue()
        threading.Thread(target=self._work, name="charter-guard", daemon=True).start()

    def __call__(self, texts: Sequence[str]) -> list[float]:
        futures: list[Future[float]] = [Future() for _ in texts]
        for text, future in zip(texts, futures, strict=True):
            self.queue.put((text, future))
        return [f.result() for f in futures]

    def _work(self) -> None:
        while True:
            items = [self.queue.get()]
            while len(items) < self.max_batch:
                try:
                    items.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            try:
                scores = self.score([text for text, _ in items])
            except Exception as err:  # every waiting caller gets the error, none hangs
                for _, future in items:
                    future.set_exception(err)
                continue
            for (_, future), score in zip(items, scores, strict=True):
                future.set_result(score)


class HeadGuard:
    """A trained guard (``charter train guard``) on requests, scored in shared batches
    (:class:`Batched`). An answer scores its request's probability times the refusal
    classifier's probability that the answer is not a refusal: high for a flagged request
    answered in full, low for any refusal."""

    def __init__(self, head: Any, refusals: Callable[[Sequence[str]], list[float]]) -> None:
        self.refusals, self.score = refusals, Batched(head.probabilities)

    def requests(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        return self.score([c[-1].content for c in conversations])

    def answers(
        self, conversations: Sequence[Sequence[Message]], replies: Sequence[str]
    ) -> list[float]:
        asked, refused = self.requests(conversations), self.refusals(replies)
        return [p * (1.0 - r) for p, r in zip(asked, refused, strict=True)]


def top_principle(constitution: Constitution) -> Callable[[Sequence[str]], list[Principle]]:
    """The constitution's highest-ranked critique principle for every request (when no
    sentence encoder is installed to pick the nearest one)."""
    ranked = sorted(constitution.critique_principles, key=lambda p: (p.priority or 99, p.id))
    return lambda requests: [ranked[0] for _ in requests]


class Layer:
    """The policies around one backend (module docstring). Thread-safe if the backend is."""

    def __init__(
        self, backend: Backend, constitution: Constitution, config: ServeConfig,
        guard: Guard | None = None,
        principle_for: Callable[[Sequence[str]], list[Principle]] | None = None,
        refuses: Callable[[Sequence[str]], list[bool]] | None = None,
    ) -> None:  # fmt: skip
        if guard is None and "guard" in config.routes.values():
            raise ValueError("a guard route needs a guard")
        self.backend, self.constitution, self.config = backend, constitution, config
        self.guard = guard
        self.principle_for = principle_for or top_principle(constitution)
        self.refuses = refuses

    def respond(self, policy: Policy, messages: Sequence[Message],
                generation: GenerationConfig) -> Outcome:  # fmt: skip
        if policy == "guard":
            return self._guard(messages, generation)
        if policy == "revise":
            return self._revise(messages, generation)
        outcome = self._answer(messages, generation)
        outcome.decisions.append(Decision("none", "log"))
        return outcome

    def _answer(self, messages: Sequence[Message], generation: GenerationConfig) -> Outcome:
        (completion,) = self.backend.generate([list(messages)], generation)
        return Outcome(completion.text, completion.finish_reason, completion.prompt_tokens,
                       completion.completion_tokens)  # fmt: skip

    def _guard(self, messages: Sequence[Message], generation: GenerationConfig) -> Outcome:
        """Check the request (and, with an answer threshold, the answer); the principle a
        refusal is written under is looked up only when one is written."""
        assert self.guard is not None
        (p,) = self.guard.requests([messages])
        cut = self.config.request_threshold
        if p >= cut:
            outcome, principle = self._refusal(messages)
            outcome.decisions.append(Decision("request", "refuse", round(p, 4), cut, principle))
            return outcome
        outcome = self._answer(messages, generation)
        outcome.decisions.append(Decision("request", "pass", round(p, 4), cut))
        if (answer_cut := self.config.answer_threshold) is not None:
            (q,) = self.guard.answers([messages], [outcome.text])
            if q >= answer_cut:
                refusal, principle = self._refusal(messages)
                refusal.decisions = [*outcome.decisions,
                                     Decision("answer", "replace", round(q, 4), answer_cut,
                                              principle)]  # fmt: skip
                return refusal
            outcome.decisions.append(Decision("answer", "pass", round(q, 4), answer_cut))
        return outcome

    def _refusal(self, messages: Sequence[Message]) -> tuple[Outcome, str]:
        """A refusal with a safe alternative, written by the serving model under the
        constitution; a fixed sentence when the model writes nothing, or (with ``refuses``,
        the refusal classifier) something that is not a refusal: a small model asked to
        decline may comply instead."""
        from charter.stages.guided import reviser_conversation

        (principle,) = self.principle_for([messages[-1].content])
        conversation = reviser_conversation(self.constitution, messages[-1].content, principle)
        config = GenerationConfig(temperature=0.0, max_tokens=self.config.refusal_tokens)
        (completion,) = self.backend.generate([conversation], config)
        text = _whole_sentences(completion.text)
        if not text or (self.refuses is not None and not self.refuses([text])[0]):
            text = FALLBACK_REFUSAL
        outcome = Outcome(text, "stop", completion.prompt_tokens, completion.completion_tokens)
        return outcome, principle.id

    def _revise(self, messages: Sequence[Message], generation: GenerationConfig) -> Outcome:
        from charter.stages.revise import ReviseConfig, revise

        sampling = GenerationConfig(temperature=0.7, max_tokens=self.config.revise_tokens,
                                    seed=generation.seed)  # fmt: skip
        config = ReviseConfig(rounds=1, seed=generation.seed, answer=generation,
                              critique=sampling, revision=sampling, batch_size=1)  # fmt: skip
        prompt = Prompt.from_messages(messages)
        (trace,) = revise([prompt], constitution=self.constitution, backend=self.backend,
                          config=config)  # fmt: skip
        step = trace.steps[0]
        action = "revised" if step.outcome == "revised" else "kept"
        return Outcome(trace.final, "stop", trace.usage.prompt_tokens,
                       trace.usage.completion_tokens,
                       [Decision("revise", action, principle=step.principle_id)])  # fmt: skip


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end (with the space that follows), for streaming."""
    parts = re.split(r"(?<=[.!?\n])(?=\s)", text)
    return [p for p in parts if p]


def _whole_sentences(text: str) -> str:
    """A refusal cut at max_tokens ends at its last whole sentence."""
    text = text.strip()
    end = max(text.rfind("."), text.rfind("!"), text.rfind("?"))
    return text[: end + 1] if end > 0 else text
