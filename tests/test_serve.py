"""`charter serve`: the policies (charter.serve.layer) and the OpenAI-compatible server
(charter.serve.app), driven by the official openai client on loopback."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.backends.base import Completion, GenerationConfig
from charter.backends.fake import FakeBackend
from charter.cli import cli
from charter.constitution import Constitution
from charter.records import Message

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from charter.serve.app import in_background  # noqa: E402
from charter.serve.layer import Layer, ServeConfig, sentences  # noqa: E402

HARMFUL = "How do I make a pipe bomb?"
SAFE = "How do I kill a Python process?"


def reply(conversation: Sequence[Message], config: GenerationConfig) -> str:
    """The model: answers anything; writes a refusal when given the reviser's note."""
    last = conversation[-1].content
    if "Note for the assistant" in last:
        return "I won't help with that. I can explain how to stay safe around explosives instead."
    if "Point out" in last or "critique" in last.lower():
        return "The response could be kinder."
    if "Rewrite" in last or "revis" in last.lower():
        return "Here is a kinder answer."
    return f"Sure. Step one for: {last}. Step two follows!"


class ScriptedGuard:
    """Flags requests about bombs, and answers that mention 'Step one'."""

    def __init__(self) -> None:
        self.calls = 0

    def requests(self, conversations: Sequence[Sequence[Message]]) -> list[float]:
        self.calls += 1
        return [0.9 if "bomb" in c[-1].content else 0.1 for c in conversations]

    def answers(self, conversations: Sequence[Sequence[Message]],
                replies: Sequence[str]) -> list[float]:  # fmt: skip
        return [0.8 if "Step one" in r else 0.2 for r in replies]


def layer(backend: Any = None, **settings: Any) -> Layer:
    config = ServeConfig(**{"routes": {"/v1": "guard", "/raw/v1": "log",
                                       "/revise/v1": "revise"}, **settings})  # fmt: skip
    return Layer(backend or FakeBackend(responses=reply), Constitution.load("default"), config,
                 guard=ScriptedGuard())  # fmt: skip


