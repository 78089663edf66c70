"""``fake/…``: a deterministic model that ships with Charter, for tests, demos and dry plumbing.

By default (``fake/echo``) a reply is derived from a hash of the conversation, the seed and
the sampling settings: the same input always gives the same text, different inputs give
different texts. Tests can script replies with a list (served in order) or a callable, and
read back every call the backend received from :attr:`FakeBackend.calls` (kept unless
``record_calls=False``, which is how ``load_backend`` builds it, so a 10,000-prompt run through
the command line holds no call log).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.backends.base import Completion, GenerationConfig, request_seed
from charter.errors import CharterError
from charter.records import Conversation, canonical_json

Responder = Callable[[Conversation, GenerationConfig], str]
Scorer = Callable[[Conversation, Sequence[str]], list[float]]


@dataclass(frozen=True)
class FakeCall:
    """One call the fake backend received."""

    kind: str  # "generate" or "choice_logprobs"
    conversation: tuple[object, ...]
    config: GenerationConfig | None = None
    choices: tuple[str, ...] = ()


def _count_tokens(text: str) -> int:
    return len(text.split())


class FakeBackend:
    """A deterministic, scriptable stand-in for a model."""

    def __init__(
        self,
        model: str = "echo",
        *,
        responses: Sequence[str] | Responder | None = None,
        scores: Scorer | None = None,
        record_calls: bool = True,
    ) -> None:
        self.name = f"fake/{model}"
        self.calls: list[FakeCall] = []
        self._record = record_calls
        self._lock = threading.Lock()
        self._responder: Responder | None = None
        self._queue: list[str] | None = None
        if callable(responses):
            self._responder = responses
        elif responses is not None:
            self._queue = list(responses)
        self._scores = scores

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[Completion]:
        completions = []
        for conversation in conversations:
            with self._lock:
                if self._record:
                    self.calls.append(FakeCall("generate", tuple(conversation), config))
                text = self._reply(conversation, config)
            words = text.split()
            finish = "stop"
            if len(words) > config.max_tokens:
                text, finish = " ".join(words[: config.max_tokens]), "length"
            completions.append(
                Completion(
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=sum(_count_tokens(m.content) + 4 for m in conversation),
                    completion_tokens=min(len(words), config.max_tokens),
                )
            )
        return completions

    def _reply(self, conversation: Conversation, config: GenerationConfig) -> str:
        if self._responder is not None:
            return self._responder(conversation, config)
        if self._queue is not None:
            if not self._queue:
                raise CharterError(f"{self.name}: scripted responses ran out")
            return self._queue.pop(0)
        return _echo(conversation, config)

    def choice_logprobs(self, conversation: Conversation, choices: Sequence[str]) -> list[float]:
        if self._record:
            with self._lock:
                self.calls.append(
                    FakeCall("choice_logprobs", tuple(conversation), None, tuple(choices))
                )
        if self._scores is not None:
            return self._scores(conversation, choices)
        # Deterministic pseudo-log-probabilities in [-6, -0.1], normalisable like real ones.
        base = canonical_json([m.model_dump() for m in conversation])
        return [-0.1 - 5.9 * _unit(base + "\x00" + choice) for choice in choices]

    def close(self) -> None:
        return None


def _unit(text: str) -> float:
    """A number in [0, 1) from a hash of ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2.0**64


def _echo(conversation: Conversation, config: GenerationConfig) -> str:
    last_user = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    words = last_user.split()[:12]
    seed = request_seed(config.seed, conversation)
    tag = hashlib.sha256(f"{seed}:{config.temperature}:{config.top_p}".encode()).hexdigest()[:8]
    return f"echo {tag}: {' '.join(words)}".strip() if words else f"echo {tag}"
