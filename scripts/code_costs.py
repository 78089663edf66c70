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


def costs(folder: Path) -> list[dict[str, Any]]:
    results = json.loads((folder / "results.json").read_text("utf-8"))
    models = list(results["models"])
    solved: dict[str, int] = defaultdict(int)
    tasks: dict[str, int] = defaultdict(int)
    for line in (folder / "items.jsonl").read_text("utf-8").splitlines():
        item = json.loads(line)
        if item["suite"] == "code":
            tasks[item["model"]] += 1
            solved[item["model"]] += int(item["score"] >= 1.0)
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
            "model": model, "tasks": tasks[model], "solved": solved[model],
            "calls": usage[model]["calls"], "prompt_tokens": usage[model]["prompt_tokens"],
            "completion_tokens": usage[model]["completion_tokens"], "wall_s": round(seconds, 1),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    print("| run | model | solved | calls | tokens per solved (generated) | wall time per solved |")
    print("|---|---|---|---|---|---|")
    for folder in args.folders:
        for row in costs(folder):
            n = max(1, row["solved"])
            tokens = row["prompt_tokens"] + row["completion_tokens"]
            print(f"| {folder.name} | {row['model']} | {row['solved']} of {row['tasks']} "
                  f"| {row['calls']} | {tokens / n:,.0f} ({row['completion_tokens'] / n:,.0f}) "
                  f"| {row['wall_s'] / n:.1f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
