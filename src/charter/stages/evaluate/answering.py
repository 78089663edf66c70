"""Each model's answers in ``charter evaluate``: generated ones in batches, multiple-choice
ones scored by log-probability, code ones through the revision loop for ``MODEL+revise:N``.

Answers are appended as they come (``answers.jsonl``), the loop's traces before them
(``code-traces.jsonl``), so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.backends import Backend
from charter.iterate import batched
from charter.progress import progress_bar
from charter.records import Answer, content_id
from charter.runs import JsonlAppender
from charter.stages.evaluate.revised import (
    Revision,
    revise_code_answers,
    revised_decoding,
    split_revise,
)
from charter.stages.evaluate.suites import Question

if TYPE_CHECKING:
    from charter.stages.code_revise import CodeTrace
    from charter.stages.evaluate.run import EvaluateConfig

log = logging.getLogger(__name__)
ANSWERS, TRACES = "answers.jsonl", "code-traces.jsonl"


def answer_model(
    model: str, asked: list[Question], answered: dict[tuple[str, str], Answer], out: Path,
    backend: Callable[[str], Backend], config: EvaluateConfig, progress: bool,
) -> None:  # fmt: skip
    """``model``'s answers to the ``asked`` questions it has not answered yet, appended to
    ``answers.jsonl`` (and its loop's traces to ``code-traces.jsonl``) batch by batch and
    added to ``answered``, by (model, question id)."""
    pending = [q for q in asked if (model, q.id) not in answered]
    if not pending:
        return
    spec = split_revise(model)
    log.info("answering as %s: %d of %d questions", model, len(pending), len(asked))
    policy = backend(spec.base)
    bar = progress_bar(total=len(asked), initial=len(asked) - len(pending), unit="question",
                       desc=f"answer {model}", disable=not progress)  # fmt: skip
    try:
        with bar, JsonlAppender(out / ANSWERS) as sink:
            for batch in batched(pending, config.batch_size):
                firsts = {q.id: answered[(spec.base, q.id)] for q in batch
                          if spec.rounds and (spec.base, q.id) in answered}  # fmt: skip
                answers, loops = answer_batch(policy, batch, config, spec, firsts)
                if loops:  # before the answers: a batch resumed after a kill may repeat
                    with JsonlAppender(out / TRACES) as traces:
                        for trace in loops:
                            traces.write(trace)
                for answer in answers:
                    sink.write(answer)
                    answered[(model, answer.question)] = answer
                bar.update(len(batch))
    finally:
        policy.close()


def answer_batch(
    policy: Backend, batch: list[Question], config: EvaluateConfig,
    spec: Revision | None = None, firsts: dict[str, Answer] | None = None,
) -> tuple[list[Answer], list[CodeTrace]]:  # fmt: skip
    """``policy``'s answers; with ``spec.rounds``, code answers go through the verified revision
    loop (``MODEL+revise:N``, :mod:`charter.stages.evaluate.revised`), starting from ``firsts``,
    the plain model's answers where it gave them, so both sides share their first answer."""
    firsts, spec = firsts or {}, spec or Revision(policy.name)
    name = policy.name + spec.suffix

    def make(question: Question, **fields: Any) -> Answer:
        key = content_id([name, question.id])
        return Answer(id=key, model=name, question=question.id, **fields)

    decoding = config.answer.model_dump(mode="json")

    generated = [q for q in batch if not q.options]
    fresh = [q for q in generated if q.id not in firsts]
    replies = policy.generate([list(q.messages) for q in fresh], config.answer) if fresh else []
    texts = {q.id: (r.text, r.usage()) for q, r in zip(fresh, replies, strict=True)}
    finish = {q.id: r.finish_reason for q, r in zip(fresh, replies, strict=True)}
    for q in generated:
        if (first := firsts.get(q.id)) is not None:
            texts[q.id], finish[q.id] = (first.answer, first.usage), first.finish_reason
    code = [q for q in generated if "task" in q.info] if spec.rounds else []
    traces = revise_code_answers(
        policy, [q.info["task"] for q in code], [texts[q.id][0] for q in code],
        spec, config=config.answer, timeout_s=config.code_timeout_s, seed=config.answer.seed,
        model=name,
    ) if code else []  # fmt: skip
    decodings = {q.id: decoding for q in generated}
    for q, trace in zip(code, traces, strict=True):
        texts[q.id] = (trace.kept.answer, texts[q.id][1] + trace.usage)
        if trace.kept.round:  # a revision: its own call's settings and ending
            if trace.kept.finish_reason is not None:  # None: a trace written before it was kept
                finish[q.id] = trace.kept.finish_reason
            decodings[q.id] = revised_decoding(config.answer, spec, trace.kept)
    answers = [
        make(q, answer=texts[q.id][0], finish_reason=finish[q.id], usage=texts[q.id][1],
             decoding=decodings[q.id])
        for q in generated
    ]  # fmt: skip
    scored = [q for q in batch if q.options]
    workers = max(1, int(getattr(policy, "concurrency", 1)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        logprobs = pool.map(lambda q: policy.choice_logprobs(list(q.messages), q.options), scored)
        answers += [make(q, logprobs=tuple(lp)) for q, lp in zip(scored, logprobs, strict=True)]
    return answers, traces
