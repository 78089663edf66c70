"""The code loop's tables: `scripts/code_costs.py` (gained/lost, visible-test trail) and the same
tables as `charter report` reads them (`charter.report.code`)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

PLAIN, LOOP = "local/m", "local/m+revise:3:critique-plain:x4"


def attempts(*statuses: str) -> list[dict[str, object]]:
    return [{"round": i, "status": s} for i, s in enumerate(statuses)]


def write_run(folder: Path) -> None:
    # t1 passes at once; t2 fixed in round 1 and right; t3 fixed in round 2 but fits only
    # its visible test; t4 never fixed; t5: the plain answer passes, the loop's does not
    # (a lost task, as when a docstring example is wrong)
    plain = {"t1": 1.0, "t2": 0.0, "t3": 0.0, "t4": 0.0, "t5": 1.0}
    loop = {"t1": 1.0, "t2": 1.0, "t3": 0.0, "t4": 0.0, "t5": 0.0}
    items = [
        {"suite": "code", "model": m, "key": k, "score": v}
        for m, scores in ((PLAIN, plain), (LOOP, loop))
        for k, v in scores.items()
    ]
    traces = [
        {"task_id": "t1", "model": LOOP, "attempts": attempts("passed")},
        {"task_id": "t2", "model": LOOP, "attempts": attempts("failed", "passed")},
        {"task_id": "t3", "model": LOOP, "attempts": attempts("failed", "failed", "passed")},
        {"task_id": "t4", "model": LOOP, "attempts": attempts("failed", "timeout", "failed")},
        {"task_id": "t5", "model": LOOP, "attempts": attempts("failed", "failed")},
    ]
    for name, rows in (("items.jsonl", items), ("code-traces.jsonl", traces)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")


def test_trail_counts_gains_losses_and_visible_fixes(tmp_path: Path) -> None:
    write_run(tmp_path)
    script = load_script("code_costs")
    (row,) = script.trail(tmp_path, script.solved_tasks(tmp_path))
    assert row == {
        "model": LOOP, "tasks": 5, "gained": 1, "lost": 1, "failed_visible": 4,
        "fixed_visible": 2, "fixed_by_round": {1: 1, 2: 1}, "fixed_pass_all": 1,
    }  # fmt: skip


def test_the_report_reads_the_same_tables_and_names_a_corrupt_row(tmp_path: Path) -> None:
    """charter report's code tables are the script's; a damaged row is one error naming the
    file and line, not a traceback inside the page."""
    import pytest

    from charter.errors import CharterError
    from charter.report.code import code_tables

    write_run(tmp_path)
    (tmp_path / "answers.jsonl").write_text(
        json.dumps({"model": LOOP, "usage": {"calls": 7, "prompt_tokens": 900,
                                             "completion_tokens": 100}}) + "\n",
        "utf-8",
    )  # fmt: skip
    tables = code_tables(tmp_path, [PLAIN, LOOP])
    script = load_script("code_costs")
    assert tables["trail"] == script.trail(tmp_path, script.solved_tasks(tmp_path))
    assert [(r["solved"], r["calls"], r["tokens_per_solved"]) for r in tables["costs"]] == [
        (2, 0, 0.0), (2, 7, 500.0)
    ]  # fmt: skip
    with (tmp_path / "code-traces.jsonl").open("a", encoding="utf-8") as f:
        f.write('{"task_id": "t6", "model": "m"}\n')
    with pytest.raises(CharterError, match=r"code-traces\.jsonl:6: not a valid"):
        code_tables(tmp_path, [PLAIN, LOOP])


def test_wall_time_of_a_log_begun_before_answering_lines_and_resumed_after(tmp_path: Path) -> None:
    """A run begun by an older Charter (server starts only: the first stretch the first
    model's, the rest the last's) and resumed by one that names who answers: both parts
    count, and the hours between the sessions do not."""
    wall_times = load_script("code_costs").wall_times
    start = "INFO charter.backends.local: starting llama.cpp on m.gguf (1 slots)"
    log = tmp_path / "run.log"
    log.write_text("\n".join([
        f"2026-12-06 05:00:00,000 {start}", "2026-12-06 05:06:00,000 INFO httpx: POST",
        f"2026-12-06 05:06:01,000 {start}", "2026-12-06 05:40:01,000 INFO httpx: POST",
        f"2026-12-06 19:00:00,000 INFO charter.stages.evaluate.run: answering as {LOOP}: 9 of 9",
        f"2026-12-06 19:00:01,000 {start}", "2026-12-06 20:00:00,000 INFO httpx: POST",
    ]) + "\n", "utf-8")  # fmt: skip
    assert wall_times(log, [PLAIN, LOOP]) == {PLAIN: 360.0, LOOP: 2040.0 + 3600.0}