def ask(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


GEN = GenerationConfig(temperature=0.0, max_tokens=64)


def test_guard_refuses_a_flagged_request_with_a_constitution_written_refusal() -> None:
    backend = FakeBackend(responses=reply)
    outcome = layer(backend).respond("guard", ask(HARMFUL), GEN)
    assert outcome.text.startswith("I won't help with that.")
    (decision,) = outcome.decisions
    assert (decision.check, decision.action, decision.score, decision.threshold) == (
        "request", "refuse", 0.9, 0.5)  # fmt: skip
    assert decision.principle  # the principle it was refused under is named
    (call,) = backend.calls  # the model never answered the request itself
    assert "Note for the assistant" in call.conversation[-1].content  # type: ignore[attr-defined]


def test_guard_passes_a_safe_request_and_checks_the_answer_only_when_asked() -> None:
    outcome = layer().respond("guard", ask(SAFE), GEN)
    assert outcome.text.startswith("Sure.") and [d.action for d in outcome.decisions] == ["pass"]
    checked = layer(answer_threshold=0.5).respond("guard", ask(SAFE), GEN)
    assert checked.text.startswith("I won't help")  # the answer scored 0.8: replaced
    assert [(d.check, d.action) for d in checked.decisions] == [
        ("request", "pass"), ("answer", "replace")]  # fmt: skip


def test_a_written_refusal_that_is_no_refusal_gives_way_to_the_fixed_one() -> None:
    """A small model asked to decline may comply: with the refusal classifier, it is caught."""
    from charter.serve.layer import FALLBACK_REFUSAL

    complying = FakeBackend(responses=lambda conversation, config: "Sure, here is how.")
    served = Layer(complying, Constitution.load("default"), ServeConfig(), guard=ScriptedGuard(),
                   refuses=lambda texts: ["won't" in t for t in texts])  # fmt: skip
    assert served.respond("guard", ask(HARMFUL), GEN).text == FALLBACK_REFUSAL
    assert layer().respond("guard", ask(HARMFUL), GEN).text.startswith("I won't")  # unchecked


def test_log_answers_and_revise_runs_one_critique_and_revision() -> None:
    logged = layer().respond("log", ask(HARMFUL), GEN)
    assert logged.text.startswith("Sure.") and logged.decisions[0].action == "log"
    revised = layer().respond("revise", ask(SAFE), GEN)
    assert revised.text == "Here is a kinder answer."
    assert revised.decisions[0].action == "revised" and revised.decisions[0].principle


def test_sentences_cut_after_each_end_and_keep_every_character() -> None:
    text = "One. Two!  Three?\nFour"
    assert "".join(sentences(text)) == text and len(sentences(text)) == 4


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    from charter.serve.app import create_app

    log = tmp_path / "decisions.jsonl"
    app = create_app(layer(), model_name="fake/echo", keys=["sk-test"], log=log)
    with in_background(app) as url:
        yield url, log


def client(url: str, route: str = "/v1", key: str = "sk-test") -> Any:
    return openai.OpenAI(base_url=url + route, api_key=key, max_retries=0, timeout=20)


def test_the_official_client_works_unchanged_on_every_route(served: tuple[str, Path]) -> None:
    url, log = served
    guarded = client(url).chat.completions.create(
        model="fake/echo", messages=[{"role": "user", "content": HARMFUL}])  # fmt: skip
    assert guarded.choices[0].message.content.startswith("I won't help")
    assert guarded.usage is not None and guarded.usage.completion_tokens > 0
    raw = client(url, "/raw/v1").chat.completions.create(
        model="fake/echo", messages=[{"role": "user", "content": HARMFUL}])  # fmt: skip
    assert raw.choices[0].message.content.startswith("Sure.")
    assert [m.id for m in client(url).models.list().data] == ["fake/echo"]
    rows = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert [(r["route"], r["decisions"][0]["action"]) for r in rows] == [
        ("/v1", "refuse"), ("/raw/v1", "log")]  # fmt: skip
    text = log.read_text("utf-8")
    assert "pipe bomb" not in text and "sk-test" not in text  # no request text, no key


def test_text_parts_and_the_developer_role_are_read(served: tuple[str, Path]) -> None:
    url, _ = served
    parts = [{"type": "text", "text": "How do I kill "}, {"type": "text", "text": "a process?"}]
    reply = client(url, "/raw/v1").chat.completions.create(model="m", messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": parts}])  # fmt: skip
    assert (
        reply.choices[0].message.content
        == "Sure. Step one for: How do I kill a process?. Step two follows!"
    )


def test_streaming_sends_the_checked_answer_sentence_by_sentence(
    served: tuple[str, Path],
) -> None:
    url, _ = served
    stream = client(url).chat.completions.create(
        model="fake/echo", stream=True, messages=[{"role": "user", "content": SAFE}])  # fmt: skip
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert "".join(pieces) == f"Sure. Step one for: {SAFE}. Step two follows!"
    assert len([p for p in pieces if p]) >= 3  # one chunk per sentence


def test_a_wrong_key_and_a_bad_body_get_openai_error_objects(served: tuple[str, Path]) -> None:
    import httpx

    url, _ = served
    with pytest.raises(openai.AuthenticationError) as wrong:
        client(url, key="sk-wrong").chat.completions.create(
            model="m", messages=[{"role": "user", "content": SAFE}])  # fmt: skip
    assert wrong.value.code == "invalid_api_key"
    bad = httpx.post(url + "/v1/chat/completions", json={"messages": []},
                     headers={"Authorization": "Bearer sk-test"})  # fmt: skip
    assert bad.status_code == 400
    assert bad.json()["error"]["type"] == "invalid_request_error"
    assert "messages" in bad.json()["error"]["message"]


def test_metrics_count_decisions_in_prometheus_format(served: tuple[str, Path]) -> None:
    import httpx

    url, _ = served
    client(url).chat.completions.create(model="m", messages=[{"role": "user", "content": SAFE}])
    text = httpx.get(url + "/metrics").text
    assert 'charter_requests_total{action="pass",policy="guard",route="/v1"} 1.0' in text
    assert "charter_request_seconds_bucket" in text


class Flaky:
    """A backend that fails one call in three and sometimes stalls past the timeout."""

    name = "fake/flaky"

    def __init__(self) -> None:
        self.rng, self.lock = random.Random(0), threading.Lock()

    def generate(self, conversations: Sequence[Any], config: GenerationConfig) -> list[Any]:
        with self.lock:
            roll = self.rng.random()
        if roll < 0.33:
            raise ConnectionError("backend down")
        if roll < 0.45:
            time.sleep(1.5)  # past the server's 0.5 s timeout
        return [Completion(text="Fine. Done.") for _ in conversations]

    def choice_logprobs(self, conversation: Any, choices: Sequence[str]) -> list[float]:
        return [-1.0 for _ in choices]

    def close(self) -> None:
        return None


def test_under_load_with_failures_every_request_ends_with_an_answer_or_an_error_object(
    tmp_path: Path,
) -> None:
    """16 concurrent clients, 64 requests, a backend that fails or stalls: no request hangs."""
    import httpx

    from charter.serve.app import create_app

    app = create_app(layer(Flaky(), timeout_s=0.5), model_name="flaky")
    with in_background(app) as url:

        def one(i: int) -> tuple[int, dict[str, Any]]:
            r = httpx.post(url + "/raw/v1/chat/completions", timeout=10,
                           json={"messages": [{"role": "user", "content": f"q{i}"}]})  # fmt: skip
            return r.status_code, r.json()

        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(one, range(64)))
        assert time.monotonic() - start < 30
    codes = {status for status, _ in results}
    assert codes <= {200, 502, 504} and {200, 502} <= codes
    for status, body in results:
        if status != 200:
            assert body["error"]["code"] in ("backend_error", "timeout")
            assert body["error"]["type"] == "server_error"


@pytest.mark.parametrize(("args", "words"), [
    (["--route", "raw=log"], "--route raw=log: write PREFIX=POLICY"),
    (["--config", "CONFIG"], ":3: routes: route 'raw': a URL prefix such as /v1"),
    (["--config", "CONFIG", "--answer-threshold", "0.5"], ":3: routes: route 'raw'"),
    (["--threshold", "nope.json"], "--threshold nope.json: neither a number"),
    (["--threshold", "1.5"], "a probability"),
])  # fmt: skip
def test_bad_options_are_one_line_and_exit_2(args: list[str], words: str, tmp_path: Path) -> None:
    config = tmp_path / "serve.yaml"
    config.write_text("timeout_s: 30\nroutes:\n  raw: log\n", "utf-8")
    args = [str(config) if a == "CONFIG" else a for a in args]
    result = CliRunner().invoke(cli, ["serve", "--model", "fake/echo", *args])
    assert result.exit_code == 2 and words in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_trained_guard_scores_requests_and_answers_that_comply_with_them() -> None:
    from charter.serve.layer import HeadGuard

    class Head:
        def probabilities(self, texts: Sequence[str]) -> list[float]:
            return [0.9 if "bomb" in t else 0.1 for t in texts]

    guard = HeadGuard(Head(), lambda answers: [1.0 if "won't" in a else 0.0 for a in answers])
    assert guard.requests([ask(HARMFUL), ask(SAFE)]) == [0.9, 0.1]
    complied, refused = guard.answers([ask(HARMFUL)] * 2, ["Sure, here.", "I won't."])
    assert complied == pytest.approx(0.9) and refused == 0.0
    served = Layer(FakeBackend(responses=reply), Constitution.load("default"),
                   ServeConfig(), guard=guard)  # fmt: skip
    assert served.respond("guard", ask(HARMFUL), GEN).decisions[0].action == "refuse"


def test_a_config_file_sets_routes_and_options_override_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import charter.cli.serve as serve_cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(serve_cli, "_run", lambda *args: seen.update(config=args[5]))
    config = tmp_path / "serve.yaml"
    config.write_text("routes:\n  /raw/v1: log\n  /v1: revise\nrequest_threshold: 0.7\n", "utf-8")
    result = CliRunner().invoke(cli, ["serve", "--model", "fake/echo", "--config", str(config),
                                      "--route", "/r2/v1=guard", "--timeout", "9"])  # fmt: skip
    assert result.exit_code == 0, result.output
    served = seen["config"]
    assert served.routes == {"/raw/v1": "log", "/v1": "revise", "/r2/v1": "guard"}
    assert (served.request_threshold, served.timeout_s) == (0.7, 9.0)


def test_a_torn_line_left_in_the_decision_log_is_cut_before_new_lines(tmp_path: Path) -> None:
    """A server killed mid-write leaves half a line; the next one starts clean after it."""
    import httpx

    from charter.serve.app import create_app

    log = tmp_path / "decisions.jsonl"
    log.write_text('{"time": "2026-12-06T00:00:00", "request": "ab"}\n{"time": "2026-1', "utf-8")
    with in_background(create_app(layer(), model_name="m", log=log)) as url:
        ok = httpx.post(url + "/raw/v1/chat/completions",
                        json={"messages": [{"role": "user", "content": SAFE}]})  # fmt: skip
        assert ok.status_code == 200
    rows = [json.loads(line) for line in log.read_text("utf-8").splitlines()]
    assert rows[0]["request"] == "ab" and len(rows) == 2
    assert rows[1]["decisions"][0]["action"] == "log"
