"""Building the TRL trainer for a :class:`~charter.stages.train.config.TrainConfig`.

One function per kind, each a plain TRL set-up: SFTTrainer on prompt-completion rows,
Charter's SoftDPOTrainer and SoftRewardTrainer on preference rows with ``p_chosen``, and
GRPOTrainer on prompts with the constitution's checks as its reward
(:mod:`charter.stages.train.grpo`).

The terminal shows one line per run (:class:`StepLine`: step, loss, rate and ETA), not the
trainer's printed log dicts; the logged values still reach ``losses.jsonl`` and the manifest.
The libraries' own bars (dataset tokenizing, weight loading) are off unless the log level is
DEBUG (``charter -vv``).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset  # type: ignore[import-untyped]
from peft import LoraConfig
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
)
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.reward_config import RewardConfig
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from charter.stages.train.config import TrainConfig
from charter.stages.train.soft_dpo import SoftDPOTrainer
from charter.stages.train.soft_rm import SoftRewardTrainer


def build_trainer(
    config: TrainConfig, start: Path, rows: list[dict[str, Any]], output_dir: Path
) -> tuple[Any, Any]:
    """The trainer and tokenizer for ``config``, starting from checkpoint ``start``."""
    _quiet_libraries()
    tokenizer = AutoTokenizer.from_pretrained(start)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    build = {"sft": _sft, "dpo": _dpo, "rm": _rm, "grpo": _grpo}[config.kind]
    trainer = build(config, start, Dataset.from_list(rows), tokenizer, output_dir)
    for noisy in (ProgressCallback, PrinterCallback):  # they print every log as a dict
        trainer.remove_callback(noisy)
    trainer.add_callback(StepLine(config.kind))
    return trainer, tokenizer


def _quiet_libraries() -> None:
    """Turn off the bars transformers and datasets draw, and the deprecation notices one
    library raises about another's calls (nothing a user can act on), unless debugging."""
    import logging
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    if logging.getLogger("charter").getEffectiveLevel() > logging.DEBUG:
        datasets.disable_progress_bars()
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)  # fmt: skip


class StepLine(TrainerCallback):
    """One progress line for a training run: step of total, the last loss, rate and ETA."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        from charter.progress import progress_bar

        if state.is_world_process_zero:
            self.bar = progress_bar(total=state.max_steps, initial=state.global_step,
                                    desc=f"train {self.kind}", unit="step")  # fmt: skip

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        if self.bar is not None and logs and "loss" in logs:
            shown = {k: f"{float(logs[k]):.3f}" for k in ("loss", "reward") if k in logs}
            self.bar.set_postfix(refresh=False, **shown)  # GRPO: the mean reward of the step

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _sft(config: TrainConfig, start: Path, data: Any, tokenizer: Any, output_dir: Path) -> Any:
    args = SFTConfig(
        **_arguments(config, output_dir), max_length=config.max_length, completion_only_loss=True
    )
    return SFTTrainer(
        model=_causal(start), args=args, train_dataset=data, processing_class=tokenizer,
        peft_config=_lora(config, "CAUSAL_LM"),
    )  # fmt: skip


def _dpo(config: TrainConfig, start: Path, data: Any, tokenizer: Any, output_dir: Path) -> Any:
    model = _causal(start)
    # A full fine-tune needs its own frozen reference; with LoRA TRL disables the adapter.
    reference = None if config.lora else copy.deepcopy(model)
    args = DPOConfig(
        **_arguments(config, output_dir), max_length=config.max_length, beta=config.beta
    )
    return SoftDPOTrainer(
        model, ref_model=reference, args=args, train_dataset=data, processing_class=tokenizer,
        peft_config=_lora(config, "CAUSAL_LM"),
    )  # fmt: skip


def _rm(config: TrainConfig, start: Path, data: Any, tokenizer: Any, output_dir: Path) -> Any:
    model = AutoModelForSequenceClassification.from_pretrained(
        start, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(**_arguments(config, output_dir), max_length=config.max_length)
    return SoftRewardTrainer(
        model=model, args=args, train_dataset=data, processing_class=tokenizer,
        peft_config=_lora(config, "SEQ_CLS"),
    )  # fmt: skip


def _grpo(config: TrainConfig, start: Path, data: Any, tokenizer: Any, output_dir: Path) -> Any:
    from charter.stages.checks import Tools
    from charter.stages.train import grpo

    # GRPO's batches are sampled inside the trainer, where transformers cannot count the input
    # tokens (it warns at every step); the figures leave tokens/s out for it.
    arguments = {**_arguments(config, output_dir), "include_num_input_tokens_seen": False}
    return grpo.build(config, _causal(start), data, tokenizer, arguments,
                      _lora(config, "CAUSAL_LM"), Tools.load().refuses)  # fmt: skip


def _causal(start: Path) -> Any:
    return AutoModelForCausalLM.from_pretrained(start, dtype=torch.float32)


def _lora(config: TrainConfig, task: str) -> LoraConfig | None:
    if not config.lora:
        return None
    return LoraConfig(
        r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules="all-linear", task_type=task,
    )  # fmt: skip


def _arguments(config: TrainConfig, output_dir: Path) -> dict[str, Any]:
    """Trainer settings shared by the three kinds, chosen for a CPU laptop by default."""
    return {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "learning_rate": config.rate,
        "num_train_epochs": config.epochs,
        "max_steps": config.max_steps,
        "logging_steps": 1,
        "save_steps": config.save_steps,
        "save_total_limit": 2,
        "seed": config.seed,
        "report_to": [],
        "include_num_input_tokens_seen": "non_padding",  # tokens/s in the figures
        "use_cpu": not torch.cuda.is_available(),
        # TRL turns on bf16 and checkpointing by default; bf16 gives no speed-up on our CPUs
        # (measured) and checkpointing trades time for memory a 135M model does not need.
        # On GPUs that have it, bf16 (as the shipped accelerate configs ask).
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "activation_checkpointing": False,
    }
