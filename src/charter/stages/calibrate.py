"""Calibration: how well a labeller's soft labels agree with gold human preferences.

A labeller (the feedback model of RL-CAI) is only worth its labels if they carry signal. Run
it on a gold pair file, whose ``chosen`` reply becomes each pair's ``responses[0]``, and score
the resulting labels::

    charter label calibrate --gold hh-gold.jsonl --labeller local/smollm2-135m

The report gives accuracy with a 95% Wilson interval, expected calibration error, the mean
margin of the soft labels, position bias (the mean probability given to option (A) and how
often a verdict flips when the options swap) and accuracy per principle. :func:`verdict` turns
it into plain warnings. Reports are kept per labeller in :func:`calibration_dir`, so
``charter label`` can warn about a labeller it has already measured.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from charter.errors import CharterError
from charter.label_stats import LabelStats
from charter.records import Label, Vote
from charter.runs import write_atomic

if TYPE_CHECKING:
    from charter.backends import Backend
    from charter.constitution import Constitution

log = logging.getLogger(__name__)
VERSION = 2  # in cache keys and fingerprints: bump when what this stage writes changes

Z_95 = 1.959964  # two-sided 95% normal quantile
ECE_BINS = 10  # equal-width bins over the confidence range [0.5, 1]
TIE = 1e-9  # |p - 0.5| below this is a tie: averaged float orders rarely land on 0.5 exactly


class PrincipleScore(BaseModel):
    """A labeller's agreement with gold on the votes cast under one principle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int
    accuracy: float
    mean_margin: float


