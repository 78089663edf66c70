"""The backend contract: one suite, run against every backend Charter ships.

- ``fake``: the deterministic stand-in;
- ``local``: the embedded default (SmolLM2-135M in llama.cpp), for real, with short outputs;
- ``openai``: the OpenAI-compatible client, against the embedded engine's own server;
- ``hf``: transformers, on a tiny randomly-initialised checkpoint built by the test;
- ``vllm``: vLLM on the same tiny checkpoint — only where vLLM is installed and a GPU is
  visible (never in CI; on a GPU box: ``pip install 'charter[vllm]'`` and run this file).

Each backend is built once per session and the suite runs serially (2 cores). Tests never
compare exact strings across engines; they check shapes, order, limits and determinism.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Iterator

import pytest
from hf_tiny import build_tiny_checkpoint

from charter.backends import Backend, GenerationConfig, load_backend
from charter.backends.local import LocalBackend
from charter.records import Message

NAMES = ["fake", "local", "openai", "hf", "vllm"]


def gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


USER = [Message(role="user", content="Name three colours.")]
CHAT = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="Say hello."),
    Message(role="assistant", content="Hello."),
    Message(role="user", content="Now say goodbye."),
]
SHORT = GenerationConfig(temperature=0.0, max_tokens=8, seed=1)


@pytest.fixture(scope="session")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Backend]]:
    """Builds each backend on first use and closes them all at the end of the session."""
    built: dict[str, Backend] = {}

    def get(name: str) -> Backend:
        if name not in built:
            if name == "local":
                built[name] = load_backend("local/smollm2-135m", concurrency=2)
            elif name == "openai":
                local = get("local")
                assert isinstance(local, LocalBackend)
                local.ensure_ready()  # the embedded llama.cpp server is the OpenAI server
                built[name] = load_backend("openai/smollm2", base_url=local.base_url, concurrency=2)
            elif name in {"hf", "vllm"}:
                checkpoint = build_tiny_checkpoint(tmp_path_factory.mktemp(name) / "tiny")
                built[name] = load_backend(f"{name}/{checkpoint}")
            else:
                built[name] = load_backend("fake/echo")
        return built[name]

    yield get
    for instance in built.values():
        instance.close()


@pytest.fixture(params=NAMES)
def backend(request: pytest.FixtureRequest, backends: Callable[[str], Backend]) -> Backend:
    if request.param == "vllm" and not gpu_with_vllm():
        pytest.skip("vllm/… needs vLLM and a GPU (tests/test_vllm_backend.py covers it here)")
    return backends(request.param)


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
    assert backend.choice_logprobs(conversation, [" (A)", " (B)"]) == pytest.approx(
        logprobs, abs=1e-3
    )
