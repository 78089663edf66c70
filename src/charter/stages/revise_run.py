"""``charter revise`` end to end: prompts in, a resumable run directory out.

The stage itself (:func:`charter.stages.revise.revise`) is a pure function over records; this
module gives it a run directory: ``traces.jsonl`` (every step of every prompt),
``sft.jsonl`` (TRL conversational rows derived from the traces), ``manifest.json`` and a
copy of the constitution.

Crash safety: a trace is the unit of work. It is appended (one line, one write) before its
SFT rows; on resume, torn last lines are cut, prompts with a trace are skipped, and SFT
rows missing for a written trace are re-derived from it. So a run killed at any moment
ends, after resume, with exactly the rows of an uninterrupted run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from charter.backends import Backend
from charter.constitution import Constitution
from charter.iterate import first_seen
from charter.progress import progress_bar
from charter.prompts import PromptSet
from charter.records import Prompt, StepOutcome, Trace, Usage, render_messages
from charter.runs import (
    JsonlAppender,
    Run,
    read_jsonl,
    read_jsonl_lines,
    repair_jsonl,
    write_atomic,
)
from charter.stages.revise import (
    ReviseConfig,
    critique_conversation,
    draw_principles,
    fewshot_prefix,
    revise,
    revision_conversation,
    sft_rows,
    template_digest,
)

if TYPE_CHECKING:
    from charter.ray_exec import RayExecutor

log = logging.getLogger(__name__)
VERSION = 1  # in cache keys and fingerprints: bump when what this stage writes changes

TRACES = "traces.jsonl"
SFT = "sft.jsonl"
MANIFEST_EVERY_S = 5.0


class _View(BaseModel):
    """A partial view of a written row: the fields declared, the rest of the line skipped.

    Resume reads every row of a finished run; pydantic parses the JSON in Rust and builds
    Python objects only for these fields, which is faster than ``json.loads`` of the whole
    line (bench/scale.py).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)


class StepTally(_View):
    outcome: StepOutcome


class TraceTally(_View):
    """What resume counts of a trace."""

    id: str
    usage: Usage
    steps: tuple[StepTally, ...]


class SFTKey(_View):
    """What resume needs of an SFT row."""

    id: str
    prompt_id: str


@dataclass
class ReviseSummary:
    """What a ``revise`` run did, over all its sessions."""

    out: Path
    prompts: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    resumed: int = 0
    traces: int = 0
    sft_rows: int = 0
    revised: int = 0
    no_change: int = 0
    skipped: int = 0
    usage: Usage = field(default_factory=Usage)
    wall_time_s: float = 0.0

    def add(self, trace: Trace | TraceTally) -> None:
        self.traces += 1
        self.usage += trace.usage
        for step in trace.steps:
            if step.outcome == "revised":
                self.revised += 1
            elif step.outcome == "no_change":
                self.no_change += 1
            else:
                self.skipped += 1

    def counts(self) -> dict[str, int]:
        return {
            "prompts": self.prompts, "duplicate_prompts": self.duplicates,
            "bad_rows_skipped": self.bad_rows,
            "traces": self.traces, "sft_rows": self.sft_rows, "revisions_accepted": self.revised,
            "revisions_no_change": self.no_change, "revisions_skipped": self.skipped,
        }  # fmt: skip


def run_revise(
    prompts: PromptSet,
    *,
    out: Path,
    constitution: Constitution,
    constitution_text: str,
    backend: Backend,
    config: ReviseConfig,
    progress: bool = True,
    critic: Backend | None = None,
) -> ReviseSummary:
    """Revise every prompt of ``prompts`` not yet in ``out``, resuming what is there.

    The model calls run where the runner says (:func:`charter.runner.current_executor`: this
    process, or Ray workers); the outputs, and the run's fingerprint, do not depend on it, so
    either may resume the other's run.
    """
    from charter.models import model_identity
    from charter.runner import current_executor

    executor = current_executor()

    fingerprint = {
        "config": config.model_dump(mode="json", exclude={"batch_size"}),
        "constitution": {
            "name": constitution.name, "version": constitution.version,
            "sha256": constitution.sha256, "file": "constitution.yaml",
        },
        "templates": template_digest(), "version": VERSION,
        "model": model_identity(backend.name),
        "critic": model_identity(critic.name) if critic else None,
        "inputs": prompts.inputs(),
        "prompt_options": {
            "on_bad_row": prompts.on_bad_row, "prompt_column": prompts.prompt_column,
        },
    }  # fmt: skip
    # Count (and validate) every prompt before the first model call.
    unique: set[str] = set()
    summary = ReviseSummary(out=out)
    for prompt in prompts():
        summary.prompts += 1
        unique.add(prompt.id)
    summary.duplicates, summary.prompts = summary.prompts - len(unique), len(unique)
    summary.bad_rows = len(prompts.stats.skipped)

    run = Run.open(out, "revise", fingerprint)
    write_atomic(out / "constitution.yaml", constitution_text)
    done, sft_ids = _resume(out, config, summary)
    summary.resumed = len(done)
    # The manifest describes the files: prompts an earlier session revised stay counted, and
    # its --limit stays recorded, when this session's smaller --limit no longer reaches them.
    summary.prompts = len(unique | done)
    beyond = not done <= unique
    if beyond:
        log.warning("%s: holds %d prompts beyond --limit %s; they stay in the run",
                    out, len(done - unique), prompts.limit)  # fmt: skip
    run.manifest.update(
        batch_size=config.batch_size,
        limit=(run.previous or {}).get("limit") if beyond else prompts.limit,
        executor=executor.describe() if executor else {"name": "local"},
    )  # fmt: skip
    try:
        if not unique <= done:  # a finished run's rerun does not read the prompts again
            _revise_pending(
                prompts, done, sft_ids, run, summary, constitution, backend, config, progress,
                critic, executor,
            )  # fmt: skip
    except BaseException:
        run.update(counts=summary.counts(), usage=summary.usage.model_dump(), status="interrupted")
        raise
    run.update(counts=summary.counts(), usage=summary.usage.model_dump(), status="complete")
    summary.wall_time_s = float(run.manifest["wall_time_s"])
    return summary


