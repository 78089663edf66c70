"""SIGKILL ``charter revise`` / ``label`` mid-run, resume: exactly an uninterrupted run's rows."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_jsonl

from charter.runs import repair_jsonl

N_PROMPTS = 240


STAGES = {
    "revise": (["revise", "--model", "fake/echo", "--rounds", "4", "--train-on", "all"],
               "traces.jsonl", ("traces.jsonl", "sft.jsonl")),
    "label": (["label", "--policy", "fake/echo", "--labeller", "fake/echo", "--samples", "3"],
              "labels.jsonl", ("samples.jsonl", "labels.jsonl", "prefs.jsonl")),
}  # fmt: skip


def command(prompts: Path, out: Path, stage: str = "revise") -> list[str]:
    args = STAGES[stage][0]
    return [sys.executable, "-m", "charter", *args, "--prompts", str(prompts), "--batch-size", "4",
            "--out", str(out)]  # fmt: skip


def rows_by_id(path: Path) -> dict[str, bytes]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), f"{path} ends with a torn line"
    lines = raw.splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert len(ids) == len(set(ids)), f"{path} has duplicate ids"
    return dict(zip(ids, lines, strict=True))


def finish(prompts: Path, out: Path, stage: str = "revise") -> None:
    subprocess.run(command(prompts, out, stage), check=True, capture_output=True, timeout=120)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_sigkill_at_random_moments_then_resume(tmp_path: Path, stage: str) -> None:
    _, progress_file, outputs = STAGES[stage]
    prompts = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": f"request {i}"} for i in range(N_PROMPTS)]
    )
    reference = tmp_path / "reference"
    finish(prompts, reference, stage)
    full_size = (reference / progress_file).stat().st_size

    out = tmp_path / "killed"
    rng = random.Random(20261123)
    kills = 0
    for fraction in sorted(rng.uniform(0.02, 0.9) for _ in range(6)):
        process = subprocess.Popen(
            command(prompts, out, stage), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        traces = out / progress_file
        # Kill only after this session wrote something, so every kill cuts a real run short.
        target = max(fraction * full_size, (traces.stat().st_size if traces.exists() else 0) + 1)
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if traces.exists() and traces.stat().st_size >= target:
                process.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.002)
        process.wait(timeout=60)
    assert kills >= 3  # most attempts were really cut short
    finish(prompts, out, stage)

    for name in outputs:
        assert rows_by_id(out / name) == rows_by_id(reference / name), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["sessions"] >= kills + 1


def test_torn_lines_and_missing_sft_rows_are_repaired(tmp_path: Path) -> None:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"request {i}"} for i in range(30)])
    reference, out = tmp_path / "reference", tmp_path / "out"
    finish(prompts, reference)
    finish(prompts, out)
    # A crash mid-line in traces, and after a trace but before all of its SFT rows.
    traces, sft = out / "traces.jsonl", out / "sft.jsonl"
    trace_lines = traces.read_bytes().splitlines(keepends=True)
    traces.write_bytes(b"".join(trace_lines[:20]) + trace_lines[20][:57])
    sft_lines = sft.read_bytes().splitlines(keepends=True)
    sft.write_bytes(b"".join(sft_lines[:50]) + sft_lines[50][:10])
    finish(prompts, out)
    assert repair_jsonl(traces) == 0 and repair_jsonl(sft) == 0
    for name in ("traces.jsonl", "sft.jsonl"):
        assert rows_by_id(out / name) == rows_by_id(reference / name), name
