"""``charter revise --verify`` end to end: code tasks in, a resumable run directory out.

The loop itself is :func:`charter.stages.code_revise.verify_revise`; this module gives it a
run directory: ``traces.jsonl`` (every task's attempts, with what the visible tests said of
each), ``sft.jsonl`` (verified revisions only, TRL conversational rows), ``passing.jsonl``
(every final answer that passes its visible tests, first answers included), ``manifest.json``
and a copy of the constitution. A trace is the unit of work, appended before its rows; on
resume torn lines are cut, tasks with a trace are skipped, and a row a crash left out is
re-derived.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from charter.backends import Backend, GenerationConfig
from charter.constitution import Constitution
from charter.progress import progress_bar
from charter.records import SFTRow, Usage
from charter.runs import JsonlAppender, Run, file_sha256, read_jsonl, repair_jsonl, write_atomic
from charter.stages import code_revise
from charter.stages.code_revise import CodeTrace, Feedback, verified_rows, verify_revise
from charter.stages.evaluate.code import CodeTask, run_tasks
from charter.stages.evaluate.sandbox import Limits

VERSION = 3  # in cache keys and fingerprints: bump when what this stage writes changes
TRACES, SFT, PASSING = "traces.jsonl", "sft.jsonl", "passing.jsonl"


class VerifyConfig(BaseModel):
    """What decides a verified-revision run's outputs (``batch_size`` only paces it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(default=3, ge=0, le=64)
    seed: int = 0
    answer: GenerationConfig = GenerationConfig(temperature=0.0, max_tokens=512)
    revision: GenerationConfig = GenerationConfig(temperature=0.0, max_tokens=512)
    timeout_s: int = Field(default=10, ge=1, le=600, description="CPU seconds per program")
    feedback: Feedback = "critique"  # see verify_revise
    samples: int = Field(default=1, ge=1, le=16, description="revisions drawn a round")
    batch_size: int = Field(default=16, ge=1)


@dataclass
class VerifySummary:
    """What a run holds: tasks, how their visible tests went by round, tokens, time."""

    out: Path
    tasks: int = 0
    resumed: int = 0
    sft_rows: int = 0
    passing_rows: int = 0
    passed_at: Counter[int] = field(default_factory=Counter)  # round of the first pass
    still_failing: int = 0
    cut_short: int = 0  # final answers (first or revised) that passed but were cut at the
    # token limit: no row of either file (verified_rows)
    usage: Usage = field(default_factory=Usage)
    wall_time_s: float = 0.0
    # Of the answers that passed their visible test, how many pass all the task's tests too
    # (training tasks: reading their other asserts is no leak); a revision can fit one test.
    all_tests: dict[str, int] = field(default_factory=dict)

    def add(self, trace: CodeTrace) -> None:
        if trace.final.status == "passed":
            self.passed_at[trace.final.round] += 1
            self.cut_short += trace.final.finish_reason == "length"
        else:
            self.still_failing += 1
        self.usage += trace.usage

    def counts(self) -> dict[str, object]:
        by_round = {str(r): n for r, n in sorted(self.passed_at.items())}
        return {"tasks": self.tasks, "resumed": self.resumed, "sft_rows": self.sft_rows,
                "passing_rows": self.passing_rows,
                "passed_initially": self.passed_at[0],
                "verified_revisions": sum(n for r, n in self.passed_at.items() if r > 0),
                "still_failing": self.still_failing, "passed_by_round": by_round,
                "passed_but_cut_short": self.cut_short,
                **{f"all_tests_{k}": v for k, v in self.all_tests.items()}}  # fmt: skip


