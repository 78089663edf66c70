"""``charter label`` end to end: pairs in, a resumable preference dataset out.

Pairs come from a pair file (:class:`FilePairs`), from answers sampled from a policy model
(:class:`PolicyPairs`, kept in ``samples.jsonl`` so a resume never samples twice), or from a
``revise`` run (:class:`RevisePairs`, Hugging Face's simple preset: final revision over
initial answer, no labeller). The run directory gets ``labels.jsonl`` (every verdict, with
both orders per principle), ``prefs.jsonl`` (TRL conversational rows that pass
``--min-margin``, derived from the labels), ``manifest.json`` and the constitution.
Resume works as for ``revise``: labels are the unit of work, prefs are re-derived.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from charter.backends import Backend, GenerationConfig
from charter.backends.base import token_totals
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.iterate import first_seen
from charter.label_stats import LabelStats
from charter.pairs import (
    Pairing,
    check_sampling,
    load_pairs,
    pairs_from_revise,
    pairs_from_samples,
    sample_answers,
)
from charter.progress import progress_bar
from charter.prompts import OnBadRow, PromptSet, ReadStats
from charter.records import (
    Label,
    Message,
    PreferencePair,
    PreferenceRow,
    Samples,
    Usage,
    render_messages,
)
from charter.runs import JsonlAppender, Run, file_sha256, read_stored, write_atomic
from charter.stages.label import LabelConfig, label, template_digest

if TYPE_CHECKING:
    from charter.ray_exec import RayExecutor

LABELS, PREFS, SAMPLES = "labels.jsonl", "prefs.jsonl", "samples.jsonl"
MANIFEST_EVERY_S = 5.0
VERSION = 1  # in cache keys and fingerprints: bump when what this stage writes changes


@dataclass
class FilePairs:
    """Pairs read from a JSONL file (see :mod:`charter.pairs`)."""

    path: Path
    on_bad_row: OnBadRow = "error"
    limit: int | None = None
    stats: ReadStats = field(default_factory=ReadStats)

    def validate(self) -> None:
        """Read every row once, so a bad row stops the run before any model call."""
        for _ in self.pairs(Path(".")):
            pass

    def fingerprint(self) -> dict[str, Any]:
        return {"pairs": {"name": self.path.name, "sha256": file_sha256(self.path)}}

    def pairs(self, out: Path) -> Iterator[PreferencePair]:
        for n, pair in enumerate(
            load_pairs(self.path, on_bad_row=self.on_bad_row, stats=self.stats)
        ):
            if self.limit is not None and n >= self.limit:
                return
            yield pair


@dataclass
class RevisePairs:
    """The simple preset: (final revision, initial answer) pairs from a revise run."""

    run_dir: Path

    def validate(self) -> None:
        if not (self.run_dir / "traces.jsonl").is_file():
            raise CharterError(
                f"{self.run_dir} has no traces.jsonl; pass the --out directory of a revise run"
            )

    def fingerprint(self) -> dict[str, Any]:
        traces = self.run_dir / "traces.jsonl"
        digest = file_sha256(traces) if traces.is_file() else None
        return {"revise_run": {"path": str(self.run_dir), "traces_sha256": digest}}

    def pairs(self, out: Path) -> Iterator[PreferencePair]:
        return pairs_from_revise(self.run_dir)


@dataclass
class PolicyPairs:
    """Pairs of answers sampled from a policy model, ``samples`` per prompt."""

    prompts: PromptSet
    policy: Backend
    samples: int = 2
    pairing: Pairing = "all"
    generation: GenerationConfig = field(
        default_factory=lambda: GenerationConfig(temperature=1.0, max_tokens=256)
    )
    batch_size: int = 16
    max_pairs: int | None = None  # per prompt, a seeded choice; None: every pair
    usage: Usage = field(default_factory=Usage)
    on_calls: Callable[[int], object] | None = None  # progress of the sampling calls
    executor: RayExecutor | None = None  # None: sample in this process

    def validate(self) -> None:
        check_sampling(self.samples, self.max_pairs)
        for _ in self.prompts():
            pass

    def fingerprint(self) -> dict[str, Any]:
        found = {
            "inputs": self.prompts.inputs(), "policy": self.policy.name, "samples": self.samples,
            "pairing": self.pairing, "generation": self.generation.model_dump(mode="json"),
        }  # fmt: skip
        every = self.samples * (self.samples - 1) // 2
        if self.pairing == "all" and self.max_pairs is not None and self.max_pairs < every:
            found["max_pairs"] = self.max_pairs  # only when it bounds: older runs still resume
        return found

    def pairs(self, out: Path) -> Iterator[PreferencePair]:
        """Pairs of stored samples first, then of new samples (appended as they come)."""
        sampled: set[str] = set()
        for stored in read_stored(out / SAMPLES, Samples):
            sampled.add(stored.id)
            self.usage += stored.usage
            yield from pairs_from_samples(
                stored, self.pairing, self.generation.seed, self.max_pairs
            )
        todo = first_seen(self.prompts(), sampled, key=lambda p: p.id)
        stage = sample_answers if self.executor is None else self.executor.sample
        with JsonlAppender(out / SAMPLES) as writer:
            answers = stage(
                todo, self.policy, samples=self.samples, config=self.generation,
                batch_size=self.batch_size, on_calls=self.on_calls,
            )  # fmt: skip
            for fresh in answers:
                writer.write(fresh)
                self.usage += fresh.usage
                yield from pairs_from_samples(
                    fresh, self.pairing, self.generation.seed, self.max_pairs
                )


PairSource = FilePairs | RevisePairs | PolicyPairs


def preference_row(entry: Label, min_margin: float) -> PreferenceRow | None:
    """The TRL row of a label, or None when it is a tie within ``min_margin`` or both replies
    cross a hard constraint (neither may be chosen)."""
    if abs(entry.p_first - 0.5) < min_margin or all(entry.crossed):
        return None
    first_wins = entry.p_first >= 0.5
    shown_first = _mean([v.p_shown_first for v in entry.votes])
    shown_second = _mean([v.p_shown_second for v in entry.votes if v.p_shown_second is not None])
    if first_wins:
        chosen, rejected, p_chosen = entry.responses[0], entry.responses[1], entry.p_first
        p_as_a, p_as_b = shown_first, shown_second
    else:
        chosen, rejected, p_chosen = entry.responses[1], entry.responses[0], 1.0 - entry.p_first
        # responses[1] was (A) in the swapped order and (B) in the plain one.
        p_as_a = None if shown_second is None else 1.0 - shown_second
        p_as_b = None if shown_first is None else 1.0 - shown_first
    return PreferenceRow(
        id=entry.id, prompt=entry.prompt,
        chosen=(Message(role="assistant", content=chosen),),
        rejected=(Message(role="assistant", content=rejected),),
        p_chosen=p_chosen, p_chosen_first=p_as_a, p_chosen_second=p_as_b,
        principle_ids=tuple(pid for v in entry.votes for pid in v.principle_ids),
        labeller=entry.labeller, mode=entry.mode, seed=entry.seed,
        constitution_sha256=entry.constitution_sha256,
    )  # fmt: skip


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def simple_labels(
    pairs: Iterator[PreferencePair], constitution: Constitution, seed: int
) -> Iterator[Label]:
    """The simple preset's labels: the revision (first) always wins, p = 1."""
    for pair in pairs:
        yield Label(
            id=pair.id, prompt=pair.prompt, responses=pair.responses, p_first=1.0, votes=(),
            labeller="preset/simple", mode="simple", seed=seed,
            constitution_sha256=constitution.sha256, source=pair.source,
        )  # fmt: skip


