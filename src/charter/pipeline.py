"""``charter run``: the whole Constitutional AI loop from one config file.

Stages, in order (each a plain call of the stage function, in its own run directory)::

    calibrate  the labeller against gold preference pairs (so nobody trusts labels at chance)
    baseline   evaluate the policy before training
    revise     SL-CAI: critique → revision on the red-team prompts, plain answers to the
               helpful ones (mixed into SFT so helpfulness does not collapse)
    sft        LoRA SFT of the policy on the revisions (exported to GGUF)
    label      RL-CAI: pairs sampled from the SFT model, soft labels from the labeller
    dpo        soft-label DPO of the SFT model on those labels (exported to GGUF)
    evaluate   the policy against the trained model(s), on the same questions
    report     one self-contained HTML file

Content-addressed: a stage's directory is ``ROOT/NAME-KEY`` where KEY hashes the stage's
settings, its input files and the keys of the stages it reads. Rerunning the same config
finds every directory complete and does nothing; changing one setting changes the keys of
that stage and of every stage downstream of it, so only those run again. A killed run
resumes where it stopped: every stage resumes inside its own directory.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from charter import DEFAULT_MODEL
from charter.errors import CharterError
from charter.records import canonical_json
from charter.report import PLAN, REPORT
from charter.runs import MANIFEST, Run, file_sha256, write_atomic
from charter.yamlfile import first_error, line_of, load_yaml

STAGES = ("calibrate", "baseline", "revise", "sft", "label", "dpo", "evaluate", "report")
OVERLAP = "overlap.json"  # the revise stage's report: training prompts dropped for overlap
REPORT_VERSION = 1  # the report stage's format version (see stage_versions)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Models(_Settings):
    """A model per role; critic, labeller and judge default to the policy."""

    policy: str = DEFAULT_MODEL
    critic: str | None = None
    labeller: str | None = None
    judge: str | None = None
    teacher: str | None = Field(
        default=None, description="recipe: teacher — judges requests and writes revisions"
    )

    def role(self, name: Literal["critic", "labeller", "judge"]) -> str:
        chosen: str | None = getattr(self, name)
        return chosen or self.policy


class Prompts(_Settings):
    redteam: tuple[str, ...] = ("demo-redteam",)
    helpful: tuple[str, ...] = ("demo-helpful",)
    contrast: tuple[str, ...] = Field(
        default=(), description="requests that only sound harmful (teacher recipe)"
    )
    limit: int | None = Field(default=None, ge=1, description="first N prompts of each set")


class ReviseSettings(_Settings):
    rounds: int = Field(default=2, ge=1)
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    revision_temperature: float = Field(default=0.7, ge=0)
    skip_unneeded: bool = False
    batch_size: int = Field(default=16, ge=1)


class LabelSettings(_Settings):
    samples: int = Field(default=2, ge=2, description="answers sampled per prompt")
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=1.0, ge=0)
    mode: Literal["soft", "cot"] = "soft"
    batch_size: int = Field(default=16, ge=1)
    limit: int | None = Field(default=None, ge=1, description="prompts labelled (kinds mixed)")
    confidence: float = Field(
        default=0.9, gt=0.5, le=1.0, description="teacher recipe: every verdict pair's p_chosen"
    )


class CalibrateSettings(_Settings):
    gold: str = Field(default="demo-hh", description="gold pairs: file or bundled set")
    limit: int = Field(default=8, ge=1)
    min_accuracy: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="stop below this gold accuracy",
    )
    harmful: tuple[str, ...] = Field(default=(), description="teacher recipe: gold harmful prompts")
    safe: tuple[str, ...] = Field(default=(), description="teacher recipe: gold safe prompts")
    min_auc: float = Field(default=0.75, ge=0, le=1, description="the verdict check's floor")


class GuidedSettings(_Settings):
    """The teacher recipe's generation settings (charter.stages.guided)."""

    answer_tokens: int = Field(default=128, ge=1)
    revision_tokens: int = Field(default=100, ge=1)
    temperature: float = Field(default=0.7, ge=0)
    batch_size: int = Field(default=16, ge=1)


class EvaluateSettings(_Settings):
    suites: tuple[str, ...] = ("harmlessness", "over-refusal", "helpfulness", "honesty", "code")
    limit: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=192, ge=1)
    data: dict[str, str] = Field(default_factory=dict, description="KEY: PATH, as --data")
    trained: tuple[Literal["sft", "dpo"], ...] = Field(
        default=("dpo",), min_length=1, description="trained models compared to the policy"
    )
    baseline: Literal["policy", "export"] = Field(
        default="policy",
        description="export: the policy through the trained models' f16 GGUF export path",
    )
    harm_judge: bool = Field(
        default=True, description="false: harmful = not a refusal (refusal classifier only)"
    )
    data_sources: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="KEY: [PATH#START:STOP, …], merged into one file"
    )
    concurrency: int | None = Field(default=None, ge=1, description="engine slots for answers")