def templates() -> str:
    """A hash of the loop's own prompts: editing one makes an old run refuse to resume."""
    text = "\x00".join((code_revise.TEST_RESULT, code_revise.NO_VISIBLE_TEST,
                        code_revise.CODE_REVISION_REQUEST))  # fmt: skip
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def run_verify(
    tasks: list[CodeTask], *, source: Path, out: Path, constitution: Constitution,
    constitution_text: str, backend: Backend, config: VerifyConfig, progress: bool = True,
) -> VerifySummary:  # fmt: skip
    """Run the verified critique → revision loop on every task not yet in ``out``."""
    from charter.models import model_identity
    from charter.stages.revise import template_digest

    fingerprint = {
        "config": config.model_dump(mode="json", exclude={"batch_size"}),
        "constitution": {"name": constitution.name, "version": constitution.version,
                         "sha256": constitution.sha256, "file": "constitution.yaml"},
        "templates": f"{template_digest()}-{templates()}", "version": VERSION,
        "model": model_identity(backend.name),
        "inputs": {"tasks": {"path": str(source), "sha256": file_sha256(source)}},
    }  # fmt: skip
    run = Run.open(out, "revise-verify", fingerprint)
    write_atomic(out / "constitution.yaml", constitution_text)
    summary = VerifySummary(out=out, tasks=len(tasks))
    done = _resume(out, summary, backend.name, config.seed, constitution)
    summary.resumed = len(done)
    pending = [task for task in tasks if task.id not in done]
    limits = Limits(cpu_seconds=config.timeout_s, wall_seconds=2.0 * config.timeout_s)
    bar = progress_bar(total=len(tasks), initial=len(done), unit="task", desc="revise --verify",
                       disable=not progress)  # fmt: skip
    try:
        with (bar, JsonlAppender(out / TRACES) as traces, JsonlAppender(out / SFT) as sft,
              JsonlAppender(out / PASSING) as passing):  # fmt: skip
            for start in range(0, len(pending), config.batch_size):
                batch = pending[start : start + config.batch_size]
                done_batch = verify_revise(
                    backend, batch, constitution, rounds=config.rounds, seed=config.seed,
                    answer=config.answer, revision=config.revision, limits=limits,
                    feedback=config.feedback, samples=config.samples,
                )  # fmt: skip
                for trace in done_batch:
                    traces.write(trace)
                    for file, passed in ((sft, False), (passing, True)):
                        for row in _rows(trace, backend.name, config.seed, constitution, passed):
                            file.write(row)
                            summary.sft_rows += not passed
                            summary.passing_rows += passed
                    summary.add(trace)
                for file in (traces, sft, passing):
                    file.sync()
                bar.update(len(batch))
                run.update(counts=summary.counts(), usage=summary.usage.model_dump(),
                           status="running")  # fmt: skip
    except BaseException:
        run.update(counts=summary.counts(), usage=summary.usage.model_dump(), status="interrupted")
        raise
    summary.all_tests = _all_tests(out, tasks, limits)
    run.update(counts=summary.counts(), usage=summary.usage.model_dump(), status="complete")
    summary.wall_time_s = float(run.manifest["wall_time_s"])
    return summary


def _all_tests(out: Path, tasks: list[CodeTask], limits: Limits) -> dict[str, int]:
    """The answers that passed their visible test, run against all of their task's tests."""
    by_id = {task.id: task for task in tasks}
    last = {t.task_id: t for t in read_jsonl(out / TRACES, CodeTrace) if t.task_id in by_id}
    passed = [t for t in last.values() if t.final.status == "passed"]
    outcomes = run_tasks([by_id[t.task_id] for t in passed], [t.final.answer for t in passed],
                         limits) if passed else []  # fmt: skip
    revised = [o.passed for t, o in zip(passed, outcomes, strict=True) if t.final.round > 0]
    return {
        "verified_revisions": sum(revised),
        "of_verified_revisions": len(revised),
        "passing_answers": sum(o.passed for o in outcomes),
        "of_passing_answers": len(passed),
    }


def _rows(
    trace: CodeTrace, model: str, seed: int, constitution: Constitution, passing: bool
) -> list[SFTRow]:
    return verified_rows([trace], model=model, seed=seed, constitution=constitution,
                         passing=passing)  # fmt: skip


def _resume(
    out: Path, summary: VerifySummary, model: str, seed: int, constitution: Constitution
) -> set[str]:
    """Repair torn lines, count the traces there, and write rows a crash left out."""
    for name in (TRACES, SFT, PASSING):
        repair_jsonl(out / name)
    have = {name: {row.id for row in read_jsonl(out / name, SFTRow)} for name in (SFT, PASSING)}
    done: set[str] = set()
    with JsonlAppender(out / SFT) as sft, JsonlAppender(out / PASSING) as passing:
        for trace in read_jsonl(out / TRACES, CodeTrace):
            if trace.task_id in done:
                continue
            done.add(trace.task_id)
            summary.add(trace)
            for name, file in ((SFT, sft), (PASSING, passing)):
                for row in _rows(trace, model, seed, constitution, name == PASSING):
                    if row.id not in have[name]:
                        file.write(row)
                        have[name].add(row.id)
    summary.sft_rows, summary.passing_rows = len(have[SFT]), len(have[PASSING])
    return done
