"""The OpenAI-compatible client against a stub server: retries, errors, secrets, logprobs."""

from __future__ import annotations

import json
import logging
import math
import socket
import time
from pathlib import Path

import pytest
from openai_stub import StubServer

from charter.backends import GenerationConfig, load_backend
from charter.backends.openai import OpenAIBackend
from charter.errors import CharterError
from charter.records import Message

HELLO = [[Message(role="user", content="hello there")]]
SECRET = "sk-test-secret-value-123"


def client(server: StubServer, **options: object) -> OpenAIBackend:
    return OpenAIBackend("stub", base_url=server.url, api_key=SECRET, retry_wait=0, **options)  # type: ignore[arg-type]


def test_generate_reports_tokens_and_sends_settings() -> None:
    with StubServer() as server:
        backend = client(server)
        config = GenerationConfig(temperature=0.3, max_tokens=5, seed=9, stop=("\n",))
        (c,) = backend.generate(HELLO, config)
        assert c.text == "stub reply to: hello there"
        assert c.prompt_tokens == 2 and c.cached_tokens == 1 and c.completion_tokens == 5
        sent = server.requests[-1]
        assert sent["model"] == "stub" and sent["max_tokens"] == 5 and sent["temperature"] == 0.3
        assert sent["stop"] == ["\n"] and isinstance(sent["seed"], int)
        assert server.headers[-1]["Authorization"] == f"Bearer {SECRET}"
        backend.close()


def test_a_lone_surrogate_in_a_reply_becomes_a_replacement_character() -> None:
    with StubServer(faults=["surrogate"]) as server:
        (c,) = client(server).generate(HELLO, GenerationConfig())
    assert c.text.startswith("stub reply to: hello there ") and c.text.endswith("!")
    assert "\ud800" not in c.text and "\ufffd" in c.text
    c.text.encode("utf-8")  # writable as UTF-8


def test_transient_faults_are_retried_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    with StubServer(faults=["429", "500", "503", "malformed", "drop"]) as server:
        backend = client(server, max_retries=5)
        (c,) = backend.generate(HELLO, GenerationConfig())
        assert c.text.startswith("stub reply")
        assert len(server.requests) == 6
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 5
    assert SECRET not in caplog.text


def test_retry_budget_then_one_clear_line() -> None:
    with StubServer(faults=["500"] * 10) as server:
        backend = client(server, max_retries=2)
        with pytest.raises(CharterError) as info:
            backend.generate(HELLO, GenerationConfig())
        assert len(server.requests) == 3
    message = str(info.value)
    assert "failed after 3 attempts" in message and "HTTP 500" in message and "resume" in message
    assert SECRET not in message and "\n" not in message


def test_client_errors_are_not_retried() -> None:
    with StubServer(faults=["400"]) as server:
        with pytest.raises(CharterError, match="HTTP 400 stub says 400"):
            client(server).generate(HELLO, GenerationConfig())
        assert len(server.requests) == 1


def test_unreachable_server_fails_within_seconds() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    backend = OpenAIBackend("x", base_url=f"http://127.0.0.1:{port}/v1", api_key=SECRET)
    start = time.monotonic()
    with pytest.raises(CharterError, match="cannot reach") as info:
        backend.generate(HELLO, GenerationConfig())
    assert time.monotonic() - start < 10
    assert SECRET not in str(info.value)


def test_choice_logprobs_from_top_logprobs(caplog: pytest.LogCaptureFixture) -> None:
    with StubServer() as server:
        backend = client(server)
        conversation = [
            Message(role="user", content="Pick one."),
            Message(role="assistant", content="The answer is:"),
        ]
        a, b = backend.choice_logprobs(conversation, [" (A)", " (B)"])
        assert (a, b) == (-0.2, -1.7)
        sent = server.requests[-1]
        assert sent["messages"][-1] == {"role": "assistant", "content": "The answer is: ("}
        assert sent["max_tokens"] == 1 and sent["logprobs"] is True
        (z,) = backend.choice_logprobs(conversation, [" (Z)", " (A)"])[:1]
        assert z == -4.0 and "not among the top" in caplog.text  # upper bound, warned
        assert math.isfinite(z)


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("CHARTER_BASE_URL", raising=False)
    with pytest.raises(CharterError, match="needs a server"):
        OpenAIBackend("x", base_url=None)
    with pytest.raises(CharterError, match="apply to openai"):
        load_backend("fake/echo", base_url="http://127.0.0.1:1/v1")


def test_cli_revise_against_an_openai_server(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from charter.cli import cli

    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n{"prompt": "there"}\n', encoding="utf-8")
    with StubServer() as server:
        result = CliRunner().invoke(
            cli,
            ["revise", "--model", "openai/stub", "--base-url", server.url, "--api-key", SECRET,
             "--prompts", str(prompts), "--rounds", "2", "--out", str(tmp_path / "R")],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert len(server.requests) == 2 * 5
    written = "".join(p.read_text() for p in (tmp_path / "R").iterdir())
    assert "stub reply" in written and SECRET not in written
    manifest = json.loads((tmp_path / "R" / "manifest.json").read_text())
    assert manifest["model"] == "openai/stub" and manifest["usage"]["cached_tokens"] > 0

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    down = CliRunner().invoke(
        cli,
        ["revise", "--model", "openai/stub", "--base-url", f"http://127.0.0.1:{port}/v1",
         "--prompts", str(prompts), "--out", str(tmp_path / "S")],
    )  # fmt: skip
    assert down.exit_code == 1 and time.monotonic() - start < 10
    errors = [line for line in down.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot reach" in errors[0] and "Traceback" not in down.output
