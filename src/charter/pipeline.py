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

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from charter import runner
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
    from charter.models import model_identity, models_dir

    if config.recipe == "code":
        from charter.pipeline_code import plan_code

        inputs = models_dir().parent / "inputs"
        return plan_code(config, root, backend, stage_versions(teacher=False),
                         evaluation_data(config, inputs), _estimate)  # fmt: skip
    from charter.constitution import Constitution
    from charter.iterate import interleave
    from charter.prompts import resolve_prompts
    from charter.splits import disjoint, materialise
    from charter.stages.evaluate.suites import questions

    constitution = Constitution.load(config.constitution)
    inputs = models_dir().parent / "inputs"  # sliced copies, content-addressed, shared by runs
    prompt_files = {
        kind: [materialise(sources, inputs, kind)] if any("#" in s for s in sources)
        else [resolve_prompts(s) for s in sources]
        for kind in ("redteam", "contrast", "helpful")
        if (sources := getattr(config.prompts, kind))
    }  # fmt: skip
    data = evaluation_data(config, inputs)
    settings = evaluate_config(config)
    asked = questions(settings.suites, data, settings)
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
    from charter.splits import parse_source, user_text

    judge_gold = [*config.calibrate.harmful, *config.calibrate.safe]
    teacher = config.recipe == "teacher"
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
    versions = stage_versions(teacher)
    # Models by the sha256 of their weights too: a swapped GGUF never reuses old results.
    named = {m.policy, m.critic, m.teacher, m.role("labeller"), m.role("judge")}
    identity = {n: model_identity(n) for n in named if n}

    def ident(name: str | None) -> str | None:
        return identity.get(name, name) if name else name

    stages: list[Step] = []

    def add(name: str, needs: tuple[str, ...], settings: Any, inputs: Any,
            estimate: dict[str, float],
            action: Callable[[Path, Mapping[str, Path]], None]) -> Step:  # fmt: skip
        version = versions[family(name)]  # a round's: rl-dpo-2
        stages.append(Step(name, version, needs, settings, inputs, estimate, action))
        return stages[-1]

    label_prompts = interleave(by_kind.values())[: config.label.limit]
    n = len(label_prompts)
    n_redteam, n_helpful = len(by_kind["redteam"]), len(by_kind["helpful"])
    calls = {"revise": n_redteam * (1 + 2 * config.revise.rounds) + n_helpful,
             "label": n * config.label.samples}  # fmt: skip
    pairs = n * config.label.samples * (config.label.samples - 1) // 2
    sft_steps, dpo_steps = _steps(config.sft, n), _steps(config.dpo, pairs)
    # the labeller's settings besides its mode (absent at their defaults: old keys stay); the
    # teacher recipe's calibrate stage checks the teacher's verdicts, not labels
    votes = {} if teacher else config.label.model_dump(
        include={"principles_per_label", "combine", "hard"})  # fmt: skip
    add("calibrate", (), [config.calibrate, ident(m.role("labeller")), config.label.mode,
                          *([votes] if votes else []), ident(m.teacher), teacher_templates,
                          templates["label"]],
        [digest["gold"], digest["judge_gold"], digest["constitution"]["calibrate"]],
        _estimate(0, 0, "answer_s", 2 * config.calibrate.limit),
        lambda out, _: steps.calibrate(config, out, gold, backend),
        ).gate = lambda out: steps.gate(config, out)  # fmt: skip
    exported, baseline_model = export_stage(config, add, ident)

    pairwise = m.pairwise_judge() is not None  # open requests compared only by another model
    # The baseline's answers do not depend on which trained models it is compared with.
    add("baseline", exported,
        [config.evaluate.model_dump(exclude={"trained"}), ident(m.policy), ident(m.role("judge")),
         templates["judge"], pairwise], [digest["data"], digest["constitution"]["baseline"]],
        _estimate(n_questions, config.evaluate.max_tokens, "answer_s", n_questions),
        lambda out, f: steps.evaluate(config, out, [baseline_model(f)], data, backend))  # fmt: skip
    if teacher:
        add("revise", ("calibrate",),
            [config.guided, ident(m.policy), ident(m.teacher), teacher_templates,
             *([veto] if (veto := config.label.model_dump(include={"hard"})) else [])],
            [digest["prompts"], digest["constitution"]["revise"]],
            _estimate(n_redteam * 2 + len(prompts), config.guided.revision_tokens,
                      "revise_call_s", n_redteam),
            lambda out, f: steps.guided(config, out, by_kind, f["calibrate"], backend,
                                        overlap_report))  # fmt: skip
    else:
        add("revise", (), [config.revise, ident(m.policy), ident(m.critic), templates["revise"]],
            [digest["prompts"], digest["constitution"]["revise"]],
            _estimate(calls["revise"], config.revise.max_tokens, "revise_call_s", 0),
            lambda out, _: steps.revise(config, out, by_kind, backend, overlap_report))  # fmt: skip
    add("sft", ("revise",), [config.sft, ident(m.policy)], [],
        {"calls": 0, "tokens": 0,
         "seconds": sft_steps * RATES["sft_step_s"] + RATES["train_fixed_s"]},
        lambda out, f: steps.train("sft", config.sft if teacher else
                                   steps.with_helpful(config.sft, f["revise"], n_helpful),
                                   m.policy, f["revise"], out))  # fmt: skip
    # What one verdict-pairs stage and one DPO stage cost (also each online round's).
    label_cost = _estimate(calls["label"], config.label.max_tokens, "answer_s", 0)
    dpo_cost = {"calls": 0, "tokens": 0,
                "seconds": dpo_steps * RATES["dpo_step_s"] + RATES["train_fixed_s"]}  # fmt: skip
    if "dpo" in config.evaluate.trained and teacher:  # pairs from the teacher's verdicts
        add("label", ("revise", "sft"), [config.label, "verdict-pairs"], [], label_cost,
            lambda out, f: steps.verdict_pairs(config, out, f["revise"], f["sft"],
                                               backend))  # fmt: skip
    elif "dpo" in config.evaluate.trained:  # otherwise nothing reads label and dpo
        add("label", ("sft",), [config.label, ident(m.role("labeller")), templates["label"]],
            [digest["prompts"], digest["constitution"]["label"]],
            _estimate(calls["label"], config.label.max_tokens, "answer_s", 2 * pairs),
            lambda out, f: steps.label(config, out, label_prompts, f["sft"], backend))  # fmt: skip
    if "dpo" in config.evaluate.trained:
        add("dpo", ("sft", "label"), [config.dpo], [], dpo_cost,
            lambda out, f: steps.train("dpo", config.dpo, str(f["sft"]), f["label"],
                                       out))  # fmt: skip
    last = "dpo"
    if teacher and config.rl.rounds:
        heldout = _round_prompts(config.rl.heldout, "heldout", inputs, evaluation, prompts)

        verdicts_read = digest["constitution"]["rl-heldout"]

        def verdicts(name: str, chosen: Any, sources: Any) -> None:  # rl-heldout, rl-prompts
            add(name, ("calibrate",), [sources, ident(m.teacher), teacher_templates],
                [content_key({k: [p.model_dump(mode="json", exclude={"source"}) for p in v]
                              for k, v in chosen[0].items()}), verdicts_read],
                _estimate(0, 0, "answer_s", sum(map(len, chosen[0].values()))),
                lambda out, f: steps.rl_heldout(config, out, chosen, f["calibrate"], backend,
                                                stage=name))  # fmt: skip

        verdicts("rl-heldout", heldout, config.rl.heldout)
        if config.rl.prompts.by_kind():  # GRPO's own prompts: not SFT's, not held out
            held = [user_text(p) for v in heldout[0].values() for p in v]
            verdicts("rl-prompts", _round_prompts(config.rl.prompts, "rl", inputs,
                                                  {**evaluation, "heldout": held}, prompts),
                     config.rl.prompts)  # fmt: skip
        n_heldout = sum(map(len, heldout[0].values()))
        last = _online_rounds(config, add, backend, label_cost, dpo_cost, n_heldout)
    # The folder each trained model comes from: "rl" is the last online round's DPO.
    trained = tuple(last if t == "rl" else t for t in config.evaluate.trained)
    add("evaluate", ("baseline", *exported, *trained),
        [config.evaluate, ident(m.policy), ident(m.role("judge")), templates["judge"], pairwise],
        [digest["data"], digest["constitution"]["baseline"]],
        _estimate(n_questions * len(trained), config.evaluate.max_tokens, "answer_s",
                  n_questions * len(trained)),
        lambda out, f: steps.evaluate(
            config, out, [baseline_model(f), *(steps.gguf_model(f[t]) for t in trained)], data,
            backend, seed_from=f["baseline"],
        ))  # fmt: skip
    add("report", tuple(s.name for s in stages), [config.name], [], {"seconds": 5},
        lambda out, f: steps.report(config, out, f))  # fmt: skip
    return runner.plan(stages, root)


