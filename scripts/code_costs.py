"""Tokens and wall time per solved task, per model, from a `charter evaluate --suite code` run.

    python scripts/code_costs.py runs/code/EVAL [EVAL …]

For each model of each run folder: tasks, tasks solved (``items.jsonl``), model calls and
tokens (the answers' ``usage``: for ``MODEL+revise:N`` the first answer's, which it shares
with the plain model, plus every critique and revision), and wall time read from
``run.log``: each stretch from a llama.cpp server's start to the last line logged before the
next start belongs to the model answering then (named by the run's "answering as" lines;
before the first of those, as in logs older than them, the first stretch is the first
model's and the rest the last model's: a run begun by an older Charter and resumed by a
newer one has both). A loop model's wall time adds the plain model's, whose answers it
starts from, so tokens and time count the same work. A run killed and resumed redoes at
most the batch in flight (16 tasks), which the wall time includes.

A second table follows for each ``MODEL+revise:N`` model, from ``code-traces.jsonl`` and
``items.jsonl``: tasks gained and lost against the plain model (all tests), tasks whose first
answer failed its visible tests, how many of those passed them after the loop and in which
round, and how many of those pass all the task's tests (the rest fit only what they saw).
Both tables but the wall time are :mod:`charter.report.code`'s, which `charter report` shows.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from charter.report.code import costs as token_costs
from charter.report.code import solved_tasks, trail
from charter.stages.evaluate.revised import split_revise

__all__ = ["costs", "solved_tasks", "trail", "wall_times"]

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ANSWERING = re.compile(r"answering as (\S+):")
START = "starting llama.cpp"


def wall_times(log: Path, models: list[str]) -> dict[str, float]:
    """Seconds of answering per model (the module docstring says how stretches are named)."""
    lines = log.read_text("utf-8", errors="replace").splitlines()
    named = False  # an "answering as" line seen: from then on every stretch is named
    seconds: dict[str, float] = defaultdict(float)
    model: str | None = None
    begun = last = None
    starts = 0
    for line in lines:
        stamp = STAMP.match(line)
        if stamp is None:
            continue
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        found = ANSWERING.search(line)
        named = named or found is not None
        legacy_start = not named and START in line
        if found or legacy_start:
            if model is not None and begun is not None and last is not None:
                seconds[model] += (last - begun).total_seconds()
            starts += legacy_start
            model = found.group(1) if found else models[0] if starts == 1 else models[-1]
            begun = at
        last = at
    if model is not None and begun is not None and last is not None:
        seconds[model] += (last - begun).total_seconds()
    return dict(seconds)


def costs(folder: Path, scored: dict[str, dict[str, bool]]) -> list[dict[str, Any]]:
    """The report's cost rows (charter.report.code.costs), each with its wall time."""
    models = list(json.loads((folder / "results.json").read_text("utf-8"))["models"])
    wall = wall_times(folder / "run.log", models)
    rows = token_costs(folder, models, scored)
    for row in rows:
        model = row["model"]
        plain = split_revise(model).base
        own = wall.get(model, 0.0)
        row["wall_s"] = round(own + (wall.get(plain, 0.0) if plain != model else 0.0), 1)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    scored = {folder: solved_tasks(folder) for folder in args.folders}
    print("| run | model | solved | calls | tokens per solved (generated) | wall time per solved |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        for row in costs(folder, scored[folder]):
            n = max(1, row["solved"])
            tokens = row["prompt_tokens"] + row["completion_tokens"]
            print(f"| {folder.name} | {row['model']} | {row['solved']} of {row['tasks']} "
                  f"| {row['calls']} | {tokens / n:,.0f} ({row['completion_tokens'] / n:,.0f}) "
                  f"| {row['wall_s'] / n:.1f} s |")  # fmt: skip
    print()
    print(
        "| run | loop model | gained | lost | failed visible tests first | passed them after "
        "(by round) | of those, pass all tests |"
    )
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        for row in trail(folder, scored[folder]):
            by_round = ", ".join(f"{n} in round {r}" for r, n in row["fixed_by_round"].items())
            print(f"| {folder.name} | {row['model']} | {row['gained']} | {row['lost']} "
                  f"| {row['failed_visible']} of {row['tasks']} | {row['fixed_visible']} "
                  f"({by_round or 'none'}) | {row['fixed_pass_all']} |")  # fmt: skip


if __name__ == "__main__":
    main()
