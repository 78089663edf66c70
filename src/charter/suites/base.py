"""What every evaluation suite is: the :class:`Suite` protocol, its questions and its judges.

A suite turns its data files into :class:`Question` records. Every model gets the same
questions, so two models' answers line up item by item (``key``). A question is answered in
one of two ways: a generated reply, or, for multiple choice, one log-probability per option.
The evaluation (:mod:`charter.stages.evaluate.run`) answers, runs the judges a suite asks for
(``needs``), and hands each answer to the suite's ``score``; ``metrics`` then names the
per-item scores each reported metric averages, with its kind (``rate``: a Wilson interval;
``mean``: a bootstrap one).

Judges a suite may need, run once for all suites:

- ``refusal``: the refusal classifier on every answer (:mod:`charter.stages.evaluate.judges`);
- ``harm_judge``: an LLM judge on the answers that did not refuse (only with ``--judge``);
- ``pairwise_judge``: an LLM judge comparing models on questions of kind ``pairwise``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from charter import bundled
from charter.errors import CharterError
from charter.prompts import load_prompts
from charter.records import Answer, EvalItem, Message, Verdict, content_id

if TYPE_CHECKING:
    from charter.stages.evaluate.run import EvaluateConfig

Need = Literal["refusal", "harm_judge", "pairwise_judge"]
Metrics = dict[str, tuple[Literal["rate", "mean"], dict[str, float]]]


@dataclass(frozen=True)
class Question:
    """One item of a suite, asked of every model."""

    suite: str
    key: str  # stable across models: the answers of two models to one key are compared
    messages: tuple[Message, ...]
    options: tuple[str, ...] = ()  # multiple choice: scored, not generated
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # what the judge needs

    @property
    def id(self) -> str:
        return f"{self.suite}:{self.key}"


@dataclass(frozen=True)
class Judged:
    """What the shared judges said, by (model, question id), for a suite's ``score``."""

    refusal_layer: str = ""
    refusals: Mapping[tuple[str, str], tuple[bool, bool, float | None]] = field(
        default_factory=dict
    )  # refused, refused by phrases, p(refusal)
    harm: Mapping[tuple[str, str], Verdict] = field(default_factory=dict)
    wins: Mapping[tuple[str, str], list[float]] = field(default_factory=dict)  # pairwise p
    prepared: Mapping[tuple[str, str], Any] = field(default_factory=dict)  # the suite's own


class Suite(Protocol):
    """One evaluation suite (see the module docstring); a module's ``SUITE``."""

    name: str
    data: Mapping[str, str]  # data key → bundled default (a key may appear in several suites)
    optional_data: tuple[str, ...]  # keys read only when given (e.g. jailbreak templates)
    needs: frozenset[Need]
    lower_is_better: frozenset[str]  # metric names where less is better

    def questions(self, data: Mapping[str, Path], config: EvaluateConfig) -> list[Question]:
        """Every question, read and checked before any model call."""
        ...

    def prepare(
        self, answers: Mapping[tuple[str, str], Answer], asked: Sequence[Question],
        config: EvaluateConfig,
    ) -> dict[tuple[str, str], Any]:  # fmt: skip
        """Work on all answers at once before scoring (e.g. run code in a sandbox)."""
        ...

    def score(
        self, question: Question, answer: Answer, model: str, judged: Judged
    ) -> tuple[float | None, dict[str, Any]]:
        """One answer's score and the judgement behind it (None: not scored)."""
        ...

    def metrics(self, items: Sequence[EvalItem]) -> Metrics:
        """Each metric: its kind and the per-item scores it summarises."""
        ...


class SuiteBase:
    """Defaults for a suite: no optional data, no judges, nothing to prepare."""

    optional_data: tuple[str, ...] = ()
    needs: frozenset[Need] = frozenset()
    lower_is_better: frozenset[str] = frozenset()

    def prepare(
        self, answers: Mapping[tuple[str, str], Answer], asked: Sequence[Question],
        config: EvaluateConfig,
    ) -> dict[tuple[str, str], Any]:  # fmt: skip
        return {}


# --- shared by the suites ---------------------------------------------------------------------


def resolve_data(source: str | Path) -> Path:
    """A data file's path, or the bundled evaluation file of that name."""
    return bundled.resolve_bundled(source, "data/eval", ".jsonl", ("data", "evaluation set"))


def ask(text: str) -> tuple[Message, ...]:
    """A single user turn."""
    return (Message(role="user", content=text),)


def scores_by(items: Sequence[EvalItem], field: str) -> dict[str, dict[str, float]]:
    """Each item's score, grouped by the value of ``judgement[field]`` (in first-seen order;
    items without it are left out): per-group metrics such as pass@1 per benchmark."""
    groups: dict[str, dict[str, float]] = {}
    for item in items:
        if (value := item.judgement.get(field)) is not None:
            groups.setdefault(str(value), {})[item.key] = item.score
    return groups


def first(items: Iterator[Any], limit: int | None) -> Iterator[Any]:
    """The first ``limit`` items (all when None)."""
    for count, item in enumerate(items):
        if limit is not None and count >= limit:
            return
        yield item


def prompt_texts(path: Path, *, safe_only: bool = False) -> Iterator[tuple[str, str]]:
    """(key, prompt) pairs from any prompt file Charter reads, or a HarmBench/XSTest CSV.

    The key is the prompt's content id, so the same prompt in two files is one item.
    ``safe_only``: CSV rows with a ``label`` column other than ``safe`` are left out
    (XSTest's contrasting unsafe prompts).
    """
    if path.suffix.lower() == ".csv":
        yield from _csv_prompts(path, safe_only)
        return
    for prompt in load_prompts(path):
        if len(prompt.messages) != 1:
            raise CharterError(
                f"{prompt.source}: evaluation prompts are single user turns; this one has "
                f"{len(prompt.messages)} messages"
            )
        yield prompt.id, prompt.messages[0].content


def _csv_prompts(path: Path, safe_only: bool) -> Iterator[tuple[str, str]]:
    try:
        yield from _csv_rows(path, safe_only)
    except UnicodeDecodeError as err:
        raise CharterError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from None
    except csv.Error as err:
        raise CharterError(f"{path}: not a readable CSV ({err})") from None


def _csv_rows(path: Path, safe_only: bool) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # a BOM is not a name
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        column = next((c for c in ("prompt", "Behavior", "goal") if c in columns), None)
        if column is None:
            raise CharterError(
                f"{path}: no prompt column (looked for prompt, Behavior, goal; found "
                f"{', '.join(columns) or 'none'})"
            )
        for number, row in enumerate(reader, start=2):
            text = (row.get(column) or "").strip()
            if not text:
                raise CharterError(f"{path}:{number}: empty '{column}'")
            if safe_only and row.get("label", "safe") != "safe":
                continue
            if row.get("FunctionalCategory", "standard") != "standard":
                continue  # HarmBench: contextual and copyright behaviours need more than a prompt
            yield content_id(text), text


def refusal_judgement(judged: Judged, key: tuple[str, str]) -> dict[str, Any]:
    """The refusal classifier's reading of one answer, as an item's judgement records it."""
    refused, by_phrases, p_refusal = judged.refusals[key]
    return {"refused": refused, "refused_by_phrases": by_phrases, "p_refusal": p_refusal,
            "refusal_layer": judged.refusal_layer}  # fmt: skip
