"""The reply cache of ``charter constitution infer``, and what its rows cost.

Every proposal and soft label is kept as a :class:`Cached` row with the tokens and model
seconds it took, so a run resumed across sessions still knows what its result cost:
:meth:`Replies.bill` sums the rows a result read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from charter.backends import Backend
from charter.backends.base import token_totals
from charter.records import Record, Usage


class Cached(Record):
    """One cached model result (``replies.jsonl``): a proposal's text or a soft label, with
    what making it cost (a batch's tokens and seconds split evenly over its rows; zero in rows
    cached before costs were kept, or from a backend that counts no tokens)."""

    id: str
    kind: str  # propose | label
    text: str
    usage: Usage = Usage()
    seconds: float = 0.0


@dataclass
class Replies:
    """The reply cache as a run sees it: the rows (``cached``), how to keep a new one
    (``store``) and which rows this result read, whose costs make its bill."""

    cached: dict[str, Cached]
    store: Callable[[Cached], None]
    used: set[str] = field(default_factory=set)

    def __contains__(self, key: str) -> bool:
        return key in self.cached

    def __getitem__(self, key: str) -> Cached:
        self.used.add(key)
        return self.cached[key]

    def put(self, row: Cached) -> None:
        self.store(row)
        self.cached[row.id] = row

    def bill(self) -> dict[str, Any]:
        """Calls, tokens and model seconds of every row read, however many sessions made
        them; ``uncounted``: rows read that carry no token count."""
        rows = [self.cached[key] for key in sorted(self.used)]
        total = sum((row.usage for row in rows), Usage())
        return {**total.model_dump(), "model_seconds": round(sum(r.seconds for r in rows), 1),
                "rows": len(rows), "uncounted": sum(r.usage.calls == 0 for r in rows)}  # fmt: skip


def split_cost(usage: Usage, seconds: float, n: int) -> list[tuple[Usage, float]]:
    """A batch's cost over its ``n`` rows: seconds evenly, counts in whole numbers (the
    remainder to the first rows), so the rows add up to the batch."""
    counts = usage.model_dump()
    shares = []
    for i in range(n):
        share = {k: v // n + (i < v % n) for k, v in counts.items()}
        shares.append((Usage(**share), seconds / n))
    return shares


def spent_since(model: Backend, before: Usage | None) -> Usage:
    """What ``model`` counted since ``before``; nothing where it counts nothing."""
    now = token_totals(model)
    return now - before if now is not None and before is not None else Usage()
