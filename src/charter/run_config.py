"""The run config: one YAML file for the whole loop (``charter run CONFIG.yaml``).

Every section is a pydantic model that rejects unknown keys, so a typo stops the run at its
file:line before anything runs. ``extends: NAME`` starts from another config (bundled ones live
in ``charter/configs``). :mod:`charter.pipeline` turns a config into stages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.functional_serializers import model_serializer
from pydantic_core.core_schema import SerializerFunctionWrapHandler

from charter import DEFAULT_MODEL
from charter.errors import CharterError
from charter.stages.code_revise import Feedback
from charter.stages.hard import HardCheck
from charter.yamlfile import first_error, line_of, load_yaml


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

    def pairwise_judge(self) -> str | None:
        """The judge of pairwise comparisons, or None: the policy never grades its own answers
        against its trained versions."""
        judge = self.role("judge")
        return judge if judge != self.policy else None


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
    principles_per_label: int = Field(default=1, ge=1, description="votes per label")
    combine: Literal["mean", "priority"] = Field(
        default="mean", description="the votes' mean, or the constitution's priority order"
    )
    hard: HardCheck = Field(
        default=HardCheck(), description="the hard-constraint veto: kept replies, labels, pairs"
    )
    batch_size: int = Field(default=16, ge=1)
    limit: int | None = Field(default=None, ge=1, description="prompts labelled (kinds mixed)")
    confidence: float = Field(
        default=0.9, gt=0.5, le=1.0, description="teacher recipe: every verdict pair's p_chosen"
    )

    @model_serializer(mode="wrap")
    def _unset_is_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Settings added after runs were made are left out at their defaults, so those runs'
        cache keys (which hash this section) stay what they were."""
        added, fields = ("principles_per_label", "combine", "hard"), type(self).model_fields
        return {k: v for k, v in handler(self).items()
                if k not in added or getattr(self, k) != fields[k].default}  # fmt: skip

    @model_validator(mode="after")
    def _priority_needs_votes(self) -> LabelSettings:
        if self.combine == "priority" and self.principles_per_label < 2:
            raise ValueError("combine: priority orders several votes; set principles_per_label: "
                             "2 or more")  # fmt: skip
        return self


class CalibrateSettings(_Settings):
    gold: str = Field(default="demo-hh", description="pairwise recipe: gold pairs, file or set")
    limit: int = Field(default=8, ge=1, description="pairwise recipe: gold pairs labelled")
    min_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="pairwise recipe: stop below this gold accuracy"
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


class CodeSettings(_Settings):
    """``recipe: code``: the verified critique → revision loop on training tasks
    (charter.stages.code_revise); the writer is ``models.teacher``, else the policy."""

    tasks: tuple[str, ...] = Field(
        default=(), description="code task files (HumanEval/MBPP), each PATH[#START:STOP]"
    )
    rounds: int = Field(default=3, ge=0, le=64, description="critique → revision rounds")
    max_tokens: int = Field(default=384, ge=1, description="per answer, critique, revision")
    timeout_s: int = Field(default=10, ge=1, le=600, description="CPU seconds per program")
    feedback: Feedback = Field(default="critique", description="critique|critique-plain|test")
    samples: int = Field(default=1, ge=1, le=16, description="revisions a round (>1: T=0.8)")
    train_on: Literal["revisions", "passing"] = "revisions"  # or every answer that passes
    batch_size: int = Field(default=16, ge=1)


