"""Print the Markdown tables of docs/results.md from the run directories of `charter run effect`.

    python scripts/results_table.py runs/effect [--name MODEL=LABEL …] [--versus LABEL:LABEL …]

MODEL in ``--name`` is a model's full name or any part of it, e.g. its stage folder
(``dpo-cd6232b33d6c=SFT+DPO``).

Reads, from every ``evaluate-*`` stage under the run root, ``items.jsonl`` (each judged answer)
and recomputes each metric with its 95% interval (Wilson), and each trained model's paired
difference from the baseline (Bonett–Price interval) with an exact McNemar p-value — the same
functions ``charter evaluate`` uses. Then the calibration of the teacher, what the guided stage
kept and rejected, and the wall time and tokens of each stage from the manifests.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from charter.records import EvalItem
from charter.stages.evaluate.results import metric_scores
from charter.stages.evaluate.stats import paired_difference, rate

# Labels name the metric, not the set: the same tables serve the reported sets (XSTest-safe,
# IFEval) and the development split (overrefusal-dev, ifeval-dev).
METRICS = (
    ("harmlessness", "attack_success_rate", "harmful-request compliance ↓"),
    ("over-refusal", "refusal_rate", "over-refusal on safe prompts ↓"),
    ("helpfulness", "instructions_prompt_level", "instructions, prompt-level strict ↑"),
)


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def label_of(model: str, names: dict[str, str]) -> str:
    """``--name MODEL=LABEL``: MODEL is the model's full name or any part of it (a stage
    folder); a model no --name matches keeps its name."""
    return next((label for key, label in names.items() if key in model), model)


def model_table(
    evaluate: Path | list[Path], names: dict[str, str],
    versus: list[tuple[str, str]] | None = None,
) -> str:  # fmt: skip
    """One table for one evaluate folder, or for several read as one (``--merge``: models
    evaluated apart on the same questions, e.g. behind charter serve's routes)."""
    folders = evaluate if isinstance(evaluate, list) else [evaluate]
    items = [EvalItem.model_validate_json(line) for folder in folders
             for line in (folder / "items.jsonl").read_text("utf-8").splitlines()]  # fmt: skip
    models = [
        m
        for folder in folders
        for m in json.loads((folder / "results.json").read_text("utf-8"))["models"]
    ]
    evaluate = folders[0]
    names = {m: label_of(m, names) for m in models}
    by: dict[tuple[str, str], list[EvalItem]] = defaultdict(list)
    for item in items:
        by[(item.suite, item.model)].append(item)
    lines = ["| metric | " + " | ".join(names.get(m, m) for m in models) + " |"]
    lines.append("|---" * (len(models) + 1) + "|")
    diffs = ["", "| difference from the baseline (paired) | " + " | ".join(
        names.get(m, m) for m in models[1:]) + " |", "|---" * len(models) + "|"]  # fmt: skip
    for suite, metric, title in METRICS:
        values = {m: metric_scores(suite, by[(suite, m)]).get(metric, ("rate", {}))[1]
                  for m in models}  # fmt: skip
        cells = []
        for m in models:
            e = rate([v >= 0.5 for v in values[m].values()])
            cells.append(f"{_pct(e.value)}% [{_pct(e.low)}, {_pct(e.high)}] n={e.n}")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
        dcells = []
        for m in models[1:]:
            d = paired_difference(values[models[0]], values[m])
            if d is None:
                dcells.append("-")
                continue
            p = f", McNemar p={d.p_value:.2g}" if d.p_value is not None else ""
            dcells.append(f"{100 * d.value:+.1f} pts [{100 * d.low:+.1f}, {100 * d.high:+.1f}]{p}")
        diffs.append(f"| {title} | " + " | ".join(dcells) + " |")
        for first, second in versus or []:  # A against B, paired over the same questions
            found = [[m for m in models if names[m] == x] for x in (first, second)]
            if not all(found):
                raise SystemExit(f"--versus {first}:{second}: no model of {evaluate.name} is "
                                 "named so; check the --name parts")  # fmt: skip
            a, b = found[0][0], found[1][0]
            d = paired_difference(values[a], values[b])
            if d is not None:
                p = f", McNemar p={d.p_value:.2g}" if d.p_value is not None else ""
                diffs.append(f"| {title}: {second} − {first} | {100 * d.value:+.1f} pts "
                             f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]{p} |")  # fmt: skip
    return "\n".join(lines + diffs)


def stage_table(root: Path) -> str:
    """Wall time and tokens of each stage of the run's current plan (ROOT/run.json)."""
    plan = json.loads((root / "run.json").read_text("utf-8"))
    lines = ["| stage | wall time | tokens by model role: calls, prompt / generated |",
             "|---|---|---|"]  # fmt: skip
    for name, stage in plan["stages"].items():
        folder = root / Path(stage["path"]).name
        if not (folder / "manifest.json").is_file():
            continue
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text("utf-8"))
        usage = {k: v for k, v in (manifest.get("usage") or {}).items() if isinstance(v, dict)}
        answers = folder / "answers.jsonl"
        if not usage and answers.is_file():  # evaluation: the answering models' tokens
            spent = [json.loads(line).get("usage") or {} for line in answers.open()]
            keys = ("calls", "prompt_tokens", "completion_tokens")
            usage = {"answers": {k: sum(u.get(k, 0) for u in spent) for k in keys}}
        cells = "; ".join(
            f"{role}: {u.get('calls', 0):,}, {u.get('prompt_tokens', 0):,} / "
            f"{u.get('completion_tokens', 0):,}"
            for role, u in usage.items()
        )
        minutes = float(manifest.get("wall_time_s", 0)) / 60
        lines.append(f"| {name} | {minutes:.1f} min | {cells or '-'} |")
    return "\n".join(lines)


