"""``charter run`` with ``recipe: code``: robust code through verified self-critique.

Stages, in order::

    export     the policy through the trained model's f16 GGUF path (``baseline: export``)
    baseline   the policy's pass@1 before training (the code suite, or whatever suites are set)
    verify     the writer (``models.teacher``, else the policy) answers each training task,
               runs it against the task's visible tests, critiques and revises while they fail
               (``code.rounds``, ``code.feedback``, ``code.samples`` revisions a round, the
               constitution's principles); revisions that pass become SFT rows
               (charter.stages.code_revise_run)
    sft        the policy fine-tuned on those verified revisions (``code.train_on: passing``:
               on every answer that passes, first answers included), exported to GGUF
    evaluate   the policy against the SFT model on the same tasks, scored on all their tests
    report     one self-contained HTML file

Training tasks that overlap an evaluation task (the same statement, a shared 8-gram of it,
or a test call the two share, such as ``bell_number(2)``: MBPP's sanitized split rewords
statements, and MBPP train tasks 608 and 704 return in it under new words) are dropped before
the verify stage; ``verify/overlap.json`` says how many of each. Keys and caching are those
of :mod:`charter.pipeline`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from charter import runner
from charter.run_config import RunConfig, evaluate_config
from charter.runner import PlannedStage
from charter.runs import file_sha256, write_atomic
from charter.stages import Step, constitution_parts, steps

OVERLAP = "overlap.json"
_CALL = re.compile(r"([A-Za-z_]\w*)\s*\(([^()]*)\)")
# Builtins a test wraps its call in (math.isclose(f(x), y), sorted(f(x))): not the task's.
_NOT_THE_TASK = frozenset([
    "isclose", "set", "sorted", "abs", "round", "list", "tuple", "str", "int", "float", "len",
    "dict", "frozenset", "type", "print",
])  # fmt: skip


def test_calls(task: Any) -> set[str]:
    """The calls a task's tests make of the function under test, normalised
    (``bell_Number(2)`` and ``bell_number( 2 )`` alike); HumanEval's ``candidate`` is its
    entry point."""
    from charter.splits import normalise

    calls = set()
    for name, args in _CALL.findall(task.tests):
        if task.kind == "humaneval" and name == "check":
            continue  # HumanEval's harness, not the task
        name = task.entry_point if name == "candidate" and task.entry_point else name
        if name.lower() not in _NOT_THE_TASK and args.strip():
            calls.add(f"{name.lower()}({normalise(args)})")
    return calls


def export_stage(
    config: RunConfig, add: Callable[..., Any], ident: Callable[[str], str | None]
) -> tuple[tuple[str, ...], Callable[[Mapping[str, Path]], str]]:
    """The ``export`` stage, when the baseline goes through the trained models' f16 GGUF path
    (``evaluate.baseline: export``): what the baseline needs, and its model's name."""
    policy = config.models.policy
    if config.evaluate.baseline != "export":
        return (), lambda folders: policy
    add("export", (), [ident(policy)], [], {"seconds": 30},
        lambda out, _: steps.export_policy(policy, out))  # fmt: skip
    return ("export",), lambda folders: steps.gguf_model(folders["export"])


