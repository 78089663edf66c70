"""The backend contract: one suite, run against every backend Charter ships.

Add a backend by adding a factory to ``BACKEND_FACTORIES``. Tests here never compare exact
strings across engines; they check shapes, order, limits and determinism.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import pytest

from charter.backends import Backend, GenerationConfig, load_backend
from charter.records import Message

BACKEND_FACTORIES: dict[str, Callable[[], Backend]] = {
    "fake": lambda: load_backend("fake/echo"),
}

USER = [Message(role="user", content="Name three colours.")]
CHAT = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="Say hello."),
    Message(role="assistant", content="Hello."),
    Message(role="user", content="Now say goodbye."),
]
SHORT = GenerationConfig(temperature=0.0, max_tokens=8, seed=1)


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    instance = BACKEND_FACTORIES[request.param]()
    yield instance
    instance.close()


def test_name_is_provider_slash_model(backend: Backend) -> None:
    provider, _, model = backend.name.partition("/")
    assert provider and model
    assert isinstance(backend, Backend)


def test_generate_returns_one_completion_per_conversation_in_order(backend: Backend) -> None:
    completions = backend.generate([USER, CHAT, USER], SHORT)
    assert len(completions) == 3
    for c in completions:
        assert isinstance(c.text, str)
        assert 0 < c.completion_tokens <= SHORT.max_tokens
        assert c.prompt_tokens > 0 and 0 <= c.cached_tokens <= c.prompt_tokens
        assert c.finish_reason in ("stop", "length")
    assert completions[0].text == completions[2].text  # same input, greedy: same output
    assert backend.generate([], SHORT) == []


def test_generation_is_reproducible_with_a_seed(backend: Backend) -> None:
    sampled = GenerationConfig(temperature=1.0, max_tokens=8, seed=5)
    first = [c.text for c in backend.generate([USER, CHAT], sampled)]
    again = [c.text for c in backend.generate([CHAT], sampled)] + [
        c.text for c in backend.generate([USER], sampled)
    ]
    assert first == [again[1], again[0]]  # batch composition does not change results


def test_choice_logprobs_are_finite_and_normalisable(backend: Backend) -> None:
    conversation = [
        Message(role="user", content="Which is a colour? (A) red (B) seven"),
        Message(role="assistant", content="The answer is:"),
    ]
    logprobs = backend.choice_logprobs(conversation, [" (A)", " (B)"])
    assert len(logprobs) == 2
    assert all(math.isfinite(x) and x <= 0 for x in logprobs)
    total = sum(math.exp(x) for x in logprobs)
    p_a = math.exp(logprobs[0]) / total
    assert 0.0 < p_a < 1.0
    assert backend.choice_logprobs(conversation, [" (A)", " (B)"]) == logprobs
