"""Benchmark: Charter's SL-CAI against the usual ways of doing it, on the same engine.

    python bench/versus.py [--prompts 4] [--rounds 4] [--max-tokens 64] [--record]

Three sides do the same work — the same red-team prompts, the same embedded model in a fresh
llama.cpp server with the same settings, an answer and then ``--rounds`` critique→revision
steps per prompt, each call capped at ``--max-tokens``:

- **Charter**: ``run_revise`` (the library call behind ``charter revise``).
- **LangChain**: ``ConstitutionalChain`` (langchain-classic) through ``ChatOpenAI``, one
  prompt after another, with ``--rounds`` principles — the same number Charter applies. It
  runs in a virtual environment this script creates (``bench/.venv-langchain``, from PyPI),
  not in Charter's; see bench/langchain_side.py.
- **Naive**: Charter's own requests sent one at a time with llama.cpp's prompt cache off
  (``cache_prompt: false``), as a loop over an uncached API would.

Tokens are reported with the times (generated, and prompt tokens the engine had to
evaluate, i.e. not served from its cache), since the prompts differ between Charter and
LangChain: LangChain's few-shot block is its own.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from engine import Figures, bare_server, charter_revise, rate, raw_replay
from record import record

from charter.backends.local import default_slots
from charter.constitution import Constitution
from charter.prompts import PromptSet

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv-langchain"
PACKAGES = ["langchain-classic", "langchain-openai"]


def langchain_python() -> Path:
    """The benchmark's LangChain environment, created on first use."""
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} with {' '.join(PACKAGES)} …", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    return python


def langchain_side(n: int, rounds: int, max_tokens: int, slots: int, profile: bool) -> Figures:
    python = langchain_python()
    constitution = Constitution.load("default")
    revisable = [p for p in constitution.principles if p.critique and p.revision]
    prompts = [p.messages[-1].content for p in PromptSet(["demo-redteam"], limit=n)()]
    server = bare_server(slots)
    job = {
        "base_url": f"{server.listening_address}/v1", "prompts": prompts,
        "principles": [{"name": p.id, "critique": p.critique, "revision": p.revision}
                       for p in revisable[:rounds]],
        "max_tokens": max_tokens, "temperature": 0.7,
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    out = subprocess.run(
        [str(python), str(HERE / "langchain_side.py"), f.name, *(["--profile"] * profile)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    Path(f.name).unlink()
    if profile:
        print(out.stderr)
    del server
    figures: Figures = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def evaluated(side: Figures) -> int:
    return int(side["prompt_tokens"]) - int(side["cached_tokens"])


def where_time_goes(
    sides: dict[str, Figures],
) -> list[tuple[str, float, float, float, float, float]]:
    """Per side: wall seconds, the engine's prompt and generation seconds, the rest, and the
    engine's milliseconds per generated token.

    The engine's seconds are the sums of llama.cpp's ``timings`` over every reply; with one
    slot the requests run one after another, so wall − engine is the time spent outside the
    engine (client library, HTTP, Charter or LangChain themselves).
    """
    rows = []
    for name, f in sides.items():
        prompt, generation = f["prompt_ms"] / 1000, f["predicted_ms"] / 1000
        rest = f["seconds"] - prompt - generation
        per_token = 1000 * generation / f["completion_tokens"]
        rows.append((name, f["seconds"], prompt, generation, rest, per_token))
    return rows


def versions() -> str:
    python = langchain_python()
    code = "import importlib.metadata as m; print(m.version('langchain-classic'))"
    return subprocess.run([str(python), "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--record", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the LangChain side")
    args = parser.parse_args()
    slots = default_slots()
    version = versions()
    sides: dict[str, Figures] = {}
    sides["LangChain"] = langchain_side(
        args.prompts, args.rounds, args.max_tokens, slots, args.profile
    )
    sides["Charter"], waves = charter_revise(args.prompts, args.rounds, args.max_tokens, slots)
    sides["naive"] = raw_replay(waves, 1, cache_prompt=False)
    ours = sides["Charter"]
    print(f"{'side':<10} {'seconds':>8} {'calls':>6} {'generated':>10} {'prompt':>8} "
          f"{'evaluated':>10} {'tokens/s':>9} {'time vs Charter':>16}")  # fmt: skip
    for name, f in sides.items():
        print(f"{name:<10} {f['seconds']:8.1f} {f['calls']:6d} {f['completion_tokens']:10d} "
              f"{f['prompt_tokens']:8d} {evaluated(f):10d} {rate(f):9.1f} "
              f"{f['seconds'] / ours['seconds']:15.2f}×")  # fmt: skip
    profile = where_time_goes(sides)
    print(f"\n{'side':<10} {'seconds':>8} {'engine: prompt':>15} {'engine: generate':>17} "
          f"{'outside engine':>15} {'ms/generated token':>19}")  # fmt: skip
    for name, wall, prompt, generation, rest, per_token in profile:
        print(f"{name:<10} {wall:8.1f} {prompt:15.1f} {generation:17.1f} {rest:15.1f} "
              f"{per_token:19.1f}")  # fmt: skip
    if "client_cpu_s" in sides["LangChain"]:
        print(f"LangChain's own process used {sides['LangChain']['client_cpu_s']:.1f} s of CPU")
    if args.record:
        day = datetime.date.today().isoformat()
        record("versus.py", [
            f"| {day} | {args.prompts} × {args.rounds} | {args.max_tokens} | {name}"
            f"{f' (langchain-classic {version})' if name == 'LangChain' else ''} | "
            f"{f['seconds']:.1f} | {f['calls']} | {f['completion_tokens']:,} | "
            f"{f['prompt_tokens']:,} | {evaluated(f):,} | {rate(f):.1f} | "
            f"**{f['seconds'] / ours['seconds']:.2f}×** |"
            for name, f in sides.items()
        ])  # fmt: skip
        record("versus.py profile", [
            f"| {day} | {name} | {wall:.1f} | {prompt:.1f} ({100 * prompt / wall:.0f}%) | "
            f"{generation:.1f} ({100 * generation / wall:.0f}%) | {rest:.1f} "
            f"({100 * rest / wall:.0f}%) | {per_token:.1f} |"
            for name, wall, prompt, generation, rest, per_token in profile
        ])  # fmt: skip


if __name__ == "__main__":
    main()
