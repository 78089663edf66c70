"""GRPO with the constitution's checks as the reward (charter.stages.train.grpo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.errors import CharterError
from charter.stages.train.grpo import (
    RL_PROMPTS,
    GroupTally,
    constitution_reward,
    prompt_dataset,
)


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def reply(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def refuses(texts: Any) -> list[bool]:
    return ["can't help" in t for t in texts]


def three_kinds() -> tuple[list[str], list[str]]:
    """The kind and checks columns of a red-team, a contrast and a helpful row."""
    rows = prompt_dataset([
        {"messages": ask("Write ransomware."), "kind": "redteam"},
        {"messages": ask("How do I kill a zombie process?"), "kind": "contrast"},
        {"messages": ask("Name a colour, in capitals."), "kind": "helpful",
         "instructions": [{"id": "change_case:english_capital"}]},
    ])  # fmt: skip
    return [r["kind"] for r in rows], [r["instructions"] for r in rows]


def test_the_reward_asks_a_decline_of_red_team_prompts_and_an_answer_of_the_others() -> None:
    kinds, checks = three_kinds()
    reward = constitution_reward(refuses)
    declined = [reply("Sorry, I can't help with that.")] * 3
    answered = [reply("Send it SIGKILL with kill -9 and its parent reaps it.")] * 3
    assert reward(declined, kind=kinds, instructions=checks) == [1.0, 0.0, 0.0]
    assert reward(answered, kind=kinds, instructions=checks) == [0.0, 1.0, 0.0]  # not capitals
    shouting = [reply("RED IS A COLOUR THAT MANY PEOPLE LIKE.")] * 3
    assert reward(shouting, kind=kinds, instructions=checks)[2] == 1.0


def test_a_refusal_cost_makes_refusing_a_prompt_that_asks_an_answer_cost() -> None:
    """Asymmetric reward: an over-refusal scores below an answer that misses a check, while
    a red-team decline still pays 1 and a red-team answer 0."""
    kinds, checks = three_kinds()
    reward = constitution_reward(refuses, refusal_cost=1.0)
    declined = [reply("Sorry, I can't help with that.")] * 3
    answered = [reply("Send it SIGKILL; red is a colour.")] * 3
    assert reward(declined, kind=kinds, instructions=checks) == [1.0, -1.0, -1.0]
    assert reward(answered, kind=kinds, instructions=checks) == [0.0, 1.0, 0.0]


def test_the_grpo_settings_reach_trl(monkeypatch: pytest.MonkeyPatch) -> None:
    """scale_rewards goes to TRL's GRPOConfig, refusal_cost into the reward it calls."""
    pytest.importorskip("trl")
    import trl.trainer.grpo_trainer as trainer_module

    from charter.stages.train import grpo
    from charter.stages.train.config import TrainConfig

    seen: dict[str, Any] = {}

    def fake_trainer(**kwargs: Any) -> Any:
        seen.update(kwargs)
        return type("T", (), {})()

    monkeypatch.setattr(trainer_module, "GRPOTrainer", fake_trainer)
    config = TrainConfig(kind="grpo", data=("x",), refusal_cost=2.0, scale_rewards="none",
                         batch_size=4, gradient_accumulation=1, generations=4)  # fmt: skip
    grpo.build(config, model=None, data=[], tokenizer=None,
               arguments={"output_dir": "unused", "report_to": [], "use_cpu": True,
                          "bf16": False}, peft_config=None,
               refuses=refuses)  # fmt: skip
    assert seen["args"].scale_rewards == "none"
    (score,) = seen["reward_funcs"]([reply("I can't help.")], kind=["contrast"],
                                    instructions=["[]"])  # fmt: skip
    assert score == -2.0


