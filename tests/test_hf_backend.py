"""The ``hf/…`` backend against a tiny random Llama built offline (see ``hf_tiny.py``).

Checks what the backend contract cannot: that left padding leaves greedy outputs unchanged,
that token counts and stop handling are right, and that ``choice_logprobs`` equals an
independent forward pass.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import torch
from hf_tiny import (
    build_tiny_checkpoint,
    build_tiny_gguf,
    one_thread,  # noqa: F401 - autouse fixture: torch on one thread
)
from transformers import AutoModelForCausalLM, AutoTokenizer

from charter.backends.base import GenerationConfig
from charter.backends.hf import INSTALL_HINT, HFBackend
from charter.errors import CharterError
from charter.records import Message

SHORT = [Message(role="user", content="Hi.")]
USER = [Message(role="user", content="Name three colours, please, and be brief about it.")]
CHAT = [
    Message(role="system", content="Be brief."),
    Message(role="user", content="Say hello."),
    Message(role="assistant", content="Hello."),
    Message(role="user", content="Now say goodbye."),
]
QUESTION = Message(role="user", content="Which is a colour? (A) red (B) seven")
GREEDY = GenerationConfig(temperature=0.0, max_tokens=12, seed=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("hf") / "tiny")


@pytest.fixture(scope="module")
def backend(checkpoint: Path) -> Iterator[HFBackend]:
    instance = HFBackend(str(checkpoint))
    yield instance
    instance.close()


def test_generate_counts_tokens(backend: HFBackend, checkpoint: Path) -> None:
    completions = backend.generate([SHORT, CHAT, USER], GREEDY)
    assert len(completions) == 3
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    for conversation, completion in zip([SHORT, CHAT, USER], completions, strict=True):
        prompt = tokenizer.apply_chat_template(
            [m.model_dump() for m in conversation], tokenize=False, add_generation_prompt=True
        )
        assert completion.prompt_tokens == len(
            tokenizer(prompt, add_special_tokens=False)["input_ids"]
        )
        assert 0 < completion.completion_tokens <= GREEDY.max_tokens
        assert completion.cached_tokens == 0
        assert completion.finish_reason in ("stop", "length")
    assert backend.generate([], GREEDY) == []


def test_greedy_output_does_not_depend_on_padding(checkpoint: Path, backend: HFBackend) -> None:
    conversations = [SHORT, CHAT, USER, SHORT]  # prompt lengths differ: left padding matters
    batched = backend.generate(conversations, GREEDY)
    alone = [backend.generate([c], GREEDY)[0] for c in conversations]
    in_pairs = HFBackend(str(checkpoint), batch_size=2).generate(conversations, GREEDY)
    for results in (alone, in_pairs):
        assert [(c.text, c.completion_tokens) for c in results] == [
            (c.text, c.completion_tokens) for c in batched
        ]
    assert batched[0].text == batched[3].text


def test_sampling_is_seeded_per_conversation(backend: HFBackend) -> None:
    sampled = GenerationConfig(temperature=1.0, max_tokens=8, seed=5)
    rng_state = torch.random.get_rng_state()
    together = [c.text for c in backend.generate([USER, CHAT], sampled)]
    apart = [backend.generate([c], sampled)[0].text for c in (USER, CHAT)]
    assert together == apart
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the caller's RNG is untouched
    other_seeds = {
        backend.generate([USER], sampled.model_copy(update={"seed": s}))[0].text for s in range(6)
    }
    assert len(other_seeds) > 1


def test_generation_ends_at_eos_and_drops_padding(checkpoint: Path) -> None:
    backend = HFBackend(str(checkpoint))
    first_token = _greedy_ids(backend, SHORT)[0]
    assert first_token not in _greedy_ids(backend, CHAT)
    # Make the token SHORT's reply starts with the end of a reply: SHORT then stops at once,
    # and its row in a batch with CHAT is padded while CHAT goes on.
    backend.model.generation_config.eos_token_id = first_token
    alone = backend.generate([CHAT], GREEDY)[0]
    short, chat = backend.generate([SHORT, CHAT], GREEDY)
    assert (short.completion_tokens, short.finish_reason) == (1, "stop")
    assert chat == alone.model_copy(update={"latency_s": chat.latency_s})
    assert (chat.completion_tokens, chat.finish_reason) == (GREEDY.max_tokens, "length")


def test_stop_strings_trim_the_reply(backend: HFBackend) -> None:
    full = backend.generate([CHAT], GREEDY.model_copy(update={"max_tokens": 24}))[0].text
    stop = next(ch for ch in full[2:] if ch.isalpha())
    config = GREEDY.model_copy(update={"max_tokens": 24, "stop": (stop,)})
    stopped = backend.generate([CHAT, SHORT], config)[0]
    assert stopped.text == full[: full.index(stop)]
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens < 24


@pytest.mark.parametrize("ends_with_assistant", [True, False])
def test_choice_logprobs_match_a_direct_forward_pass(
    backend: HFBackend, checkpoint: Path, ends_with_assistant: bool
) -> None:
    conversation = [QUESTION]
    if ends_with_assistant:
        conversation.append(Message(role="assistant", content="The answer is:"))
    choices = [" (A)", " (B)", " (A) red, a colour", ""]
    got = backend.choice_logprobs(conversation, choices)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(
        [m.model_dump() for m in conversation],
        tokenize=False,
        add_generation_prompt=not ends_with_assistant,
        continue_final_message=ends_with_assistant,
    )
    assert isinstance(prompt, str)
    assert prompt.endswith("The answer is:" if ends_with_assistant else "assistant\n")
    expected = [_direct_logprob(model, tokenizer, prompt, choice) for choice in choices]
    assert got == pytest.approx(expected, abs=1e-5)
    assert all(math.isfinite(x) and x <= 0 for x in got)
    assert got[-1] == 0.0  # the empty continuation is certain
    assert backend.choice_logprobs(conversation, choices) == got


def test_a_gguf_file_loads_as_the_same_model(
    backend: HFBackend, checkpoint: Path, tmp_path: Path
) -> None:
    pytest.importorskip("gguf")
    pytest.importorskip("accelerate")  # transformers needs it to load GGUF files
    gguf_file = build_tiny_gguf(checkpoint, tmp_path / "tiny.gguf")
    from_gguf = HFBackend(str(gguf_file))
    assert from_gguf.name == f"hf/{gguf_file}"
    conversations = [SHORT, CHAT]
    assert [c.text for c in from_gguf.generate(conversations, GREEDY)] == [
        c.text for c in backend.generate(conversations, GREEDY)
    ]
    conversation = [QUESTION, Message(role="assistant", content="The answer is:")]
    assert from_gguf.choice_logprobs(conversation, [" (A)", " (B)"]) == pytest.approx(
        backend.choice_logprobs(conversation, [" (A)", " (B)"]), abs=1e-5
    )


def test_missing_checkpoint_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(CharterError, match="no-such-model"):
        HFBackend(str(missing))
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharterError, match="empty"):
        HFBackend(str(tmp_path / "empty"))


def test_unknown_dtype_is_named(checkpoint: Path) -> None:
    with pytest.raises(CharterError, match="float33"):
        HFBackend(str(checkpoint), dtype="float33")


def test_missing_torch_says_how_to_install(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(CharterError) as raised:
        HFBackend(str(checkpoint))
    assert INSTALL_HINT in str(raised.value)


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import charter.backends.hf, sys; print('torch' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def _greedy_ids(backend: HFBackend, conversation: list[Message]) -> list[int]:
    """The token ids of a greedy reply, from transformers directly."""
    messages = [m.model_dump() for m in conversation]
    prompt = backend.tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    ids = torch.tensor([backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    output = backend.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=GREEDY.max_tokens,
        do_sample=False,
        pad_token_id=backend.tokenizer.pad_token_id,
    )
    new_ids: list[int] = output[0, ids.shape[1] :].tolist()
    return new_ids


def _direct_logprob(model: Any, tokenizer: Any, prompt: str, choice: str) -> float:
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    choice_ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + choice_ids])).logits[0]
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(
        float(logprobs[len(prompt_ids) + i - 1, token]) for i, token in enumerate(choice_ids)
    )
