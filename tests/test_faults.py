"""A flaky OpenAI-compatible server: nothing is lost, retries are bounded and logged.

The stub server (tests/openai_stub.py) fails 30% of requests at random — 429, 500, 503,
malformed JSON, a dropped connection, a torn body, a stall past the client's timeout —
while a ``revise`` run makes 200 completions through :class:`OpenAIBackend`. Then a server
that dies mid-run: the run stops after its retry budget with one clear line, leaves only
whole records behind, and a later rerun against a live server finishes it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from conftest import write_jsonl
from openai_stub import RANDOM_FAULTS, StubServer

from charter.backends.openai import OpenAIBackend
from charter.constitution import Constitution, resolve
from charter.errors import CharterError
from charter.prompts import PromptSet
from charter.stages.revise import ReviseConfig
from charter.stages.revise_run import run_revise

PROMPTS = 40
ROUNDS = 2  # an answer, then a critique and a revision per round: 5 completions per prompt
COMPLETIONS = PROMPTS * (1 + 2 * ROUNDS)
MAX_RETRIES = 3
SECRET = "sk-fault-test-secret-0042"


def backend(server: StubServer) -> OpenAIBackend:
    return OpenAIBackend(
        "stub", base_url=server.url, api_key=SECRET, timeout=0.5, max_retries=MAX_RETRIES,
        retry_wait=0, concurrency=8,
    )  # fmt: skip


def revise_with(server: StubServer, prompts: Path, out: Path) -> None:
    client = backend(server)
    try:
        run_revise(
            PromptSet([str(prompts)]), out=out, constitution=Constitution.load("default"),
            constitution_text=resolve("default").read_text("utf-8"), backend=client,
            config=ReviseConfig(rounds=ROUNDS, batch_size=8), progress=False,
        )  # fmt: skip
    finally:
        client.close()


def rows(out: Path, name: str) -> dict[str, bytes]:
    raw = (out / name).read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{name} ends with a torn line"
    lines = raw.splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)), f"{name} has duplicate ids"
    return dict(zip(ids, lines, strict=True))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faults")
    return write_jsonl(
        folder / "prompts.jsonl",
        [{"prompt": f"Request {i}: how would someone get into locked place number {i}?"}
         for i in range(PROMPTS)],
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(prompts: Path) -> Path:
    """The same run against a server that never fails."""
    out = prompts.parent / "clean"
    with StubServer() as server:
        revise_with(server, prompts, out)
    return out


def test_every_record_completes_through_30_percent_faults(
    prompts: Path, reference: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="charter.backends.openai")
    with StubServer(rate=0.3, seed=7, max_faults_per_request=MAX_RETRIES, stall_s=1.0) as server:
        revise_with(server, prompts, tmp_path / "flaky")
    faults = {kind: n for kind, n in server.served.items() if kind != "ok"}
    total = sum(server.served.values())

    assert server.served["ok"] == COMPLETIONS  # each request answered exactly once
    assert 0.2 < sum(faults.values()) / total < 0.4, server.served
    assert set(faults) == set(RANDOM_FAULTS), server.served  # every kind of fault happened
    assert max(server.attempts.values()) <= MAX_RETRIES + 1  # retries are bounded
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == sum(faults.values())  # and each one is logged
    for name in ("traces.jsonl", "sft.jsonl"):  # nothing lost, nothing changed
        assert rows(tmp_path / "flaky", name) == rows(reference, name)
    assert SECRET not in caplog.text


def test_a_dead_server_stops_the_run_cleanly_and_a_rerun_finishes_it(
    prompts: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dies"
    with StubServer(down_after=60) as server, pytest.raises(CharterError) as info:
        revise_with(server, prompts, out)
    message = str(info.value)
    assert f"failed after {MAX_RETRIES + 1} attempts" in message and "resume" in message
    assert "\n" not in message and SECRET not in message and info.value.exit_code == 1

    kept = rows(out, "traces.jsonl")  # only whole records, all of them right
    assert 0 < len(kept) < PROMPTS
    assert all(reference_row == rows(reference, "traces.jsonl")[i] for i, reference_row in
               kept.items())  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"

    with StubServer() as revived:  # a new server (a new port): the run is the same
        revise_with(revived, prompts, out)
    assert revived.served["ok"] == (PROMPTS - len(kept)) * (1 + 2 * ROUNDS)  # no work redone
    for name in ("traces.jsonl", "sft.jsonl"):
        assert rows(out, name) == rows(reference, name)
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