class RunConfig(_Settings):
    """One file for the whole loop (``charter run CONFIG.yaml``)."""

    name: str = Field(default="charter-run", description="names the run folder, runs/NAME")
    constitution: str = "default"
    recipe: Literal["self-critique", "teacher"] = "self-critique"
    prompts: Prompts = Prompts()
    models: Models = Models()
    calibrate: CalibrateSettings = CalibrateSettings()
    revise: ReviseSettings = ReviseSettings()
    sft: dict[str, Any] = Field(default_factory=dict, description="train settings (as train)")
    guided: GuidedSettings = GuidedSettings()
    label: LabelSettings = LabelSettings()
    dpo: dict[str, Any] = Field(default_factory=dict, description="train settings (as train)")
    evaluate: EvaluateSettings = EvaluateSettings()

    @field_validator("name")
    @classmethod
    def _folder_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError(f"{name!r} cannot name a folder under runs/: use letters, digits, "
                             "'.', '_' and '-', starting with a letter or digit")  # fmt: skip
        return name

    @model_validator(mode="after")
    def _train_settings(self) -> RunConfig:
        if self.recipe == "teacher" and not self.models.teacher:
            raise ValueError(
                "recipe: teacher needs models.teacher (e.g. local/qwen2.5-coder-1.5b-instruct)"
            )
        if self.recipe == "teacher" and not (self.calibrate.harmful and self.calibrate.safe):
            raise ValueError(
                "recipe: teacher needs calibrate.harmful and calibrate.safe gold prompts"
            )
        for kind in ("sft", "dpo"):
            reserved = {"kind", "model", "data", "gguf", "helpful"} & set(getattr(self, kind))
            if reserved:
                raise ValueError(f"{kind}: {', '.join(sorted(reserved))} are set by the run itself")
            train_config(kind, getattr(self, kind), "policy", ("data",))  # validates
        return self


def train_config(kind: str, settings: dict[str, Any], start: str, data: tuple[str, ...]) -> Any:
    from charter.stages.train.config import TrainConfig

    try:
        return TrainConfig(kind=kind, model=start, data=data, gguf=True, **settings)  # type: ignore[arg-type]
    except ValidationError as err:
        raise ValueError(first_error(err)[1]) from None


def load_run_config(path: Path) -> RunConfig:
    """A run config from YAML; a bad field stops with its file:line.

    ``extends: NAME|PATH`` starts from another config (a bundled name, or a path relative to
    this file) and overrides it key by key (mappings merge, everything else replaces).
    """
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise CharterError(f"{path}:1: a run config is a YAML mapping (name:, models: …)")
    if "extends" in data:
        base = bundled_config(str(data.pop("extends")), relative_to=path.parent)
        if base.resolve() == path.resolve():
            raise CharterError(
                f"{path}:{line_of(lines, ('extends',))}: a config cannot extend itself"
            )
        data = _merge(load_run_config(base).model_dump(mode="json"), data)
    try:
        return RunConfig.model_validate(_beside(data, path.parent))
    except ValidationError as err:
        loc, problem = first_error(err)
        raise CharterError(f"{path}:{line_of(lines, loc)}: {problem}") from None


# Fields that name input files: a relative path is looked up next to the config file first.
_PATH_FIELDS = (("prompts", "redteam"), ("prompts", "helpful"), ("prompts", "contrast"),
                ("calibrate", "gold"), ("calibrate", "harmful"), ("calibrate", "safe"),
                ("evaluate", "data"), ("evaluate", "data_sources"))  # fmt: skip


