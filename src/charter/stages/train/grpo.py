"""GRPO against the constitution's checks: online RL with a reward no model has to write.

Each training prompt carries the behaviour it asks of the policy: a red-team prompt the
teacher judged harmful asks for a decline; a contrast or helpful prompt asks for an answer
that passes its checks (not a refusal, not empty, its instructions followed). The reward of
a sampled answer is 1 when it behaves so (:func:`charter.stages.verdict_pairs.behaves`, the
same rule as the verdict pairs and the held-out reward), 0 otherwise, less a length term
(``length_penalty`` per 100 words) that a user can turn on against answers that buy reward
with length. Refusals are judged by the refusal classifier (the ``evaluate`` extra).

The reward can be made asymmetric: with ``refusal_cost`` c, a refusal to a prompt that asks
for an answer scores −c instead of 0, so over-refusing costs more than declining a red-team
prompt pays. Since GRPO compares answers within a group, the gap only weighs more across
groups when advantages are not divided by each group's deviation (``scale_rewards: none``
or ``batch``); with the default ``group`` scaling a two-valued group learns the same either way.

TRL's GRPOTrainer samples ``generations`` answers per prompt from the policy being trained,
scores them, and optimises the policy on the advantages within each prompt's group, with a
KL term (``beta``) to the starting model. A prompt whose answers all score the same teaches
nothing in that step, as in any group-relative method.

Rows (``rl-prompts.jsonl``, or any JSONL with these fields): ``messages`` (the prompt, ending
with a user turn), ``kind`` (redteam, contrast or helpful) and optionally ``instructions``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.records import Instruction
from charter.stages.verdict_pairs import DESIRED, behaves

RL_PROMPTS = "rl-prompts.jsonl"


def write_prompts(out: Path, rows: Sequence[Any]) -> Path:
    """``out/rl-prompts.jsonl`` from rows with id, kind, messages and instructions (held-out
    prompts or guided rows); returns its path."""
    from charter.runs import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps({"id": r.id, "kind": r.kind,
                               "messages": [m.model_dump() for m in r.messages],
                               "instructions": [i.model_dump() for i in r.instructions]},
                              ensure_ascii=False) + "\n" for r in rows)  # fmt: skip
    write_atomic(out / RL_PROMPTS, text)
    return out / RL_PROMPTS


def prompt_dataset(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """TRL conversational prompt rows, each with the kind and checks its reward needs."""
    out = []
    for number, row in enumerate(rows, start=1):
        messages, kind = row.get("messages"), row.get("kind")
        if not isinstance(messages, list) or not messages or messages[-1].get("role") != "user":
            raise CharterError(f"GRPO row {number}: 'messages' must end with a user turn")
        if kind not in DESIRED:
            raise CharterError(f"GRPO row {number}: 'kind' must be one of "
                               f"{', '.join(DESIRED)} (the reward asks a decline or an "
                               f"answer of it), not {kind!r}")  # fmt: skip
        instructions = [Instruction.model_validate(i).model_dump() for i in
                        row.get("instructions") or []]  # fmt: skip
        # A JSON string: a column of nested dicts would need one schema across all rows.
        out.append({"prompt": messages, "kind": kind, "instructions": json.dumps(instructions)})
    return out


class GroupTally:
    """Per kind of prompt: the groups scored, those whose answers did not all score the same
    (the only ones a group-relative method learns from), and their mean reward. Recorded in
    the run's figures, so a flat result can be read: which kinds gave the policy a signal."""

    def __init__(self) -> None:
        self.groups: dict[str, list[tuple[float, ...]]] = {}

    def add(self, prompts: Sequence[Any], kinds: Sequence[str], rewards: Sequence[float]) -> None:
        batch: dict[str, tuple[str, list[float]]] = {}
        for prompt, kind, reward in zip(prompts, kinds, rewards, strict=True):
            key = json.dumps(prompt, sort_keys=True, default=str)
            batch.setdefault(key, (kind, []))[1].append(reward)
        for kind, scores in batch.values():
            self.groups.setdefault(kind, []).append(tuple(scores))

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for kind, groups in sorted(self.groups.items()):
            scores = [x for g in groups for x in g]
            out[kind] = {"groups": len(groups),
                         "informative": sum(1 for g in groups if len(set(g)) > 1),
                         "mean_reward": round(sum(scores) / len(scores), 4)}  # fmt: skip
        return out


def constitution_reward(
    refuses: Callable[[Sequence[str]], list[bool]],
    length_penalty: float = 0.0,
    tally: GroupTally | None = None,
    refusal_cost: float = 0.0,
) -> Callable[..., list[float | None]]:
    """The reward function TRL calls with a batch of completions and their rows' columns."""

    def constitution(completions: Sequence[Any], kind: Sequence[str],
                     instructions: Sequence[str], prompts: Sequence[Any] | None = None,
                     **_: Any) -> list[float | None]:  # fmt: skip
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        refused = refuses(texts) if texts else []
        rewards: list[float] = []
        for text, k, checks, r in zip(texts, kind, instructions, refused, strict=True):
            wanted = [Instruction.model_validate(i) for i in json.loads(checks)]
            score = float(behaves(k, wanted, text, r))
            if r and DESIRED[k] == "answer":
                score = -refusal_cost
            rewards.append(score - length_penalty * len(text.split()) / 100)
        if tally is not None and prompts is not None:
            tally.add(prompts, kind, rewards)
        return list(rewards)

    return constitution


def build(config: Any, model: Any, data: Any, tokenizer: Any, arguments: dict[str, Any],
          peft_config: Any, refuses: Callable[[Sequence[str]], list[bool]]) -> Any:  # fmt: skip
    """TRL's GRPOTrainer for ``config`` (a TrainConfig of kind grpo)."""
    from trl.trainer.grpo_config import GRPOConfig
    from trl.trainer.grpo_trainer import GRPOTrainer

    per_step = config.batch_size * config.gradient_accumulation
    if per_step % config.generations:
        raise CharterError(
            f"batch_size × gradient_accumulation = {per_step} answers per step must be a "
            f"multiple of generations ({config.generations}): each prompt's group trains together"
        )
    args = GRPOConfig(
        **arguments, num_generations=config.generations, beta=config.beta,
        max_completion_length=config.completion_tokens, temperature=config.temperature,
        scale_rewards=config.scale_rewards,
    )  # fmt: skip
    tally = GroupTally()
    reward = constitution_reward(refuses, config.length_penalty, tally, config.refusal_cost)
    trainer = GRPOTrainer(
        model=model, reward_funcs=reward,
        args=args, train_dataset=data, processing_class=tokenizer, peft_config=peft_config,
    )  # fmt: skip
    setattr(trainer, "charter_groups", tally)  # noqa: B010 - read into the figures after training
    return trainer
