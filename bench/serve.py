"""Benchmark: what `charter serve` adds to a request, and its throughput under 16 clients.

One server on loopback, three routes over the same backend: ``/log/v1`` (the bare backend
behind HTTP, no check), ``/v1`` (guard: the trained request guard of ``charter train guard``)
and, for reference, the backend called in-process with no server at all. The backend is
instant (a fixed reply, no model), so what is measured is the layer itself: HTTP, the
decision log, the metrics and the guard's encoder. Each route gets ``--requests`` requests
from 1, then 16 concurrent clients (``--clients``; httpx), with prompts from XSTest so the encoder
sees real lengths; reported per route: latency p50 and p95 (ms) and throughput
(requests/s), and the guard's added p50 and p95 against the log route measured in the same
run. Model generation time comes on top of every figure and is the same on every route.

    python bench/serve.py --guard runs/guard [--requests 400] [--clients 1 16] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from record import record

from charter.backends.base import Completion, GenerationConfig
from charter.constitution import Constitution
from charter.records import Message
from charter.serve.app import create_app, in_background
from charter.serve.layer import HeadGuard, Layer, ServeConfig
from charter.splits import source_prompts, user_text
from charter.stages.guard import GuardHead

PROMPTS = "../shared/data/xstest/xstest_prompts.csv"


class Instant:
    """A backend that answers at once: the benchmark measures the layer, not a model."""

    name = "bench/instant"

    def generate(self, conversations: Sequence[Any], config: GenerationConfig) -> list[Any]:
        return [Completion(text="Here is an answer. It has two sentences.", prompt_tokens=8,
                           completion_tokens=8) for _ in conversations]  # fmt: skip

    def choice_logprobs(self, conversation: Any, choices: Sequence[str]) -> list[float]:
        return [-1.0 for _ in choices]

    def close(self) -> None:
        return None


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def load(url: str, prompts: list[str], clients: int) -> tuple[list[float], float]:
    """Latencies (ms) of every request and the requests per second, ``clients`` at a time."""

    def one(client: httpx.Client, text: str) -> float:
        start = time.perf_counter()
        r = client.post(url, json={"messages": [{"role": "user", "content": text}]})
        r.raise_for_status()
        return 1000 * (time.perf_counter() - start)

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        one(client, "warm-up")
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            latencies = list(pool.map(lambda t: one(client, t), prompts))
        return latencies, len(prompts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guard", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    texts = [user_text(p) for p in source_prompts(PROMPTS)]
    prompts = [texts[i % len(texts)] for i in range(args.requests)]
    head = GuardHead(args.guard)
    head.probabilities(["warm-up"])
    guard = HeadGuard(head, lambda answers: [0.0 for _ in answers])
    config = ServeConfig(routes={"/v1": "guard", "/log/v1": "log"},
                         request_threshold=head.threshold)  # fmt: skip
    layer = Layer(Instant(), Constitution.load("default"), config, guard=guard)
    results: dict[tuple[str, int], tuple[list[float], float]] = {}
    start = time.perf_counter()
    in_process = []
    for text in prompts:
        t = time.perf_counter()
        layer.respond("log", [Message(role="user", content=text)], GenerationConfig())
        in_process.append(1000 * (time.perf_counter() - t))
    results[("backend in-process", 1)] = (in_process,
                                          len(prompts) / (time.perf_counter() - start))  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        app = create_app(layer, model_name="bench", log=Path(folder) / "decisions.jsonl")
        with in_background(app) as base:
            for clients in args.clients:
                for name, route in (("serve, log", "/log/v1"), ("serve, guard", "/v1")):
                    url = f"{base}{route}/chat/completions"
                    results[(name, clients)] = load(url, prompts, clients)
    table = {key: (percentile(lat, 50), percentile(lat, 95), rps)
             for key, (lat, rps) in results.items()}  # fmt: skip
    rows = []
    day = datetime.date.today().isoformat()
    for (name, clients), (p50, p95, rps) in table.items():
        print(f"{name:20s} {clients:3d} clients  p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  "
              f"{rps:7.1f} requests/s")  # fmt: skip
        rows.append(f"| {day} | {name} | {clients} | {args.requests} | {p50:.1f} | {p95:.1f} | "
                    f"{rps:.0f} |")  # fmt: skip
    for clients in args.clients:
        log50, log95, _ = table[("serve, log", clients)]
        g50, g95, _ = table[("serve, guard", clients)]
        print(f"the guard adds {g50 - log50:.2f} ms p50, {g95 - log95:.2f} ms p95 "
              f"({clients} clients, {args.requests} requests)")  # fmt: skip
        rows.append(f"| {day} | guard − log | {clients} | | +{g50 - log50:.1f} | "
                    f"+{g95 - log95:.1f} | |")  # fmt: skip
    if args.record:
        record("serve.py", rows)


if __name__ == "__main__":
    main()
