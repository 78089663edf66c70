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

The online rounds of a teacher run are planned in :mod:`charter.pipeline_rl`, the code recipe
in :mod:`charter.pipeline_code`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from charter import runner
from charter.iterate import interleave
from charter.pipeline_code import export_stage
from charter.run_config import RunConfig, evaluate_config, train_config
from charter.runner import PlannedStage, content_key
from charter.runs import file_sha256
from charter.stages import Step, constitution_parts, family, steps

STAGES = ("calibrate", "baseline", "revise", "sft", "label", "dpo", "evaluate", "report")
REPORT_VERSION = 1  # the report stage's format version (see stage_versions)


# Seconds per unit of work for the embedded model on a 2-core CPU, for the estimate only,
# measured in `charter demo` runs (docs/benchmarks.md; one llama.cpp slot): a critique or
# revision call (~1,600 prompt tokens, most of it the few-shot prefix), a plain answer of
# ≤128 tokens, a scoring pass of the labeller or judge (long few-shot prompts), a LoRA step
# of 8 rows (SFT, DPO), and a fixed cost per training stage (loading, saving, GGUF export).
RATES = {"revise_call_s": 3.3, "answer_s": 1.5, "score_s": 3.0, "sft_step_s": 11.0,
         "dpo_step_s": 15.0, "train_fixed_s": 15.0}  # fmt: skip


def stage_versions(teacher: bool) -> dict[str, int]:
    """Each stage's format version (the ``VERSION`` of the module that writes its outputs)."""
    from charter.stages import (
        calibrate,
        code_revise_run,
        export,
        guided,
        label_run,
        revise_run,
        rl_reward,
        verdict_pairs,
    )
    from charter.stages.evaluate import run as evaluate_run
    from charter.stages.train import run as train_run

    return {
        "calibrate": calibrate.VERSION, "export": export.VERSION,
        "baseline": evaluate_run.VERSION, "evaluate": evaluate_run.VERSION,
        "revise": guided.VERSION if teacher else revise_run.VERSION,
        "label": verdict_pairs.VERSION if teacher else label_run.VERSION,
        "sft": train_run.VERSION, "dpo": train_run.VERSION, "report": REPORT_VERSION,
        "rl-label": verdict_pairs.VERSION, "rl-dpo": train_run.VERSION,  # rl-label-1, …
        "rl-grpo": train_run.VERSION,
        "rl-heldout": rl_reward.VERSION, "rl-reward": rl_reward.VERSION,
        "rl-prompts": rl_reward.VERSION, "verify": code_revise_run.VERSION,
    }  # fmt: skip


def plan(config: RunConfig, root: Path, backend: Callable[[str], Any]) -> list[PlannedStage]:
    """Every stage of ``config`` with its content key, in order."""
    if config.recipe == "code":
        from charter.models import models_dir
        from charter.pipeline_code import plan_code

        inputs = models_dir().parent / "inputs"
        return plan_code(config, root, backend, stage_versions(teacher=False),
                         evaluation_data(config, inputs), estimate)  # fmt: skip
    run = _prepare(config, backend)
    exported, baseline_model = _calibrate_and_baseline(run)
    _revise_and_sft(run)
    _preferences(run)
    last = "dpo"  # the folder of the latest trained model
    if run.teacher and config.rl.rounds:
        from charter.pipeline_rl import online

        last = online(run, estimate)
    _evaluate_and_report(run, exported, baseline_model, last)
    return runner.plan(run.stages, root)


