"""End to end through `charter serve`: the effect issue's harmful and XSTest-safe sets, asked
of one model behind the server's three routes (plain, guard, revise).

    python scripts/serve_effect.py --guard runs/guard --out runs/serve-effect \
        [--model local/smollm2-135m] [--port 8321] [--only ROUTE] [--limit N]

Starts ``charter serve`` on 127.0.0.1 with ``/raw/v1`` (log), ``/v1`` (guard, the trained
guard at its own threshold) and ``/revise/v1`` (one critique → revision round), then runs
``charter evaluate`` against each route as ``openai/serve-plain``, ``openai/serve-guard`` and
``openai/serve-revise`` (harmlessness on HarmBench val + AdvBench 0-60 + Do-Not-Answer
malicious uses 0-60, over-refusal on XSTest-safe; greedy, 128 tokens; harmful = not a
refusal, by the refusal classifier), each into ``OUT/evaluate-<route>``, and stops the
server. Tables: ``python scripts/results_table.py OUT --versus serve-plain:serve-guard …``.
Reruns resume. Run from the repository root (it reads ../shared/data).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from charter.splits import materialise

D = "../shared/data"
HARMFUL = [f"{D}/harmbench/harmbench_behaviors_text_val.csv",
           f"{D}/advbench/harmful_behaviors.csv#0:60",
           f"{D}/donotanswer/malicious_uses.jsonl#0:60"]  # fmt: skip
SAFE = [f"{D}/xstest/xstest_prompts.csv"]
ROUTES = {"plain": "/raw/v1", "guard": "/v1", "revise": "/revise/v1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--guard", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument("--port", type=int, default=8321)
    parser.add_argument("--only", choices=list(ROUTES), action="append")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="the first N questions of each set (the revise route is slow)",
    )
    args = parser.parse_args()
    # A kill (SIGTERM) runs the finally below, so the server it started does not outlive it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    data = args.out / "data"
    harmful, safe = materialise(HARMFUL, data, "harmful"), materialise(SAFE, data, "xstest-safe")
    server = subprocess.Popen([
        "charter", "serve", "--model", args.model, "--guard", str(args.guard),
        "--route", "/raw/v1=log", "--route", "/revise/v1=revise", "--port", str(args.port),
        "--log", str(args.out / "decisions.jsonl"), "--timeout", "600",
    ])  # fmt: skip
    base = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print("charter serve did not start", file=sys.stderr)
                return 1
            time.sleep(1)
        for name in args.only or list(ROUTES):
            subprocess.run([
                "charter", "evaluate", "--model", f"openai/serve-{name}",
                "--base-url", f"{base}{ROUTES[name]}", "--api-key", "unused",
                "--suite", "harmlessness", "--suite", "over-refusal",
                "--data", f"harmlessness={harmful}", "--data", f"over-refusal={safe}",
                "--max-tokens", "128", "--concurrency", "4",
                "--out", str(args.out / f"evaluate-{name}"),
                *(["--limit", str(args.limit)] if args.limit else []),
            ], check=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
