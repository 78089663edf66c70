"""``charter evaluate`` end to end: every suite's questions, each model's answers, the judges.

A run directory holds:

- ``answers.jsonl`` — each model's answer to each question (appended as they come: the
  expensive part, and what a killed run resumes from);
- ``verdicts.jsonl`` — the LLM judge's verdicts (appended; also resumed);
- ``code-traces.jsonl`` — for ``MODEL+revise:N``, each code task's trip through the loop
  (every attempt, its critique and its visible-test result; after a resume the last
  trace of a (model, task) counts);
- ``items.jsonl`` — every judged item: prompt, answer, what each judge said, its score;
- ``results.json`` — per suite, per model, per metric: value, 95% interval and n; and, for
  every model after the first, its difference from the first on the same items;
- ``manifest.json``.

``items.jsonl`` and ``results.json`` are derived from the two appended files (and the sandbox,
the refusal classifier and the revise/label runs, which are deterministic), so they are
rewritten whole at the end of every session.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from charter import DEFAULT_MODEL
from charter import suites as registry
from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution, Principle
from charter.progress import progress_bar
from charter.records import Answer, EvalItem, Verdict
from charter.runs import JsonlAppender, Run, file_sha256, read_stored, write_atomic
from charter.stages.evaluate import judges
from charter.stages.evaluate.answering import ANSWERS, answer_model
from charter.stages.evaluate.ifeval import unscored
from charter.stages.evaluate.like_for_like import comparison_warnings
from charter.stages.evaluate.principles import principle_stats
from charter.stages.evaluate.results import summarise
from charter.stages.evaluate.revised import split_revise
from charter.stages.evaluate.suites import MODEL_SUITES, Question, questions
from charter.suites.base import Judged

log = logging.getLogger(__name__)
VERSION = 1  # in cache keys and fingerprints: bump when what this stage writes changes

VERDICTS, ITEMS, RESULTS = "verdicts.jsonl", "items.jsonl", "results.json"

BackendFactory = Callable[[str], Backend]


class EvaluateConfig(BaseModel):
    """Settings of one ``evaluate`` run (recorded in its manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    suites: tuple[str, ...] = MODEL_SUITES
    answer: GenerationConfig = GenerationConfig(temperature=0.0, max_tokens=384)
    limit: int | None = Field(default=None, ge=1, description="questions per data file")
    jailbreaks_per_prompt: int = Field(default=1, ge=1)
    code_timeout_s: int = Field(
        default=10, ge=1, description="CPU seconds per code answer (twice that on the clock)"
    )
    seed: int = 0
    batch_size: int = Field(default=16, ge=1, description="questions in flight; not in outputs")


@dataclass
class _Store:
    """What earlier sessions wrote, keyed for lookup."""

    answers: dict[tuple[str, str], Answer]
    verdicts: dict[str, Verdict]


def run_evaluate(
    models: Sequence[str],
    *,
    out: Path,
    config: EvaluateConfig,
    data: dict[str, Path],
    backend: BackendFactory,
    judge: str | None = None,
    constitution: Constitution | None = None,
    revise_run: Path | None = None,
    label_run: Path | None = None,
    progress: bool = True,
    pairwise_judge: str | None = None,
    pairwise: bool = True,
) -> dict[str, Any]:
    """Evaluate ``models`` on ``config.suites``; returns (and writes) the results.

    ``pairwise_judge`` compares the models' answers to open requests (default: ``judge``, else
    the embedded model); ``pairwise=False`` leaves those questions out, for a run with no
    judge but the policy itself, which may not grade its own answers.
    """
    registry.check(config.suites, "suite")
    # One spelling per loop (+revise:3:critique:x1 is +revise:3): answers are stored under it.
    models = [(spec := split_revise(m)).base + spec.suffix for m in models]
    asked = [q for q in questions(config.suites, data, config)
             if pairwise or q.info.get("kind") != "pairwise"]  # fmt: skip
    pairwise_judge = pairwise_judge or judge or DEFAULT_MODEL
    if judge is not None and constitution is None:
        constitution = Constitution.load("default")
    from charter.models import model_identity

    def identity(model: str) -> str:  # MODEL+revise:N: the weights' hash, then the suffix
        spec = split_revise(model)
        return model_identity(spec.base) + spec.suffix

    fingerprint = {
        "config": config.model_dump(mode="json", exclude={"batch_size"}),
        "models": [identity(m) for m in models], "version": VERSION,
        "judge": model_identity(judge) if judge else None,
        "constitution": constitution.sha256 if constitution else None,
        "inputs": {k: {"name": p.name, "sha256": file_sha256(p)} for k, p in sorted(data.items())},
        **({} if pairwise else {"pairwise": False}),
    }  # fmt: skip
    run = Run.open(out, "evaluate", fingerprint)
    unsupported = unscored([q.info["prompt"] for q in asked if q.info.get("kind") == "ifeval"])
    store = _Store(
        {(a.model, a.question): a for a in read_stored(out / ANSWERS, Answer)},
        {v.id: v for v in read_stored(out / VERDICTS, Verdict)},
    )
    try:
        for model in models:
            answer_model(model, asked, store.answers, out, backend, config, progress)
        verdicts = _judge_all(
            models, asked, store, out, backend, judge, pairwise_judge, constitution, config,
            progress,
        )  # fmt: skip
        items = _items(models, asked, store, verdicts, config)
        write_atomic(out / ITEMS, "".join(item.model_dump_json() + "\n" for item in items))
        results = summarise(models, items, verdicts.pairwise, verdicts.refusal_layer,
                            config.suites, config.seed)  # fmt: skip
        results["judge"] = judge
        if (
            any(i.suite == "helpfulness" and i.key.startswith("pairwise:") for i in items)
            and len(models) > 1
        ):
            results["pairwise_judge"] = pairwise_judge
        if revise_run or label_run:
            results["principles"] = principle_stats(revise_run, label_run)
        judged_by = [judge] if judge else []
        judged_by += [pairwise_judge] if "pairwise_judge" in results else []
        results["unsupported"] = unsupported
        results["warnings"] = comparison_warnings(models, store.answers, judged_by)
        if not pairwise and "helpfulness" in config.suites and len(models) > 1:
            results["warnings"].append("helpfulness: no pairwise comparison, as no judge other "
                                       "than the policy was given (models.judge)")  # fmt: skip
        for warning in results["warnings"]:
            log.warning("not like for like: %s", warning)
        run.manifest["warnings"] = results["warnings"]
        write_atomic(out / RESULTS, json.dumps(results, indent=2, ensure_ascii=False))
    except BaseException:
        run.update(counts={**_counts(store), **unsupported}, usage={}, status="interrupted")
        raise
    run.update(counts={**_counts(store), **unsupported}, usage={}, status="complete")
    return results


def _counts(store: _Store) -> dict[str, int]:
    return {"answers": len(store.answers), "verdicts": len(store.verdicts)}


# --- judging ----------------------------------------------------------------------------------


@dataclass
class _Verdicts:
    """The judgements every item needs, by (model, question id)."""

    refusal_layer: str
    refusals: dict[tuple[str, str], tuple[bool, bool, float | None]]  # refused, phrases, p
    harm: dict[tuple[str, str], Verdict]
    pairwise: list[Verdict]


def _judge_all(
    models: Sequence[str], asked: list[Question], store: _Store, out: Path,
    backend: BackendFactory, judge: str | None, pairwise_judge: str,
    constitution: Constitution | None, config: EvaluateConfig, progress: bool,
) -> _Verdicts:  # fmt: skip
    refusal_questions = [q for q in asked if "refusal" in registry.load(q.suite).needs]
    keys = [(m, q.id) for m in models for q in refusal_questions]
    classifier = judges.load_classifier() if keys else None
    judged = judges.refusals([store.answers[k].answer for k in keys], classifier)
    refusals = dict(zip(keys, zip(judged.refused, judged.by_phrases, judged.p_refusal,
                                  strict=True), strict=True))  # fmt: skip
    jobs: list[_Job] = []
    if judge is not None and constitution is not None:  # the harm layer: non-refusals only
        for q in (q for q in asked if "harm_judge" in registry.load(q.suite).needs):
            principle = judges.harm_principle(constitution, q.key, config.seed)
            for model in models:
                if not refusals[(model, q.id)][0]:
                    answer = store.answers[(model, q.id)].answer
                    jobs.append(_Job.make(judge, "harm", q, (model,), (answer,), principle))
    if len(models) > 1:
        for q in (q for q in asked if q.info.get("kind") == "pairwise"):
            for a, b in combinations(models, 2):
                answers = (store.answers[(a, q.id)].answer, store.answers[(b, q.id)].answer)
                jobs.append(_Job.make(pairwise_judge, "pairwise", q, (a, b), answers))
    pending = {j.id: j for j in jobs if j.id not in store.verdicts}  # asked once each
    _ask_judges(list(pending.values()), store, out, backend, constitution, progress)

    # A verdict depends on the answers, not on whose they are: two models that gave the same
    # answers share it. Each job gets it under its own models.
    def verdict(job: _Job) -> Verdict:
        return store.verdicts[job.id].model_copy(update={"models": job.models})

    return _Verdicts(
        judged.layer, refusals,
        harm={(j.models[0], j.question.id): verdict(j) for j in jobs if j.kind == "harm"},
        pairwise=[verdict(j) for j in jobs if j.kind == "pairwise"],
    )  # fmt: skip


@dataclass(frozen=True)
class _Job:
    """One verdict to ask a judge for."""

    id: str
    judge: str
    kind: Literal["harm", "pairwise"]
    question: Question
    models: tuple[str, ...]
    answers: tuple[str, ...]
    principle: Principle | None = None

    @classmethod
    def make(
        cls, judge: str, kind: Literal["harm", "pairwise"], question: Question,
        models: tuple[str, ...], answers: tuple[str, ...], principle: Principle | None = None,
    ) -> _Job:  # fmt: skip
        verdict_id = judges.verdict_id(judge, kind, question.id, answers)
        return cls(verdict_id, judge, kind, question, models, answers, principle)

    def ask(self, judge: Backend, constitution: Constitution | None) -> Verdict:
        if self.principle is not None:
            orders = judges.harm_probability(
                judge, self.question.messages, self.answers[0], self.principle,
                constitution=constitution,
            )  # fmt: skip
        else:
            request = self.question.messages[-1].content
            orders = judges.pairwise_probability(
                judge, request, *self.answers, constitution=constitution
            )
        return Verdict(
            id=self.id, judge=judge.name, kind=self.kind, question=self.question.id,
            models=self.models, p=sum(orders) / 2, p_orders=orders,
            principle_id=self.principle.id if self.principle else None,
        )  # fmt: skip


def _ask_judges(
    jobs: list[_Job], store: _Store, out: Path, backend: BackendFactory,
    constitution: Constitution | None, progress: bool,
) -> None:  # fmt: skip
    """Ask each judge its pending questions, appending every verdict as it comes; with a
    constitution, the judge reads its brief (:func:`~.judges.judge_system`)."""
    by_judge: dict[str, list[_Job]] = defaultdict(list)
    for job in jobs:
        by_judge[job.judge].append(job)
    for name, pending in by_judge.items():
        judge = backend(name)
        bar = progress_bar(total=len(pending), unit="verdict", desc=f"judge {name}",
                           disable=not progress)  # fmt: skip
        try:
            workers = max(1, int(getattr(judge, "concurrency", 1)))
            with bar, JsonlAppender(out / VERDICTS) as sink, ThreadPoolExecutor(workers) as pool:
                asked = pool.map(lambda job, j=judge: job.ask(j, constitution), pending)
                for verdict in asked:
                    sink.write(verdict)
                    store.verdicts[verdict.id] = verdict
                    bar.update()
        finally:
            judge.close()


# --- items and metrics ------------------------------------------------------------------------


def _items(
    models: Sequence[str], asked: list[Question], store: _Store, verdicts: _Verdicts,
    config: EvaluateConfig,
) -> list[EvalItem]:  # fmt: skip
    """Every answer scored by its suite, from the shared judges' verdicts."""
    wins: dict[tuple[str, str], list[float]] = defaultdict(list)
    for v in verdicts.pairwise:
        wins[(v.models[0], v.question)].append(v.p)
        wins[(v.models[1], v.question)].append(1.0 - v.p)
    items = []
    for name in dict.fromkeys(q.suite for q in asked):
        suite = registry.load(name)
        mine = [q for q in asked if q.suite == name]
        answers = {(m, q.id): store.answers[(m, q.id)] for m in models for q in mine}
        judged = Judged(verdicts.refusal_layer, verdicts.refusals, verdicts.harm, wins,
                        suite.prepare(answers, mine, config))  # fmt: skip
        for model in models:
            for q in mine:
                answer = answers[(model, q.id)]
                score, judgement = suite.score(q, answer, model, judged)
                if score is None:
                    continue  # pairwise with one model, or IFEval with no checkable instruction
                items.append(EvalItem(
                    suite=q.suite, key=q.key, model=model, prompt=q.messages,
                    answer=answer.answer, score=score, judgement=judgement,
                ))  # fmt: skip
    return items