def _beside(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with each relative input path that exists next to the config made absolute.

    A path that does not exist there is left as written: it may name a bundled set
    (``contrast``) or a file relative to the current directory (the bundled configs' data).
    """

    def resolve(value: Any) -> Any:
        if isinstance(value, str):
            file, hash_, rest = value.partition("#")  # PATH#START:STOP slices keep their suffix
            near = folder / file
            if file and not Path(file).is_absolute() and near.exists():
                return f"{near.resolve()}{hash_}{rest}"
            return value
        if isinstance(value, list | tuple):
            return [resolve(v) for v in value]
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        return value

    out = dict(data)
    for section, key in _PATH_FIELDS:
        part = out.get(section)
        if isinstance(part, dict) and key in part:
            out[section] = {**part, key: resolve(part[key])}
    return out


def bundled_config(name: str, relative_to: Path = Path()) -> Path:
    """A config file by path, or a bundled config by name (demo, effect, …)."""
    from importlib import resources

    path = relative_to / name
    if path.is_file():
        return path
    folder = Path(str(resources.files("charter") / "configs"))
    bundled = folder / f"{name}.yaml"
    if Path(name).suffix or not bundled.is_file():
        # Listed from the folder itself: an absolute NAME replaces it in `bundled`.
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise CharterError(f"{name}: no such config file, and not a bundled config "
                           f"({', '.join(names)})")  # fmt: skip
    return bundled


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        old = merged.get(key)
        merged[key] = (
            _merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return merged


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class Stage:
    """One stage of a run: where it lives, what it reads, and how to run it."""

    name: str
    key: str
    path: Path
    needs: tuple[str, ...]
    estimate: dict[str, float]  # calls, tokens, seconds (rough upper bounds)
    run: Callable[[], None] = field(repr=False)
    check: Callable[[], None] | None = field(default=None, repr=False)  # e.g. a gate

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


# Seconds per unit of work for the embedded model on a 2-core CPU, for the estimate only,
# measured in `charter demo` runs (docs/benchmarks.md; one llama.cpp slot): a critique or
# revision call (~1,600 prompt tokens, most of it the few-shot prefix), a plain answer of
# ≤128 tokens, a scoring pass of the labeller or judge (long few-shot prompts), a LoRA step
# of 8 rows (SFT, DPO), and a fixed cost per training stage (loading, saving, GGUF export).
RATES = {"revise_call_s": 3.3, "answer_s": 1.5, "score_s": 3.0, "sft_step_s": 11.0,
         "dpo_step_s": 15.0, "train_fixed_s": 15.0}  # fmt: skip


def _key(payload: Any) -> str:
    """A short content hash of settings (pydantic models included) and input digests."""
    from hashlib import sha256

    plain = json.loads(json.dumps(payload, default=lambda o: o.model_dump(mode="json")))
    return sha256(canonical_json(plain).encode("utf-8")).hexdigest()[:12]


def stage_versions(teacher: bool) -> dict[str, int]:
    """Each stage's format version (the ``VERSION`` of the module that writes its outputs)."""
    from charter.stages import calibrate, export, guided, label_run, revise_run, verdict_pairs
    from charter.stages.evaluate import run as evaluate_run
    from charter.stages.train import run as train_run

    return {
        "calibrate": calibrate.VERSION, "export": export.VERSION,
        "baseline": evaluate_run.VERSION, "evaluate": evaluate_run.VERSION,
        "revise": guided.VERSION if teacher else revise_run.VERSION,
        "label": verdict_pairs.VERSION if teacher else label_run.VERSION,
        "sft": train_run.VERSION, "dpo": train_run.VERSION, "report": REPORT_VERSION,
    }  # fmt: skip


def plan(config: RunConfig, root: Path, backend: Callable[[str], Any]) -> list[Stage]:
    """Every stage of ``config`` with its content key, in order."""
    from charter.constitution import Constitution
    from charter.iterate import interleave
    from charter.prompts import resolve_prompts
    from charter.splits import disjoint, materialise
    from charter.stages.evaluate.suites import questions

    constitution = Constitution.load(config.constitution)
    from charter.models import model_identity, models_dir

    inputs = models_dir().parent / "inputs"  # sliced copies, content-addressed, shared by runs
    prompt_files = {
        kind: [materialise(sources, inputs, kind)] if any("#" in s for s in sources)
        else [resolve_prompts(s) for s in sources]
        for kind in ("redteam", "contrast", "helpful")
        if (sources := getattr(config.prompts, kind))
    }  # fmt: skip
    data = evaluation_data(config, inputs)
    settings = evaluate_config(config)
    asked = questions(settings.suites, data, seed=0, limit=config.evaluate.limit)
    n_questions = len(asked)
    # Training prompts never overlap an evaluation question (exact or a shared 8-gram).
    evaluation: dict[str, list[str]] = {}
    for q in asked:
        evaluation.setdefault(q.suite, []).append(q.messages[-1].content)
    by_kind, overlap_report = disjoint(_first_prompts(prompt_files, config.prompts.limit),
                                       evaluation)  # fmt: skip
    by_kind.setdefault("helpful", [])
    by_kind.setdefault("redteam", [])
    prompts = [p for kind in by_kind.values() for p in kind]
    gold = resolve_prompts(config.calibrate.gold)
    teacher_templates = None
    # Each stage's key covers the text of the prompt templates it sends.
    from charter.stages import label, revise
    from charter.stages.evaluate import judges

    templates = {"revise": revise.template_digest(), "label": label.template_digest(),
                 "judge": judges.template_digest()}  # fmt: skip
    if config.recipe == "teacher":
        from charter.stages.guided import template_digest

        teacher_templates = template_digest()
    from charter.splits import parse_source

    judge_gold = [*config.calibrate.harmful, *config.calibrate.safe]
    digest = {
        "constitution": constitution.sha256,
        # content only: the same prompts read from another path are the same input
        "prompts": _key([p.model_dump(mode="json", exclude={"source"}) for p in prompts]),
        "data": {k: file_sha256(p) for k, p in sorted(data.items())},
        "gold": file_sha256(gold),
        "judge_gold": [[s, file_sha256(resolve_prompts(parse_source(s)[0]))] for s in judge_gold],
    }
    m = config.models
    teacher = config.recipe == "teacher"
    versions = stage_versions(teacher)
    # Models by the sha256 of their weights too: a swapped GGUF never reuses old results.
    named = {m.policy, m.critic, m.teacher, m.role("labeller"), m.role("judge")}
    identity = {n: model_identity(n) for n in named if n}

    def ident(name: str | None) -> str | None:
        return identity.get(name, name) if name else name

    keys: dict[str, str] = {}
    stages: list[Stage] = []

    def add(name: str, needs: tuple[str, ...], settings: Any, inputs: Any,
            estimate: dict[str, float], run: Callable[[Path], None]) -> None:  # fmt: skip
        keys[name] = _key([name, versions[name], settings, inputs, [keys[n] for n in needs]])
        path = root / f"{name}-{keys[name]}"
        stages.append(Stage(name, keys[name], path, needs, estimate, lambda: run(path)))

    def where(name: str) -> Path:
        return next(s.path for s in stages if s.name == name)

    label_prompts = interleave(by_kind.values())[: config.label.limit]
    n = len(label_prompts)
    n_redteam, n_helpful = len(by_kind["redteam"]), len(by_kind["helpful"])
    calls = {"revise": n_redteam * (1 + 2 * config.revise.rounds) + n_helpful,
             "label": n * config.label.samples}  # fmt: skip
    pairs = n * config.label.samples * (config.label.samples - 1) // 2
    sft_steps, dpo_steps = _steps(config.sft, n), _steps(config.dpo, pairs)
    add("calibrate", (), [config.calibrate, ident(m.role("labeller")), config.label.mode,
                          ident(m.teacher), teacher_templates, templates["label"]],
        [digest["gold"], digest["judge_gold"], digest["constitution"]],
        _estimate(0, 0, "answer_s", 2 * config.calibrate.limit),
        lambda out: _calibrate(config, out, gold, backend))  # fmt: skip
    stages[-1].check = lambda: _gate(config, where("calibrate"))
    baseline_model = m.policy
    if config.evaluate.baseline == "export":
        add("export", (), [ident(m.policy)], [], {"seconds": 30},
            lambda out: _export_policy(m.policy, out))  # fmt: skip
        baseline_model = _gguf_model(where("export"))
    # The baseline's answers do not depend on which trained models it is compared with.
    add("baseline", ("export",) if config.evaluate.baseline == "export" else (),
        [config.evaluate.model_dump(exclude={"trained"}), ident(m.policy), ident(m.role("judge")),
         templates["judge"]], [digest["data"], digest["constitution"]],
        _estimate(n_questions, config.evaluate.max_tokens, "answer_s", n_questions),
        lambda out: _evaluate(config, out, [baseline_model], data, backend))  # fmt: skip
    if teacher:
        add("revise", ("calibrate",),
            [config.guided, ident(m.policy), ident(m.teacher), teacher_templates],
            [digest["prompts"], digest["constitution"]],
            _estimate(n_redteam * 2 + len(prompts), config.guided.revision_tokens,
                      "revise_call_s", n_redteam),
            lambda out: _guided(config, out, by_kind, where("calibrate"), backend,
                                overlap_report))  # fmt: skip
    else:
        add("revise", (), [config.revise, ident(m.policy), ident(m.critic), templates["revise"]],
            [digest["prompts"], digest["constitution"]],
            _estimate(calls["revise"], config.revise.max_tokens, "revise_call_s", 0),
            lambda out: _revise(config, out, by_kind, backend, overlap_report))  # fmt: skip
    add("sft", ("revise",), [config.sft, ident(m.policy)], [],
        {"calls": 0, "tokens": 0,
         "seconds": sft_steps * RATES["sft_step_s"] + RATES["train_fixed_s"]},
        lambda out: _train("sft", config.sft if teacher else
                           _with_helpful(config.sft, where("revise"), n_helpful),
                           m.policy, where("revise"), out))  # fmt: skip
    if "dpo" in config.evaluate.trained and teacher:  # pairs from the teacher's verdicts
        add("label", ("revise", "sft"), [config.label, "verdict-pairs"], [],
            _estimate(calls["label"], config.label.max_tokens, "answer_s", 0),
            lambda out: _verdict_pairs(config, out, where("revise"), where("sft"),
                                       backend))  # fmt: skip
    elif "dpo" in config.evaluate.trained:  # otherwise nothing reads label and dpo
        add("label", ("sft",), [config.label, ident(m.role("labeller")), templates["label"]],
            [digest["prompts"], digest["constitution"]],
            _estimate(calls["label"], config.label.max_tokens, "answer_s", 2 * pairs),
            lambda out: _label(config, out, label_prompts, where("sft"), backend))  # fmt: skip
    if "dpo" in config.evaluate.trained:
        add("dpo", ("sft", "label"), [config.dpo], [],
            {"calls": 0, "tokens": 0,
             "seconds": dpo_steps * RATES["dpo_step_s"] + RATES["train_fixed_s"]},
            lambda out: _train("dpo", config.dpo, str(where("sft")), where("label"),
                               out))  # fmt: skip
    trained = config.evaluate.trained
    add("evaluate", ("baseline", *trained),
        [config.evaluate, ident(m.policy), ident(m.role("judge")), templates["judge"]],
        [digest["data"], digest["constitution"]],
        _estimate(n_questions * len(trained), config.evaluate.max_tokens, "answer_s",
                  n_questions * len(trained)),
        lambda out: _evaluate(
            config, out, [baseline_model, *(_gguf_model(where(t)) for t in trained)], data,
            backend, seed_from=where("baseline"),
        ))  # fmt: skip
    add("report", tuple(s.name for s in stages), [config.name], [], {"seconds": 5},
        lambda out: _report(config, out, stages))  # fmt: skip
    return stages


def _first_prompts(files: dict[str, list[Path]], limit: int | None) -> dict[str, list[Any]]:
    """The first ``limit`` prompts of each kind; a prompt seen before (any kind) is dropped."""
    from charter.prompts import load_prompts

    seen: set[str] = set()
    chosen: dict[str, list[Any]] = {}
    for kind, paths in files.items():
        chosen[kind] = []
        for path in paths:
            for prompt in load_prompts(path):
                if limit is not None and len(chosen[kind]) >= limit:
                    break
                if prompt.id not in seen:
                    seen.add(prompt.id)
                    chosen[kind].append(prompt)
    return chosen


def evaluation_data(config: RunConfig, inputs: Path) -> dict[str, Path]:
    """The evaluation's data files by key: bundled defaults, ``data`` paths, sliced sources."""
    from charter.splits import materialise, raw_slice
    from charter.stages.evaluate.suites import DEFAULT_DATA, resolve_data

    data = {k: resolve_data(v) for k, v in {**DEFAULT_DATA, **config.evaluate.data}.items()}
    for key, sources in config.evaluate.data_sources.items():
        data[key] = (raw_slice(sources[0], inputs, key) if key in ("ifeval", "code", "honesty")
                     else materialise(sources, inputs, key))  # fmt: skip
    return data


def _steps(settings: dict[str, Any], rows: int) -> int:
    """Optimiser steps a training stage will take (for the estimate)."""
    config = train_config("sft", settings, "policy", ("data",))
    if config.max_steps > 0:
        return int(config.max_steps)
    per_step = config.batch_size * config.gradient_accumulation
    return max(1, math.ceil(rows * float(config.epochs) / int(per_step)))


def _estimate(calls: int, max_tokens: int, rate: str, scorings: int) -> dict[str, float]:
    """Model calls, generated tokens (an upper bound) and seconds of a stage's work."""
    seconds = calls * RATES[rate] + scorings * RATES["score_s"]
    return {"calls": calls + scorings, "tokens": calls * max_tokens, "seconds": seconds}


def _gguf_model(train_run: Path) -> str:
    return f"local/{train_run / 'model.gguf'}"


def evaluate_config(config: RunConfig) -> Any:
    """The evaluation settings a run config gives every evaluate stage."""
    from charter.backends import GenerationConfig
    from charter.stages.evaluate.run import EvaluateConfig

    return EvaluateConfig(
        suites=config.evaluate.suites, limit=config.evaluate.limit,
        answer=GenerationConfig(temperature=0.0, max_tokens=config.evaluate.max_tokens),
    )  # fmt: skip


# --- the stages -------------------------------------------------------------------------------


def _calibrate(config: RunConfig, out: Path, gold: Path, backend: Callable[[str], Any]) -> None:
    from itertools import islice

    from charter.constitution import Constitution
    from charter.pairs import load_pairs
    from charter.stages.calibrate import calibration_report
    from charter.stages.label import LabelConfig, label

    labeller_name = config.models.role("labeller")
    run = Run.open(out, "calibrate", {"labeller": labeller_name, "gold": file_sha256(gold),
                                      "settings": config.calibrate.model_dump()})  # fmt: skip
    pairs = list(islice(load_pairs(gold), config.calibrate.limit))
    constitution = Constitution.load(config.constitution)
    labeller = backend(labeller_name)
    try:
        labels = list(label(pairs, constitution=constitution, labeller=labeller,
                            config=LabelConfig(mode=config.label.mode)))  # fmt: skip
    finally:
        labeller.close()
    report = calibration_report(labels, labeller=labeller_name, gold=gold.name)
    write_atomic(out / "calibration.json", report.model_dump_json(indent=2))
    counts: dict[str, Any] = {"pairs": len(labels)}
    if config.recipe == "teacher":
        counts.update(_calibrate_judge(config, out, constitution, backend))
    run.update(counts=counts, usage={}, status="complete")


JUDGE_CALIBRATION = "judge.json"


def _calibrate_judge(config: RunConfig, out: Path, constitution: Any,
                     backend: Callable[[str], Any]) -> dict[str, Any]:  # fmt: skip
    """The teacher's verdict check on gold harmful and safe prompts (charter.stages.guided)."""
    from charter.splits import source_prompts
    from charter.stages.guided import calibrate_judge

    def texts(sources: tuple[str, ...]) -> list[str]:
        return [p.messages[-1].content for s in sources for p in source_prompts(s)]

    teacher = backend(str(config.models.teacher))
    try:
        report = calibrate_judge(teacher, constitution, texts(config.calibrate.harmful),
                                 texts(config.calibrate.safe))  # fmt: skip
    finally:
        teacher.close()
    write_atomic(out / JUDGE_CALIBRATION, json.dumps(report, indent=2))
    return {"judge_gold": report["harmful"] + report["safe"]}


def _gate(config: RunConfig, out: Path) -> None:
    """Stop the run before any training when a labeller or judge is not good enough."""
    from charter.stages.calibrate import CalibrationReport

    c = config.calibrate
    labeller = CalibrationReport.model_validate_json((out / "calibration.json").read_text())
    if c.min_accuracy is not None and labeller.accuracy < c.min_accuracy:
        raise CharterError(
            f"calibrate: labeller {labeller.labeller} scored accuracy {labeller.accuracy:.2f} on "
            f"{labeller.pairs} gold pairs ({labeller.gold}), below calibrate.min_accuracy "
            f"{c.min_accuracy}; use a stronger labeller (models.labeller) before training"
        )
    if config.recipe == "teacher":
        judge = json.loads((out / JUDGE_CALIBRATION).read_text("utf-8"))
        if judge["auc"] < c.min_auc:
            raise CharterError(
                f"calibrate: the teacher's verdict check has AUC {judge['auc']:.2f} on "
                f"{judge['harmful']}+{judge['safe']} gold prompts, below calibrate.min_auc "
                f"{c.min_auc}; use a stronger teacher (models.teacher) before training"
            )


def _export_policy(policy: str, out: Path) -> None:
    """The untrained policy through the same path as the trained ones: f16 GGUF export.

    Baseline and trained models then differ only in training, not in quantisation (the
    embedded GGUF is Q4_1; a trained model is exported as f16).
    """
    from charter.stages.export import export_gguf
    from charter.stages.train.run import start_checkpoint

    run = Run.open(out, "export", {"policy": policy})
    export_gguf(start_checkpoint(policy), out / "model.gguf", dtype="f16")
    run.update(counts={}, usage={}, status="complete")


def _guided(config: RunConfig, out: Path, prompts: dict[str, list[Any]], calibration: Path,
            backend: Callable[[str], Any], overlap: dict[str, Any]) -> None:  # fmt: skip
    """The teacher recipe's supervised data (charter.stages.guided)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / OVERLAP, json.dumps(overlap, indent=2))
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution
    from charter.stages.guided import VERSION, GuidedConfig, run_guided, template_digest

    s, m = config.guided, config.models
    threshold = json.loads((calibration / JUDGE_CALIBRATION).read_text("utf-8"))["threshold"]
    guided_config = GuidedConfig(
        threshold=threshold, batch_size=s.batch_size,
        answer=GenerationConfig(temperature=s.temperature, max_tokens=s.answer_tokens),
        revision=GenerationConfig(temperature=s.temperature, max_tokens=s.revision_tokens),
    )  # fmt: skip
    constitution = Constitution.load(config.constitution)
    fingerprint = {
        "config": guided_config.model_dump(mode="json", exclude={"batch_size"}),
        "policy": m.policy, "teacher": m.teacher, "constitution": constitution.sha256,
        "templates": template_digest(), "version": VERSION,
        "prompts": {k: _key([p.id for p in v]) for k, v in prompts.items()},
    }  # fmt: skip
    order = {k: prompts[k] for k in ("redteam", "contrast", "helpful") if prompts.get(k)}
    policy, teacher = backend(m.policy), backend(str(m.teacher))
    try:
        run_guided(order, out=out, constitution=constitution, policy=policy, teacher=teacher,
                   config=guided_config, fingerprint=fingerprint)  # fmt: skip
    finally:
        policy.close()
        teacher.close()


def _evaluate(
    config: RunConfig, out: Path, models: list[str], data: dict[str, Path],
    backend: Callable[[str], Any], seed_from: Path | None = None,
) -> None:  # fmt: skip
    from charter.constitution import Constitution
    from charter.stages.evaluate.run import ANSWERS, run_evaluate

    if seed_from is not None and not (out / ANSWERS).exists() and (seed_from / ANSWERS).exists():
        # The baseline's answers, from the same questions and settings: not asked again.
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / ANSWERS, (seed_from / ANSWERS).read_text("utf-8"))
    run_evaluate(
        models, out=out, config=evaluate_config(config), data=data, backend=backend,
        judge=config.models.role("judge") if config.evaluate.harm_judge else None,
        constitution=Constitution.load(config.constitution),
    )  # fmt: skip


HELPFUL = "helpful"  # the revise stage's subdirectory of plain answers to helpful prompts


def _revise(
    config: RunConfig, out: Path, prompts: dict[str, list[Any]], backend: Callable[[str], Any],
    overlap: dict[str, Any],
) -> None:  # fmt: skip
    """Red-team prompts through SL-CAI into ``out``; helpful prompts answered into ``out/helpful``.

    The paper revises red-team answers only and mixes in ordinary helpful samples, so that
    SFT does not trade helpfulness away; the helpful side is a 0-round revise run.
    """
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution, resolve
    from charter.prompts import PromptSet
    from charter.stages.revise import ReviseConfig
    from charter.stages.revise_run import run_revise

    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / OVERLAP, json.dumps(overlap, indent=2))
    s, m = config.revise, config.models
    revise_config = ReviseConfig(
        rounds=s.rounds, skip_unneeded=s.skip_unneeded, batch_size=s.batch_size,
        answer=GenerationConfig(temperature=s.temperature, max_tokens=s.max_tokens),
        critique=GenerationConfig(temperature=s.revision_temperature, max_tokens=s.max_tokens),
        revision=GenerationConfig(temperature=s.revision_temperature, max_tokens=s.max_tokens),
    )  # fmt: skip
    policy = backend(m.policy)
    critic = backend(m.critic) if m.critic and m.critic != m.policy else None
    constitution = Constitution.load(config.constitution)
    constitution_text = resolve(config.constitution).read_text("utf-8")
    jobs = [
        (out, prompts["redteam"], revise_config),
        (out / HELPFUL, prompts["helpful"], revise_config.model_copy(update={"rounds": 0})),
    ]
    try:
        for where, chosen, settings in jobs:
            if not chosen:
                continue
            run_revise(
                PromptSet([str(_write_prompts(where, chosen))]), out=where,
                constitution=constitution, constitution_text=constitution_text,
                backend=policy, config=settings, critic=critic,
            )  # fmt: skip
    finally:
        policy.close()
        if critic is not None:
            critic.close()


def _write_prompts(out: Path, prompts: list[Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "prompts.jsonl"
    rows = [{"messages": [m.model_dump() for m in p.messages]} for p in prompts]
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _with_helpful(settings: dict[str, Any], revise: Path, n_helpful: int) -> dict[str, Any]:
    """SFT settings with the revise stage's helpful answers mixed in (one per red-team row)."""
    if not n_helpful:
        return settings
    return {"helpful_ratio": 1.0, **settings, "helpful": str(revise / HELPFUL)}


def _train(kind: str, settings: dict[str, Any], start: str, data: Path, out: Path) -> None:
    from charter.stages.train.run import train

    train(train_config(kind, settings, start, (str(data),)), out)


def _label(
    config: RunConfig, out: Path, prompts: list[Any], sft: Path, backend: Callable[[str], Any]
) -> None:
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution, resolve
    from charter.prompts import PromptSet
    from charter.stages.label import LabelConfig
    from charter.stages.label_run import PolicyPairs, run_label

    s = config.label
    prompt_file = _write_prompts(out, prompts)
    policy = backend(_gguf_model(sft))
    labeller = backend(config.models.role("labeller"))
    try:
        source = PolicyPairs(
            PromptSet([str(prompt_file)]), policy, samples=s.samples, batch_size=s.batch_size,
            generation=GenerationConfig(temperature=s.temperature, max_tokens=s.max_tokens),
        )  # fmt: skip
        run_label(
            source, out=out, constitution=Constitution.load(config.constitution),
            constitution_text=resolve(config.constitution).read_text("utf-8"),
            labeller=labeller, config=LabelConfig(mode=s.mode, batch_size=s.batch_size),
        )  # fmt: skip
    finally:
        policy.close()
        labeller.close()


def _verdict_pairs(config: RunConfig, out: Path, guided: Path, sft: Path,
                   backend: Callable[[str], Any]) -> None:  # fmt: skip
    """The teacher recipe's DPO pairs: the SFT model's samples against the verdicts."""
    from charter.backends import GenerationConfig
    from charter.stages.guided import Tools
    from charter.stages.verdict_pairs import VerdictPairsConfig, run_verdict_pairs

    s = config.label
    settings = VerdictPairsConfig(
        samples=s.samples, limit=s.limit, confidence=s.confidence, batch_size=s.batch_size,
        generation=GenerationConfig(temperature=s.temperature, max_tokens=s.max_tokens),
    )  # fmt: skip
    model = _gguf_model(sft)
    policy = backend(model)
    try:
        run_verdict_pairs(guided, out=out, policy=policy, refuses=Tools.load().refuses,
                          config=settings, fingerprint={"sft": sft.name})  # fmt: skip
    finally:
        policy.close()


def _report(config: RunConfig, out: Path, stages: list[Stage]) -> None:
    from charter.report import build_report

    run = Run.open(out, "report", {"stages": {s.name: s.key for s in stages if s.name != "report"}})
    html = build_report({s.name: s.path for s in stages if s.name != "report"}, title=config.name)
    write_atomic(out / REPORT, html)  # run_pipeline copies it to ROOT/report.html
    run.update(counts={}, usage={}, status="complete")


# --- running ----------------------------------------------------------------------------------


def select(stages: list[Stage], until: str | None, only: str | None) -> list[Stage]:
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


def describe(stages: list[Stage], chosen: list[Stage]) -> str:
    """The plan: each stage, cached or to run, with the estimate of what is left to do."""
    lines = []
    calls = tokens = seconds = 0.0
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
        lines.append(f"  {stage.name:<10} {state:<8} {stage.path}")
    lines.append(
        f"estimate for what is left: ≤{calls:.0f} model calls, ≤{tokens:.0f} generated tokens, "
        f"about {seconds / 60:.0f} min on a 2-core CPU with the embedded model"
    )
    return "\n".join(lines)


def run_pipeline(stages: list[Stage], chosen: list[Stage], root: Path,
                 echo: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Run the chosen stages that are not complete; returns the plan as written to run.json.

    The run root is locked for the whole run: a second ``charter run`` into it stops at once.
    """
    from charter.runs import lock_directory

    _read_plan(root)  # a damaged run.json stops the run before its first stage, not after it
    lock = lock_directory(root)
    try:
        return _run_stages(stages, chosen, root, echo)
    finally:
        lock.release()


def _run_stages(stages: list[Stage], chosen: list[Stage], root: Path,
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
        if stage.check is not None:
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


def _write_plan(stages: list[Stage], root: Path, timings: dict[str, float]) -> dict[str, Any]:
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
