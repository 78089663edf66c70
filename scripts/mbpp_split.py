"""Write one of MBPP's standard splits as a task file Charter reads (JSONL, one task a line).

MBPP's authors split its tasks by id: prompt 1-10, test 11-510, validation 511-600,
train 601-974. The sanitized subset (427 tasks, ``sanitized-mbpp.json``) keeps the same ids:
its test split is 257 tasks. Evaluate on ``test``; write verified revisions from ``train``
(or ``validation``), never from what is evaluated:

    python scripts/mbpp_split.py test ../shared/data/mbpp/sanitized-mbpp.json mbpp-test.jsonl
    charter evaluate --suite code --data code=mbpp-test.jsonl --model M --model M+revise:3
    python scripts/mbpp_split.py train ../shared/data/mbpp/mbpp.jsonl mbpp-train.jsonl
    charter revise --verify --prompts mbpp-train.jsonl --model TEACHER --out runs/code-sft
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}


def read(path: Path) -> list[dict[str, object]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        rows: list[dict[str, object]] = json.loads(text)
        return rows
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("split", choices=sorted(SPLITS))
    parser.add_argument("source", type=Path, help="mbpp.jsonl or sanitized-mbpp.json")
    parser.add_argument("out", type=Path, help="the task file to write (JSONL)")
    args = parser.parse_args()
    low, high = SPLITS[args.split]
    rows = [row for row in read(args.source) if low <= int(str(row["task_id"])) <= high]
    args.out.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    print(f"{len(rows)} {args.split} tasks (ids {low}-{high}) -> {args.out}")


if __name__ == "__main__":
    main()
