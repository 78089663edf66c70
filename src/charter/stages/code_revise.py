"""Critique → revision for code, grounded in running it: the loop behind ``--verify``.

For each task the model answers; the answer runs against the task's *visible* tests in the
sandbox (:attr:`CodeTask.visible`: MBPP's first assert, HumanEval's docstring examples). While
it fails, and for at most ``rounds`` rounds, the model critiques its latest answer under a
principle drawn from the constitution, with the test code and what the run printed (the
failed assert, the exception, the timeout) in front of it, then revises; the revision runs
again. Every attempt is kept (:class:`CodeAttempt`), so a trace shows the pass/fail trail.

A revision counts as *verified* when it passes the visible tests; only those become SFT data
(:func:`verified_rows`; or, asked for, every answer that passes, first answers included). The
hidden tests (:attr:`CodeTask.tests`) are never shown to the model: the evaluation scores the
final answer on them separately. The same function is the inference-time mode (answer, then
revise until the visible tests pass), from the Python API and from the code suite.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

from pydantic import BaseModel, ConfigDict, Field

from charter.backends.base import Backend, GenerationConfig
from charter.constitution import Constitution, Principle
from charter.errors import CharterError
from charter.records import Message, SFTRow, Usage, render_messages
from charter.stages.evaluate.code import CodeTask, run_tasks
from charter.stages.evaluate.sandbox import DEFAULT_LIMITS, Limits, Outcome
from charter.stages.revise import clean_reply, critique_request, fewshot_prefix

Feedback = Literal["critique", "critique-plain", "test"]
FEEDBACKS: tuple[Feedback, ...] = get_args(Feedback)
SAMPLED_TEMPERATURE = 0.8  # of a loop's revisions when it draws more than one a round
TEST_RESULT = (
    "Your code was run against this test:\n\n```python\n{test}```\n\nResult: {status}{detail}"
)
NO_VISIBLE_TEST = (
    "Your code was run as it stands (the task shows no test). Result: {status}{detail}"
)
CODE_REVISION_REQUEST = (
    "{revision} Reply with the whole corrected program in one ```python code block, and "
    "nothing after it."
)


class CodeAttempt(BaseModel):
    """One answer and how it fared on the visible tests; rounds after 0 say how it came."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    round: int = Field(ge=0)
    answer: str
    status: str  # the sandbox's: passed, failed, timeout, memory, blocked, error
    detail: str = ""
    principle: str | None = None  # the principle of the critique that led here
    critique: str | None = None
    samples: int = 1  # revisions sampled this round; the first that passed (else the first)
    passing: int | None = None  # how many of those samples passed the visible tests
    seed: int | None = None  # of the call that wrote this answer (None: given, not generated)
    finish_reason: str | None = None  # the backend's, for that call ("length": cut short)


