"""The embedded default model for real: `charter revise` on SmolLM2-135M in llama.cpp.

Kept small (2 prompts, short outputs) so it fits the default test run on 2 cores; it is the
model a new user meets first, so it is tested for real, not faked.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from charter.cli import cli
from charter.models import embedded_gguf
from charter.runs import file_sha256


def test_revise_on_the_embedded_model(tmp_path: Path) -> None:
    out = tmp_path / "R"
    result = CliRunner().invoke(
        cli,
        ["revise", "--prompts", "demo-redteam", "--limit", "2", "--rounds", "2",
         "--max-tokens", "24", "--out", str(out)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    # the model by name and by the hash of its weights (a swapped GGUF is another model)
    assert manifest["model"] == f"local/smollm2-135m@sha256:{file_sha256(embedded_gguf())}"
    usage = manifest["usage"]
    assert usage["calls"] == 2 * 5 and usage["completion_tokens"] > 0  # answer + 2 × 2 rounds
    # The few-shot prefix and the conversation are served from llama.cpp's prompt cache.
    assert usage["cached_tokens"] >= 0.5 * usage["prompt_tokens"], usage
    traces = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    assert len(traces) == 2
    for trace in traces:
        assert trace["initial"].strip() and not trace["initial"].startswith("echo ")
        assert all(step["critique"].strip() for step in trace["steps"])
    assert (
        sum(
            len(json.loads(x)["messages"]) == 2
            for x in (out / "sft.jsonl").read_text().splitlines()
        )
        == 2
    )