@dataclass
class LabelSummary:
    out: Path
    labels: int = 0
    resumed: int = 0
    kept: int = 0
    stats: LabelStats = field(default_factory=LabelStats)
    wall_time_s: float = 0.0
    labeller_calls: int = 0  # every session's, this one's included
    session_calls: int = 0  # this session's: on a resume, the calls it made


def run_label(
    source: PairSource,
    *,
    out: Path,
    constitution: Constitution,
    constitution_text: str,
    labeller: Backend | None,
    config: LabelConfig,
    min_margin: float = 0.0,
    progress: bool = True,
) -> LabelSummary:
    """Label every pair of ``source`` not yet in ``out`` (``labeller=None``: simple preset).

    The model calls, sampling included, run where the runner says
    (:func:`charter.runner.current_executor`: this process, or Ray workers); the outputs and
    the run's fingerprint do not depend on it.
    """
    mode: Literal["soft", "cot", "simple"] = config.mode if labeller is not None else "simple"
    from charter.models import model_identity
    from charter.runner import current_executor

    executor = current_executor()

    source.validate()  # bad inputs fail here, before a run directory or a model call
    fingerprint = {
        "config": config.model_dump(mode="json", exclude={"batch_size", "hard"})
        if labeller else {},
        # only when the veto asks something: runs without hard constraints keep their keys
        **({"hard": hard} if labeller and (hard := config.hard.fingerprint(constitution)) else {}),
        "mode": mode, "min_margin": min_margin, "version": VERSION,
        "labeller": model_identity(labeller.name) if labeller else None,
        "constitution": {"name": constitution.name, "version": constitution.version,
                         "sha256": constitution.sha256, "file": "constitution.yaml"},
        "templates": template_digest() if labeller else None,  # the simple preset asks no one
        **source.fingerprint(),
    }  # fmt: skip
    summary = LabelSummary(out=out, labeller_calls=_earlier_calls(out))
    run = Run.open(out, "label", fingerprint)
    run.manifest["executor"] = executor.describe() if executor else {"name": "local"}
    write_atomic(out / "constitution.yaml", constitution_text)
    done = _resume(out, min_margin, summary)
    try:
        _label_pending(
            source, done, run, summary, constitution, labeller, config, min_margin, progress,
            executor,
        )  # fmt: skip
    except BaseException:
        _save(run, summary, source, labeller, "interrupted")
        raise
    _save(run, summary, source, labeller, "complete")
    summary.wall_time_s = float(run.manifest["wall_time_s"])
    return summary