@dataclass
class RunPlan:
    """What the stages of one plan read: the config, its prompts and evaluation data, the
    digests that enter the stages' keys, and the stages planned so far (:meth:`add`)."""

    config: RunConfig
    backend: Callable[[str], Any]
    inputs: Path  # sliced copies of sources, content-addressed, shared by runs
    by_kind: dict[str, list[Any]]  # training prompts by kind, disjoint from the evaluation
    overlap_report: dict[str, Any]
    evaluation: dict[str, list[str]]  # the evaluation's questions by suite
    data: dict[str, Path]
    n_questions: int
    gold: Path
    templates: dict[str, str | None]  # each stage's key covers the text of its templates
    digest: dict[str, Any]
    identity: dict[str, str]
    stages: list[Step] = field(default_factory=list)

    @property
    def teacher(self) -> bool:
        return self.config.recipe == "teacher"

    @property
    def prompts(self) -> list[Any]:
        return [p for kind in self.by_kind.values() for p in kind]

    def ident(self, name: str | None) -> str | None:
        """A model's name with the sha256 of its weights (a swapped GGUF never reuses old
        results)."""
        return self.identity.get(name, name) if name else name

    def add(self, name: str, needs: tuple[str, ...], settings: Any, inputs: Any,
            cost: dict[str, float],
            action: Callable[[Path, Mapping[str, Path]], None]) -> Step:  # fmt: skip
        """Plan stage ``name``: its key hashes ``settings``, ``inputs`` and the keys of the
        stages it ``needs``; ``action(out, folders)`` runs it."""
        version = self.versions[family(name)]  # a round's: rl-dpo-2
        self.stages.append(Step(name, version, needs, settings, inputs, cost, action))
        return self.stages[-1]

    @cached_property
    def versions(self) -> dict[str, int]:
        return stage_versions(self.teacher)

    @cached_property
    def costs(self) -> dict[str, Any]:
        """Counts and estimates that several stages share."""
        config = self.config
        label_prompts = interleave(self.by_kind.values())[: config.label.limit]
        n = len(label_prompts)
        pairs = n * config.label.samples * (config.label.samples - 1) // 2
        return {"label_prompts": label_prompts, "pairs": pairs,
                "label_calls": n * config.label.samples,
                # one verdict-pairs stage and one DPO stage (also each online round's)
                "label": estimate(n * config.label.samples, config.label.max_tokens,
                                  "answer_s", 0),
                "dpo": {"calls": 0, "tokens": 0,
                        "seconds": _steps(config.dpo, pairs) * RATES["dpo_step_s"]
                        + RATES["train_fixed_s"]},
                "sft_steps": _steps(config.sft, n)}  # fmt: skip


def _prepare(config: RunConfig, backend: Callable[[str], Any]) -> RunPlan:
    """The plan's inputs: training prompts (disjoint from every evaluation question, exact or
    a shared 8-gram), the evaluation data, templates, digests and model identities."""
    from charter.constitution import Constitution
    from charter.models import model_identity, models_dir
    from charter.prompts import resolve_prompts
    from charter.splits import disjoint, first_prompts, materialise, parse_source
    from charter.stages import label, revise
    from charter.stages.evaluate import judges
    from charter.stages.evaluate.suites import questions
    from charter.stages.guided import template_digest

    constitution = Constitution.load(config.constitution)
    inputs = models_dir().parent / "inputs"
    prompt_files = {
        kind: [materialise(sources, inputs, kind)] if any("#" in s for s in sources)
        else [resolve_prompts(s) for s in sources]
        for kind in ("redteam", "contrast", "helpful")
        if (sources := getattr(config.prompts, kind))
    }  # fmt: skip
    data = evaluation_data(config, inputs)
    settings = evaluate_config(config)
    asked = questions(settings.suites, data, settings)
    evaluation: dict[str, list[str]] = {}
    for q in asked:
        evaluation.setdefault(q.suite, []).append(q.messages[-1].content)
    by_kind, overlap_report = disjoint(first_prompts(prompt_files, config.prompts.limit),
                                       evaluation)  # fmt: skip
    by_kind.setdefault("helpful", [])
    by_kind.setdefault("redteam", [])
    prompts = [p for kind in by_kind.values() for p in kind]
    gold = resolve_prompts(config.calibrate.gold)
    teacher = config.recipe == "teacher"
    templates = {"revise": revise.template_digest(), "label": label.template_digest(),
                 "judge": judges.template_digest(),
                 "teacher": template_digest() if teacher else None}  # fmt: skip
    judge_gold = [*config.calibrate.harmful, *config.calibrate.safe]
    digest: dict[str, Any] = {
        # by stage: the parts of the constitution its prompts carry (constitution_parts)
        "constitution": {
            name: constitution.digest(*constitution_parts(name, teacher))
            for name in ("calibrate", "baseline", "revise", "label", "rl-heldout")
        },
        # content only: the same prompts read from another path are the same input
        "prompts": content_key([p.model_dump(mode="json", exclude={"source"}) for p in prompts]),
        "data": {k: file_sha256(p) for k, p in sorted(data.items())},
        "gold": file_sha256(gold),
        "judge_gold": [[s, file_sha256(resolve_prompts(parse_source(s)[0]))] for s in judge_gold],
    }
    m = config.models
    named = {m.policy, m.critic, m.teacher, m.role("labeller"), m.role("judge")}
    return RunPlan(config, backend, inputs, by_kind, overlap_report, evaluation, data, len(asked),
                gold, templates, digest, {n: model_identity(n) for n in named if n})  # fmt: skip