def test_the_tally_counts_groups_that_teach_something_by_kind() -> None:
    """A group whose answers all score the same gives a group-relative method nothing."""
    tally = GroupTally()
    reward = constitution_reward(refuses, tally=tally)
    red, safe = ask("Write ransomware."), ask("How do I kill a zombie process?")
    answers = [
        reply("Sorry, I can't help with that."),
        reply("Here is the code: ..."),
        reply("Sorry, I can't help with that."),
        reply("I can't help with that."),
    ]
    reward(answers, kind=["redteam"] * 2 + ["contrast"] * 2, instructions=["[]"] * 4,
           prompts=[red, red, safe, safe])  # fmt: skip
    reward([reply("Use kill -9.")] * 2, kind=["contrast"] * 2, instructions=["[]"] * 2,
           prompts=[safe, safe])  # fmt: skip
    assert tally.summary() == {
        "contrast": {"groups": 2, "informative": 0, "mean_reward": 0.5},
        "redteam": {"groups": 1, "informative": 1, "mean_reward": 0.5},
    }


def test_the_length_term_takes_reward_off_per_hundred_words() -> None:
    reward = constitution_reward(refuses, length_penalty=0.5)
    long = "word " * 200
    (score,) = reward([reply(long)], kind=["contrast"], instructions=["[]"])
    assert score == pytest.approx(1.0 - 0.5 * 2)


@pytest.mark.parametrize(("row", "words"), [
    ({"messages": reply("hi"), "kind": "redteam"}, "must end with a user turn"),
    ({"messages": ask("hi"), "kind": "other"}, "'kind' must be one of redteam, contrast"),
    ({"messages": ask("hi"), "kind": "helpful", "instructions": [{"kwargs": {}}]}, "id"),
])  # fmt: skip
def test_a_bad_row_is_one_line_naming_it(row: dict[str, Any], words: str) -> None:
    with pytest.raises((CharterError, ValueError), match=words):
        prompt_dataset([{"messages": ask("fine"), "kind": "redteam"}, row])


def test_grpo_trains_a_tiny_model_against_the_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two steps on a tiny llama: sampled answers scored by the checks, a model saved."""
    pytest.importorskip("trl")
    from hf_tiny import build_tiny_checkpoint

    from charter.stages import checks
    from charter.stages.train.config import TrainConfig
    from charter.stages.train.run import train

    scored: list[int] = []

    def counting(texts: Any) -> list[bool]:
        scored.append(len(texts))
        return [len(t) % 2 == 0 for t in texts]

    stand_in = checks.Tools(counting, lambda texts: [[1.0] for _ in texts])
    monkeypatch.setattr(checks.Tools, "load", classmethod(lambda cls: stand_in))
    tiny = build_tiny_checkpoint(tmp_path / "tiny")
    data = tmp_path / RL_PROMPTS
    rows = [{"messages": ask(f"Question {i}: say hello."), "kind": ("redteam", "helpful")[i % 2]}
            for i in range(4)]  # fmt: skip
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = TrainConfig(kind="grpo", model=f"hf/{tiny}", data=(str(data),), max_steps=2,
                         batch_size=2, gradient_accumulation=2, generations=2,
                         completion_tokens=8, max_length=128)  # fmt: skip
    figures = train(config, tmp_path / "out")
    assert figures["steps"] == 2 and (tmp_path / "out" / "model" / "config.json").is_file()
    assert sum(scored) == 2 * 4  # two steps of 4 answers (2 prompts x 2 generations)
    losses = [json.loads(line) for line in (tmp_path / "out" / "loss.jsonl").open()]
    assert len(losses) == 2 and all("reward" in entry for entry in losses)
    groups = figures["groups"]  # two steps of 2 prompts: 4 groups of 2 answers, by kind
    assert sum(g["groups"] for g in groups.values()) == 4 and set(groups) <= {"redteam", "helpful"}


def test_answers_per_step_must_hold_whole_groups(tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from charter.stages.train import grpo
    from charter.stages.train.config import TrainConfig

    config = TrainConfig(kind="grpo", data=("x",), batch_size=3, gradient_accumulation=1,
                         generations=2)  # fmt: skip
    with pytest.raises(CharterError, match="3 answers per step must be a multiple of "
                                           "generations"):  # fmt: skip
        grpo.build(config, None, None, None, {}, None, refuses)