def _earlier_calls(out: Path) -> int:
    """Labeller calls the earlier sessions of this run made (0 for a new run)."""
    try:
        counts = json.loads((out / "manifest.json").read_text("utf-8")).get("counts") or {}
        return int(counts.get("labeller_calls", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        return 0  # no manifest yet; an unreadable one is Run.open's to refuse


def _resume(out: Path, min_margin: float, summary: LabelSummary) -> set[str]:
    kept = {row.id for row in read_stored(out / PREFS, PreferenceRow)}
    done: set[str] = set()
    with JsonlAppender(out / PREFS) as prefs:
        for entry in read_stored(out / LABELS, Label):
            if entry.id in done:
                continue
            done.add(entry.id)
            summary.stats.add(entry)
            row = preference_row(entry, min_margin)
            if row is not None and row.id not in kept:
                prefs.write(row)
                kept.add(row.id)
    summary.labels = summary.resumed = len(done)
    summary.kept = len(kept)
    return done


def _label_pending(
    source: PairSource, done: set[str], run: Run, summary: LabelSummary,
    constitution: Constitution, labeller: Backend | None, config: LabelConfig,
    min_margin: float, progress: bool, executor: RayExecutor | None,
) -> None:  # fmt: skip
    seen = set(done)
    pending = first_seen(source.pairs(run.path), seen, key=lambda p: p.id)
    bar = progress_bar(unit="call", desc="label", disable=not progress)

    def labeller_calls(calls: int) -> None:
        summary.labeller_calls += calls
        summary.session_calls += calls
        bar.update(calls)

    if isinstance(source, PolicyPairs):
        source.on_calls = bar.update  # sampling answers counts as progress too
        source.executor = executor
    if labeller is None:
        labels = simple_labels(pending, constitution, config.seed)
    else:
        stage = label if executor is None else executor.label
        labels = stage(pending, constitution=constitution, labeller=labeller, config=config,
                       on_calls=labeller_calls)  # fmt: skip
    last_save = time.monotonic()
    with (
        bar,
        JsonlAppender(run.path / LABELS) as labels_out,
        JsonlAppender(run.path / PREFS) as prefs,
    ):
        for entry in labels:
            labels_out.write(entry)
            row = preference_row(entry, min_margin)
            if row is not None:
                prefs.write(row)
                summary.kept += 1
            summary.labels += 1
            summary.stats.add(entry)
            bar.set_postfix(labels=summary.labels, kept=summary.kept, refresh=False)
            if time.monotonic() - last_save > MANIFEST_EVERY_S:
                labels_out.sync()
                prefs.sync()
                _save(run, summary, source, labeller, "running")
                last_save = time.monotonic()


def _save(
    run: Run, summary: LabelSummary, source: PairSource, labeller: Backend | None, status: str
) -> None:
    usage: dict[str, Any] = {}
    if isinstance(source, PolicyPairs):
        usage["policy"] = source.usage.model_dump()
    if (totals := token_totals(labeller)) is not None:
        usage["labeller"] = totals.model_dump()
    counts = {
        "labels": summary.labels,
        "prefs": summary.kept,
        "dropped": summary.labels - summary.kept,
        "resumed": summary.resumed,
        "fallback_labels": summary.stats.fallback_labels,  # a p = 0.5 stand-in in them
        "labeller_calls": summary.labeller_calls,
        "labeller_calls_this_session": summary.session_calls,
    }
    run.manifest["stats"] = summary.stats.summary()
    run.update(counts=counts, usage=usage, status=status)


# --- --dry-run -----------------------------------------------------------------------------


def dry_run(
    source: PairSource, *, constitution: Constitution, config: LabelConfig, limit: int
) -> Iterator[str]:
    """The feedback prompts of the first ``limit`` pairs (placeholders for unsampled answers)."""
    from charter.stages.label import feedback_prefix, pair_prompts

    prefix = feedback_prefix(constitution, config.mode)
    yield (f"=== shared prefix of every feedback prompt ({len(prefix)} messages) ===\n"
           + render_messages(prefix))  # fmt: skip
    if isinstance(source, PolicyPairs):
        pairs: Iterator[PreferencePair] = (
            PreferencePair.make(
                p.messages, "<answer 1 from the policy>", "<answer 2 from the policy>", p.source
            )
            for p in source.prompts()
        )
    else:
        pairs = source.pairs(Path("."))
    for n, pair in zip(range(limit), pairs, strict=False):
        yield from pair_prompts(pair, n + 1, constitution=constitution, config=config)