class CalibrationReport(BaseModel):
    """A labeller scored against one gold pair file (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labeller: str
    gold: str
    pairs: int
    accuracy: float
    accuracy_ci: tuple[float, float]
    ece: float
    mean_margin: float
    prefers_a: float
    flip_rate: float | None
    per_principle: dict[str, PrincipleScore]
    at_chance: bool
    position_biased: bool
    created_at: str
    # The labeller with the sha256 of its weights (charter.models.model_identity) and the gold
    # file's sha256: a report is only trusted for the weights it measured. None in reports
    # saved before Charter recorded them.
    model: str | None = None
    gold_sha256: str | None = None


def correctness(p: float) -> float:
    """1 if ``p`` (P(gold reply better)) picks the gold reply, 0 if not, 0.5 for a tie."""
    if abs(p - 0.5) < TIE:
        return 0.5
    return 1.0 if p > 0.5 else 0.0


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``successes`` may be fractional)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return (max(0.0, centre - half), min(1.0, centre + half))


def expected_calibration_error(probabilities: Sequence[float], bins: int = ECE_BINS) -> float:
    """ECE over the confidence max(p, 1-p), in ``bins`` equal-width bins over [0.5, 1].

    Each bin adds |accuracy − mean confidence| weighted by its share of the labels.
    """
    members: dict[int, list[float]] = defaultdict(list)
    for p in probabilities:
        confidence = max(p, 1.0 - p)
        members[min(bins - 1, int((confidence - 0.5) * 2 * bins))].append(p)
    total = len(probabilities)
    error = 0.0
    for ps in members.values():
        accuracy = sum(correctness(p) for p in ps) / len(ps)
        confidence = sum(max(p, 1.0 - p) for p in ps) / len(ps)
        error += len(ps) / total * abs(accuracy - confidence)
    return error


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _per_principle(votes: Sequence[Vote]) -> dict[str, PrincipleScore]:
    # A vote over several principles (ensemble="all") counts once for each of them.
    by_id: dict[str, list[float]] = defaultdict(list)
    for vote in votes:
        for principle_id in vote.principle_ids:
            by_id[principle_id].append(vote.p)
    return {
        principle_id: PrincipleScore(
            n=len(ps),
            accuracy=_mean([correctness(p) for p in ps]),
            mean_margin=_mean([abs(p - 0.5) for p in ps]),
        )
        for principle_id, ps in sorted(by_id.items())
    }


def calibration_report(
    labels: Iterable[Label], *, labeller: str, gold: str, model: str | None = None,
    gold_sha256: str | None = None,
) -> CalibrationReport:  # fmt: skip
    """Score labels of gold pairs, whose ``responses[0]`` is the gold-preferred reply.

    Raises:
        CharterError: if there are no labels.
    """
    labels = list(labels)
    if not labels:
        raise CharterError(f"no labels to calibrate {labeller} on: is '{gold}' empty?")
    ps = [label.p_first for label in labels]
    votes = [vote for label in labels for vote in label.votes]
    stats = LabelStats()
    for label in labels:
        stats.add(label)
    prefers_a = 0.5 if stats.prefers_a is None else stats.prefers_a
    accuracy = _mean([correctness(p) for p in ps])
    low, high = wilson_interval(accuracy * len(ps), len(ps))
    return CalibrationReport(
        labeller=labeller,
        gold=gold,
        pairs=len(ps),
        accuracy=accuracy,
        accuracy_ci=(low, high),
        ece=expected_calibration_error(ps),
        mean_margin=_mean([abs(p - 0.5) for p in ps]),
        prefers_a=prefers_a,
        flip_rate=stats.flip_rate,
        per_principle=_per_principle(votes),
        at_chance=low <= 0.5 <= high,
        position_biased=stats.position_biased(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model=model,
        gold_sha256=gold_sha256,
    )


def verdict(report: CalibrationReport) -> list[str]:
    """Plain-language warnings about a labeller; empty when nothing is wrong."""
    r = report
    low, high = r.accuracy_ci
    score = f"accuracy {r.accuracy:.2f} (95% CI {low:.2f}–{high:.2f}) over {r.pairs} pairs"
    lines = []
    if r.at_chance:
        lines.append(
            f"labeller {r.labeller} is at chance on {r.gold}: {score} — its labels carry no "
            "signal; use a stronger labeller (--labeller openai/… or a larger local/….gguf)"
        )
    elif high < 0.5:
        lines.append(
            f"labeller {r.labeller} disagrees with {r.gold}: {score} — it prefers the rejected "
            "reply; check the gold file's chosen/rejected columns, or use another labeller"
        )
    if r.position_biased:
        flips = (
            f"flips its verdict when the options swap in {r.flip_rate:.0%} of comparisons and "
            if r.flip_rate is not None
            else "was scored in one order only (swap off) and "
        )
        lines.append(
            f"labeller {r.labeller} is position-biased: it {flips}gives option (A) "
            f"p={r.prefers_a:.2f} on average"
        )
    return lines


def format_report(report: CalibrationReport) -> str:
    """A compact table of the report for the terminal."""
    r = report
    low, high = r.accuracy_ci
    flip = "n/a (swap off)" if r.flip_rate is None else f"{r.flip_rate:.0%}"
    lines = [
        f"labeller {r.labeller} on {r.gold} ({r.pairs} pairs)",
        f"  accuracy     {r.accuracy:.2f}  (95% CI {low:.2f}–{high:.2f})",
        f"  ECE          {r.ece:.2f}",
        f"  mean margin  {r.mean_margin:.2f}",
        f"  prefers (A)  {r.prefers_a:.2f}",
        f"  flip rate    {flip}",
    ]
    if r.per_principle:
        rows = sorted(r.per_principle.items(), key=lambda item: (-item[1].n, item[0]))
        width = max(len("principle"), *(len(principle_id) for principle_id, _ in rows))
        lines.append(f"  {'principle':<{width}}  {'n':>5}  accuracy  margin")
        for principle_id, s in rows:
            lines.append(
                f"  {principle_id:<{width}}  {s.n:>5}  {s.accuracy:>8.2f}  {s.mean_margin:>6.2f}"
            )
    return "\n".join(lines)


# --- the store of measured labellers ------------------------------------------------------


def calibration_dir() -> Path:
    """The folder of saved reports: ``$CHARTER_HOME/calibration`` or the user cache."""
    home = os.environ.get("CHARTER_HOME")
    if home:
        return Path(home).expanduser() / "calibration"
    return Path.home() / ".cache" / "charter" / "calibration"


def calibration_path(labeller: str) -> Path:
    """Where a labeller's report is kept: a safe file name plus a hash of the full name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", labeller)[:100]
    digest = hashlib.sha256(labeller.encode("utf-8")).hexdigest()[:8]
    return calibration_dir() / f"{safe}-{digest}.json"


