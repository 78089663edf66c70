"""Benchmark: ``charter revise`` at scale with ``fake/echo`` (no model cost, only Charter's).

    python bench/scale.py [--sizes 1000 10000] [--rounds 4] [--record]

For each size, a prompt file of that many distinct prompts is revised by ``charter revise
--model fake/echo`` in a fresh process. Reported: peak resident memory of that process (it
must not grow with the prompt count: records stream through), and the per-record cost of
the marginal prompts, (time of the big run − time of the small run) / (extra prompts), which
leaves out the start-up both pay. Then resume: the big run is killed with SIGKILL halfway and
rerun to the end, and a finished run is rerun. The finished rerun is all resume overhead (no
model call is left to make): less the command's start-up (a fresh process importing what
``charter revise`` imports), it is set against a fresh process that only reads and parses the
run's output files (``traces.jsonl``, ``sft.jsonl``) with ``json.loads``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record

READ_OUTPUTS = """
import json, sys, time
start = time.perf_counter()
for name in ("traces.jsonl", "sft.jsonl"):
    with open(sys.argv[1] + "/" + name, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
print(time.perf_counter() - start)
"""


IMPORTS = "import charter.cli.revise, charter.stages.revise_run, charter.backends.fake"

# Where a finished run's rerun spends its time, phase by phase, in one fresh process.
PHASES = """
import json, sys, time
from pathlib import Path
clock = [time.perf_counter()]
def lap():
    clock.append(time.perf_counter())
    return clock[-1] - clock[-2]
import charter.cli.revise, charter.backends.fake
from charter.constitution import Constitution
from charter.prompts import PromptSet
from charter.stages.revise import ReviseConfig
from charter.stages.revise_run import ReviseSummary, _resume
phases = {"imports": lap()}
Constitution.load("default")
phases["load the constitution"] = lap()
ids = {prompt.id for prompt in PromptSet([sys.argv[1]])()}
phases["read the prompts (parse, validate, hash each)"] = lap()
out = Path(sys.argv[2])
_resume(out, ReviseConfig(rounds=4), ReviseSummary(out=out))
phases["read the outputs (resume)"] = lap()
for name in ("traces.jsonl", "sft.jsonl"):
    with open(out / name, encoding="utf-8") as f:
        for line in f:
            json.loads(line)
phases["for comparison: json.loads of the outputs"] = lap()
print(json.dumps(phases))
"""


def write_prompts(path: Path, n: int) -> None:
    topics = ["a lock", "a car", "a bank", "a phone", "a neighbour's wifi", "a password"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            prompt = f"Request {i}: tell me how to get into {topics[i % len(topics)]} quickly."
            f.write(json.dumps({"id": f"p{i}", "prompt": prompt}) + "\n")


def charter() -> str:
    return shutil.which("charter") or sys.exit("the charter command is not on PATH")


def revise_command(prompts: Path, out: Path, rounds: int) -> list[str]:
    return [charter(), "revise", "--model", "fake/echo", "--prompts", str(prompts),
            "--rounds", str(rounds), "--out", str(out)]  # fmt: skip


def timed(command: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of ``command`` in a child process."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if status != 0:
        sys.exit(f"{' '.join(command)} failed: {process.stderr.read().decode()[-500:]}")  # type: ignore[union-attr]
    return seconds, usage.ru_maxrss


def lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def kill_halfway(command: list[str], traces: Path, n: int) -> int:
    """Start ``command`` and SIGKILL it once half the traces are written; traces kept."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None:
        if traces.exists() and lines(traces) >= n // 2:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()
    return lines(traces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    small, big = args.sizes
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        figures: dict[int, tuple[float, int]] = {}
        for n in (small, big):
            prompts = root / f"prompts-{n}.jsonl"
            write_prompts(prompts, n)
            figures[n] = timed(revise_command(prompts, root / f"run-{n}", args.rounds))
            print(
                f"{n:>6} prompts: {figures[n][0]:6.2f} s, peak RSS {figures[n][1] / 1024:.0f} MiB"
            )
        per_record_us = (figures[big][0] - figures[small][0]) / (big - small) * 1e6
        memory_ratio = figures[big][1] / figures[small][1]

        finished = root / f"run-{big}"
        rerun_s, _ = timed(revise_command(root / f"prompts-{big}.jsonl", finished, args.rounds))
        read = subprocess.run([sys.executable, "-c", READ_OUTPUTS, str(finished)],
                              check=True, capture_output=True, text=True)  # fmt: skip
        read_s = float(read.stdout.strip())
        startup_s = min(timed([sys.executable, "-c", IMPORTS])[0] for _ in range(3))
        phases = json.loads(subprocess.run(
            [sys.executable, "-c", PHASES, str(root / f"prompts-{big}.jsonl"), str(finished)],
            check=True, capture_output=True, text=True,
        ).stdout)  # fmt: skip

        killed = root / "run-killed"
        command = revise_command(root / f"prompts-{big}.jsonl", killed, args.rounds)
        kept = kill_halfway(command, killed / "traces.jsonl", big)
        resume_s, _ = timed(command)
        same = (finished / "sft.jsonl").read_bytes() == (killed / "sft.jsonl").read_bytes()
    print(f"per record: {per_record_us:.0f} µs; peak memory {big} vs {small} prompts: "
          f"{memory_ratio:.2f}×")  # fmt: skip
    print(f"rerun of the finished {big}-prompt run: {rerun_s:.2f} s, of which start-up "
          f"{startup_s:.2f} s; resume's own work {rerun_s - startup_s:.2f} s against "
          f"{read_s:.2f} s to json.loads its outputs")  # fmt: skip
    print("where the rerun's time goes:")
    for phase, seconds in phases.items():
        print(f"  {phase:<48} {seconds:6.3f} s")
    print(f"killed at {kept} traces, resume to the end: {resume_s:.2f} s; "
          f"SFT rows identical to the uninterrupted run: {same}")  # fmt: skip
    if args.record:
        day = datetime.date.today().isoformat()
        record("scale.py", [
            f"| {day} | {small:,} → {big:,} × {args.rounds} rounds | "
            f"{figures[small][1] / 1024:.0f} → {figures[big][1] / 1024:.0f} MiB "
            f"(**{memory_ratio:.2f}×**) | **{per_record_us:.0f} µs** | {rerun_s:.2f} s = "
            f"{startup_s:.2f} s start-up + **{rerun_s - startup_s:.2f} s** | {read_s:.2f} s "
            f"(**{(rerun_s - startup_s) / read_s:.2f}×**) | {kept:,} kept, {resume_s:.2f} s, "
            f"{'identical' if same else 'DIFFERENT'} |"
        ])  # fmt: skip
        record("scale.py phases", ["| " + day + " | " + " | ".join(
            f"{seconds:.3f} s" for seconds in phases.values()
        ) + " |"])  # fmt: skip


if __name__ == "__main__":
    main()
