"""How ``charter run`` calls each stage: from the run config to each stage's own function.

One function per stage of :func:`charter.pipeline.plan`, each filling its stage directory
``out`` (the runner has made it and records when it finished). The heavy imports stay inside
the functions, so planning a run (``--dry-run``) loads no model library.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.report import REPORT
from charter.run_config import RunConfig, evaluate_config, label_config, train_config
from charter.runner import content_key
from charter.runs import Run, file_sha256, write_atomic
from charter.stages.calibrate import judge_threshold

OVERLAP = "overlap.json"  # the revise stage's report: training prompts dropped for overlap
HELPFUL = "helpful"  # the revise stage's subdirectory of plain answers to helpful prompts
JUDGE_CALIBRATION = "judge.json"  # the teacher recipe's calibrate stage writes it


def gguf_model(train_run: Path) -> str:
    """The model name of a trained run's GGUF export (what evaluate and label load)."""
    return f"local/{train_run / 'model.gguf'}"


def calibrate(config: RunConfig, out: Path, gold: Path, backend: Callable[[str], Any]) -> None:
    from itertools import islice

    from charter.constitution import Constitution
    from charter.pairs import load_pairs
    from charter.stages.calibrate import calibration_report
    from charter.stages.label import label

    labeller_name = config.models.role("labeller")
    run = Run.open(out, "calibrate", {"labeller": labeller_name, "gold": file_sha256(gold),
                                      "settings": config.calibrate.model_dump()})  # fmt: skip
    constitution = Constitution.load(config.constitution)
    if config.recipe == "teacher":  # its DPO pairs come from verdicts: no pairwise labels
        run.update(counts=_calibrate_judge(config, out, constitution, backend), usage={},
                   status="complete")  # fmt: skip
        return
    pairs = list(islice(load_pairs(gold), config.calibrate.limit))
    labeller = backend(labeller_name)
    try:
        labels = list(label(pairs, constitution=constitution, labeller=labeller,
                            config=label_config(config)))  # fmt: skip
    finally:
        labeller.close()
    report = calibration_report(labels, labeller=labeller_name, gold=gold.name)
    write_atomic(out / "calibration.json", report.model_dump_json(indent=2))
    run.update(counts={"pairs": len(labels)}, usage={}, status="complete")


def _calibrate_judge(config: RunConfig, out: Path, constitution: Any,
                     backend: Callable[[str], Any]) -> dict[str, Any]:  # fmt: skip
    """The teacher's verdict check on gold harmful and safe prompts (charter.stages.calibrate)."""
    from charter.splits import source_prompts
    from charter.stages.calibrate import calibrate_judge

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


def gate(config: RunConfig, out: Path) -> None:
    """Stop the run before any training when a labeller or judge is not good enough."""
    from charter.stages.calibrate import CalibrationReport

    c = config.calibrate
    if config.recipe != "teacher":
        labeller = CalibrationReport.model_validate_json((out / "calibration.json").read_text())
        if c.min_accuracy is not None and labeller.accuracy < c.min_accuracy:
            raise CharterError(
                f"calibrate: labeller {labeller.labeller} scored accuracy "
                f"{labeller.accuracy:.2f} on {labeller.pairs} gold pairs ({labeller.gold}), below "
                f"calibrate.min_accuracy {c.min_accuracy}; use a stronger labeller "
                "(models.labeller) before training"
            )
    else:
        judge = json.loads((out / JUDGE_CALIBRATION).read_text("utf-8"))
        if judge["auc"] < c.min_auc:
            raise CharterError(
                f"calibrate: the teacher's verdict check has AUC {judge['auc']:.2f} on "
                f"{judge['harmful']}+{judge['safe']} gold prompts, below calibrate.min_auc "
                f"{c.min_auc}; use a stronger teacher (models.teacher) before training"
            )


