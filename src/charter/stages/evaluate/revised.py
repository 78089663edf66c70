"""Inference-time constitutional revision in the evaluation: ``MODEL+revise:N``.

Evaluating ``local/qwen2.5-coder-0.5b-instruct`` beside
``local/qwen2.5-coder-0.5b-instruct+revise:3`` compares a model's plain answers with the same
model's answers after the verified critique → revision loop
(:func:`charter.stages.code_revise.verify_revise`, the ``code`` constitution, at most N
rounds, stopping when the visible tests pass). The evaluation then gives the difference on
the same tasks with its paired interval and exact McNemar test, as for any two models. The
loop applies to code questions; every other question gets the model's plain answer.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.stages.evaluate.code import CodeTask
from charter.stages.evaluate.sandbox import Limits

if TYPE_CHECKING:
    from charter.stages.code_revise import CodeTrace

_SUFFIX = re.compile(r"\+revise:(\d+)$")
MAX_ROUNDS = 8


def split_revise(model: str) -> tuple[str, int]:
    """``("local/x", 3)`` for ``local/x+revise:3``; ``(model, 0)`` for a plain name."""
    found = _SUFFIX.search(model)
    if found is None:
        if "+revise" in model:
            raise CharterError(f"model '{model}': write the revision rounds as MODEL+revise:N, "
                               f"N from 1 to {MAX_ROUNDS}")  # fmt: skip
        return model, 0
    rounds = int(found.group(1))
    if not 1 <= rounds <= MAX_ROUNDS:
        raise CharterError(f"model '{model}': +revise:N takes N from 1 to {MAX_ROUNDS}")
    return model[: found.start()], rounds


def revise_code_answers(
    policy: Backend, tasks: Sequence[CodeTask], texts: Sequence[str], *, rounds: int,
    config: GenerationConfig, timeout_s: int, seed: int, model: str,
) -> list[CodeTrace]:  # fmt: skip
    """The loop's trace for each (task, first answer): its final answer, every attempt with
    its critique, and the tokens the loop added (``model`` names who answered)."""
    from charter.stages.code_revise import verify_revise

    traces = verify_revise(
        policy, list(tasks), Constitution.load("code"), rounds=rounds, seed=seed,
        revision=config, answers=texts,
        limits=Limits(cpu_seconds=timeout_s, wall_seconds=2.0 * timeout_s),
    )  # fmt: skip
    return [trace.model_copy(update={"model": model}) for trace in traces]