def _calibrate_and_baseline(
    run: RunPlan,
) -> tuple[tuple[str, ...], Callable[[Mapping[str, Path]], str]]:
    """``calibrate`` (gated: a labeller at chance stops the run), ``export`` when asked, and
    ``baseline``; returns what the baseline needs and its model's name."""
    config, m, backend = run.config, run.config.models, run.backend
    # the labeller's settings besides its mode (absent at their defaults: old keys stay); the
    # teacher recipe's calibrate stage checks the teacher's verdicts, not labels
    votes = {} if run.teacher else config.label.model_dump(
        include={"principles_per_label", "combine", "hard"})  # fmt: skip
    run.add("calibrate", (), [config.calibrate, run.ident(m.role("labeller")), config.label.mode,
                              *([votes] if votes else []), run.ident(m.teacher),
                              run.templates["teacher"], run.templates["label"]],
            [run.digest["gold"], run.digest["judge_gold"], run.digest["constitution"]["calibrate"]],
            estimate(0, 0, "answer_s", 2 * config.calibrate.limit),
            lambda out, _: steps.calibrate(config, out, run.gold, backend),
            ).gate = lambda out: steps.gate(config, out)  # fmt: skip
    exported, baseline_model = export_stage(config, run.add, run.ident)
    # The baseline's answers do not depend on which trained models it is compared with.
    run.add("baseline", exported,
            [config.evaluate.model_dump(exclude={"trained"}), run.ident(m.policy),
             run.ident(m.role("judge")), run.templates["judge"], m.pairwise_judge() is not None],
            [run.digest["data"], run.digest["constitution"]["baseline"]],
            estimate(run.n_questions, config.evaluate.max_tokens, "answer_s",
                     judged(config, run.n_questions)),
            lambda out, f: steps.evaluate(config, out, [baseline_model(f)], run.data,
                                          backend))  # fmt: skip
    return exported, baseline_model


def _revise_and_sft(run: RunPlan) -> None:
    """SL-CAI: ``revise`` (the teacher's guided stage, or critique → revision) and ``sft``."""
    config, m, backend = run.config, run.config.models, run.backend
    n_redteam, n_helpful = len(run.by_kind["redteam"]), len(run.by_kind["helpful"])
    prompts = run.prompts
    if run.teacher:
        veto = config.label.model_dump(include={"hard"})
        run.add("revise", ("calibrate",),
                [config.guided, run.ident(m.policy), run.ident(m.teacher),
                 run.templates["teacher"], *([veto] if veto else [])],
                [run.digest["prompts"], run.digest["constitution"]["revise"]],
                estimate(n_redteam * 2 + len(prompts), config.guided.revision_tokens,
                         "revise_call_s", n_redteam),
                lambda out, f: steps.guided(config, out, run.by_kind, f["calibrate"], backend,
                                            run.overlap_report))  # fmt: skip
    else:
        calls = n_redteam * (1 + 2 * config.revise.rounds) + n_helpful
        run.add("revise", (),
                [config.revise, run.ident(m.policy), run.ident(m.critic), run.templates["revise"]],
                [run.digest["prompts"], run.digest["constitution"]["revise"]],
                estimate(calls, config.revise.max_tokens, "revise_call_s", 0),
                lambda out, _: steps.revise(config, out, run.by_kind, backend,
                                            run.overlap_report))  # fmt: skip
    run.add("sft", ("revise",), [config.sft, run.ident(m.policy)], [],
            {"calls": 0, "tokens": 0,
             "seconds": run.costs["sft_steps"] * RATES["sft_step_s"] + RATES["train_fixed_s"]},
            lambda out, f: steps.train("sft", config.sft if run.teacher else
                                       steps.with_helpful(config.sft, f["revise"], n_helpful),
                                       m.policy, f["revise"], out))  # fmt: skip


