"""The code suite's revision loop, read from a ``charter evaluate`` folder.

Two tables, shown on the report page and printed by ``scripts/code_costs.py`` (which adds wall
time from the run's log):

- per model: tasks, tasks solved (all tests passed, ``items.jsonl``), model calls and tokens
  per solved task (the answers' ``usage`` in ``answers.jsonl``: for ``MODEL+revise:N`` the
  first answer's, which it shares with the plain model, plus every critique and revision);
- per ``MODEL+revise:N`` model (``code-traces.jsonl``): tasks gained and lost against its plain
  model on all tests, tasks whose first answer failed its visible tests, how many of those
  passed them after the loop and in which round, and how many of those pass all the task's
  tests (the rest fit only what they saw).

The files are read through partial views of their rows, so a corrupt row is one error naming
the file and line.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from charter.runs import read_jsonl
from charter.stages.evaluate.revised import split_revise


class _Item(BaseModel):
    suite: str
    model: str
    key: str
    score: float


class _Answer(BaseModel):
    model: str
    usage: dict[str, int] | None = None


class _Attempt(BaseModel):
    round: int
    status: str


class _Trace(BaseModel):
    task_id: str
    model: str
    attempts: list[_Attempt]


def solved_tasks(folder: Path) -> dict[str, dict[str, bool]]:
    """Per model, each code task's key and whether it passed all its tests."""
    scored: dict[str, dict[str, bool]] = defaultdict(dict)
    for item in read_jsonl(folder / "items.jsonl", _Item):
        if item.suite == "code":
            scored[item.model][item.key] = item.score >= 1.0
    return dict(scored)


def costs(
    folder: Path, models: list[str], scored: dict[str, dict[str, bool]]
) -> list[dict[str, Any]]:
    """Per model: tasks, solved, calls and prompt/generated tokens, summed over its answers."""
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for answer in read_jsonl(folder / "answers.jsonl", _Answer):
        for key, value in (answer.usage or {}).items():
            usage[answer.model][key] += value
    return [
        {"model": model, "tasks": len(scored.get(model, {})),
         "solved": sum(scored.get(model, {}).values()), "calls": usage[model]["calls"],
         "prompt_tokens": usage[model]["prompt_tokens"],
         "completion_tokens": usage[model]["completion_tokens"]}
        for model in models
    ]  # fmt: skip


def trail(folder: Path, scored: dict[str, dict[str, bool]]) -> list[dict[str, Any]]:
    """Per loop model: gained/lost against its plain model, and the visible-test trail."""
    traces: dict[str, list[_Trace]] = defaultdict(list)
    for trace in read_jsonl(folder / "code-traces.jsonl", _Trace):
        traces[trace.model].append(trace)
    rows = []
    for model, own in traces.items():
        plain, loop = scored.get(split_revise(model).base, {}), scored.get(model, {})
        failed = [t for t in own if t.attempts[0].status != "passed"]
        fixed = [t for t in failed if t.attempts[-1].status == "passed"]
        rounds: dict[int, int] = defaultdict(int)
        for t in fixed:
            rounds[t.attempts[-1].round] += 1
        rows.append({
            "model": model, "tasks": len(own),
            "gained": sum(loop[k] and not plain[k] for k in loop if k in plain),
            "lost": sum(plain[k] and not loop[k] for k in loop if k in plain),
            "failed_visible": len(failed), "fixed_visible": len(fixed),
            "fixed_by_round": dict(sorted(rounds.items())),
            "fixed_pass_all": sum(loop.get(t.task_id, False) for t in fixed),
        })  # fmt: skip
    return rows


def code_tables(folder: Path | None, models: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Both tables for an evaluation folder that scored code tasks (empty when it did not),
    each cost row with its tokens per solved task."""
    if folder is None or not (folder / "items.jsonl").is_file():
        return {}
    scored = solved_tasks(folder)
    if not scored:
        return {}
    rows = costs(folder, [m for m in models if m in scored], scored)
    for row in rows:
        n = max(1, row["solved"])
        row["tokens_per_solved"] = (row["prompt_tokens"] + row["completion_tokens"]) / n
        row["generated_per_solved"] = row["completion_tokens"] / n
    return {"costs": rows, "trail": trail(folder, scored)}