def export_policy(policy: str, out: Path) -> None:
    """The untrained policy through the same path as the trained ones: f16 GGUF export.

    Baseline and trained models then differ only in training, not in quantisation (the
    embedded GGUF is Q4_1; a trained model is exported as f16).
    """
    from charter.stages.export import export_gguf
    from charter.stages.train.run import start_checkpoint

    run = Run.open(out, "export", {"policy": policy})
    export_gguf(start_checkpoint(policy), out / "model.gguf", dtype="f16")
    run.update(counts={}, usage={}, status="complete")


def guided(config: RunConfig, out: Path, prompts: dict[str, list[Any]], calibration: Path,
            backend: Callable[[str], Any], overlap: dict[str, Any]) -> None:  # fmt: skip
    """The teacher recipe's supervised data (charter.stages.guided)."""
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / OVERLAP, json.dumps(overlap, indent=2))
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution
    from charter.stages.guided import VERSION, GuidedConfig, run_guided, template_digest

    s, m = config.guided, config.models
    threshold = judge_threshold(calibration / JUDGE_CALIBRATION)
    guided_config = GuidedConfig(
        threshold=threshold, batch_size=s.batch_size, hard=config.label.hard,
        answer=GenerationConfig(temperature=s.temperature, max_tokens=s.answer_tokens),
        revision=GenerationConfig(temperature=s.temperature, max_tokens=s.revision_tokens),
    )  # fmt: skip
    constitution = Constitution.load(config.constitution)
    fingerprint = {
        "config": guided_config.model_dump(mode="json", exclude={"batch_size", "hard"}),
        **({"hard": hard} if (hard := config.label.hard.fingerprint(constitution)) else {}),
        "policy": m.policy, "teacher": m.teacher, "constitution": constitution.sha256,
        "templates": template_digest(), "version": VERSION,
        "prompts": {k: content_key([p.id for p in v]) for k, v in prompts.items()},
    }  # fmt: skip
    order = {k: prompts[k] for k in ("redteam", "contrast", "helpful") if prompts.get(k)}
    policy, teacher = backend(m.policy), backend(str(m.teacher))
    try:
        run_guided(order, out=out, constitution=constitution, policy=policy, teacher=teacher,
                   config=guided_config, fingerprint=fingerprint)  # fmt: skip
    finally:
        policy.close()
        teacher.close()


def evaluate(
    config: RunConfig, out: Path, models: list[str], data: dict[str, Path],
    backend: Callable[[str], Any], seed_from: Path | None = None,
) -> None:  # fmt: skip
    from charter.constitution import Constitution
    from charter.stages.evaluate.answering import ANSWERS
    from charter.stages.evaluate.run import run_evaluate

    if seed_from is not None and not (out / ANSWERS).exists() and (seed_from / ANSWERS).exists():
        out.mkdir(parents=True, exist_ok=True)  # the baseline's answers, asked alike: not again
        write_atomic(out / ANSWERS, (seed_from / ANSWERS).read_text("utf-8"))
    pairwise_judge = config.models.pairwise_judge()  # None: the judge would be the policy
    run_evaluate(
        models, out=out, config=evaluate_config(config), data=data, backend=backend,
        judge=config.models.role("judge") if config.evaluate.harm_judge else None,
        constitution=Constitution.load(config.constitution),
        pairwise_judge=pairwise_judge, pairwise=pairwise_judge is not None,
    )  # fmt: skip


