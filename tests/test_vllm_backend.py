"""The ``vllm/…`` backend, against a transformers-run stand-in for vLLM's offline API.

vLLM needs a GPU; here ``sys.modules["vllm"]`` is tests/vllm_standin.py, which answers with
vLLM's shapes and the tiny checkpoint's real numbers. So what is tested is Charter's side:
prompt rendering, per-conversation seeds, batching, and reading choice log-probabilities out
of ``prompt_logprobs`` at the right offsets — checked against the ``hf/…`` backend.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import vllm_standin
from hf_tiny import build_tiny_checkpoint

from charter.backends import GenerationConfig, load_backend
from charter.backends.hf import HFBackend
from charter.backends.vllm_engine import VLLMBackend
from charter.errors import CharterError
from charter.records import Message

QUESTION = [Message(role="user", content="Which is a colour? (A) red (B) seven")]
PREFILLED = [*QUESTION, Message(role="assistant", content="The answer is:")]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("vllm") / "tiny")


@pytest.fixture
def backend(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> VLLMBackend:
    monkeypatch.setitem(sys.modules, "vllm", vllm_standin)
    built = load_backend(f"vllm/{checkpoint}", concurrency=4)
    assert isinstance(built, VLLMBackend) and built.name == f"vllm/{checkpoint}"
    assert built.engine_options["max_num_seqs"] == 4
    return built


def test_choice_logprobs_match_the_hf_backend(backend: VLLMBackend, checkpoint: Path) -> None:
    reference = HFBackend(str(checkpoint))
    for conversation in (QUESTION, PREFILLED):
        ours = backend.choice_logprobs(conversation, [" (A)", " (B)", " seven"])
        theirs = reference.choice_logprobs(conversation, [" (A)", " (B)", " seven"])
        assert all(math.isfinite(x) and x < 0 for x in ours)
        assert ours == pytest.approx(theirs, abs=1e-4)
    assert backend.totals.calls == 6


def test_generate_in_order_within_limits_and_reproducible(backend: VLLMBackend) -> None:
    conversations = [[Message(role="user", content=f"Say hello {i}.")] for i in range(3)]
    config = GenerationConfig(temperature=0.8, max_tokens=6, seed=3)
    first = backend.generate(conversations, config)
    assert len(first) == 3 and all(c.completion_tokens <= 6 for c in first)
    assert all(c.prompt_tokens > 0 for c in first)
    # One at a time gives the same: each conversation has its own seed, not its batch's.
    alone = [backend.generate([c], config)[0].text for c in conversations]
    assert [c.text for c in first] == alone
    assert backend.generate([], config) == []


def test_without_vllm_one_line_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm raises ImportError
    with pytest.raises(CharterError) as info:
        load_backend("vllm/Qwen/Qwen2.5-0.5B-Instruct")
    assert "pip install 'charter[vllm]'" in str(info.value) and "\n" not in str(info.value)
