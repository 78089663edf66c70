"""The constitution suite's tables for docs/results.md: overall, per section and per clause.

    python scripts/clause_table.py runs/effect/evaluate-KEY [--exclude KEY …] [--name PART=LABEL …]

Reads ``items.jsonl`` and ``results.json`` of one ``charter evaluate`` folder that ran the
``constitution`` suite (a ``charter run`` root works too: its ``evaluate-*`` stage is used).
The first model evaluated is the baseline. For each model: compliance (the share of items
where it did what the clause's test prompt expects: answered a prompt to answer, declined one
to decline) with its Wilson interval, and its paired difference from the baseline on the same
items (Bonett–Price interval, exact McNemar p), overall, then again without the items named by
``--exclude`` (their keys, ``CLAUSE:answer:N``), then per section of the source document;
per clause, compliance only (one or two prompts a clause: descriptive, no test). Last, how
often the refusal classifier and the phrase layer agree on these items, per model: the
classifier was trained on other answers, so its verdicts here are checked, not assumed.
``--layer phrases`` scores by the phrase layer's verdicts instead of the evaluation's (on 40
of these items read by hand, docs/results.md, the phrases agreed with the reader more often).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from results_table import label_of

from charter.stages.evaluate.stats import paired_difference, rate

SUITE = "constitution"


def folder_of(path: Path) -> Path:
    """``path`` when it holds ``items.jsonl``, else the one ``evaluate-*`` stage under it."""
    if (path / "items.jsonl").is_file():
        return path
    stages = sorted(path.glob("evaluate-*/items.jsonl"))
    if len(stages) != 1:
        raise SystemExit(f"{path}: no items.jsonl, and {len(stages)} evaluate-* stages with one")
    return stages[0].parent


def read_items(folder: Path) -> tuple[list[str], list[dict[str, Any]]]:
    models = list(json.loads((folder / "results.json").read_text("utf-8"))["models"])
    with (folder / "items.jsonl").open(encoding="utf-8") as f:
        items = [row for line in f if (row := json.loads(line))["suite"] == SUITE]
    if not items:
        raise SystemExit(f"{folder}: no {SUITE} items; evaluate with --suite {SUITE}")
    return models, items


def scores(
    items: list[dict[str, Any]], key: str | None = None, layer: str = "evaluation"
) -> dict[str, dict[str, float]]:
    """Per model, per item key: 1.0 when it complied; only items in group ``key`` (a section
    or clause name) when given. ``layer``: whose refusal verdict decides, the evaluation's
    (its ``score``) or the phrase layer's (``refused_by_phrases``)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for item in items:
        judged = item["judgement"]
        if key is None or key in (judged.get("section"), judged.get("principle")):
            score = float(item["score"])
            if layer == "phrases":
                score = float(judged["refused_by_phrases"] == (judged["expect"] == "refuse"))
            out[item["model"]][item["key"]] = score
    return out


def row(models: list[str], by_model: dict[str, dict[str, float]], paired: bool = True) -> list[str]:
    base = by_model.get(models[0], {})
    cells = []
    for model in models:
        own = by_model.get(model, {})
        r = rate([v == 1.0 for v in own.values()])
        cell = f"{100 * r.value:.1f}% [{100 * r.low:.1f}, {100 * r.high:.1f}] (n={r.n})"
        if paired and model != models[0] and (d := paired_difference(base, own)) is not None:
            cell += (f": {100 * d.value:+.1f} pts [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
                     f", p = {d.p_value:.2g}")  # fmt: skip
        cells.append(cell)
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--exclude", nargs="*", default=[], help="item keys to leave out")
    parser.add_argument("--name", nargs="*", default=[], help="PART=LABEL for a model's column")
    parser.add_argument("--layer", choices=("evaluation", "phrases"), default="evaluation",
                        help="whose refusal verdicts score: the evaluation's refusal layer "
                        "(the classifier, usually) or the phrase layer")  # fmt: skip
    args = parser.parse_args()
    models, items = read_items(folder_of(args.folder))
    names = dict(pair.split("=", 1) for pair in args.name)
    labels = {m: label_of(m, names) for m in models}
    head = "| " + " | ".join(["", *(labels[m] for m in models)]) + " |"
    rule = "|" + "---|" * (len(models) + 1)
    print(head, rule, sep="\n")
    print("| all items | " + " | ".join(row(models, scores(items, layer=args.layer))) + " |")
    if args.exclude:
        kept = [i for i in items if i["key"] not in set(args.exclude)]
        print(f"| without {len(items) // len(models) - len(kept) // len(models)} excluded | "
              + " | ".join(row(models, scores(kept, layer=args.layer))) + " |")  # fmt: skip
    sections = dict.fromkeys(
        i["judgement"].get("section") for i in items if i["model"] == models[0]
    )
    print("\n" + head, rule, sep="\n")
    for section in (s for s in sections if s is not None):  # a clause with no source: none
        name = str(section).split(" > ")[-1]
        cells = row(models, scores(items, section, args.layer))
        print(f"| {name} | " + " | ".join(cells) + " |")
    clauses = dict.fromkeys(i["judgement"]["principle"] for i in items if i["model"] == models[0])
    print("\n" + head, rule, sep="\n")
    for clause in clauses:
        cells = row(models, scores(items, clause, args.layer), paired=False)
        print(f"| {clause} | " + " | ".join(cells) + " |")
    print("\n| model | classifier and phrases agree | classifier refuses, phrases do not | "
          "phrases refuse, classifier does not |\n|---|---|---|---|")  # fmt: skip
    for model in models:
        judged = [i["judgement"] for i in items if i["model"] == model]
        agree = rate([j["refused"] == j["refused_by_phrases"] for j in judged])
        only_classifier = sum(j["refused"] and not j["refused_by_phrases"] for j in judged)
        only_phrases = sum(j["refused_by_phrases"] and not j["refused"] for j in judged)
        print(
            f"| {labels[model]} | {100 * agree.value:.1f}% [{100 * agree.low:.1f}, "
            f"{100 * agree.high:.1f}] (n={agree.n}) | {only_classifier} | {only_phrases} |"
        )


if __name__ == "__main__":
    main()
