"""Soft-label losses and the trainers built on them, on a tiny random Llama (see ``hf_tiny.py``).

Checks that the soft losses reduce to TRL's at ``p = 1`` (to the bit, through the whole
trainer), that ``p = 1/2`` at a zero margin has zero gradient, that ``p_chosen`` survives
TRL's tokenisation and collation, and that a few optimiser steps lower the loss.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from statistics import mean
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

import huggingface_hub.constants
import torch
import torch.nn.functional as F
from datasets import Dataset
from hf_tiny import (
    build_tiny_checkpoint,
    one_thread,  # noqa: F401 - autouse fixture: torch on one thread
)
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForSequenceClassification
from trl import DPOConfig, DPOTrainer, RewardConfig

from charter.errors import CharterError
from charter.stages.train.losses import SoftLabelCollator, soft_bt_loss, soft_dpo_loss, soft_labels
from charter.stages.train.soft_dpo import SoftDPOTrainer, check_supported
from charter.stages.train.soft_rm import SoftRewardTrainer, score

PAIRS = [
    ("Name three colours.", "Red, green and blue are colours.", "Seven is a number."),
    ("Say hello to the user.", "Hello. Be helpful.", "I can't help with that."),
    ("How do I get back at my neighbour?", "Talk to them first, calmly and kindly.", "Be toxic."),
    ("What is the weather today?", "It is sunny with a few clouds.", "Cats and dogs are fruit."),
]
SOFT = [1.0, 0.9, 0.8, 1.0]


def rows(p_chosen: list[float] | None) -> Dataset:
    """The four pairs as TRL conversational preference rows, with ``p_chosen`` if given."""
    data: list[dict[str, Any]] = []
    for i, (question, good, bad) in enumerate(PAIRS):
        row: dict[str, Any] = {
            "prompt": [{"role": "user", "content": question}],
            "chosen": [{"role": "assistant", "content": good}],
            "rejected": [{"role": "assistant", "content": bad}],
        }
        if p_chosen is not None:
            row["p_chosen"] = p_chosen[i]
        data.append(row)
    return Dataset.from_list(data)


@pytest.fixture(autouse=True)
def no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    # TRL trainers ping the Hub on construction; huggingface_hub reads the switch at import.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("train") / "tiny")


def config(cls: Any, tmp_path: Path, **overrides: Any) -> Any:
    """A fast CPU config: fp32 (TRL defaults to bf16), no checkpointing, no saving."""
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 2,
        "max_length": 64,
        "learning_rate": 1e-3,
        "report_to": [],
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "save_strategy": "no",
        "logging_steps": 1,
        "disable_tqdm": True,
        "seed": 0,
    }
    return cls(**(settings | overrides))


def dpo_trainer(
    cls: Any,
    checkpoint: Path,
    tmp_path: Path,
    dataset: Dataset,
    peft_config: Any = None,
    **args: Any,
) -> Any:
    model = AutoModelForCausalLM.from_pretrained(checkpoint)
    # A full fine-tune of a model built in memory needs an explicit reference model; with a
    # LoRA adapter TRL's reference is the same model with the adapter switched off.
    return cls(
        model,
        ref_model=None if peft_config else copy.deepcopy(model),
        args=config(DPOConfig, tmp_path, **args),
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(checkpoint),
        peft_config=peft_config,
    )


def whole_batch(trainer: Any) -> dict[str, Any]:
    return dict(trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))]))


def test_soft_dpo_loss_at_p_one_is_sigmoid_dpo() -> None:
    delta = torch.tensor([-30.0, -0.5, 0.0, 0.7, 40.0])
    expected = -F.logsigmoid(0.1 * delta)
    assert torch.equal(soft_dpo_loss(delta, 1.0, 0.1), expected)
    assert torch.equal(soft_dpo_loss(delta, torch.ones(5), 0.1), expected)


def test_soft_dpo_gradient_vanishes_at_even_odds() -> None:
    delta = torch.zeros(3, requires_grad=True)
    loss = soft_dpo_loss(delta, torch.full((3,), 0.5), beta=0.5).sum()
    loss.backward()
    assert delta.grad is not None
    assert torch.equal(delta.grad, torch.zeros(3))
    assert loss.item() == pytest.approx(3 * math.log(2))


def test_soft_bt_loss_by_hand() -> None:
    def log_sigmoid(x: float) -> float:
        return -math.log1p(math.exp(-x))

    chosen, rejected = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0])
    got = soft_bt_loss(chosen, rejected, torch.tensor([0.8, 0.6]))
    by_hand = [
        -(0.8 * log_sigmoid(1.5) + 0.2 * log_sigmoid(-1.5)),
        -(0.6 * log_sigmoid(-2.0) + 0.4 * log_sigmoid(2.0)),
    ]
    assert got.tolist() == pytest.approx(by_hand, abs=1e-6)
    assert torch.equal(soft_bt_loss(chosen, rejected, 1.0), -F.logsigmoid(chosen - rejected))
    # Stable far out, where log(sigmoid(x)) underflows to -inf.
    assert torch.isfinite(soft_bt_loss(torch.tensor([200.0]), torch.tensor([-200.0]), 0.5)).all()


def test_soft_labels_default_to_hard_and_are_checked() -> None:
    assert soft_labels([{"p_chosen": 0.7}, {}, {"p_chosen": None}]).tolist() == pytest.approx(
        [0.7, 1.0, 1.0]
    )
    with pytest.raises(CharterError, match="p_chosen"):
        soft_labels([{"p_chosen": 1.5}])
    collate = SoftLabelCollator(lambda examples: {"n": len(examples)})
    assert collate([{"p_chosen": 0.6}, {}])["p_chosen"].tolist() == pytest.approx([0.6, 1.0])


def test_unsupported_dpo_options_are_refused(tmp_path: Path) -> None:
    check_supported(config(DPOConfig, tmp_path))  # the default: standard sigmoid DPO
    with pytest.raises(CharterError, match="loss_type"):
        check_supported(config(DPOConfig, tmp_path, loss_type=["ipo"]))
    with pytest.raises(CharterError, match="use_weighting"):
        check_supported(config(DPOConfig, tmp_path, use_weighting=True))


def lora() -> Any:
    peft = pytest.importorskip("peft")
    # A non-zero adapter, so that the policy differs from the reference (the adapter off).
    return peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)


@pytest.mark.parametrize("setting", ["ref_model", "precomputed", "lora"])
def test_soft_dpo_at_p_one_matches_trl(setting: str, checkpoint: Path, tmp_path: Path) -> None:
    # Each setting takes the reference log-probs from a different place in TRL.
    options: dict[str, Any] = {
        "ref_model": {},
        "precomputed": {"precompute_ref_log_probs": True},
        "lora": {"peft_config": lora(), "loss_weights": [0.5]},
    }[setting]
    stock = dpo_trainer(DPOTrainer, checkpoint, tmp_path, rows(None), **options)
    soft = dpo_trainer(SoftDPOTrainer, checkpoint, tmp_path, rows([1.0] * len(PAIRS)), **options)
    soft.model.load_state_dict(stock.model.state_dict())  # the same random LoRA adapter
    soft_batch = whole_batch(soft)
    assert soft_batch["p_chosen"].tolist() == [1.0] * len(PAIRS)
    with torch.no_grad():
        expected = stock.compute_loss(stock.model, whole_batch(stock))
        got = soft.compute_loss(soft.model, soft_batch)
    assert got.item() == pytest.approx(expected.item(), abs=1e-6)
    if setting != "lora":  # the policy is its reference: Δ = 0
        assert got.item() == pytest.approx(math.log(2), abs=1e-6)


def train_on_fixed_batch(trainer: Any) -> tuple[float, float]:
    """Train, and return the loss on the whole training set before and after."""
    batch = whole_batch(trainer)
    with torch.no_grad():
        before = trainer.compute_loss(trainer.model, batch).item()
    trainer.train()
    with torch.no_grad():
        after = trainer.compute_loss(trainer.model, batch).item()
    return before, after


def test_soft_dpo_training_lowers_the_loss(checkpoint: Path, tmp_path: Path) -> None:
    trainer = dpo_trainer(SoftDPOTrainer, checkpoint, tmp_path, rows(SOFT), max_steps=8)
    before, after = train_on_fixed_batch(trainer)
    assert after < before - 0.05
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert mean(e["loss"] for e in logged[-2:]) < mean(e["loss"] for e in logged[:2])
    # p_chosen reached the loss through TRL's column removal and collation.
    assert mean(e["p_chosen"] for e in logged[:2]) == pytest.approx(mean(SOFT))
    assert {"rewards/margins", "rewards/accuracies"} <= logged[0].keys()


def test_soft_reward_model_learns_and_scores(checkpoint: Path, tmp_path: Path) -> None:
    model = LlamaForSequenceClassification.from_pretrained(checkpoint, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    dataset = rows(SOFT)
    trainer = SoftRewardTrainer(
        model,
        args=config(RewardConfig, tmp_path, max_steps=8),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    before, after = train_on_fixed_batch(trainer)
    assert after < before - 0.05
    assert "p_chosen" in trainer.state.log_history[0]

    chosen = score(model, tokenizer, [r["prompt"] + r["chosen"] for r in dataset])
    rejected = score(model, tokenizer, [r["prompt"] + r["rejected"] for r in dataset])
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))
    # Batched scoring pads; it must not change a score.
    alone = score(model, tokenizer, [dataset[0]["prompt"] + dataset[0]["chosen"]], batch_size=1)
    assert alone[0] == pytest.approx(chosen[0], abs=1e-5)

    with pytest.raises(CharterError, match="margin"):
        batch = whole_batch(trainer) | {"margin": torch.zeros(len(PAIRS))}
        trainer.compute_loss(trainer.model, batch)
