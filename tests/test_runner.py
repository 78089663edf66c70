"""A new stage is one object: the runner gives it a folder, a key, a lock, resume and timing.

Two toy stages (one writes numbers, the next sums them) are written here as classes that
follow the Stage protocol, planned and run by the same runner ``charter run`` uses.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from charter import runner
from charter.stages import Stage, Step


class Numbers:
    """Writes 1..count to numbers.json."""

    name, version, needs, inputs = "numbers", 1, (), None
    estimate: Mapping[str, float] = {"seconds": 1}

    def __init__(self, count: int) -> None:
        self.settings = {"count": count}
        self.runs = 0

    def run(self, out: Path, folders: Mapping[str, Path]) -> None:
        self.runs += 1
        out.mkdir(parents=True, exist_ok=True)
        (out / "numbers.json").write_text(json.dumps(list(range(1, self.settings["count"] + 1))))

    def check(self, out: Path) -> None:
        pass


def total(out: Path, folders: Mapping[str, Path]) -> None:
    numbers = json.loads((folders["numbers"] / "numbers.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    (out / "total.txt").write_text(str(sum(numbers)))


def run(stages: list[Any], root: Path) -> tuple[list[runner.PlannedStage], list[str]]:
    planned = runner.plan(stages, root)
    lines: list[str] = []
    runner.run_pipeline(planned, planned, root, echo=lines.append)
    return planned, lines


def test_a_toy_stage_runs_caches_and_rekeys_through_the_runner(tmp_path: Path) -> None:
    numbers: Stage = Numbers(4)
    summed = Step("total", 1, ("numbers",), None, None, {"seconds": 1}, total)
    planned, lines = run([numbers, summed], tmp_path)
    assert (planned[1].path / "total.txt").read_text() == "10"
    assert planned[0].path.name.startswith("numbers-") and all(p.complete for p in planned)
    assert "[2/2] total: done in" in lines[-1]
    assert json.loads((tmp_path / "run.json").read_text())["stages"]["total"]["complete"]
    # The same stages again: both cached, nothing runs.
    again, lines = run([numbers, summed], tmp_path)
    assert [p.key for p in again] == [p.key for p in planned] and numbers.runs == 1  # type: ignore[attr-defined]
    assert all(": cached" in line for line in lines)
    # One setting changed: that stage and the one that reads it get new keys and run.
    changed, _ = run([Numbers(3), summed], tmp_path)
    assert all(a.key != b.key for a, b in zip(changed, planned, strict=True))
    assert (changed[1].path / "total.txt").read_text() == "6"


def test_a_gate_stops_the_run_after_its_stage(tmp_path: Path) -> None:
    def refuse(out: Path) -> None:
        raise RuntimeError(f"gate: {out.name} is not good enough")

    gated = Step("numbers", 1, (), {"count": 2}, None, {}, Numbers(2).run, gate=refuse)
    summed = Step("total", 1, ("numbers",), None, None, {}, total)
    with pytest.raises(RuntimeError, match="gate: numbers-"):
        run([gated, summed], tmp_path)
    assert not any(tmp_path.glob("total-*"))  # nothing after the gate ran


def test_a_stage_must_come_after_what_it_needs(tmp_path: Path) -> None:
    summed = Step("total", 1, ("numbers",), None, None, {}, total)
    with pytest.raises(ValueError, match="stage total: needs \\['numbers'\\] not planned"):
        runner.plan([summed], tmp_path)


def test_the_run_log_keeps_what_the_terminal_does_not_show(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    def chatty(out: Path, folders: Mapping[str, Path]) -> None:
        logging.getLogger("some.library").info("loading 272 weights")
        logging.getLogger("charter.toy").warning("a warning everyone sees")
        out.mkdir(parents=True, exist_ok=True)

    run([Step("chatty", 1, (), None, None, {}, chatty)], tmp_path)
    log = (tmp_path / runner.RUN_LOG).read_text("utf-8")
    assert "INFO some.library: loading 272 weights" in log and "a warning everyone sees" in log
    assert logging.getLogger().level == logging.WARNING  # the terminal's level is back


def test_a_single_command_runs_its_stage_in_its_own_folder_through_the_runner(
    tmp_path: Path,
) -> None:
    from charter.runs import Run

    out = tmp_path / "revise-out"
    calls: list[int] = []

    def work(rounds: int) -> int:
        run = Run.open(out, "revise", {"rounds": rounds})  # takes the runner's lock again
        calls.append(rounds)
        run.update(counts={}, usage={}, status="complete")
        return len(calls)

    shown: list[str] = []
    assert runner.run_one("revise", 1, {"rounds": 2}, out, lambda: work(2), shown.append) == 1
    record = json.loads((out / runner.STAGE_RECORD).read_text("utf-8"))
    assert record["complete"] and runner.recorded_complete(out, record["key"])
    assert (out / runner.RUN_LOG).exists() and shown[0].startswith("revise: done in ")
    # a single command is not cached: it runs again (and its stage resumes)
    assert runner.run_one("revise", 1, {"rounds": 2}, out, lambda: work(2)) == 2
    # other settings: the record stays the complete run's, and the stage's own check refuses
    with pytest.raises(Exception, match="made with other settings"):
        runner.run_one("revise", 1, {"rounds": 4}, out, lambda: work(4))
    assert json.loads((out / runner.STAGE_RECORD).read_text("utf-8")) == record