def score_unfinished(evaluate: Path, config_name: str) -> Path:
    """Judge the models of an unfinished evaluate stage that have every answer.

    The answers are copied to ``EVALUATE/scored/`` and judged there exactly as the stage will
    judge them when it finishes (same questions, judges and statistics); no model is asked
    again. For a run stopped before its last model was answered.
    """
    from collections import Counter

    from charter.backends import load_backend
    from charter.constitution import Constitution
    from charter.models import models_dir
    from charter.pipeline import evaluation_data
    from charter.run_config import bundled_config, evaluate_config, load_run_config
    from charter.runs import write_atomic
    from charter.stages.evaluate.run import run_evaluate

    config = load_run_config(bundled_config(config_name))
    lines = (evaluate / "answers.jsonl").read_text("utf-8").splitlines()
    counts = Counter(json.loads(line)["model"] for line in lines)
    models = [m for m, n in counts.items() if n == max(counts.values())]
    out = evaluate / "scored"
    out.mkdir(exist_ok=True)
    kept = [line + "\n" for line in lines if json.loads(line)["model"] in models]
    write_atomic(out / "answers.jsonl", "".join(kept))
    run_evaluate(
        models, out=out, config=evaluate_config(config),
        data=evaluation_data(config, models_dir().parent / "inputs"), backend=load_backend,
        judge=None, constitution=Constitution.load(config.constitution), progress=False,
    )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--name", action="append", default=[], metavar="MODEL=LABEL")
    parser.add_argument(
        "--versus",
        action="append",
        default=[],
        metavar="LABEL_A:LABEL_B",
        help="also B's paired difference from A (two --name labels)",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="read every evaluate-* folder as one table (models evaluated apart on the same "
        "questions); only the tables are printed",
    )
    parser.add_argument(
        "--score-unfinished",
        metavar="CONFIG",
        help="also judge unfinished evaluate stages (their complete models)",
    )
    args = parser.parse_args()
    names = dict(n.split("=", 1) for n in args.name)
    versus = [tuple(v.split(":", 1)) for v in args.versus]
    for pair in versus:
        if len(pair) != 2 or not set(pair) <= set(names.values()):
            parser.error(f"--versus {':'.join(pair)}: give two labels set with --name, as A:B")
    folders = sorted(args.root.glob("evaluate-*"), key=lambda p: p.stat().st_mtime)
    if args.merge:
        done = [f for f in folders if (f / "items.jsonl").is_file()]
        print(f"### {', '.join(f.name for f in done)}\n\n{model_table(done, names, versus)}\n")
        return
    matched: set[tuple[str, str]] = set()
    for evaluate in folders:
        if not (evaluate / "items.jsonl").is_file() and args.score_unfinished:
            scored = score_unfinished(evaluate, args.score_unfinished)
            print(f"### {evaluate.name} (unfinished: complete models only)\n\n"
                  f"{model_table(scored, names)}\n")  # fmt: skip
        elif (evaluate / "items.jsonl").is_file():
            # A run folder holds the evaluations of several configs: each --versus pair is
            # shown where both its models were evaluated.
            models = json.loads((evaluate / "results.json").read_text("utf-8"))["models"]
            labels = {label_of(m, names) for m in models}
            here = [pair for pair in versus if set(pair) <= labels]
            matched.update(here)
            print(f"### {evaluate.name}\n\n{model_table(evaluate, names, here)}\n")
    for first, second in set(versus) - matched:
        raise SystemExit(f"--versus {first}:{second}: no evaluate folder of {args.root} has "
                         "both models; check the --name parts")  # fmt: skip
    plan = json.loads((args.root / "run.json").read_text("utf-8"))["stages"]
    current = {name: args.root / Path(stage["path"]).name for name, stage in plan.items()}
    for judge in [current["calibrate"] / "judge.json"]:
        j = json.loads(judge.read_text("utf-8"))
        print(f"teacher verdict check ({j['judge']}): AUC {j['auc']}, threshold {j['threshold']}, "
              f"accuracy {j['accuracy']} {j['accuracy_ci']}, TPR {j['tpr']}, FPR {j['fpr']} "
              f"on {j['harmful']} harmful + {j['safe']} safe gold prompts\n")  # fmt: skip
    for guided in [current["revise"] / "manifest.json"]:
        print(f"{guided.parent.name} counts: {json.loads(guided.read_text())['counts']}\n")
    print(stage_table(args.root))


if __name__ == "__main__":
    main()
