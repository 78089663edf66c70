"""Benchmark: ``revise`` on the embedded engine over 1 vs 2 Ray workers (``--executor ray``).

    python bench/ray_workers.py [--prompts 200] [--rounds 1] [--max-tokens 16] [--record]

Prompts: the bundled ``demo-redteam`` set, then AdvBench's harmful behaviours from
``../shared/data`` when that folder is there (without it, the bundled helpful set: 96 prompts
at most). One local Ray cluster with every core serves both runs; each run is the library call
behind ``charter revise --executor ray --workers N`` (run directory, traces, SFT rows,
manifest) and starts its own actor pool, each worker an embedded llama.cpp with an equal share
of the cores as threads, so the times include the workers' start-up as a user meets it.
Reported per run: wall time, prompts/s, generated tokens/s; then the 2-worker / 1-worker
throughput ratio, and whether both runs made the same ids (and the same texts).

``--record`` adds the rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
from record import record

from charter.backends import GenerationConfig, load_backend
from charter.backends.local import usable_cores
from charter.constitution import Constitution, resolve
from charter.prompts import PromptSet
from charter.ray_exec import RayExecutor
from charter.stages.revise import ReviseConfig
from charter.stages.revise_run import run_revise

ADVBENCH = Path(__file__).resolve().parent.parent.parent / "shared/data/advbench"


def write_prompts(path: Path, n: int) -> str:
    """The first ``n`` prompts of the bundled red-team set, then AdvBench (or helpful)."""
    sets = [PromptSet(["demo-redteam"])]
    advbench = ADVBENCH / "harmful_behaviors.csv"
    if advbench.is_file():  # AdvBench's CSV holds the request in `goal`
        sets.append(PromptSet([str(advbench)], prompt_column="goal"))
        name = "demo-redteam + AdvBench"
    else:
        sets.append(PromptSet(["demo-helpful"]))
        name = "demo-redteam + demo-helpful"
    prompts = itertools.islice(itertools.chain.from_iterable(s() for s in sets), n)
    with path.open("w", encoding="utf-8") as f:
        for prompt in prompts:
            messages = [m.model_dump() for m in prompt.messages]
            f.write(json.dumps({"messages": messages}) + "\n")
    return name


def revise_on(
    workers: int, prompt_file: Path, args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    prompts = PromptSet([str(prompt_file)])
    tokens = GenerationConfig(temperature=0.7, max_tokens=args.max_tokens)
    config = ReviseConfig(rounds=args.rounds, answer=tokens, critique=tokens, revision=tokens)
    start = time.perf_counter()
    summary = run_revise(
        prompts, out=out, constitution=Constitution.load("default"),
        constitution_text=resolve("default").read_text("utf-8"),
        backend=load_backend("local/smollm2-135m"), config=config, progress=False,
        executor=RayExecutor(workers=workers),
    )  # fmt: skip
    seconds = time.perf_counter() - start
    return {
        "workers": workers, "seconds": seconds, "prompts": summary.traces,
        "calls": summary.usage.calls, "generated": summary.usage.completion_tokens,
        "prompt_tokens": summary.usage.prompt_tokens, "cached": summary.usage.cached_tokens,
    }  # fmt: skip


def traces(out: Path) -> dict[str, str]:
    rows = (json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines())
    return {row["id"]: row["final"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    ray.init(num_cpus=usable_cores(), include_dashboard=False, logging_level=logging.WARNING)
    runs, made = [], []
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompts.jsonl"
        source = write_prompts(prompt_file, args.prompts)
        for workers in (1, 2):
            out = Path(tmp) / f"workers-{workers}"
            f = revise_on(workers, prompt_file, args, out)
            made.append(traces(out))
            runs.append(f)
            print(f"{workers} worker(s): {f['prompts']} prompts, {f['calls']} calls in "
                  f"{f['seconds']:.1f} s: {f['prompts'] / f['seconds']:.3f} prompts/s, "
                  f"{f['generated'] / f['seconds']:.1f} generated tokens/s; prompt tokens "
                  f"{f['prompt_tokens']:,} ({f['cached']:,} cached)")  # fmt: skip
    ray.shutdown()
    one, two = runs
    ratio = one["seconds"] / two["seconds"]
    same_ids = made[0].keys() == made[1].keys()
    same_texts = sum(made[0][k] == made[1].get(k) for k in made[0])
    print(
        f"2 workers / 1 worker throughput: {ratio:.2f}×; same ids: {same_ids}; same final "
        f"texts: {same_texts}/{len(made[0])}; {usable_cores()} cores, load {load:.2f}"
    )
    if args.record:
        record("ray_workers.py", [
            f"| {datetime.date.today().isoformat()} | {one['prompts']} ({source}) × "
            f"{args.rounds} round | {args.max_tokens} | {usable_cores()} | "
            f"{one['seconds']:.0f} s / {two['seconds']:.0f} s | "
            f"{one['prompts'] / one['seconds']:.3f} / {two['prompts'] / two['seconds']:.3f} | "
            f"{one['generated'] / one['seconds']:.1f} / {two['generated'] / two['seconds']:.1f} | "
            f"**{ratio:.2f}×** | {'yes' if same_ids else 'NO'}, {same_texts}/{len(made[0])} | "
            f"{load:.1f} |"
        ])  # fmt: skip


if __name__ == "__main__":
    main()
