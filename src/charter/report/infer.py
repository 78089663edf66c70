"""``charter report NAME.infer.json``: one HTML page for an inferred constitution.

What it shows: the inferred constitution's accuracy on the held-out test split beside the
constant, length-rule and reference labellers, with 95% intervals, and its paired
differences from them on the same pairs; each kept principle's
accuracy on the select split (where it was chosen) and on the test split (where it was not),
its relevance and position bias; every candidate and why it was or was not kept; which of
the reference's principles it recovers; and what the result cost. Built with the run
report's escaping and Content-Security-Policy (this page has no script at all).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from charter.errors import CharterError

TEMPLATE = "infer.html.j2"
SUFFIX = ".infer.json"


class _Estimate(BaseModel):
    value: float
    low: float
    high: float
    n: int


class _Scores(BaseModel):
    accuracy: _Estimate
    relevance: float
    position_bias: float


class _Row(BaseModel):
    """One labeller's line of the test table (a baseline may carry no interval)."""

    value: float
    low: float | None = None
    high: float | None = None
    n: int | None = None
    note: str | None = None


class _Difference(_Estimate):
    p_value: float | None = None


class _Candidate(_Scores):
    text: str
    support: int


class _Match(BaseModel):
    reference: str
    nearest: str
    cosine: float
    example_cosine: float | None = None  # the nearest's, to a worked example of the proposals


class _Recovery(BaseModel):
    threshold: float
    recovered: int
    recovered_unlike_examples: int | None = None
    of: int
    principles: list[_Match] = []


class _Cost(BaseModel):
    calls: int
    prompt_tokens: int
    cached_tokens: int = 0
    completion_tokens: int
    model_seconds: float
    rows: int = 0
    uncounted: int = 0


class _Run(BaseModel):
    model: str
    source: str
    pairs: int
    seed: int
    session_seconds: float


class _Infer(BaseModel):
    """What the page reads of a ``.infer.json`` (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    pairs: dict[str, int]
    proposals: int
    not_a_question: int
    restates_request: int | None = None
    copies_example: int | None = None
    candidates: list[_Candidate]
    kept: list[str]
    test: dict[str, _Row | None]  # by labeller; "per_principle" moved out on reading
    differences: dict[str, _Difference] = {}  # "inferred − reference (default)", paired
    per_principle: dict[str, _Scores] = {}
    recovery: _Recovery | None = None
    cost: _Cost | None = None
    run: _Run | None = None

    @model_validator(mode="after")
    def _kept_are_candidates(self) -> _Infer:
        texts = {c.text for c in self.candidates}
        if missing := [text for text in self.kept if text not in texts]:
            raise ValueError(f"kept principle {missing[0]!r} is not among the candidates")
        return self


def read_infer(path: Path) -> dict[str, Any]:
    """The report ``charter constitution infer`` wrote, checked: one clear error if not."""
    try:
        raw = json.loads(path.read_text("utf-8"))
        if isinstance(raw, dict) and isinstance(raw.get("test"), dict):
            raw["per_principle"] = raw["test"].pop("per_principle", {})
        view = _Infer.model_validate(raw)
    except (OSError, UnicodeDecodeError, ValueError, ValidationError) as err:
        if isinstance(err, ValidationError):
            first = err.errors()[0]
            reason = f"{'.'.join(map(str, first['loc']))}: {first['msg']}"
        else:
            reason = str(err)
        raise CharterError(f"{path}: not a report of charter constitution infer ({reason}); "
                           "rerun it to rewrite the file") from None  # fmt: skip
    return view.model_dump()


def build_infer_report(report: dict[str, Any], title: str) -> str:
    """The HTML of the page for one infer report (as :func:`read_infer` returns it)."""
    from charter.report import environment, plots

    candidates = {c["text"]: c for c in report["candidates"]}
    tested = report["per_principle"]
    rows = [(text, candidates[text]["accuracy"], (tested.get(text) or {}).get("accuracy"))
            for text in report["kept"]]  # the kept table's order  # fmt: skip
    figures = {"accuracies": plots.accuracies(rows)} if rows else {}
    return environment().get_template(TEMPLATE).render(
        title=title, r=report, candidates=candidates,
        figures={name: plots.data_uri(svg) for name, svg in figures.items()},
    )  # fmt: skip


def infer_report_for(path: Path) -> Path:
    """Write ``NAME.infer.html`` beside ``NAME.infer.json``; returns its path."""
    from charter.runs import write_atomic

    if not path.name.endswith(SUFFIX):
        raise CharterError(f"{path}: not a charter run directory or a report of constitution "
                           f"infer (NAME{SUFFIX}); pass one of those")  # fmt: skip
    report = read_infer(path)
    name = path.name[: -len(SUFFIX)]
    out = path.with_name(f"{name}.infer.html")
    write_atomic(out, build_infer_report(report, title=f"{name}: inferred constitution"))
    return out
