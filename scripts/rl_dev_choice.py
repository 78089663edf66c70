"""Choose among GRPO rewards on a development split, by the rule rl-fair-half.yaml fixes.

    python scripts/rl_dev_choice.py --out runs/rl-dev \
        --model dpo=runs/rl-fair/dpo-…/model.gguf \
        --model cost-0=runs/rl-fair/rl-grpo-4-…/model.gguf  [--model NAME=PATH …]

The first model is the reference (SFT + DPO). Every model answers the development split
(harmful: AdvBench rows 200-300 and Do-Not-Answer malicious_uses rows 120-180; over-refusal:
Charter's overrefusal-dev and contrast-dev#12:80; greedy, 128 tokens; harmful = not a refusal,
by the refusal classifier) through ``charter evaluate`` into ``OUT/evaluate``. A development
prompt that shares an 8-gram (or all its words) with a training, held-out or evaluation prompt
of ``--config`` is dropped first, and the count printed. The rule: keep the candidates whose
harmful compliance and over-refusal are both no worse than the reference's; of those (of all,
when none qualifies) choose the lowest sum of the two. Reruns resume. Run from the repository
root (it reads ../shared/data).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from charter.runs import write_atomic
from charter.splits import overlap, source_prompts, user_text

D = "../shared/data"
HARMFUL = [
    f"{D}/advbench/harmful_behaviors.csv#200:300",
    f"{D}/donotanswer/malicious_uses.jsonl#120:180",
]
SAFE = ["overrefusal-dev", "contrast-dev#12:80"]


def used_texts(config_name: str) -> list[str]:
    """Every prompt the run config trains on, holds out or evaluates (user turns)."""
    from charter.home import models_dir
    from charter.pipeline import evaluation_data
    from charter.run_config import bundled_config, evaluate_config, load_run_config
    from charter.stages.evaluate.suites import questions

    config = load_run_config(bundled_config(config_name))
    sources = [
        s for kind in ("redteam", "contrast", "helpful") for s in getattr(config.prompts, kind)
    ]
    for part in (config.rl.prompts, config.rl.heldout):
        sources += [s for chosen in part.by_kind().values() for s in chosen]
    sources += [*config.calibrate.harmful, *config.calibrate.safe]
    texts = [user_text(p) for s in sources for p in source_prompts(s)]
    settings = evaluate_config(config)
    data = evaluation_data(config, models_dir().parent / "inputs")
    texts += [q.messages[-1].content for q in questions(settings.suites, data, settings)]
    return texts


def dev_file(sources: list[str], used: list[str], folder: Path, name: str) -> Path:
    """The development prompts of ``sources`` with every one overlapping ``used`` dropped."""
    prompts = [p for s in sources for p in source_prompts(s)]
    dropped = {i for i, _ in overlap([user_text(p) for p in prompts], used)}
    print(f"{name}: {len(prompts)} read, {len(dropped)} dropped for overlap", file=sys.stderr)
    rows = [{"messages": [m.model_dump() for m in p.messages], "source": p.source}
            for i, p in enumerate(prompts) if i not in dropped]  # fmt: skip
    path = folder / f"{name}.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def choose(rates: dict[str, tuple[float, float]]) -> str:
    """The rule: no worse than the first (reference) on both rates, then the lowest sum."""
    reference, *candidates = rates
    harm, refuse = rates[reference]
    fit = [c for c in candidates if rates[c][0] <= harm and rates[c][1] <= refuse]
    return min(fit or candidates, key=lambda c: sum(rates[c]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--model", action="append", required=True, metavar="NAME=PATH")
    parser.add_argument("--config", default="rl-fair-half")
    args = parser.parse_args()
    models = dict(m.split("=", 1) for m in args.model)
    if len(models) < 3:
        parser.error("--model: the reference and at least two candidates")
    used = used_texts(args.config)
    data = args.out / "data"
    harmful = dev_file(HARMFUL, used, data, "harmful-dev")
    safe = dev_file(SAFE, used, data, "safe-dev")
    command = ["charter", "evaluate", "--suite", "harmlessness", "--suite", "over-refusal",
               "--data", f"harmlessness={harmful}", "--data", f"over-refusal={safe}",
               "--max-tokens", "128", "--out", str(args.out / "evaluate")]  # fmt: skip
    for path in models.values():
        command += ["--model", f"local/{path}"]
    subprocess.run(command, check=True)
    results = json.loads((args.out / "evaluate" / "results.json").read_text("utf-8"))
    suites = results["suites"]
    rates = {}
    for name, path in models.items():
        key = f"local/{path}"
        harm = suites["harmlessness"][key]["attack_success_rate"]
        refuse = suites["over-refusal"][key]["refusal_rate"]
        rates[name] = (harm["value"], refuse["value"])
        print(f"{name:12} harmful {harm['value']:.1%} [{harm['low']:.1%}, {harm['high']:.1%}] "
              f"n={harm['n']}   over-refusal {refuse['value']:.1%} "
              f"[{refuse['low']:.1%}, {refuse['high']:.1%}] n={refuse['n']}")  # fmt: skip
    chosen = choose(rates)
    print(f"chosen: {chosen}")
    write_atomic(args.out / "choice.json", json.dumps({"rates": rates, "chosen": chosen}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
