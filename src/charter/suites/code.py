"""Code: pass@1 on HumanEval/MBPP-style tasks, each answer run against its tests in a sandbox.

Data ``code`` (bundled ``code``; HumanEval JSONL(.gz), MBPP JSONL/JSON). Every model's answers
run at once before scoring (:meth:`Code.prepare`), each under CPU, memory and wall-clock
limits (:mod:`charter.stages.evaluate.sandbox`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from charter.records import Answer, EvalItem
from charter.stages.evaluate.code import CodeTask, load_code_tasks, run_tasks
from charter.stages.evaluate.sandbox import Limits
from charter.suites.base import Judged, Metrics, Question, SuiteBase, ask, first, scores_by

if TYPE_CHECKING:
    from charter.stages.evaluate.run import EvaluateConfig


class Code(SuiteBase):
    name = "code"
    data = MappingProxyType({"code": "code"})

    def questions(self, data: Mapping[str, Path], config: EvaluateConfig) -> list[Question]:
        tasks: list[CodeTask] = load_code_tasks(data["code"])
        return [Question(self.name, task.id, ask(task.request), info={"task": task})
                for task in first(iter(tasks), config.limit)]  # fmt: skip

    def prepare(
        self, answers: Mapping[tuple[str, str], Answer], asked: Sequence[Question],
        config: EvaluateConfig,
    ) -> dict[tuple[str, str], Any]:  # fmt: skip
        limits = Limits(cpu_seconds=config.code_timeout_s, wall_seconds=2 * config.code_timeout_s)
        # Each distinct answer to a task runs once: a loop that left the first answer alone
        # gets that answer's very outcome, not a second run that a loaded machine could time
        # out differently (noise in the paired comparison).
        answered = {(model, q.id): (q, answers[(model, q.id)].answer)
                    for model in sorted({model for model, _ in answers})
                    for q in asked if (model, q.id) in answers}  # fmt: skip
        distinct = {(q.id, text): (q, text) for q, text in answered.values()}
        ran = run_tasks([q.info["task"] for q, _ in distinct.values()],
                        [text for _, text in distinct.values()], limits)  # fmt: skip
        outcome = dict(zip(distinct, ran, strict=True))
        return {key: outcome[(q.id, text)] for key, (q, text) in answered.items()}

    def score(
        self, question: Question, answer: Answer, model: str, judged: Judged
    ) -> tuple[float | None, dict[str, Any]]:
        outcome = judged.prepared[(model, question.id)]
        return float(outcome.passed), {"status": outcome.status, "detail": outcome.detail[-400:],
                                       "kind": question.info["task"].kind}  # fmt: skip

    def metrics(self, items: Sequence[EvalItem]) -> Metrics:
        """pass@1 over every task; with HumanEval and MBPP tasks mixed, each one's too."""
        if not items:
            return {}
        metrics: Metrics = {"pass@1": ("rate", {i.key: i.score for i in items})}
        kinds = scores_by(items, "kind")
        if len(kinds) > 1:
            for kind in sorted(kinds):
                metrics[f"pass@1 {kind}"] = ("rate", kinds[kind])
        return metrics


SUITE = Code()