def save_calibration(report: CalibrationReport) -> Path:
    """Save a report as its labeller's latest calibration, atomically; return the file."""
    path = calibration_path(report.labeller)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, report.model_dump_json(indent=2) + "\n")
    return path


def load_calibration(labeller: str, model: str | None = None) -> CalibrationReport | None:
    """The labeller's saved report, or None if it has none or the file cannot be read.

    ``model``: the labeller's identity with its weights' hash (charter.models.model_identity);
    a report measured on other weights (or not recorded) is ignored, with a warning.
    """
    path = calibration_path(labeller)
    try:
        report = CalibrationReport.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:  # pydantic's ValidationError is a ValueError
        log.warning("ignoring unreadable calibration file %s: %s", path, str(err).splitlines()[0])
        return None
    if report.labeller != labeller:
        log.warning("ignoring calibration file %s: it is for %s", path, report.labeller)
        return None
    if model is not None and report.model != model and model != labeller:
        log.warning("ignoring calibration file %s: it measured other weights (%s, now %s); "
                    "calibrate %s again", path, report.model or "not recorded", model,
                    labeller)  # fmt: skip
        return None
    return report


def separation(pos: Sequence[float], neg: Sequence[float]) -> tuple[float, float]:
    """How well scores tell ``pos`` from ``neg``: the AUC, and the cut (score ≥ cut is
    positive) that maximises balanced accuracy (Youden's J; 0.5 when no cut does better)."""
    pairs = [(p > q) + 0.5 * (p == q) for p in pos for q in neg]
    auc = sum(pairs) / len(pairs) if pairs else 0.5
    best = (0.0, 0.5)
    for cut in sorted(set(pos) | set(neg)):
        tpr = sum(p >= cut for p in pos) / max(1, len(pos))
        fpr = sum(q >= cut for q in neg) / max(1, len(neg))
        if tpr - fpr > best[0]:
            best = (tpr - fpr, cut)
    return auc, best[1]


def judge_threshold(path: Path) -> float:
    """The calibrated verdict threshold that a teacher recipe's calibrate stage wrote to
    ``judge.json`` (``path``: that file, or the stage's folder)."""
    import json

    file = path / "judge.json" if path.is_dir() else path
    try:
        return float(json.loads(file.read_text("utf-8"))["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CharterError(f"{file}: no calibrated 'threshold' ({type(err).__name__}); give "
                           "a calibrate stage's judge.json") from err  # fmt: skip


def calibrate_judge(
    teacher: Backend, constitution: Constitution, harmful: Sequence[str], safe: Sequence[str]
) -> dict[str, Any]:
    """The verdict check against gold prompts: AUC, and the threshold that separates best.

    The threshold maximises balanced accuracy (Youden's J) on these gold prompts, which are
    drawn from training-side sources, never from an evaluation set.
    """
    from concurrent.futures import ThreadPoolExecutor

    from charter.stages.guided import judge_conversation
    from charter.stages.hard import p_yes

    with ThreadPoolExecutor(max_workers=4) as pool:
        pos = list(pool.map(lambda r: p_yes(teacher, judge_conversation(constitution, r)), harmful))
        neg = list(pool.map(lambda r: p_yes(teacher, judge_conversation(constitution, r)), safe))
    auc, threshold = separation(pos, neg)
    hits = sum(p >= threshold for p in pos) + sum(q < threshold for q in neg)
    n = len(pos) + len(neg)
    return {
        "judge": teacher.name, "harmful": len(pos), "safe": len(neg), "auc": round(auc, 4),
        "threshold": round(threshold, 4), "accuracy": round(hits / n, 4),
        "accuracy_ci": [round(x, 4) for x in wilson_interval(hits, n)],
        "tpr": round(sum(p >= threshold for p in pos) / len(pos), 4),
        "fpr": round(sum(q >= threshold for q in neg) / len(neg), 4),
        "p_harmful": [round(p, 4) for p in pos], "p_safe": [round(q, 4) for q in neg],
    }  # fmt: skip
