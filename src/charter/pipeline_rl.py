"""The online rounds of a teacher run (``rl.rounds``), planned after DPO.

The teacher's verdicts on held-out prompts (``rl-heldout``) and, when the config gives
GRPO prompts of their own, on those (``rl-prompts``); then each round's sampling, training and
held-out reward. :func:`charter.pipeline.plan` calls :func:`online`; the stages are keyed,
cached and resumed like every other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.runner import content_key
from charter.stages import steps

if TYPE_CHECKING:
    from charter.pipeline import RunPlan

Estimate = Callable[[int, int, str, int], dict[str, float]]  # charter.pipeline.estimate


def online(run: RunPlan, estimate: Estimate) -> str:
    """The teacher's verdicts on held-out prompts (and on GRPO's own prompts, when given),
    then ``rl.rounds`` online rounds; returns the stage of the latest model."""
    from charter.splits import user_text

    config, m = run.config, run.config.models
    prompts = run.prompts
    heldout = _round_prompts(config.rl.heldout, "heldout", run.inputs, run.evaluation, prompts)

    def verdicts(name: str, chosen: Any, sources: Any) -> None:  # rl-heldout, rl-prompts
        run.add(name, ("calibrate",), [sources, run.ident(m.teacher), run.templates["teacher"]],
                [content_key({k: [p.model_dump(mode="json", exclude={"source"}) for p in v]
                              for k, v in chosen[0].items()}),
                 run.digest["constitution"]["rl-heldout"]],
                estimate(0, 0, "answer_s", sum(map(len, chosen[0].values()))),
                lambda out, f: steps.rl_heldout(config, out, chosen, f["calibrate"], run.backend,
                                                stage=name))  # fmt: skip

    verdicts("rl-heldout", heldout, config.rl.heldout)
    if config.rl.prompts.by_kind():  # GRPO's own prompts: not SFT's, not held out
        held = [user_text(p) for v in heldout[0].values() for p in v]
        verdicts("rl-prompts", _round_prompts(config.rl.prompts, "rl", run.inputs,
                                              {**run.evaluation, "heldout": held}, prompts),
                 config.rl.prompts)  # fmt: skip
    costs = run.costs
    return _online_rounds(run, estimate, costs["label"], costs["dpo"],
                          sum(map(len, heldout[0].values())))  # fmt: skip


def _round_prompts(
    sources: Any, label: str, inputs: Path, evaluation: dict[str, list[str]], training: list[Any]
) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``rl.heldout``'s (or ``rl.prompts``') prompts by kind, with any that overlaps an
    evaluation question or a training prompt dropped, and the overlap report."""
    from charter.splits import disjoint, first_prompts, materialise, user_text

    files = {kind: [materialise(chosen, inputs, f"{label}-{kind}")]
             for kind, chosen in sources.by_kind().items()}  # fmt: skip
    trained = [user_text(p) for p in training]
    return disjoint(first_prompts(files, None), {**evaluation, "training": trained})


def _online_rounds(run: RunPlan, estimate: Estimate, label_cost: dict[str, float],
                   dpo_cost: dict[str, float], n_heldout: int) -> str:  # fmt: skip
    """Plan ``rl.rounds`` online rounds after DPO; returns the stage of the latest model.

    Round r samples from the model of round r-1 (round 0: the DPO stage), pairs its answers
    against the teacher's verdicts and the checks (``rl-label-r``, a new seed each round),
    and trains DPO from that model on them (``rl-dpo-r``); with ``rl.algorithm: grpo`` it
    trains GRPO from that model on the training prompts instead, the checks as its reward
    (``rl-grpo-r``). Each round's stages are cached and resumed like any other.
    ``rl-reward-r`` scores the model of round r on the held-out prompts
    (charter.stages.rl_reward), round 0 included, paired with round 0.
    """
    config, add, backend = run.config, run.add, run.backend
    samples = config.rl.heldout_samples
    reward_cost = estimate(n_heldout * samples, config.label.max_tokens, "answer_s", 0)

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
