"""Helpfulness: open requests compared between models, and checkable instructions (IFEval).

Data ``helpful`` (bundled ``helpful``; any prompt file): each request is answered by every
model and a judge says which answer of each pair is better (win rates and Elo; with one
model there is nothing to compare). Data ``ifeval`` (bundled ``ifeval``; IFEval's
``input_data.jsonl``): prompts with instructions that code can check ("exactly 3 bullet
points"), scored strictly per prompt and per instruction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from charter.records import Answer, EvalItem
from charter.stages.evaluate.ifeval import InstructionPrompt, follows, load_instruction_prompts
from charter.suites.base import Judged, Metrics, Question, SuiteBase, ask, first, prompt_texts

if TYPE_CHECKING:
    from charter.stages.evaluate.run import EvaluateConfig


class Helpfulness(SuiteBase):
    name = "helpfulness"
    data = MappingProxyType({"helpful": "helpful", "ifeval": "ifeval"})
    needs = frozenset({"pairwise_judge"})

    def questions(self, data: Mapping[str, Path], config: EvaluateConfig) -> list[Question]:
        """Open requests (compared pairwise by a judge) and checkable instructions (IFEval)."""
        questions = [
            Question(self.name, f"pairwise:{key}", ask(text), info={"kind": "pairwise"})
            for key, text in first(prompt_texts(data["helpful"]), config.limit)
        ]
        prompts: list[InstructionPrompt] = load_instruction_prompts(data["ifeval"])
        for prompt in first(iter(prompts), config.limit):
            # Kept even with no checkable instruction: the evaluation counts it as unscored,
            # and the questions asked do not depend on which optional libraries are installed.
            questions.append(Question(
                self.name, f"ifeval:{prompt.id}", ask(prompt.prompt),
                info={"kind": "ifeval", "prompt": prompt},
            ))  # fmt: skip
        return questions

    def score(
        self, question: Question, answer: Answer, model: str, judged: Judged
    ) -> tuple[float | None, dict[str, Any]]:
        if question.info["kind"] == "ifeval":
            followed = follows(question.info["prompt"], answer.answer)
            if not followed:  # no instruction of it can be checked: counted as unscored
                return None, {}
            judgement = {"followed": followed,
                         "unsupported": list(question.info["prompt"].unsupported)}  # fmt: skip
            return float(all(followed.values())), judgement
        mine = judged.wins.get((model, question.id))
        return (sum(mine) / len(mine), {"p_wins": mine}) if mine else (None, {})

    def metrics(self, items: Sequence[EvalItem]) -> Metrics:
        ifeval = [i for i in items if i.key.startswith("ifeval:")]
        found: Metrics = {}
        if ifeval:
            found["instructions_prompt_level"] = ("rate", {i.key: i.score for i in ifeval})
            found["instructions_instruction_level"] = ("rate", {
                f"{i.key}:{name}": float(ok)
                for i in ifeval
                for name, ok in i.judgement["followed"].items()
            })  # fmt: skip
        wins = {i.key: i.score for i in items if i.key.startswith("pairwise:")}
        if wins:
            found["pairwise_win_rate"] = ("mean", wins)
        return found


SUITE = Helpfulness()
