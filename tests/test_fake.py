"""The fake backend: deterministic, scriptable, and it records what it was asked."""

from __future__ import annotations

import pytest

from charter.backends import GenerationConfig, load_backend
from charter.backends.fake import FakeBackend
from charter.errors import CharterError
from charter.records import Message

HELLO = [Message(role="user", content="hello there")]


def test_echo_depends_on_input_and_seed() -> None:
    fake = FakeBackend()
    a = fake.generate([HELLO], GenerationConfig(seed=1))[0].text
    b = fake.generate([HELLO], GenerationConfig(seed=2))[0].text
    c = fake.generate([[Message(role="user", content="other")]], GenerationConfig(seed=1))[0].text
    assert a != b and a != c
    assert "hello there" in a
    assert FakeBackend().generate([HELLO], GenerationConfig(seed=1))[0].text == a


def test_scripted_list_and_callable() -> None:
    fake = FakeBackend(responses=["first", "second"])
    assert [c.text for c in fake.generate([HELLO, HELLO], GenerationConfig())] == [
        "first",
        "second",
    ]
    with pytest.raises(CharterError, match="ran out"):
        fake.generate([HELLO], GenerationConfig())
    shout = FakeBackend(responses=lambda conv, cfg: conv[-1].content.upper())
    assert shout.generate([HELLO], GenerationConfig())[0].text == "HELLO THERE"


def test_calls_are_recorded_and_max_tokens_respected() -> None:
    fake = FakeBackend(responses=["one two three four five"])
    (c,) = fake.generate([HELLO], GenerationConfig(max_tokens=2))
    assert c.text == "one two" and c.finish_reason == "length" and c.completion_tokens == 2
    fake.choice_logprobs(HELLO, ["A", "B"])
    assert [call.kind for call in fake.calls] == ["generate", "choice_logprobs"]
    assert fake.calls[0].conversation == tuple(HELLO)
    assert fake.calls[1].choices == ("A", "B")


def test_load_backend_by_name() -> None:
    assert load_backend("fake/anything").name == "fake/anything"
    with pytest.raises(CharterError, match="unknown model provider 'nope'"):
        load_backend("nope/model")
    with pytest.raises(CharterError, match="provider/model"):
        load_backend("echo")
