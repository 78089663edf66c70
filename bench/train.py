"""Benchmark: ``charter train`` against a plain TRL script, same data, same settings, one run.

The plain side is what a user would write with TRL alone: read the JSONL with ``datasets``,
keep TRL's columns, build ``SFTTrainer`` / ``DPOTrainer`` with the same LoRA and trainer
settings, call ``train()``. The Charter side is :func:`charter.stages.train.run.train` as the CLI
calls it (run directory, manifest, soft-label DPO loss, checkpoints, the saved model). Each
pair runs back to back, alternating which goes first, so both see the same machine. Every
run is its own Python process: in one long process each training run is slower than the
one before (measured: the same DPO run took 82 s first and 99 s fourth), which would favour
whichever side happened to go first.

Timed: the training loop (``trainer.train()``: seconds per optimiser step, tokens per
second, from the trainer's own token count) and the whole call (loading the model, building
the trainer, training and, for Charter, writing its run directory).

    python bench/train.py --sft RUN/sft.jsonl --prefs RUN/prefs.jsonl [--steps 6] [--record]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from record import record

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def charter_side(kind: str, data: Path, steps: int, out: Path) -> dict[str, float]:
    from charter.stages.train.config import TrainConfig
    from charter.stages.train.run import train

    began = time.monotonic()
    figures = train(TrainConfig(kind=kind, data=(str(data),), max_steps=steps), out)
    return {
        "loop_s": figures["seconds"],
        "total_s": time.monotonic() - began,
        "tokens_per_s": figures["tokens_per_second"],
    }


def plain_side(kind: str, data: Path, steps: int, out: Path) -> dict[str, float]:
    """A plain TRL script with the same settings as Charter's defaults."""
    import torch
    from datasets import load_dataset  # type: ignore[import-untyped]
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from charter.stages.train.config import TrainConfig
    from charter.stages.train.run import start_checkpoint

    began = time.monotonic()
    config = TrainConfig(kind=kind, data=(str(data),), max_steps=steps)  # Charter's defaults
    start = start_checkpoint(config.model)  # the same float32 copy of the embedded model
    model = AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(start)
    rows = load_dataset("json", data_files=str(data), split="train")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules="all-linear",
                      task_type="CAUSAL_LM")  # fmt: skip
    common: dict[str, Any] = {
        "output_dir": str(out), "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.rate, "max_steps": steps, "logging_steps": 1,
        "save_strategy": "no", "report_to": [], "use_cpu": True, "bf16": False,
        "activation_checkpointing": False, "max_length": config.max_length,
        "include_num_input_tokens_seen": "non_padding", "seed": config.seed,
    }  # fmt: skip
    if kind == "sft":
        rows = rows.map(
            lambda r: {"prompt": r["messages"][:-1], "completion": r["messages"][-1:]},
            remove_columns=rows.column_names,
        )
        trainer: Any = SFTTrainer(
            model=model, args=SFTConfig(**common, completion_only_loss=True), train_dataset=rows,
            processing_class=tokenizer, peft_config=lora,
        )  # fmt: skip
    else:
        rows = rows.select_columns(["prompt", "chosen", "rejected"])
        trainer = DPOTrainer(
            model=model, args=DPOConfig(**common, beta=config.beta), train_dataset=rows,
            processing_class=tokenizer, peft_config=lora,
        )  # fmt: skip
    loop = time.monotonic()
    trainer.train()
    loop_s = time.monotonic() - loop
    trainer.model.save_pretrained(out / "adapter")
    return {
        "loop_s": loop_s,
        "total_s": time.monotonic() - began,
        "tokens_per_s": trainer.state.num_input_tokens_seen / loop_s,
    }


SIDES = {"plain TRL": plain_side, "charter": charter_side}


def one_run(name: str, kind: str, data: Path, steps: int) -> dict[str, float]:
    """One side's run in a fresh Python process; its figures come back as JSON."""
    command = [sys.executable, __file__, "--side", name, "--kind", kind, "--data", str(data),
               "--steps", str(steps)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} {kind} failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(kind: str, data: Path, steps: int, repeats: int) -> dict[str, dict[str, float]]:
    """Both sides ``repeats`` times, alternating the order; the best of each."""
    best: dict[str, dict[str, float]] = {}
    for repeat in range(repeats):
        order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
        for name in order:
            result = one_run(name, kind, data, steps)
            loop, total, rate = result["loop_s"], result["total_s"], result["tokens_per_s"]
            print(f"  {kind} {name:<9} loop {loop:.1f}s  total {total:.1f}s  {rate:.0f} tokens/s")
            if name not in best or result["loop_s"] < best[name]["loop_s"]:
                best[name] = result
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sft", type=Path, help="a revise run's sft.jsonl")
    parser.add_argument("--prefs", type=Path, help="a label run's prefs.jsonl")
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per side")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side (best is kept)")
    parser.add_argument(
        "--record", action="store_true", help="append the result to docs/benchmarks.md"
    )
    # One side's run, as the parent process starts it.
    parser.add_argument("--side", choices=list(SIDES), help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["sft", "dpo"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        scratch = Path(tempfile.mkdtemp(prefix=f"bench-{args.kind}-"))
        try:
            result = SIDES[args.side](args.kind, args.data, args.steps, scratch / "out")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        print(json.dumps(result))
        return
    if not (args.sft and args.prefs):
        parser.error("--sft and --prefs are required")
    lines = []
    for kind, data in (("sft", args.sft), ("dpo", args.prefs)):
        best = measure(kind, data, args.steps, args.repeats)
        plain, ours = best["plain TRL"], best["charter"]
        ratio = ours["loop_s"] / plain["loop_s"]
        total = ours["total_s"] / plain["total_s"]
        print(f"{kind}: charter {ours['loop_s'] / args.steps:.2f} s/step, "
              f"{ours['tokens_per_s']:.0f} tokens/s; plain TRL "
              f"{plain['loop_s'] / args.steps:.2f} s/step, {plain['tokens_per_s']:.0f} tokens/s; "
              f"loop time {ratio:.3f}×, whole call {total:.3f}×")  # fmt: skip
        lines.append(
            f"| {datetime.date.today().isoformat()} | {kind} LoRA | {args.steps} × 8 rows | "
            f"{ours['loop_s'] / args.steps:.2f} | {ours['tokens_per_s']:.0f} | "
            f"{plain['loop_s'] / args.steps:.2f} | {plain['tokens_per_s']:.0f} | "
            f"**{ratio:.3f}×** | {total:.3f}× |\n"
        )
    if args.record:
        record("train.py", lines)


if __name__ == "__main__":
    main()
