"""Running statistics of a label run: how decisive each principle is, and position bias.

Per principle: how many votes it cast, its mean |p − 0.5| (how decisive its labels are) and
its win-rate shift: its mean P(first response better) minus the mean over all votes. For
pairs with a meaningful order (a revision against its original, gold chosen against
rejected) the shift shows which principles favour the first response more than the rest do;
for sampled pairs it should hover around zero.

Position bias: the mean probability given to option (A) over every scoring, and the flip
rate — how often a verdict changes when the two options swap places (votes scored in both
orders).

Hard constraints: how many labels the veto decided (one reply crossed) and how many pairs
had both replies cross (no preference row).

Fallbacks: scorings whose answer could not be read (p = 0.5 stood in, see
:func:`charter.backends.base.soft_label`), and the labels that hold one, are counted, never hidden.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from charter.records import Label

FLIP_RATE_LIMIT = 0.3  # above this, a labeller's verdicts mostly follow the position
PREFERS_A_LIMIT = 0.15  # |P(A) - 0.5| above this is a strong position preference


@dataclass
class _Principle:
    votes: int = 0
    margin: float = 0.0
    p_first: float = 0.0


@dataclass
class LabelStats:
    """Accumulates over labels one at a time (memory does not grow with the run)."""

    labels: int = 0
    margin: float = 0.0
    votes: int = 0
    p_first: float = 0.0
    swapped_votes: int = 0
    flips: int = 0
    p_a: float = 0.0  # summed over every scoring: P(option (A)) as the labeller gave it
    scorings: int = 0
    unread: int = 0  # scorings whose answer could not be read (p = 0.5 stood in)
    fallback_labels: int = 0  # labels with at least one such scoring
    checked: int = 0  # replies asked whether they cross a hard constraint
    crossing: int = 0  # of those, replies judged to cross
    vetoed: int = 0  # labels the hard-constraint veto decided (one reply crossed)
    both_crossed: int = 0  # pairs whose two replies both crossed: no preference row
    principles: dict[str, _Principle] = field(default_factory=lambda: defaultdict(_Principle))

    def add(self, label: Label) -> None:
        self.labels += 1
        self.margin += abs(label.p_first - 0.5)
        unread = sum(vote.unread for vote in label.votes)
        self.unread += unread
        self.fallback_labels += unread > 0
        self.checked += 2 if label.p_crosses is not None else 0
        self.crossing += sum(label.crossed)
        self.vetoed += sum(label.crossed) == 1
        self.both_crossed += all(label.crossed)
        for vote in label.votes:
            p = vote.p
            self.votes += 1
            self.p_first += p
            for principle_id in vote.principle_ids:
                stats = self.principles[principle_id]
                stats.votes += 1
                stats.margin += abs(p - 0.5)
                stats.p_first += p
            # responses[0] is option (A) in the first order and (B) in the second.
            self.p_a += vote.p_shown_first
            self.scorings += 1
            if vote.p_shown_second is not None:
                self.p_a += 1.0 - vote.p_shown_second
                self.scorings += 1
                self.swapped_votes += 1
                self.flips += (vote.p_shown_first > 0.5) != (vote.p_shown_second > 0.5)

    @property
    def flip_rate(self) -> float | None:
        return self.flips / self.swapped_votes if self.swapped_votes else None

    @property
    def prefers_a(self) -> float | None:
        return self.p_a / self.scorings if self.scorings else None

    def position_biased(self) -> bool:
        flip, p_a = self.flip_rate, self.prefers_a
        return (flip is not None and flip > FLIP_RATE_LIMIT) or (
            p_a is not None and abs(p_a - 0.5) > PREFERS_A_LIMIT
        )

    def summary(self) -> dict[str, Any]:
        """Plain numbers for the manifest and the terminal."""
        overall = self.p_first / self.votes if self.votes else None
        per_principle = {
            pid: {
                "votes": s.votes,
                "mean_margin": round(s.margin / s.votes, 4),
                "win_rate_shift": round(s.p_first / s.votes - (overall or 0.0), 4),
            }
            for pid, s in sorted(self.principles.items())
        }
        return {
            "labels": self.labels,
            "mean_margin": round(self.margin / self.labels, 4) if self.labels else None,
            "prefers_a": None if self.prefers_a is None else round(self.prefers_a, 4),
            "flip_rate": None if self.flip_rate is None else round(self.flip_rate, 4),
            "fallback_labels": self.fallback_labels,
            "unread_scorings": self.unread,
            "hard_constraint_checks": self.checked,
            "crossing_replies": self.crossing,
            "hard_constraint_vetoes": self.vetoed,
            "both_cross_hard_constraint": self.both_crossed,
            "per_principle": per_principle,
        }