def revise(
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


def with_helpful(settings: dict[str, Any], revise: Path, n_helpful: int) -> dict[str, Any]:
    """SFT settings with the revise stage's helpful answers mixed in (one per red-team row)."""
    if not n_helpful:
        return settings
    return {"helpful_ratio": 1.0, **settings, "helpful": str(revise / HELPFUL)}


def train(kind: str, settings: dict[str, Any], start: str, data: Path, out: Path) -> None:
    from charter.stages.train.run import train

    train(train_config(kind, settings, start, (str(data),)), out)


def label(
    config: RunConfig, out: Path, prompts: list[Any], sft: Path, backend: Callable[[str], Any]
) -> None:
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution, resolve
    from charter.prompts import PromptSet
    from charter.stages.label_run import PolicyPairs, run_label

    s = config.label
    prompt_file = _write_prompts(out, prompts)
    policy = backend(gguf_model(sft))
    labeller = backend(config.models.role("labeller"))
    try:
        source = PolicyPairs(
            PromptSet([str(prompt_file)]), policy, samples=s.samples, batch_size=s.batch_size,
            generation=GenerationConfig(temperature=s.temperature, max_tokens=s.max_tokens),
        )  # fmt: skip
        run_label(
            source, out=out, constitution=Constitution.load(config.constitution),
            constitution_text=resolve(config.constitution).read_text("utf-8"),
            labeller=labeller, config=label_config(config),
        )  # fmt: skip
    finally:
        policy.close()
        labeller.close()


def verdict_pairs(config: RunConfig, out: Path, guided: Path, sft: Path,
                   backend: Callable[[str], Any], round_: int = 0) -> None:  # fmt: skip
    """The teacher recipe's DPO pairs: the SFT model's samples against the verdicts.
    ``round_`` > 0: an online round (``rl``), sampling from the model in ``sft`` (the last
    round's DPO), with its own seed so that each round draws new answers."""
    from charter.backends import GenerationConfig
    from charter.constitution import Constitution
    from charter.stages.checks import Tools
    from charter.stages.hard import Veto
    from charter.stages.verdict_pairs import VerdictPairsConfig, run_verdict_pairs

    s = config.label
    settings = VerdictPairsConfig(
        samples=(config.rl.samples or s.samples) if round_ else s.samples, limit=s.limit,
        confidence=s.confidence, batch_size=s.batch_size, seed=round_,
        generation=GenerationConfig(temperature=s.temperature, max_tokens=s.max_tokens),
    )  # fmt: skip
    constitution = Constitution.load(config.constitution)
    policy, veto = backend(gguf_model(sft)), None
    if s.hard.active(constitution):  # the teacher checks every chosen sample
        veto = Veto(s.hard, backend(str(config.models.teacher)), constitution)
    try:
        run_verdict_pairs(guided, out=out, policy=policy, refuses=Tools.load().refuses,
                          config=settings, fingerprint={"sft": sft.name}, veto=veto)  # fmt: skip
    finally:
        for model in (policy, *([veto.model] if veto else [])):
            model.close()


def rl_grpo(config: RunConfig, out: Path, prompts: Path, start: Path, round_: int) -> None:
    """Online round ``round_`` with GRPO from the model in ``start`` (the last round's), on
    ``prompts``: the rl-prompts stage's (rl.prompts, with the teacher's verdicts), or the
    guided stage's training prompts; each with the behaviour its kind asks for."""
    from charter.runs import read_jsonl
    from charter.stages.guided import GuidedRow
    from charter.stages.rl_reward import HELDOUT, HeldoutPrompt
    from charter.stages.train.grpo import write_prompts
    from charter.stages.verdict_pairs import chosen_prompts

    rows: list[Any] = (
        list(read_jsonl(prompts / HELDOUT, HeldoutPrompt)) if (prompts / HELDOUT).is_file()
        else chosen_prompts(list(read_jsonl(prompts / "guided.jsonl", GuidedRow)),
                            config.label.limit)
    )  # fmt: skip
    train("grpo", config.round_grpo(round_), str(start), write_prompts(out, rows), out)


def rl_heldout(config: RunConfig, out: Path, heldout: tuple[dict[str, list[Any]], Any],
               calibration: Path, backend: Callable[[str], Any],
               stage: str = "rl-heldout") -> None:  # fmt: skip
    """The held-out prompts of the online rounds (or, ``stage`` rl-prompts, GRPO's own
    training prompts) and the behaviour each asks for."""
    from concurrent.futures import ThreadPoolExecutor

    from charter.constitution import Constitution
    from charter.stages.guided import judge_conversation
    from charter.stages.hard import p_yes
    from charter.stages.rl_reward import HELDOUT, heldout_prompts

    by_kind, overlap = heldout
    write_atomic(out / OVERLAP, json.dumps(overlap, indent=2))
    threshold = judge_threshold(calibration / JUDGE_CALIBRATION)
    counted = {k: len(v) for k, v in by_kind.items()}
    run = Run.open(out, stage, {"teacher": config.models.teacher, "threshold": threshold,
                                       "prompts": counted})  # fmt: skip
    constitution = Constitution.load(config.constitution)
    teacher = backend(str(config.models.teacher))

    def verdicts(texts: Any) -> list[float]:
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda t: p_yes(teacher, judge_conversation(constitution, t)),
                                 texts))  # fmt: skip

    try:
        rows, counts = heldout_prompts(by_kind, verdicts, threshold)
    finally:
        teacher.close()
    if not rows:
        field = "rl.prompts" if stage == "rl-prompts" else "rl.heldout"
        raise CharterError(f"{field}: no prompt is left after the overlap check and "
                           f"the teacher's verdicts ({counts}); name more prompts")  # fmt: skip
    write_atomic(out / HELDOUT, "".join(r.model_dump_json() + "\n" for r in rows))
    scored = sum(len(v) for k, v in by_kind.items() if k == "redteam")
    run.update(counts=counts, usage={"teacher": {"calls": scored}}, status="complete")


