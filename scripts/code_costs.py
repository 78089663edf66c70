"""Tokens and wall time per solved task, per model, from a `charter evaluate --suite code` run.

    python scripts/code_costs.py runs/code/EVAL [EVAL …]

For each model of each run folder: tasks, tasks solved (``items.jsonl``), model calls and
tokens (the answers' ``usage``: for ``MODEL+revise:N`` the first answer's, which it shares
with the plain model, plus every critique and revision), and wall time read from
``run.log``: each stretch from a llama.cpp server's start to the last line logged before the
next start belongs to the model answering then (named by the run's "answering as" lines;
in logs older than those, the first stretch is the first model's and the rest the last
model's). A loop model's wall time adds the plain model's, whose answers it starts from, so
tokens and time count the same work. A run killed and resumed redoes at most the batch in
flight (16 tasks), which the wall time includes.

A second table follows for each ``MODEL+revise:N`` model, from ``code-traces.jsonl`` and
``items.jsonl``: tasks gained and lost against the plain model (all tests), tasks whose first
answer failed its visible tests, how many of those passed them after the loop and in which
round, and how many of those pass all the task's tests (the rest fit only what they saw).
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
ANSWERING = re.compile(r"answering as (\S+):")
START = "starting llama.cpp"


def wall_times(log: Path, models: list[str]) -> dict[str, float]:
    """Seconds of answering per model (the module docstring says how stretches are named)."""
    lines = log.read_text("utf-8", errors="replace").splitlines()
    named = any(ANSWERING.search(line) for line in lines)
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


def solved_tasks(folder: Path) -> dict[str, dict[str, bool]]:
    """Per model, each code task's key and whether it passed all its tests."""
    scored: dict[str, dict[str, bool]] = defaultdict(dict)
    for line in (folder / "items.jsonl").read_text("utf-8").splitlines():
        item = json.loads(line)
        if item["suite"] == "code":
            scored[item["model"]][item["key"]] = item["score"] >= 1.0
    return scored


def costs(folder: Path, scored: dict[str, dict[str, bool]]) -> list[dict[str, Any]]:
    results = json.loads((folder / "results.json").read_text("utf-8"))
    models = list(results["models"])
    usage: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in (folder / "answers.jsonl").read_text("utf-8").splitlines():
        answer = json.loads(line)
        for key, value in (answer.get("usage") or {}).items():
            usage[answer["model"]][key] += int(value)
    wall = wall_times(folder / "run.log", models)
    rows = []
    for model in models:
        own = wall.get(model, 0.0)
        plain = model.split("+revise:")[0]
        seconds = own + (wall.get(plain, 0.0) if plain != model else 0.0)
        rows.append({
            "model": model, "tasks": len(scored[model]), "solved": sum(scored[model].values()),
            "calls": usage[model]["calls"], "prompt_tokens": usage[model]["prompt_tokens"],
            "completion_tokens": usage[model]["completion_tokens"], "wall_s": round(seconds, 1),
        })  # fmt: skip
    return rows


def trail(folder: Path, scored: dict[str, dict[str, bool]]) -> list[dict[str, Any]]:
    """Per loop model: gained/lost against its plain model, and the visible-test trail."""
    traces: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in (folder / "code-traces.jsonl").read_text("utf-8").splitlines():
        trace = json.loads(line)
        traces[trace["model"]].append(trace)
    rows = []
    for model, own in traces.items():
        plain, loop = scored[model.split("+revise:")[0]], scored[model]
        failed = [t for t in own if t["attempts"][0]["status"] != "passed"]
        fixed = [t for t in failed if t["attempts"][-1]["status"] == "passed"]
        rounds: dict[int, int] = defaultdict(int)
        for t in fixed:
            rounds[t["attempts"][-1]["round"]] += 1
        rows.append({
            "model": model, "tasks": len(own),
            "gained": sum(loop[k] and not plain[k] for k in loop if k in plain),
            "lost": sum(plain[k] and not loop[k] for k in loop if k in plain),
            "failed_visible": len(failed), "fixed_visible": len(fixed),
            "fixed_by_round": dict(sorted(rounds.items())),
            "fixed_pass_all": sum(loop.get(t["task_id"], False) for t in fixed),
        })  # fmt: skip
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
