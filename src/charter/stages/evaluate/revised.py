"""Inference-time constitutional revision in the evaluation: ``MODEL+revise:N``.

Evaluating ``local/qwen2.5-coder-0.5b-instruct`` beside
``local/qwen2.5-coder-0.5b-instruct+revise:3`` compares a model's plain answers with the same
model's answers after the verified critique → revision loop
(:func:`charter.stages.code_revise.verify_revise`, the ``code`` constitution, at most N
rounds, stopping when the visible tests pass). The evaluation then gives the difference on
the same tasks with its paired interval and exact McNemar test, as for any two models. The
loop applies to code questions; every other question gets the model's plain answer.
``MODEL+revise:N:FEEDBACK`` picks what comes between a failed test and the revision
(``critique``, the default; ``critique-plain``; ``test``: see
:func:`~charter.stages.code_revise.verify_revise`). A last ``:xK`` draws K revisions a round
at :data:`~charter.stages.code_revise.SAMPLED_TEMPERATURE` and keeps the first that passes
the visible tests (``MODEL+revise:3:critique-plain:x4``); without it, one greedy revision.
A last ``:values`` makes each failed visible assert say what the code gave ("f(2) gave 3;
the test expects 5") where Python says only ``AssertionError``
(:mod:`charter.stages.evaluate.explain`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.stages.evaluate.code import CodeTask
from charter.stages.evaluate.sandbox import Limits

if TYPE_CHECKING:
    from charter.stages.code_revise import CodeAttempt, CodeTrace, Feedback

_SUFFIX = re.compile(r"\+revise:(\d+)(?::(?!values$)([a-z-]+))?(?::x(\d+))?(:values)?$")
MAX_ROUNDS, MAX_SAMPLES = 8, 16


class Revision(NamedTuple):
    """A model name split: ``base`` and, for ``base+revise:N[:FEEDBACK][:xK][:values]``, the
    loop's rounds (0: plain answers), feedback, revisions sampled per round, and whether a
    failed visible assert says what the code gave."""

    base: str
    rounds: int = 0
    feedback: Feedback = "critique"
    samples: int = 1
    values: bool = False  # failed visible asserts say what the code gave

    @property
    def suffix(self) -> str:
        """What the name adds to ``base`` ("" for plain answers)."""
        if not self.rounds:
            return ""
        feedback = "" if self.feedback == "critique" else f":{self.feedback}"
        samples = f":x{self.samples}" if self.samples > 1 else ""
        return f"+revise:{self.rounds}{feedback}{samples}{':values' if self.values else ''}"


def split_revise(model: str) -> Revision:
    """``Revision("local/x", 3, "test", 4)`` for ``local/x+revise:3:test:x4``;
    ``Revision(model)`` for a plain name."""
    found = _SUFFIX.search(model)
    if found is None:
        if "+revise" in model:
            raise CharterError(f"model '{model}': write the loop as MODEL+revise:N"
                               f"[:FEEDBACK][:xK][:values], N from 1 to {MAX_ROUNDS}")  # fmt: skip
        return Revision(model)
    from charter.stages.code_revise import FEEDBACKS

    rounds, feedback = int(found.group(1)), found.group(2) or "critique"
    samples = int(found.group(3) or 1)
    if not 1 <= rounds <= MAX_ROUNDS:
        raise CharterError(f"model '{model}': +revise:N takes N from 1 to {MAX_ROUNDS}")
    if not 1 <= samples <= MAX_SAMPLES:
        raise CharterError(f"model '{model}': :xK takes K from 1 to {MAX_SAMPLES}")
    if feedback == "values":
        raise CharterError(f"model '{model}': write :values last, as in "
                           "MODEL+revise:N:FEEDBACK:xK:values")  # fmt: skip
    if feedback not in FEEDBACKS:
        raise CharterError(f"model '{model}': +revise:N:FEEDBACK takes FEEDBACK from "
                           f"{', '.join(FEEDBACKS)}, not '{feedback}'")  # fmt: skip
    return Revision(model[: found.start()], rounds, cast("Feedback", feedback), samples,
                    values=found.group(4) is not None)  # fmt: skip


def revise_code_answers(
    policy: Backend, tasks: Sequence[CodeTask], texts: Sequence[str], spec: Revision, *,
    config: GenerationConfig, timeout_s: int, seed: int, model: str,
) -> list[CodeTrace]:  # fmt: skip
    """The loop's trace for each (task, first answer): its final answer, every attempt with
    its critique, and the tokens the loop added (``model`` names who answered)."""
    from charter.stages.code_revise import revision_for, verify_revise

    traces = verify_revise(
        policy, list(tasks), Constitution.load("code"), rounds=spec.rounds, seed=seed,
        revision=revision_for(config, spec.samples), answers=texts, feedback=spec.feedback,
        samples=spec.samples, values=spec.values,
        limits=Limits(cpu_seconds=timeout_s, wall_seconds=2.0 * timeout_s),
    )  # fmt: skip
    return [trace.model_copy(update={"model": model}) for trace in traces]


def revised_decoding(config: GenerationConfig, spec: Revision, kept: CodeAttempt) -> dict[str, Any]:
    """The first answers' settings (``config``) with ``revision``: those, seed included, of
    the call that wrote ``kept``, a revision of the loop ``spec``."""
    from charter.stages.code_revise import revision_for

    settings = revision_for(config, spec.samples)
    if kept.seed is not None:
        settings = settings.model_copy(update={"seed": kept.seed})
    return {**config.model_dump(mode="json"), "revision": settings.model_dump(mode="json")}