class EvaluateSettings(_Settings):
    suites: tuple[str, ...] = ("harmlessness", "over-refusal", "helpfulness", "honesty", "code")
    limit: int | None = Field(default=None, ge=1)
    max_tokens: int = Field(default=192, ge=1)
    data: dict[str, str] = Field(default_factory=dict, description="KEY: PATH, as --data")
    trained: tuple[Literal["sft", "dpo", "rl"], ...] = Field(
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

    @field_validator("suites")
    @classmethod
    def _registered(cls, suites: tuple[str, ...]) -> tuple[str, ...]:
        from charter import suites as registry

        unknown = [name for name in suites if name not in registry.names()]
        if unknown:
            raise ValueError(f"no suite {', '.join(unknown)}; valid: {', '.join(registry.names())}")
        return suites


class HeldoutPrompts(_Settings):
    """Sources of the held-out prompts, by kind (``PATH#START:STOP`` or a bundled set)."""

    redteam: tuple[str, ...] = ()
    contrast: tuple[str, ...] = ()
    helpful: tuple[str, ...] = ()

    def by_kind(self) -> dict[str, tuple[str, ...]]:
        return {k: v for k in ("redteam", "contrast", "helpful") if (v := getattr(self, k))}


class RLSettings(_Settings):
    """Online rounds after DPO (teacher recipe). ``algorithm: dpo``: each round samples from
    the latest model, pairs its answers against the teacher's verdicts and checks, and trains
    DPO from that model. ``algorithm: grpo``: each round trains GRPO from the latest model,
    the checks as its reward (charter.stages.train.grpo)."""

    rounds: int = Field(default=0, ge=0, le=20, description="online rounds (0: none)")
    algorithm: Literal["dpo", "grpo"] = "dpo"
    grpo: dict[str, Any] = Field(
        default_factory=dict, description="GRPO train settings (generations, beta, …)"
    )
    samples: int | None = Field(default=None, ge=2, description="per prompt (None: label's)")
    dpo: dict[str, Any] = Field(default_factory=dict, description="over the dpo section's")
    heldout: HeldoutPrompts = Field(
        default_factory=HeldoutPrompts,
        description="prompts no stage trains on: each round's reward (charter.stages.rl_reward)",
    )
    prompts: HeldoutPrompts = Field(
        default_factory=HeldoutPrompts,
        description="GRPO: the rounds' own prompts, apart from SFT's (empty: the SFT prompts)",
    )
    heldout_samples: int = Field(default=2, ge=1, description="answers per held-out prompt")
    max_kl: float | None = Field(default=None, gt=0, description="flag a round past this KL")


class RunConfig(_Settings):
    """One file for the whole loop (``charter run CONFIG.yaml``)."""

    name: str = Field(default="charter-run", description="names the run folder, runs/NAME")
    constitution: str = "default"
    recipe: Literal["self-critique", "teacher", "code"] = "self-critique"
    prompts: Prompts = Prompts()
    models: Models = Models()
    calibrate: CalibrateSettings = CalibrateSettings()
    revise: ReviseSettings = ReviseSettings()
    sft: dict[str, Any] = Field(default_factory=dict, description="train settings (as train)")
    guided: GuidedSettings = GuidedSettings()
    label: LabelSettings = LabelSettings()
    dpo: dict[str, Any] = Field(default_factory=dict, description="train settings (as train)")
    evaluate: EvaluateSettings = EvaluateSettings()
    rl: RLSettings = RLSettings()
    code: CodeSettings = CodeSettings()

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
        if self.recipe == "teacher" and self.calibrate.min_accuracy is not None:
            raise ValueError(
                "calibrate.min_accuracy: the teacher recipe labels no pairs pairwise (its DPO "
                "pairs come from verdicts), so there is no labeller to gate; remove it and gate "
                "the verdict check with calibrate.min_auc"
            )
        trained = [("sft", self.sft), ("dpo", self.dpo), ("dpo", self.round_dpo())]
        if self.rl.algorithm == "grpo":
            trained.append(("grpo", self.round_grpo(1)))
        for kind, settings in trained:
            reserved = {"kind", "model", "data", "gguf", "helpful"} & set(settings)
            if reserved:
                raise ValueError(f"{kind}: {', '.join(sorted(reserved))} are set by the run itself")
            train_config(kind, settings, "policy", ("data",))  # validates
        if self.recipe == "code" and not self.code.tasks:
            raise ValueError("recipe: code needs code.tasks, the task files whose verified "
                             "revisions become SFT data (e.g. [mbpp.jsonl#600:974])")  # fmt: skip
        if self.recipe == "code" and self.evaluate.trained != ("sft",):
            raise ValueError("evaluate.trained: recipe: code trains the SFT model only; "
                             "write trained: [sft]")  # fmt: skip
        if "rl" in self.evaluate.trained and not (self.rl.rounds and self.recipe == "teacher"):
            raise ValueError("evaluate.trained: rl needs rl.rounds >= 1 and recipe: teacher")
        if self.rl.rounds and not self.rl.heldout.by_kind():
            raise ValueError(
                "rl.heldout: name prompts no stage trains on (e.g. {redteam: [SOURCE#400:460], "
                "contrast: [contrast#260:300]}), so that each round's reward is measured"
            )
        if self.rl.prompts.by_kind() and self.rl.algorithm != "grpo":
            raise ValueError("rl.prompts: only GRPO rounds take prompts of their own (an online "
                             "DPO round pairs against the guided stage's replies); set "
                             "rl.algorithm: grpo or remove rl.prompts")  # fmt: skip
        if self.rl.rounds and "dpo" not in self.evaluate.trained:
            raise ValueError("rl.rounds: the online rounds start from the DPO model; add dpo "
                             "to evaluate.trained")  # fmt: skip
        return self

    def round_grpo(self, round_: int) -> dict[str, Any]:
        """The GRPO settings of online round ``round_`` (its own seed: new samples)."""
        return {"seed": round_, **self.rl.grpo}

    def round_dpo(self) -> dict[str, Any]:
        """The DPO settings of each online round: the dpo section's, with rl.dpo over them."""
        return {**self.dpo, **self.rl.dpo}


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
                ("evaluate", "data"), ("evaluate", "data_sources"), ("rl", "heldout"),
                ("code", "tasks"))  # fmt: skip


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


def label_config(config: RunConfig) -> Any:
    """The labeller's settings a run config gives its calibrate and label stages."""
    from charter.stages.label import LabelConfig

    s = config.label
    return LabelConfig(mode=s.mode, batch_size=s.batch_size, hard=s.hard,
                       principles_per_label=s.principles_per_label, combine=s.combine)  # fmt: skip


def evaluate_config(config: RunConfig) -> Any:
    """The evaluation settings a run config gives every evaluate stage."""
    from charter.backends import GenerationConfig
    from charter.stages.evaluate.run import EvaluateConfig

    return EvaluateConfig(
        suites=config.evaluate.suites, limit=config.evaluate.limit,
        answer=GenerationConfig(temperature=0.0, max_tokens=config.evaluate.max_tokens),
    )  # fmt: skip