def _resume(out: Path, config: ReviseConfig, summary: ReviseSummary) -> tuple[set[str], set[str]]:
    """Repair torn lines, count what is done, and re-derive SFT rows a crash left out."""
    traces_path, sft_path = out / TRACES, out / SFT
    for path in (traces_path, sft_path):
        repair_jsonl(path)
    sft_ids: set[str] = set()
    covered: set[str] = set()  # prompts with SFT rows; the last one's may be cut short
    last = None
    for key in read_jsonl(sft_path, SFTKey):
        sft_ids.add(key.id)
        covered.add(key.prompt_id)
        last = key.prompt_id
    covered.discard(last)
    done: set[str] = set()
    with JsonlAppender(sft_path) as sft_out:
        for tally, line in read_jsonl_lines(traces_path, TraceTally):
            if tally.id in done:
                continue
            done.add(tally.id)
            summary.add(tally)
            if tally.id in covered:  # its rows were all written before the next prompt's
                continue
            for row in sft_rows(Trace.model_validate_json(line), config.train_on):
                if row.id not in sft_ids:
                    sft_out.write(row)
                    sft_ids.add(row.id)
    summary.sft_rows = len(sft_ids)
    return done, sft_ids


def _revise_pending(
    prompts: PromptSet,
    done: set[str],
    sft_ids: set[str],
    run: Run,
    summary: ReviseSummary,
    constitution: Constitution,
    backend: Backend,
    config: ReviseConfig,
    progress: bool,
    critic: Backend | None,
    executor: RayExecutor | None,
) -> None:
    pending = first_seen(prompts(), set(done), key=lambda p: p.id)
    stage = revise if executor is None else executor.revise

    per_prompt = 1 + 2 * config.rounds
    bar = progress_bar(total=summary.prompts * per_prompt, initial=len(done) * per_prompt,
                       unit="call", desc="revise", disable=not progress, smoothing=0.1)  # fmt: skip
    last_save = time.monotonic()
    with bar, JsonlAppender(run.path / TRACES) as traces, JsonlAppender(run.path / SFT) as sft:
        for trace in stage(
            pending, constitution=constitution, backend=backend, config=config,
            on_calls=bar.update, critic=critic,
        ):  # fmt: skip
            traces.write(trace)
            for row in sft_rows(trace, config.train_on):
                if row.id not in sft_ids:  # present only if an earlier session got this far
                    sft.write(row)
                    sft_ids.add(row.id)
            summary.sft_rows = len(sft_ids)
            summary.add(trace)
            tokens = summary.usage.prompt_tokens + summary.usage.completion_tokens
            bar.set_postfix(
                prompts=f"{summary.traces}/{summary.prompts}", tokens=tokens, refresh=False
            )
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                traces.sync()
                sft.sync()
                run.update(
                    counts=summary.counts(), usage=summary.usage.model_dump(), status="running"
                )
                last_save = time.monotonic()


# --- --dry-run -----------------------------------------------------------------------------


def dry_run(
    prompts: Iterator[Prompt], *, constitution: Constitution, config: ReviseConfig
) -> Iterator[str]:
    """Every prompt ``revise`` would send, with placeholders for what the model would write.

    The shared prefix (system message and demonstrations) is printed once; each call then
    shows what follows it. The principles are the ones a real run with this seed draws.
    """
    prefix = fewshot_prefix(constitution)
    yield (
        f"=== shared prefix of every critique and revision call: system message + "
        f"{len(constitution.demonstrations)} demonstrations ({len(prefix)} messages) ===\n"
        + render_messages(prefix)
    )
    for n, prompt in enumerate(prompts, start=1):
        yield (
            f"=== prompt {n} (id {prompt.id}, {prompt.source}) ===\n--- initial answer call ---\n"
            + render_messages(prompt.messages)
        )
        answer = "<initial answer from the model>"
        for index, principle in enumerate(
            draw_principles(constitution, config.seed, prompt.id, config.rounds), start=1
        ):
            call = critique_conversation(prefix, prompt.messages, answer, principle)
            revision_call = revision_conversation(call, f"<critique of round {index}>", principle)
            where = f"round {index}, principle '{principle.id}'"
            yield (
                f"--- {where}: critique call (after the shared prefix) ---\n"
                + render_messages(call[len(prefix) :])
                + f"\n--- {where}: revision call (continues the critique call) ---\n"
                + render_messages(revision_call[len(call) :])
            )
            answer = f"<revision of round {index}>"