def plan_code(
    config: RunConfig, root: Path, backend: Callable[[str], Any], versions: Mapping[str, int],
    data: dict[str, Path], estimate: Callable[[int, int, str, int], dict[str, float]],
) -> list[PlannedStage]:  # fmt: skip
    """Every stage of a ``recipe: code`` config with its content key, in order (``data``: the
    evaluation's files; ``estimate``: the cost estimate of :mod:`charter.pipeline`)."""
    from charter.constitution import Constitution
    from charter.models import model_identity, models_dir
    from charter.splits import overlap
    from charter.stages.code_revise_run import PASSING, SFT, templates
    from charter.stages.evaluate.code import code_slice, load_code_tasks
    from charter.stages.evaluate.suites import questions
    from charter.stages.revise import template_digest

    inputs = models_dir().parent / "inputs"
    constitution = Constitution.load(config.constitution)
    task_file = code_slice(config.code.tasks, inputs, "code-tasks")
    tasks = load_code_tasks(task_file)
    settings = evaluate_config(config)
    asked = questions(settings.suites, data, settings)
    # Training tasks never share a statement (or an 8-gram of one) with an evaluation task.
    evaluated = [q.info["task"].statement if "task" in q.info else q.messages[-1].content
                 for q in asked]  # fmt: skip
    hits = overlap([task.statement for task in tasks], evaluated)
    shared = set().union(*(test_calls(q.info["task"]) for q in asked if "task" in q.info))
    by_statement = {index for index, _ in hits}
    hits += [(i, "test call") for i, task in enumerate(tasks)
             if i not in by_statement and test_calls(task) & shared]  # fmt: skip
    dropped = {index for index, _ in hits}
    kept = [task for i, task in enumerate(tasks) if i not in dropped]
    report = {"read": len(tasks), "kept": len(kept)}
    for _, kind in hits:
        report[kind] = report.get(kind, 0) + 1
    m, c = config.models, config.code
    writer = m.teacher or m.policy
    digest = {"data": {k: file_sha256(p) for k, p in sorted(data.items())},
              "tasks": [t.id for t in kept], "task_file": file_sha256(task_file),
              "constitution": constitution.digest(*constitution_parts("verify", False)),
              "judge": constitution.digest(*constitution_parts("evaluate", False))}  # fmt: skip
    stages: list[Step] = []

    Action = Callable[[Path, Mapping[str, Path]], None]

    def add(name: str, needs: tuple[str, ...], settings: Any, inputs: Any,
            estimate: dict[str, float], action: Action) -> None:  # fmt: skip
        stages.append(Step(name, versions[name], needs, settings, inputs, estimate, action))

    exported, baseline_model = export_stage(config, add, model_identity)

    answers = estimate(len(asked), config.evaluate.max_tokens, "answer_s", 0)
    add("baseline", exported,
        [config.evaluate.model_dump(exclude={"trained"}), model_identity(m.policy)],
        [digest["data"], digest["judge"]], answers,
        lambda out, f: steps.evaluate(config, out, [baseline_model(f)], data, backend))  # fmt: skip
    # What to train on is the SFT stage's choice: the same verify run serves both.
    loop = c.model_dump(exclude={"train_on"}, exclude_defaults=True)
    add("verify", (), [loop, model_identity(writer), template_digest(), templates()],
        [digest["tasks"], digest["task_file"], digest["constitution"]],
        estimate(len(kept) * (1 + (c.samples + (c.feedback != "test")) * c.rounds),
                 c.max_tokens, "revise_call_s", 0),
        lambda out, _: verify(config, out, task_file, kept, report, backend))  # fmt: skip
    rows = SFT if c.train_on == "revisions" else PASSING
    add("sft", ("verify",), [config.sft, model_identity(m.policy), rows], [], {"seconds": 120},
        lambda out, f: steps.train("sft", config.sft, m.policy, f["verify"] / rows,
                                   out))  # fmt: skip
    add("evaluate", ("baseline", *exported, "sft"),
        [config.evaluate, model_identity(m.policy)], [digest["data"], digest["judge"]], answers,
        lambda out, f: steps.evaluate(config, out, [baseline_model(f), steps.gguf_model(f["sft"])],
                                      data, backend, seed_from=f["baseline"]))  # fmt: skip
    add("report", tuple(s.name for s in stages), [config.name], [], {"seconds": 5},
        lambda out, f: steps.report(config, out, f))  # fmt: skip
    return runner.plan(stages, root)


def verify(
    config: RunConfig, out: Path, source: Path, tasks: list[Any], overlap: dict[str, int],
    backend: Callable[[str], Any],
) -> None:  # fmt: skip
    """The verify stage: the loop on the training tasks, into a ``revise --verify`` folder."""
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution, resolve
    from charter.stages.code_revise_run import VerifyConfig, run_verify

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / OVERLAP, json.dumps({"tasks": overlap}, indent=2))
    c = config.code
    from charter.stages.code_revise import revision_for

    greedy = GenerationConfig(temperature=0.0, max_tokens=c.max_tokens)
    settings = VerifyConfig(rounds=c.rounds, answer=greedy, feedback=c.feedback,
                            revision=revision_for(greedy, c.samples), samples=c.samples,
                            timeout_s=c.timeout_s, batch_size=c.batch_size)  # fmt: skip
    writer = backend(config.models.teacher or config.models.policy)
    try:
        run_verify(tasks, source=source, out=out, backend=writer, config=settings,
                   constitution=Constitution.load(config.constitution),
                   constitution_text=resolve(config.constitution).read_text("utf-8"))  # fmt: skip
    finally:
        writer.close()
