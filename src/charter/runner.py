"""Planning and running stages: content keys, then cached or run, in order, in a locked root.

:func:`plan` gives each stage (:class:`charter.stages.Stage`) its folder ``ROOT/NAME-KEY``, where
KEY hashes the stage's name, format version, settings and inputs and the keys of the stages it
needs: rerunning the same config finds every folder complete; changing one setting changes the
key of that stage and of every stage downstream of it, so only those run again.
:func:`run_pipeline` owns what is the same for every stage: the lock on the root, the stage
record (``stage.json``: started, then complete) that makes a killed run resume where it
stopped, the plan file ``ROOT/run.json`` with each stage's time, and the one line per stage
that the terminal shows. What a stage does inside its folder is its own module's business
(``charter.stages``); which stages a config makes is :func:`charter.pipeline.plan`'s.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from charter.errors import CharterError
from charter.records import canonical_json
from charter.report import PLAN, REPORT
from charter.runs import MANIFEST, write_atomic
from charter.stages import Stage, Step

if TYPE_CHECKING:
    from charter.ray_exec import RayExecutor

T = TypeVar("T")
_EXECUTOR: ContextVar[RayExecutor | None] = ContextVar("charter_executor", default=None)


def current_executor() -> RayExecutor | None:
    """Where the running stage sends its model calls: None, this process; a RayExecutor, Ray
    workers (``--executor ray``). The runner holds it for the stages it runs, so no stage
    takes one of its own; stages that can shard their calls (revise, label) ask, the others
    run here. Outputs and cache keys do not depend on it: either may resume the other's run.
    """
    return _EXECUTOR.get()


@contextmanager
def _executing(executor: RayExecutor | None) -> Iterator[None]:
    token = _EXECUTOR.set(executor)
    try:
        yield
    finally:
        _EXECUTOR.reset(token)


@dataclass
class PlannedStage:
    """A stage with its place in a run root: its content key and folder."""

    stage: Stage
    key: str
    path: Path
    folders: dict[str, Path]  # the folder of each stage it needs

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def needs(self) -> tuple[str, ...]:
        return self.stage.needs

    @property
    def estimate(self) -> Mapping[str, float]:
        return self.stage.estimate

    def run(self) -> None:
        self.stage.run(self.path, self.folders)

    def check(self) -> None:
        self.stage.check(self.path)

    @property
    def complete(self) -> bool:
        """Whether the stage's run function returned: the pipeline's record says so.

        Not the manifest of a run inside the stage: a stage may run several (revise: red-team
        revisions, then helpful answers in ``helpful/``), and the first one's "complete" said
        nothing of the rest, so a run killed between them was cached half done.
        """
        return recorded_complete(self.path, self.key)

    def mark(self, *, complete: bool) -> None:
        """Record that the stage started (before its run) or finished (after it returned)."""
        self.path.mkdir(parents=True, exist_ok=True)
        record = {"stage": self.name, "key": self.key, "complete": complete}
        write_atomic(self.path / STAGE_RECORD, json.dumps(record, indent=2))


STAGE_RECORD = "stage.json"  # the pipeline's own record of a stage, beside its run(s)


def recorded_complete(path: Path, key: str | None = None) -> bool:
    """Whether the stage directory ``path`` finished (for ``key``, when given).

    Read from the pipeline's record (``stage.json``); a directory without one (a stage from
    before the records, or the output of a single command) is complete if every run in it
    says so in its manifest.
    """
    try:
        record = json.loads((path / STAGE_RECORD).read_text("utf-8"))
    except FileNotFoundError:
        return _finished_before_records(path)
    except (OSError, ValueError):
        return False
    return (
        isinstance(record, dict)
        and (key is None or record.get("key") == key)
        and bool(record.get("complete"))
    )


def _finished_before_records(path: Path) -> bool:
    """A stage directory from before stage records: complete if every run in it says so.

    Kept so that run roots made before the records existed are not run again (training most
    of all); it can go once none is in use. Stages started since always have a record.
    """
    manifests = [path / MANIFEST, *path.glob(f"*/{MANIFEST}")]
    try:
        return manifests[0].is_file() and all(
            json.loads(m.read_text("utf-8")).get("status") == "complete" for m in manifests
        )
    except (OSError, ValueError, AttributeError):
        return False


def content_key(payload: Any) -> str:
    """A short content hash of settings (pydantic models included) and input digests."""
    plain = json.loads(json.dumps(payload, default=lambda o: o.model_dump(mode="json")))
    return sha256(canonical_json(plain).encode("utf-8")).hexdigest()[:12]


def plan(stages: Sequence[Stage], root: Path) -> list[PlannedStage]:
    """Each stage with its content key and folder under ``root`` (needs come earlier)."""
    planned: dict[str, PlannedStage] = {}
    for stage in stages:
        missing = [n for n in stage.needs if n not in planned]
        if missing or stage.name in planned:
            raise ValueError(f"stage {stage.name}: needs {missing} not planned before it, or "
                             "planned twice")  # fmt: skip
        needed = [planned[n].key for n in stage.needs]
        key = content_key([stage.name, stage.version, stage.settings, stage.inputs, needed])
        folders = {n: planned[n].path for n in stage.needs}
        planned[stage.name] = PlannedStage(stage, key, root / f"{stage.name}-{key}", folders)
    return list(planned.values())


def select(stages: list[PlannedStage], until: str | None, only: str | None) -> list[PlannedStage]:
    """The stages to run: all, up to ``until``, or ``only`` one (whose inputs must exist)."""
    names = [s.name for s in stages]
    for option, name in (("--until", until), ("--only", only)):
        if name is not None and name not in names:  # export is planned only for some configs
            raise CharterError(f"{option} {name}: this config has no {name} stage; its stages: "
                               f"{', '.join(names)}")  # fmt: skip
    if only is not None:
        stage = stages[names.index(only)]
        missing = [n for n in stage.needs if not stages[names.index(n)].complete]
        if missing:
            raise CharterError(
                f"--only {only} needs {', '.join(missing)} first; run with --until {only}"
            )
        return [stage]
    if until is not None:
        return stages[: names.index(until) + 1]
    return stages


def describe(stages: list[PlannedStage], chosen: list[PlannedStage]) -> str:
    """The plan: each stage, cached or to run, with the estimate of what is left to do."""
    lines = []
    calls = tokens = seconds = 0.0
    width = max([10, *(len(s.name) for s in stages)])
    for stage in stages:
        if stage not in chosen:
            state = "skipped"
        elif stage.complete:
            state = "cached"
        else:
            state = "to run"
            calls += stage.estimate.get("calls", 0)
            tokens += stage.estimate.get("tokens", 0)
            seconds += stage.estimate.get("seconds", 0)
        lines.append(f"  {stage.name:<{width}} {state:<8} {stage.path}")
    lines.append(
        f"estimate for what is left: ≤{calls:.0f} model calls, ≤{tokens:.0f} generated tokens, "
        f"about {seconds / 60:.0f} min on a 2-core CPU with the embedded model"
    )
    return "\n".join(lines)


def summary(chosen: list[PlannedStage], written: dict[str, Any]) -> str:
    """One line per stage: its time in this run root (or cached) and the folder it wrote."""
    seconds = written.get("seconds", {})
    lines = []
    width = max([10, *(len(s.name) for s in chosen)])
    for stage in chosen:
        took = seconds.get(stage.name)
        shown = f"{took:>7.0f}s" if isinstance(took, int | float) else "       -"
        lines.append(f"  {stage.name:<{width}} {shown}  {stage.path}")
    return "\n".join(lines)


def run_pipeline(stages: list[PlannedStage], chosen: list[PlannedStage], root: Path,
                 echo: Callable[[str], None] = print,
                 executor: RayExecutor | None = None) -> dict[str, Any]:  # fmt: skip
    """Run the chosen stages that are not complete; returns the plan as written to run.json.

    The run root is locked for the whole run: a second ``charter run`` into it stops at once.
    ``executor``: see :func:`current_executor`.
    """
    from charter.runs import lock_directory

    _read_plan(root)  # a damaged run.json stops the run before its first stage, not after it
    lock = lock_directory(root)
    try:
        with _logged_to(root / RUN_LOG), _executing(executor):
            return _run_stages(stages, chosen, root, echo)
    finally:
        lock.release()


def run_single(stage: Stage, out: Path, echo: Callable[[str], None] | None = None,
               executor: RayExecutor | None = None) -> float:  # fmt: skip
    """Run one stage straight into ``out``: what ``charter revise``, ``label``, ``train`` and
    ``evaluate`` (and the Python API's functions) do; returns its seconds.

    The same runner as :func:`run_pipeline`, for a folder that is the stage's own rather than
    ``ROOT/NAME-KEY``: ``out`` is locked, ``out/stage.json`` records the stage's content key,
    started then complete, and ``out/run.log`` keeps the log. Unlike ``charter run`` it does
    not skip a complete folder: a single command reruns its stage, which resumes (nothing is
    left to do in a complete folder, and the command prints its summary again). A folder
    recorded under another key is not re-recorded before the stage runs: the stage's own
    check (its manifest's settings) refuses it, naming what differs.
    """
    from charter.runs import HOLDER, LOCK, lock_directory

    planned = plan([stage], out.parent)[0]
    planned.path = out
    existed = out.exists()
    lock = lock_directory(out)
    try:
        with _logged_to(out / RUN_LOG), _executing(executor):
            # A complete record of these settings stays complete while the stage resumes.
            if _recorded_key(out) in (None, planned.key) and not planned.complete:
                planned.mark(complete=False)
            began = time.monotonic()
            planned.run()
            planned.mark(complete=True)
            seconds = round(time.monotonic() - began, 1)
            planned.check()
    except BaseException:
        lock.release()
        # Nothing half-written: a folder this call made, holding only the runner's own files
        # (a stage that stopped on a bad input before writing), is removed again.
        ours = {LOCK, HOLDER, STAGE_RECORD, RUN_LOG}
        if not existed and out.is_dir() and {p.name for p in out.iterdir()} <= ours:
            shutil.rmtree(out, ignore_errors=True)
        raise
    lock.release()
    if echo is not None:
        echo(f"{stage.name}: done in {seconds:.0f}s → {out}")
    return seconds


def run_one(name: str, version: int, settings: Any, out: Path, work: Callable[[], T],
            echo: Callable[[str], None] | None = None,
            executor: RayExecutor | None = None) -> T:  # fmt: skip
    """:func:`run_single` for a command's ``work()``, keyed by ``settings``; returns its value."""
    done: list[T] = []
    step = Step(name, version, (), settings, [], {}, lambda _out, _needs: done.append(work()))
    run_single(step, out, echo, executor)
    return done[0]


def _recorded_key(path: Path) -> str | None:
    """The key in ``path/stage.json``, if a readable record is there."""
    try:
        record = json.loads((path / STAGE_RECORD).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    key = record.get("key") if isinstance(record, dict) else None
    return key if isinstance(key, str) else None


RUN_LOG = "run.log"  # a run's log records from info up, libraries' included


@contextmanager
def _logged_to(path: Path) -> Iterator[None]:
    """Send info log records and above to ``path`` (appended); the terminal keeps its level.

    The terminal shows warnings (``-v``: info, ``-vv``: debug); the file keeps the info too,
    Charter's and the libraries' (transformers, datasets, httpx …), for when a run goes wrong.
    """
    root_logger = logging.getLogger()
    shown = root_logger.level
    consoles = [h for h in root_logger.handlers if h.level == logging.NOTSET]
    for handler in consoles:
        handler.setLevel(shown)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root_logger.addHandler(handler)
    root_logger.setLevel(min(shown, logging.INFO))  # debug records only with -vv
    try:
        yield
    finally:
        root_logger.setLevel(shown)
        root_logger.removeHandler(handler)
        handler.close()
        for console in consoles:
            console.setLevel(logging.NOTSET)


def _run_stages(stages: list[PlannedStage], chosen: list[PlannedStage], root: Path,
                echo: Callable[[str], None]) -> dict[str, Any]:  # fmt: skip
    timings: dict[str, float] = {}
    for number, stage in enumerate(chosen, start=1):
        if stage.complete:
            echo(f"[{number}/{len(chosen)}] {stage.name}: cached ({stage.path.name})")
        else:
            echo(f"[{number}/{len(chosen)}] {stage.name} → {stage.path}")
            began = time.monotonic()
            stage.mark(complete=False)  # from here on, only a returned run completes it
            stage.run()
            stage.mark(complete=True)
            timings[stage.name] = round(time.monotonic() - began, 1)
            echo(f"[{number}/{len(chosen)}] {stage.name}: done in {timings[stage.name]:.0f}s")
            _write_plan(stages, root, timings)
        stage.check()
    report = next((s for s in chosen if s.name == "report" and s.complete), None)
    if report is not None:  # ROOT/report.html is this config's, even when its stage was cached
        write_atomic(root / REPORT, (report.path / REPORT).read_text("utf-8"))
    return _write_plan(stages, root, timings)


def _read_plan(root: Path) -> dict[str, Any]:
    """ROOT/run.json as an earlier run wrote it ({} when there is none)."""
    path = root / PLAN
    if not path.exists():
        return {}
    try:
        plan = json.loads(path.read_text("utf-8"))
        if not isinstance(plan, dict) or not isinstance(plan.get("seconds", {}), dict):
            raise ValueError("not a mapping of stages and seconds")
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError too
        raise CharterError(
            f"{path}: not a charter run plan ({err}); if this folder is a charter run, delete "
            "the file and rerun (it is rewritten), else give another --out"
        ) from None
    return plan


def _write_plan(
    stages: list[PlannedStage], root: Path, timings: dict[str, float]
) -> dict[str, Any]:
    plan_path = root / PLAN
    previous = _read_plan(root)
    seconds = {**previous.get("seconds", {}), **timings}
    written = {
        "stages": {s.name: {"key": s.key, "path": str(s.path), "complete": s.complete}
                   for s in stages},
        "seconds": seconds,
    }  # fmt: skip
    write_atomic(plan_path, json.dumps(written, indent=2))
    return written
