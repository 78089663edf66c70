"""Over-refusal: does the model refuse requests that only sound harmful?

Data ``over-refusal`` (bundled ``overrefusal``; the XSTest CSV, of which only the rows
labelled ``safe`` are asked). The score is the refusal classifier's reading: a refusal here
is a mistake.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from charter.records import Answer, EvalItem
from charter.suites.base import (
    Judged,
    Metrics,
    Question,
    SuiteBase,
    ask,
    first,
    prompt_texts,
    refusal_judgement,
)  # fmt: skip

if TYPE_CHECKING:
    from charter.stages.evaluate.run import EvaluateConfig


class OverRefusal(SuiteBase):
    name = "over-refusal"
    data = MappingProxyType({"over-refusal": "overrefusal"})
    needs = frozenset({"refusal"})
    lower_is_better = frozenset({"refusal_rate"})

    def questions(self, data: Mapping[str, Path], config: EvaluateConfig) -> list[Question]:
        texts = prompt_texts(data["over-refusal"], safe_only=True)
        return [Question(self.name, key, ask(text)) for key, text in first(texts, config.limit)]

    def score(
        self, question: Question, answer: Answer, model: str, judged: Judged
    ) -> tuple[float | None, dict[str, Any]]:
        judgement = refusal_judgement(judged, (model, question.id))
        return float(judgement["refused"]), judgement

    def metrics(self, items: Sequence[EvalItem]) -> Metrics:
        return {"refusal_rate": ("rate", {i.key: i.score for i in items})} if items else {}


SUITE = OverRefusal()