def rl_reward(config: RunConfig, out: Path, heldout: Path, model: Path, sft: Path,
              first: Path | None, backend: Callable[[str], Any]) -> None:  # fmt: skip
    """Round r's model on the held-out prompts: reward, refusals, length, KL to the SFT model
    (charter.stages.rl_reward); ``first``: round 0's folder, for the paired comparison."""
    from charter.backends import GenerationConfig
    from charter.runs import read_jsonl
    from charter.stages import rl_reward as rl
    from charter.stages.checks import Tools

    settings = rl.RewardConfig(
        samples=config.rl.heldout_samples, max_kl=config.rl.max_kl,
        generation=GenerationConfig(temperature=config.label.temperature,
                                    max_tokens=config.label.max_tokens, seed=0),
    )  # fmt: skip
    recorded = settings.model_dump(mode="json", exclude={"batch_size"})
    run = Run.open(out, "rl-reward", {"model": model.name, "reference": sft.name,
                                      "config": recorded})  # fmt: skip
    rows = list(read_jsonl(heldout / rl.HELDOUT, rl.HeldoutPrompt))
    policy = backend(gguf_model(model))
    current, reference = backend(f"hf/{model / 'model'}"), backend(f"hf/{sft / 'model'}")

    def gap(messages: Any, answers: Any) -> list[float]:
        now = current.choice_logprobs(list(messages), list(answers))
        ref = reference.choice_logprobs(list(messages), list(answers))
        return [a - b for a, b in zip(now, ref, strict=True)]

    try:
        scored = rl.score_round(rows, policy=policy, refuses=Tools.load().refuses,
                             logprob_gap=gap, config=settings)  # fmt: skip
    finally:
        for backend_ in (policy, current, reference):
            backend_.close()
    summary = rl.summarise(scored, rl.read_rewards(first) if first else None, settings.max_kl)
    rl.write_round(out, scored, summary)
    run.update(
        counts={"prompts": len(scored), "flags": len(summary["flags"])},
        usage={"policy": {"calls": len(rows) * settings.samples}},
        status="complete",
    )


def report(config: RunConfig, out: Path, folders: Mapping[str, Path]) -> None:
    """The HTML report of every stage before it (``folders``: their folders by name)."""
    from charter.report import build_report

    run = Run.open(out, "report", {"stages": {name: f.name for name, f in folders.items()}})
    html = build_report(dict(folders), title=config.name)
    write_atomic(out / REPORT, html)  # run_pipeline copies it to ROOT/report.html
    run.update(counts={}, usage={}, status="complete")