class CodeTrace(BaseModel):
    """One task through the loop: every attempt in order, and the tokens it cost."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    request: str
    attempts: list[CodeAttempt]
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None  # set where one file holds several models' traces (evaluate)

    @property
    def final(self) -> CodeAttempt:
        return self.attempts[-1]

    @property
    def kept(self) -> CodeAttempt:
        """The answer to use: the last attempt when it passes the visible tests, else the
        first answer, which no revision that fails them too may replace (where a visible test
        is itself wrong, as three of HumanEval's docstring examples are, a correct first
        answer would otherwise give way to a sampled revision)."""
        return self.final if self.final.status == "passed" else self.attempts[0]

    @property
    def verified_revision(self) -> bool:
        """Revised (at least one round) and the last revision passes the visible tests."""
        return len(self.attempts) > 1 and self.final.status == "passed"


def verify_revise(
    backend: Backend,
    tasks: Sequence[CodeTask],
    constitution: Constitution,
    *,
    rounds: int = 3,
    seed: int = 0,
    answer: GenerationConfig | None = None,
    revision: GenerationConfig | None = None,
    limits: Limits = DEFAULT_LIMITS,
    answers: Sequence[str] | None = None,
    feedback: Feedback = "critique",
    samples: int = 1,
    values: bool = False,
) -> list[CodeTrace]:
    """Answer each task (or start from ``answers``), then critique and revise while the
    visible tests fail, at most ``rounds`` times; calls go to ``backend`` in batches.

    ``feedback``: what comes between a failed run and the revision. ``critique``: the model
    critiques its code under the drawn principle, after the constitution's demonstrations;
    ``critique-plain``: the same without the demonstrations (small models copy their
    content); ``test``: no critique, the revision is asked straight from the test result,
    under the drawn principle's revision request.

    ``samples``: revisions drawn per round after one critique, both with ``revision`` (which
    must sample, temperature above 0, for more than one); the first revision that passes the
    visible tests is kept, else the first goes on to the next round. A task whose revisions
    all fail keeps its first answer (:attr:`CodeTrace.kept`). The visible tests choose; the
    hidden ones are never run here.

    ``values``: each failed visible assert says what the code gave ("f(2) gave 3; the test
    expects 5", :func:`~charter.stages.evaluate.explain.explain_asserts`) where Python says
    only ``AssertionError``; pass or fail is unchanged.
    """
    answer = answer or GenerationConfig(temperature=0.0, max_tokens=512)
    revision = revision or GenerationConfig(temperature=0.0, max_tokens=512)
    if samples < 1 or (samples > 1 and revision.temperature <= 0):
        raise CharterError(f"samples={samples}: draw at least one revision, and more than one "
                           "only at a revision temperature above 0")  # fmt: skip
    if answers is None:
        replies = _generate(backend, [_ask(task) for task in tasks], answer, seed)
    else:
        if len(answers) != len(tasks):
            raise ValueError(f"{len(tasks)} tasks but {len(answers)} answers")
        replies = [_Reply(text, Usage()) for text in answers]
    outcomes = run_tasks(list(tasks), [reply.text for reply in replies], limits, visible=True,
                         explain=values)  # fmt: skip
    traces = [
        CodeTrace(task_id=task.id, request=task.request, usage=reply.usage,
                  attempts=[_attempt(0, reply, outcome)])
        for task, reply, outcome in zip(tasks, replies, outcomes, strict=True)
    ]  # fmt: skip
    prefix = fewshot_prefix(constitution)
    if feedback != "critique":
        prefix = prefix[:1]  # the system message (and the constitution's brief) only
    rng = random.Random(seed)
    for number in range(1, rounds + 1):
        failing = [i for i, trace in enumerate(traces) if trace.final.status != "passed"]
        if not failing:
            break
        principles = [constitution.sample(rng) for _ in failing]
        asks = [
            _critique_call(prefix, tasks[i], traces[i].final, p, ask=feedback != "test")
            for i, p in zip(failing, principles, strict=True)
        ]
        if feedback == "test":  # the test result is the whole feedback: revise at once
            critiques = [_Reply("", Usage()) for _ in asks]
        else:
            critiques = _generate(backend, asks, revision, seed + number)
        fixes = [
            _revision_call(ask, p, critique.text if feedback != "test" else None)
            for ask, critique, p in zip(asks, critiques, principles, strict=True)
        ]
        drawn = [_generate(backend, fixes, revision, seed + number + 1000 * j)
                 for j in range(samples)]  # fmt: skip
        ran = [run_tasks([tasks[i] for i in failing], [reply.text for reply in revised], limits,
                         visible=True, explain=values) for revised in drawn]  # fmt: skip
        for k, (i, p, critique) in enumerate(zip(failing, principles, critiques, strict=True)):
            passed = [j for j in range(samples) if ran[j][k].passed]
            pick = passed[0] if passed else 0
            trace = traces[i]
            trace.usage = sum((drawn[j][k].usage for j in range(samples)),
                              trace.usage + critique.usage)  # fmt: skip
            said = clean_reply(critique.text) if critique.text else None
            attempt = _attempt(number, drawn[pick][k], ran[pick][k], p.id, said)
            if samples > 1:
                attempt = attempt.model_copy(update={"samples": samples, "passing": len(passed)})
            trace.attempts.append(attempt)
    return traces


def revision_for(config: GenerationConfig, samples: int) -> GenerationConfig:
    """The revisions' settings of a loop drawing ``samples`` a round: ``config`` at
    :data:`SAMPLED_TEMPERATURE` when more than one (greedy samples would all be the same),
    ``config`` itself otherwise."""
    if samples > 1:
        return config.model_copy(update={"temperature": SAMPLED_TEMPERATURE})
    return config


def verified_rows(
    traces: Sequence[CodeTrace], *, model: str, seed: int, constitution: Constitution,
    passing: bool = False,
) -> list[SFTRow]:  # fmt: skip
    """SFT rows from revisions that pass the visible tests: the task and its last revision
    (``passing``: every final answer that passes, first answers included, ``revised=False``).
    An answer cut at the token limit is no row even when its code passes: trained on, it
    would teach an ending the model did not write."""
    rows = []
    for trace in traces:
        if not (trace.verified_revision or (passing and trace.final.status == "passed")):
            continue
        if trace.final.finish_reason == "length":
            continue
        turns = (Message(role="user", content=trace.request),
                 Message(role="assistant", content=trace.final.answer))  # fmt: skip
        rows.append(SFTRow(
            id=f"{trace.task_id}#verified", prompt_id=trace.task_id, messages=turns,
            round=trace.final.round, revised=trace.final.round > 0, model=model, seed=seed,
            principle_ids=tuple(a.principle for a in trace.attempts if a.principle),
            constitution_sha256=constitution.sha256,
        ))  # fmt: skip
    return rows


VALUES_SHOWN = (
    "<what the run printed: the failed assert with what the code gave, as in "
    "'AssertionError: f(2) gave 3; the test expects 5'; an exception>"
)


def dry_run(
    tasks: Sequence[CodeTask], constitution: Constitution, *, feedback: Feedback = "critique",
    seed: int = 0, values: bool = False,
) -> str:  # fmt: skip
    """Every kind of call the loop sends, for ``tasks``: each first answer's request, then for
    the first task one round's critique and revision calls, with placeholders for what the
    model and the sandbox would write. The principle is drawn per failing task and round; the
    one shown is the first a run with this seed draws."""
    prefix = fewshot_prefix(constitution)
    if feedback != "critique":
        prefix = prefix[:1]
    count = f"{len(prefix)} message{'s' if len(prefix) > 1 else ''}"
    blocks = [f"=== shared prefix of every critique and revision call ({count}) ===\n"
              f"{render_messages(prefix)}"]  # fmt: skip
    blocks += [f"=== task {task.id}: first answer call ===\n{render_messages(_ask(task))}"
               for task in tasks]  # fmt: skip
    task, principle = tasks[0], constitution.sample(random.Random(seed))
    shown = CodeAttempt(
        round=0,
        answer="<the model's answer>",
        status="<failed, timeout, …>",
        detail=VALUES_SHOWN if values else "<what the run printed: a failed assert, an exception>",
    )
    call = _critique_call(prefix, task, shown, principle, ask=feedback != "test")
    where = f"task {task.id}, round 1, principle '{principle.id}'"
    if feedback == "test":  # the test result and the revision request in one message
        fix = _revision_call(call, principle, None)
        blocks.append(f"--- {where}: revision call (after the shared prefix) ---\n"
                      + render_messages(fix[len(prefix):]))  # fmt: skip
    else:
        fix = _revision_call(call, principle, "<the critique>")
        blocks.append(f"--- {where}: critique call (after the shared prefix) ---\n"
                      + render_messages(call[len(prefix):])
                      + f"\n--- {where}: revision call (continues the critique call) ---\n"
                      + render_messages(fix[len(call):]))  # fmt: skip
    blocks.append("(while the visible tests fail, rounds 2 and on send the same calls with the "
                  "latest revision as the answer)")  # fmt: skip
    return "\n\n".join(blocks)


def _ask(task: CodeTask) -> list[Message]:
    return [Message(role="user", content=task.request)]


def _critique_call(
    prefix: Sequence[Message], task: CodeTask, last: CodeAttempt, principle: Principle,
    ask: bool = True,
) -> list[Message]:  # fmt: skip
    """Prefix, the task, the latest answer, and the test result with the critique ask
    (``ask=False``: the test result alone)."""
    detail = f": {last.detail}" if last.detail else ""
    if task.visible.strip():
        result = TEST_RESULT.format(test=task.visible, status=last.status, detail=detail)
    else:
        result = NO_VISIBLE_TEST.format(status=last.status, detail=detail)
    return [
        *prefix,
        *_ask(task),
        Message(role="assistant", content=last.answer),
        Message(
            role="user", content=f"{result}\n\n{critique_request(principle)}" if ask else result
        ),
    ]


def _revision_call(ask: list[Message], principle: Principle, critique: str | None) -> list[Message]:
    """The revision asked after ``ask``: the critique as the assistant's turn, then the
    principle's revision request; with no critique (``feedback: test``) the request joins the
    test result's message."""
    request = CODE_REVISION_REQUEST.format(revision=principle.revision)
    if critique is None:
        return [*ask[:-1], Message(role="user", content=f"{ask[-1].content}\n\n{request}")]
    return [*ask, Message(role="assistant", content=clean_reply(critique)),
            Message(role="user", content=request)]  # fmt: skip


def _attempt(
    number: int, reply: _Reply, outcome: Outcome, principle: str | None = None,
    critique: str | None = None,
) -> CodeAttempt:  # fmt: skip
    return CodeAttempt(round=number, answer=reply.text, status=outcome.status,
                       detail=outcome.detail[-400:], principle=principle, critique=critique,
                       seed=reply.seed, finish_reason=reply.finish_reason)  # fmt: skip


class _Reply(NamedTuple):
    """One generated text, what it cost, and how the call that wrote it ended."""

    text: str
    usage: Usage
    seed: int | None = None
    finish_reason: str | None = None


def _generate(
    backend: Backend, conversations: Sequence[Sequence[Message]], config: GenerationConfig,
    seed: int,
) -> list[_Reply]:  # fmt: skip
    if not conversations:
        return []
    completions = backend.generate(conversations, config.model_copy(update={"seed": seed}))
    if len(completions) != len(conversations):
        raise CharterError(
            f"backend {backend.name} returned {len(completions)} completions for "
            f"{len(conversations)} conversations"
        )
    return [_Reply(c.text, c.usage(), seed, c.finish_reason) for c in completions]
