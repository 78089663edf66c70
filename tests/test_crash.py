"""SIGKILL ``charter revise`` / ``label`` / a whole ``charter run`` mid-run, resume: exactly an
uninterrupted run's rows."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

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


# --- a whole `charter run`, every stage, training included -------------------------------------

KILLS = 20
# Fields two uninterrupted runs write differently: the trainer's wall-clock timings.
VOLATILE = {"train_runtime", "train_tokens_per_second", "train_samples_per_second",
            "train_steps_per_second"}  # fmt: skip
ANNOUNCED = re.compile(r"\[\d+/\d+\] (\w+) → ")  # a stage starts (not "cached")
ALL_DONE = "all stages done"


class Session:
    """One `charter run` process in its own process group; its stdout lines, timed."""

    def __init__(self, config: Path, root: Path, log: Path, env: dict[str, str]) -> None:
        command = [sys.executable, "-m", "charter", "run", str(config), "--out", str(root)]
        self.began = time.monotonic()
        with log.open("ab") as stderr:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True,
                text=True, encoding="utf-8",
            )  # fmt: skip
        self.lines: list[tuple[float, str]] = []  # (monotonic time, line)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic(), line))

    def reached(self, segments: list[str]) -> tuple[int, float]:
        """The latest segment this session started (0: start-up) and when."""
        latest = (0, self.began)
        for at, line in list(self.lines):
            if ALL_DONE in line:
                latest = (len(segments), at)
            elif match := ANNOUNCED.match(line):
                latest = (segments.index(match[1]), at)
        return latest

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self.reader.join(timeout=60)


def timeline(session: Session, segments: list[str]) -> list[float]:
    """Seconds the reference spent in each segment: start-up, then each stage."""
    assert session.process.wait(timeout=900) == 0, "the reference run failed: see stderr.log"
    session.reader.join(timeout=60)
    starts = {name: at for at, line in session.lines
              if (match := ANNOUNCED.match(line)) for name in [match[1]]}  # fmt: skip
    (done,) = [at for at, line in session.lines if ALL_DONE in line]
    moments = [session.began, *(starts[name] for name in segments[1:]), done]
    return [b - a for a, b in pairwise(moments)]


def kill_moments(durations: list[float], rng: random.Random) -> list[tuple[int, float]]:
    """KILLS (segment, seconds into it), sorted: two in every stage, the rest by duration.

    Offsets stay within 80% of the reference's time in the segment, so a kill lands in it
    even when the busy machine runs the stage a little faster than the reference did.
    """
    chosen = [i for i in range(1, len(durations)) for _ in range(2)]
    chosen += rng.choices(range(len(durations)), weights=durations, k=KILLS - len(chosen))
    return sorted((i, rng.uniform(0, 0.8 * durations[i])) for i in chosen)


def landed(session: Session, stages: list[Any], segments: list[str]) -> str:
    """Where a kill landed: start-up, the first stage whose directory is not complete, or
    the end (every stage done, the summary not yet printed)."""
    if session.reached(segments)[0] == 0:
        return "start-up"
    return next((s.name for s in stages if not s.complete), "end")


def kill_at(session: Session, segment: int, offset: float, segments: list[str]) -> bool:
    """SIGKILL the session ``offset`` s after it starts ``segment`` (at once if it is past
    it); False if it finished first."""
    deadline = None
    while session.process.poll() is None:
        if deadline is None:
            reached, at = session.reached(segments)
            if reached > segment:
                deadline = time.monotonic()
            elif reached == segment:
                deadline = at + offset
        if deadline is not None and time.monotonic() >= deadline:
            session.kill()
            return True
        time.sleep(0.005)
    session.reader.join(timeout=60)
    return False


def records(path: Path) -> dict[str, Any]:
    """A JSONL file's records by id (or by the whole record where it has none), without the
    VOLATILE fields; fails on a torn line or a duplicate."""
    raw = path.read_bytes()
    assert not raw or raw.endswith(b"\n"), f"{path} ends with a torn line"
    rows = [_without_volatile(json.loads(line)) for line in raw.splitlines()]
    keys = [r["id"] if isinstance(r, dict) and "id" in r else json.dumps(r, sort_keys=True)
            for r in rows]  # fmt: skip
    assert len(keys) == len(set(keys)), f"{path} has duplicate records"
    return dict(zip(keys, rows, strict=True))


def inside(root: Path, pattern: str) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.glob(pattern))


def _without_volatile(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_without_volatile(v) for v in value]
    return value


@pytest.mark.slow
def test_sigkill_a_whole_run_at_random_moments_then_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hf_tiny import build_tiny_checkpoint, tiny_run_config

    from charter.backends import load_backend
    from charter.pipeline import plan
    from charter.run_config import load_run_config

    home = tmp_path / "home"
    monkeypatch.setenv("CHARTER_HOME", str(home))  # plan() below, in this process
    env = {**os.environ, "CI": "true", "CHARTER_HOME": str(home), "PYTHONUNBUFFERED": "1",
           "TORCH_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip
    config = tmp_path / "run.yaml"
    config.write_text(tiny_run_config(build_tiny_checkpoint(tmp_path / "tiny"), "crash"), "utf-8")
    # Both runs write into ROOT (the reference is moved away after), so the paths inside
    # records (trained models' GGUF files, prompt sources) and the ids hashed from them agree.
    root, reference, log = tmp_path / "run", tmp_path / "reference", tmp_path / "stderr.log"
    stages = plan(load_run_config(config), root, load_backend)
    segments = ["start-up", *(s.name for s in stages)]
    durations = timeline(Session(config, root, log, env), segments)
    root.rename(reference)

    where: Counter[str] = Counter()
    for segment, offset in kill_moments(durations, random.Random(20261202)):
        session = Session(config, root, log, env)
        if not kill_at(session, segment, offset, segments):
            assert session.process.returncode == 0, log.read_text("utf-8")[-3000:]
            break
        where[landed(session, stages, segments)] += 1
    print(f"\nreference {sum(durations):.0f}s by segment "
          f"{dict(zip(segments, (round(d, 1) for d in durations), strict=True))}; "
          f"kills by where they landed {dict(where)}")  # fmt: skip
    assert where.total() == KILLS, f"the run finished after {where.total()} kills"
    assert where["sft"] and where["dpo"] and where["evaluate"], where
    assert Session(config, root, log, env).process.wait(timeout=900) == 0, log.read_text()[-3000:]

    assert all(s.complete for s in stages)
    manifests = inside(root, "*-*/**/manifest.json")
    assert manifests == inside(reference, "*-*/**/manifest.json")
    for manifest in manifests:
        assert json.loads((root / manifest).read_text("utf-8"))["status"] == "complete", manifest
    data_files = inside(reference, "*-*/**/*.jsonl")  # stage directories: NAME-KEY
    assert data_files == inside(root, "*-*/**/*.jsonl")
    for name in data_files:
        killed, uninterrupted = records(root / name), records(reference / name)
        differ = sorted(k for k in killed.keys() | uninterrupted.keys()
                        if killed.get(k) != uninterrupted.get(k))  # fmt: skip
        first = differ[0] if differ else ""
        assert not differ, f"{name}: {len(differ)} records differ, the first: " \
                           f"{killed.get(first)} != {uninterrupted.get(first)}"  # fmt: skip
