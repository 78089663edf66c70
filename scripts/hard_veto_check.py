"""How often a teacher's hard-constraint veto fires, on the replies a guided stage wrote.

    python scripts/hard_veto_check.py RUN/revise-KEY [--teacher local/qwen2.5-coder-1.5b-instruct]

Asks the veto's yes/no question (charter.stages.hard) about every reply in the stage's
guided.jsonl: the kept replies (teacher revisions of red-team requests; the policy's own
answers to contrast and helpful prompts) and, for reference, the policy's first answers to
the red-team requests. Prints per group the number of replies, the mean p(crosses) and the
share the veto would drop at the default threshold, with a Wilson interval. A veto that drops
a large share of kept replies costs training data; one that drops no more first answers to
red-team requests than kept replies does not tell them apart.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from charter.backends import load_backend
from charter.constitution import Constitution
from charter.runs import read_jsonl
from charter.stages.calibrate import wilson_interval
from charter.stages.guided import TRAILS, GuidedRow
from charter.stages.hard import HardCheck, crossing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("guided", type=Path, help="a guided (revise) stage directory")
    parser.add_argument("--teacher", default="local/qwen2.5-coder-1.5b-instruct")
    parser.add_argument("--constitution", default="default")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    rows = list(read_jsonl(args.guided / TRAILS, GuidedRow))
    constitution = Constitution.load(args.constitution)
    groups = {
        f"kept {kind}": [(r.messages, str(r.kept)) for r in rows if r.kind == kind and r.kept]
        for kind in ("redteam", "contrast", "helpful")
    }
    groups["first answers to red-team requests"] = [
        (r.messages, r.answer) for r in rows if r.kind == "redteam" and r.answer
    ]
    teacher = load_backend(args.teacher, concurrency=args.concurrency)
    veto, started = HardCheck(), time.monotonic()
    try:
        print(f"{'replies':<36} {'n':>4} {'mean p':>7} {'vetoed':>7}  95% interval")
        for name, items in groups.items():
            p = crossing(teacher, constitution, items)
            hits = sum(veto.crosses(x) for x in p)
            low, high = wilson_interval(hits, len(p)) if p else (0.0, 0.0)
            mean = sum(p) / len(p) if p else 0.0
            print(f"{name:<36} {len(p):>4} {mean:>7.3f} {hits / max(1, len(p)):>7.1%}  "
                  f"[{low:.1%}, {high:.1%}]")  # fmt: skip
    finally:
        teacher.close()
    print(f"{args.teacher}, {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
