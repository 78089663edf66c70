"""Per-principle statistics from the loop's own runs: the revisions each principle caused
(revise) and how decisive the labeller was under it (label).
"""

from __future__ import annotations

import difflib
from collections import defaultdict
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.label_stats import LabelStats
from charter.records import Label, Trace
from charter.runs import read_jsonl


def principle_stats(revise_run: Path | None, label_run: Path | None) -> dict[str, dict[str, Any]]:
    """How each principle did: revisions it caused, how much they changed, its label margin.

    From a revise run: critiques, real changes (an accepted revision that differs from the
    answer it revised), and the mean normalised edit distance of those changes
    (1 − difflib's similarity ratio: 0 = identical, 1 = nothing in common). From a label run:
    votes and the mean |p − 0.5| of the principle's votes (how decisive the judge was).
    """
    stats: dict[str, dict[str, Any]] = defaultdict(dict)
    if revise_run is not None:
        tallies: dict[str, list[float]] = defaultdict(list)
        critiques: dict[str, int] = defaultdict(int)
        for trace in read_jsonl(_need(revise_run, "traces.jsonl"), Trace):
            answer = trace.initial
            for step in trace.steps:
                critiques[step.principle_id] += 1
                if step.outcome == "revised" and step.revision is not None:
                    if step.revision.strip() != answer.strip():
                        ratio = difflib.SequenceMatcher(None, answer, step.revision).ratio()
                        tallies[step.principle_id].append(1.0 - ratio)
                    answer = step.revision
        for pid, count in critiques.items():
            changes = tallies[pid]
            stats[pid].update(
                critiques=count, changes=len(changes), change_rate=round(len(changes) / count, 4),
                mean_edit_distance=round(sum(changes) / len(changes), 4) if changes else None,
            )  # fmt: skip
    if label_run is not None:
        label_stats = LabelStats()
        for entry in read_jsonl(_need(label_run, "labels.jsonl"), Label):
            label_stats.add(entry)
        for pid, summary in label_stats.summary()["per_principle"].items():
            stats[pid].update(votes=summary["votes"], mean_margin=summary["mean_margin"])
    return dict(sorted(stats.items()))


def _need(run: Path, name: str) -> Path:
    path = run / name
    if not path.is_file():
        raise CharterError(
            f"{run} has no {name}; is it a {'revise' if 'traces' in name else 'label'} run?"
        )
    return path