def _round_prompts(
    sources: Any, label: str, inputs: Path, evaluation: dict[str, list[str]], training: list[Any]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``rl.heldout``'s (or ``rl.prompts``') prompts by kind, with any that overlaps an
    evaluation question or a training prompt dropped, and the overlap report."""
    from charter.splits import disjoint, materialise, user_text

    files = {kind: [materialise(chosen, inputs, f"{label}-{kind}")]
             for kind, chosen in sources.by_kind().items()}  # fmt: skip
    trained = [user_text(p) for p in training]
    return disjoint(_first_prompts(files, None), {**evaluation, "training": trained})


def _online_rounds(config: RunConfig, add: Callable[..., Step], backend: Callable[[str], Any],
                   label_cost: dict[str, float], dpo_cost: dict[str, float],
                   n_heldout: int) -> str:  # fmt: skip
    """Plan ``rl.rounds`` online rounds after DPO; returns the stage of the latest model.

    Round r samples from the model of round r-1 (round 0: the DPO stage), pairs its answers
    against the teacher's verdicts and the checks (``rl-label-r``, a new seed each round),
    and trains DPO from that model on them (``rl-dpo-r``); with ``rl.algorithm: grpo`` it
    trains GRPO from that model on the training prompts instead, the checks as its reward
    (``rl-grpo-r``). Each round's stages are cached and resumed like any other.
    ``rl-reward-r`` scores the model of round r on the held-out prompts
    (charter.stages.rl_reward), round 0 included, paired with round 0.
    """
    samples = config.rl.heldout_samples
    reward_cost = _estimate(n_heldout * samples, config.label.max_tokens, "answer_s", 0)

    def reward(model: str, first: str | None) -> Callable[[Path, Mapping[str, Path]], None]:
        return lambda out, f: steps.rl_reward(config, out, f["rl-heldout"], f[model], f["sft"],
                                              f[first] if first else None, backend)  # fmt: skip

    add("rl-reward-0", ("rl-heldout", "dpo", "sft"), [config.label, samples, config.rl.max_kl],
        [], reward_cost, reward("dpo", None))  # fmt: skip

    def sample(r: int, start: str) -> Callable[[Path, Mapping[str, Path]], None]:
        return lambda out, f: steps.verdict_pairs(config, out, f["revise"], f[start], backend,
                                                  round_=r)  # fmt: skip

    def train(start: str, data: str) -> Callable[[Path, Mapping[str, Path]], None]:
        settings = config.round_dpo()
        return lambda out, f: steps.train("dpo", settings, str(f[start]), f[data], out)

    source = "rl-prompts" if config.rl.prompts.by_kind() else "revise"  # GRPO's prompts

    def grpo(r: int, start: str) -> Callable[[Path, Mapping[str, Path]], None]:
        return lambda out, f: steps.rl_grpo(config, out, f[source], f[start], r)

    last = "dpo"
    for r in range(1, config.rl.rounds + 1):
        if config.rl.algorithm == "grpo":
            trained = f"rl-grpo-{r}"
            add(trained, (source, last), [config.label.limit, config.round_grpo(r)], [],
                {k: v * 4 for k, v in dpo_cost.items()}, grpo(r, last))  # fmt: skip
        else:
            pairs, trained = f"rl-label-{r}", f"rl-dpo-{r}"
            add(pairs, ("revise", last), [config.label, config.rl.samples, "verdict-pairs", r],
                [], label_cost, sample(r, last))  # fmt: skip
            add(trained, (last, pairs), [config.dpo, config.rl.dpo], [], dpo_cost,
                train(last, pairs))  # fmt: skip
        add(f"rl-reward-{r}", ("rl-heldout", trained, "sft", "rl-reward-0"),
            [config.label, samples, config.rl.max_kl], [], reward_cost,
            reward(trained, "rl-reward-0"))  # fmt: skip
        last = trained
    return last


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


def _estimate(calls: int, max_tokens: int, rate: str, scorings: int) -> dict[str, float]:
    """Model calls, generated tokens (an upper bound) and seconds of a stage's work."""
    seconds = calls * RATES[rate] + scorings * RATES["score_s"]
    return {"calls": calls + scorings, "tokens": calls * max_tokens, "seconds": seconds}