def _preferences(run: RunPlan) -> None:
    """RL-CAI, when DPO is among the trained models: ``label`` (pairs from the teacher's
    verdicts, or soft labels from the labeller) and ``dpo``; nothing else reads them."""
    config, m, backend = run.config, run.config.models, run.backend
    if "dpo" not in config.evaluate.trained:
        return
    costs = run.costs
    if run.teacher:
        run.add("label", ("revise", "sft"), [config.label, "verdict-pairs"], [], costs["label"],
                lambda out, f: steps.verdict_pairs(config, out, f["revise"], f["sft"],
                                                   backend))  # fmt: skip
    else:
        run.add("label", ("sft",),
                [config.label, run.ident(m.role("labeller")), run.templates["label"]],
                [run.digest["prompts"], run.digest["constitution"]["label"]],
                estimate(costs["label_calls"], config.label.max_tokens, "answer_s",
                         2 * costs["pairs"]),
                lambda out, f: steps.label(config, out, costs["label_prompts"], f["sft"],
                                           backend))  # fmt: skip
    run.add("dpo", ("sft", "label"), [config.dpo], [], costs["dpo"],
            lambda out, f: steps.train("dpo", config.dpo, str(f["sft"]), f["label"],
                                       out))  # fmt: skip


def _evaluate_and_report(
    run: RunPlan,
    exported: tuple[str, ...],
    baseline_model: Callable[[Mapping[str, Path]], str],
    last: str,
) -> None:
    """``evaluate`` (the baseline's answers against each trained model's, on the same
    questions) and ``report``, which reads every stage."""
    config, m = run.config, run.config.models
    # The folder each trained model comes from: "rl" is the last online round's model.
    trained = tuple(last if t == "rl" else t for t in config.evaluate.trained)
    n = run.n_questions * len(trained)
    run.add("evaluate", ("baseline", *exported, *trained),
            [config.evaluate, run.ident(m.policy), run.ident(m.role("judge")),
             run.templates["judge"], m.pairwise_judge() is not None],
            [run.digest["data"], run.digest["constitution"]["baseline"]],
            estimate(n, config.evaluate.max_tokens, "answer_s", judged(config, n)),
            lambda out, f: steps.evaluate(
                config, out, [baseline_model(f), *(steps.gguf_model(f[t]) for t in trained)],
                run.data, run.backend, seed_from=f["baseline"],
            ))  # fmt: skip
    run.add("report", tuple(s.name for s in run.stages), [config.name], [], {"seconds": 5},
            lambda out, f: steps.report(config, out, f))  # fmt: skip


def evaluation_data(config: RunConfig, inputs: Path) -> dict[str, Path]:
    """The evaluation's data files by key: bundled defaults, ``data`` paths, sliced sources."""
    from charter.splits import materialise, raw_slice
    from charter.stages.evaluate.code import code_slice
    from charter.stages.evaluate.suites import data_files

    data = data_files(config.evaluate.data, config.evaluate.suites)
    for key, sources in config.evaluate.data_sources.items():
        if key == "code":  # task files of their own shape; several may be joined
            data[key] = code_slice(sources, inputs, key)
        else:
            data[key] = (raw_slice(sources[0], inputs, key) if key in ("ifeval", "honesty")
                         else materialise(sources, inputs, key))  # fmt: skip
    return data


def _steps(settings: dict[str, Any], rows: int) -> int:
    """Optimiser steps a training stage will take (for the estimate)."""
    config = train_config("sft", settings, "policy", ("data",))
    if config.max_steps > 0:
        return int(config.max_steps)
    per_step = config.batch_size * config.gradient_accumulation
    return max(1, math.ceil(rows * float(config.epochs) / int(per_step)))


def judged(config: RunConfig, answers: int) -> int:
    """The LLM judge's scorings of ``answers`` (one each with ``evaluate.harm_judge``; the
    pairwise judge's few helpfulness questions are left out of the estimate)."""
    return answers if config.evaluate.harm_judge else 0


def estimate(calls: int, max_tokens: int, rate: str, scorings: int) -> dict[str, float]:
    """Model calls, generated tokens (an upper bound) and seconds of a stage's work."""
    seconds = calls * RATES[rate] + scorings * RATES["score_s"]
    return {"calls": calls + scorings, "tokens": calls * max_tokens, "seconds": seconds}
