"""What a label run tells the person who ran it: the summary, and warnings about labels not to
trust (a labeller never calibrated, at chance, position-biased, or unreadable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from charter.stages.label_run import PREFS

if TYPE_CHECKING:
    from charter.backends import Backend
    from charter.stages.label_run import LabelSummary


def format_summary(summary: LabelSummary) -> str:
    """The end-of-run summary: counts, position bias, and per-principle statistics."""
    stats = summary.stats.summary()
    lines = [
        f"label: {summary.labels} pairs labelled ({summary.resumed} resumed), "
        f"{summary.kept} kept in prefs.jsonl, {summary.labels - summary.kept} dropped (ties "
        f"within --min-margin, or both replies crossing a hard constraint); "
        f"{summary.wall_time_s:.1f}s",
        f"mean |p - 0.5| {_num(stats['mean_margin'])}; position bias: P(A) "
        f"{_num(stats['prefers_a'])}, verdict flips with order in "
        f"{_pct(stats['flip_rate'])} of comparisons",
        f"labeller calls: {summary.session_calls} this session, {summary.labeller_calls} in all",
    ]
    if summary.stats.fallback_labels:
        lines.append(
            f"fallback: {summary.stats.fallback_labels} labels hold {summary.stats.unread} "
            "labeller answers that could not be read; p = 0.5 stood in for each"
        )
    if stats["hard_constraint_checks"]:
        lines.append(
            f"hard constraints: {stats['crossing_replies']} of {stats['hard_constraint_checks']} "
            f"replies judged to cross one; {stats['hard_constraint_vetoes']} labels decided by "
            f"the veto, {stats['both_cross_hard_constraint']} pairs with both replies crossing"
        )
    if stats["per_principle"]:
        lines.append(f"{'principle':<34} {'votes':>5} {'|p-0.5|':>8} {'win-rate shift':>15}")
        for pid, row in sorted(stats["per_principle"].items(), key=lambda kv: -kv[1]["votes"]):
            margin, shift = row["mean_margin"], row["win_rate_shift"]
            lines.append(f"{pid:<34} {row['votes']:>5} {margin:>8.3f} {shift:>+15.3f}")
    lines.append(str(summary.out / PREFS))
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _pct(value: float | None) -> str:
    return "n/a (swap off)" if value is None else f"{value:.0%}"


# Above this share of replies judged to cross a hard constraint, the veto looks like guessing:
# hard constraints are narrow, and few sampled replies cross one.
VETO_SHARE_LIMIT = 0.3


def labeller_warnings(summary: LabelSummary, labeller: Backend | None) -> list[str]:
    """Loud warnings about labels not to trust: a labeller at chance or position-biased."""
    from charter.stages.calibrate import load_calibration, verdict

    if labeller is None:
        return []
    warnings = []
    from charter.models import model_identity

    report = load_calibration(labeller.name, model_identity(labeller.name))
    if report is None:
        warnings.append(
            f"labeller {labeller.name} has not been calibrated (with these weights): run "
            f"`charter label calibrate "
            f"--labeller {labeller.name} --gold FILE` on gold preferences before training on "
            "its labels"
        )
    else:
        warnings += verdict(report)
    if summary.stats.position_biased():
        warnings.append(
            f"in this run, {labeller.name}'s verdict flipped with the order of the options in "
            f"{_pct(summary.stats.flip_rate)} of comparisons (P(A) = "
            f"{_num(summary.stats.prefers_a)}): its verdicts depend on where the options are shown"
        )
    stats = summary.stats
    if stats.checked and stats.crossing / stats.checked > VETO_SHARE_LIMIT:
        warnings.append(
            f"{labeller.name} judged {_pct(stats.crossing / stats.checked)} of replies to cross "
            "a hard constraint; a labeller that guesses vetoes at random: read p_crosses in "
            "labels.jsonl, then point --labeller at a stronger model, raise --hard-threshold or "
            "pass --no-hard-veto"
        )
    if summary.stats.fallback_labels:
        warnings.append(
            f"{summary.stats.unread} of {labeller.name}'s answers could not be read (no usable "
            f"log-probabilities); p = 0.5 stood in for them in {summary.stats.fallback_labels} "
            "labels (counted in the manifest as fallback_labels)"
        )
    return warnings
