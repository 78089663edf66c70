"""Benchmark: what a solved code task costs, plain answers vs the verified revision loop.

The same model answers the same tasks once (greedy); then the critique → revision loop of
``charter revise --verify`` and ``MODEL+revise:N`` (:func:`charter.stages.code_revise.
verify_revise`, the ``code`` constitution, at most N rounds, stopping when the visible tests
pass) starts from those answers. Both sides are scored on all of each task's tests. The
loop's side pays for the plain answers too, so its cost is the whole bill. Reported per
solved task: tokens (prompt + completion, as the engine counts them; cached prompt tokens
included) and wall seconds, and the loop's cost as a multiple of the plain side's.

Run it on tasks no reported result uses, e.g. MBPP's validation split:

    python scripts/mbpp_split.py validation ../shared/data/mbpp/mbpp.jsonl /tmp/mbpp-val.jsonl
    python bench/code_revise.py --tasks /tmp/mbpp-val.jsonl --n 40 \
        --model local/qwen2.5-coder-0.5b-instruct [--rounds 3] [--record]

``--record`` adds the row to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

from record import record

from charter.backends import GenerationConfig, load_backend
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.records import Message, Usage
from charter.stages.code_revise import FEEDBACKS, SAMPLED_TEMPERATURE, revision_for, verify_revise
from charter.stages.evaluate.code import load_code_tasks, run_tasks
from charter.stages.evaluate.revised import split_revise


def loop_name(text: str) -> str:
    """``FEEDBACK[:xK][:values]``, checked as the evaluation checks
    ``MODEL+revise:N:FEEDBACK:xK:values``."""
    try:
        split_revise(f"m+revise:1:{text}")
    except CharterError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def tokens(usage: Usage) -> int:
    return usage.prompt_tokens + usage.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=Path, required=True, help="HumanEval or MBPP JSONL")
    parser.add_argument("--n", type=int, default=40, help="the first N tasks")
    parser.add_argument("--model", default="local/qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument(
        "--feedback",
        nargs="+",
        default=["critique"],
        type=loop_name,
        help="one loop per kind of feedback, all from the same plain answers: "
        f"FEEDBACK[:xK][:values] ({', '.join(FEEDBACKS)}; :xK draws K revisions a round at "
        f"temperature {SAMPLED_TEMPERATURE}; :values has a failed visible assert say what the "
        "code gave; the evaluation's MODEL+revise:N:FEEDBACK:xK:values)",
    )
    parser.add_argument("--revision-temperature", type=float, default=0.0)
    parser.add_argument("--record", action="store_true", help="add the row to the docs")
    parser.add_argument("--traces", type=Path, help="write every loop's traces here (JSONL)")
    args = parser.parse_args()
    tasks = load_code_tasks(args.tasks)[: args.n]
    config = GenerationConfig(temperature=0.0, max_tokens=args.max_tokens, seed=0)
    backend = load_backend(args.model)
    backend.generate([[Message(role="user", content="Say hi.")]], config)  # load the model

    start = time.perf_counter()
    replies = backend.generate([[Message(role="user", content=t.request)] for t in tasks], config)
    plain_s = time.perf_counter() - start
    texts = [r.text for r in replies]
    plain_tokens = sum(tokens(r.usage()) for r in replies)
    plain_solved = sum(o.passed for o in run_tasks(tasks, texts))

    revision = config.model_copy(update={"temperature": args.revision_temperature})
    sides = [("plain", plain_solved, plain_tokens, plain_s)]
    temperature = {}  # each loop's revision temperature, for the recorded row
    for feedback in args.feedback:
        spec = split_revise(f"m+revise:{args.rounds}:{feedback}")
        loop_revision = revision_for(revision, spec.samples)
        start = time.perf_counter()
        traces = verify_revise(backend, tasks, Constitution.load("code"), rounds=args.rounds,
                               answers=texts, answer=config, feedback=spec.feedback,
                               revision=loop_revision, samples=spec.samples,
                               values=spec.values)  # fmt: skip
        loop_s = plain_s + time.perf_counter() - start
        if args.traces:
            with args.traces.open("a", encoding="utf-8") as f:
                f.writelines(t.model_copy(update={"model": feedback}).model_dump_json() + "\n"
                             for t in traces)  # fmt: skip
        loop_tokens = plain_tokens + sum(tokens(t.usage) for t in traces)
        loop_solved = sum(o.passed for o in run_tasks(tasks, [t.kept.answer for t in traces]))
        sides.append((feedback, loop_solved, loop_tokens, loop_s))
        temperature[feedback] = loop_revision.temperature
    backend.close()

    def per(total: float, solved: int) -> float:
        return total / solved if solved else float("nan")

    print(f"{len(tasks)} tasks from {args.tasks.name}, {args.model}, +revise:{args.rounds}, "
          f"revision temperature {args.revision_temperature} "
          f"({SAMPLED_TEMPERATURE} in :xK loops)")  # fmt: skip
    print(f"{'side':<15} {'solved':>6} {'tokens':>8} {'seconds':>8} {'tok/solved':>10} "
          f"{'s/solved':>9}")  # fmt: skip
    for name, solved, toks, secs in sides:
        print(f"{name:<15} {solved:>6} {toks:>8} {secs:>8.1f} {per(toks, solved):>10.0f} "
              f"{per(secs, solved):>9.2f}")  # fmt: skip
    rows = []
    for name, solved, toks, secs in sides[1:]:
        time_ratio = per(secs, solved) / per(plain_s, plain_solved)
        token_ratio = per(toks, solved) / per(plain_tokens, plain_solved)
        print(f"{name}: per solved task, {time_ratio:.2f}× the time and {token_ratio:.2f}× the "
              f"tokens of plain answers")  # fmt: skip
        rows.append(
            f"| {datetime.date.today().isoformat()} | {args.model} | {args.tasks.name} | "
            f"{len(tasks)} | {args.rounds}, {name}, T={temperature[name]} | "
            f"{plain_solved} | {per(plain_tokens, plain_solved):.0f} | "
            f"{per(plain_s, plain_solved):.1f} | {solved} | {per(toks, solved):.0f} | "
            f"{per(secs, solved):.1f} | {time_ratio:.2f}× | {token_ratio:.2f}× |"
        )
    if args.record:
        record("code_revise.py", rows)


if __name__ == "__main__":
    main()
