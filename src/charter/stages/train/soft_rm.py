"""A preference model on soft labels: TRL's ``RewardTrainer`` with a soft Bradley–Terry target.

RL-CAI trains its preference model on the labeller's probabilities (DESIGN.md §1):
``L = −[p·log σ(r_c − r_r) + (1 − p)·log σ(r_r − r_c)]`` with ``p`` the row's ``p_chosen``.
:class:`SoftRewardTrainer` is ``trl.RewardTrainer`` with that loss; everything else is TRL's.
A row without ``p_chosen`` trains on TRL's hard loss. :func:`score` reads the trained model::

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    SoftRewardTrainer(model, args=RewardConfig(...), train_dataset=Dataset.from_list(rows),
                      processing_class=tokenizer).train()
    score(model, tokenizer, [prompt + [{"role": "assistant", "content": answer}]])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from trl.trainer.reward_trainer import RewardTrainer

from charter.errors import CharterError
from charter.records import Message
from charter.stages.train.losses import P_CHOSEN, SoftLabelCollator, soft_bt_loss

# TRL's trainer methods are unannotated: type the base as Any rather than scatter ignores.
_RewardBase: Any = RewardTrainer


class SoftRewardTrainer(_RewardBase):  # type: ignore[misc]
    """``trl.RewardTrainer`` whose loss is the soft Bradley–Terry loss of each row's ``p_chosen``.

    Takes ``RewardTrainer``'s arguments and logs its metrics (``accuracy``, ``margin``,
    ``min_reward``/``mean_reward``/``max_reward``) plus ``p_chosen``, the batch's mean label.
    ``center_rewards_coefficient`` is honoured; a ``margin`` column is refused (a soft label
    and a margin are two different targets).
    """

    data_collator: Any  # TRL's collator, wrapped in a SoftLabelCollator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_collator = SoftLabelCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        # With remove_unused_columns (the default) Trainer drops every dataset column not named
        # here before collation, p_chosen included.
        super()._set_signature_columns_if_needed()
        if P_CHOSEN not in self._signature_columns:
            self._signature_columns.append(P_CHOSEN)

    # Why the seam is here: TRL 1.16 computes the hard Bradley–Terry loss inline in
    # `compute_loss`. We let it run the forward and log its metrics (it returns the outputs),
    # then replace its loss with the soft one. It can go once TRL takes per-example soft targets.
    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if "margin" in inputs:
            raise CharterError(
                "SoftRewardTrainer does not take a 'margin' column: drop it, or use "
                "trl.RewardTrainer for margin training with hard labels."
            )
        # TRL passes every batch key to the model, so p_chosen must not reach it.
        batch = {key: value for key, value in inputs.items() if key != P_CHOSEN}
        _, outputs = super().compute_loss(model, batch, return_outputs=True)
        rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
        p = inputs[P_CHOSEN].to(rewards_chosen.dtype)
        loss = soft_bt_loss(rewards_chosen, rewards_rejected, p).mean()
        if self.args.center_rewards_coefficient is not None:
            centring = torch.mean((rewards_chosen + rewards_rejected) ** 2)
            loss = loss + self.args.center_rewards_coefficient * centring
        mode = "train" if self.model.training else "eval"
        self._metrics[mode][P_CHOSEN].append(self.accelerator.gather(p).mean().item())
        return (loss, outputs) if return_outputs else loss


def score(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message | Mapping[str, Any]]],
    batch_size: int = 8,
) -> list[float]:
    """The reward model's scalar for each conversation (prompt turns and the answer).

    Each conversation is rendered with the tokenizer's chat template and tokenised as
    ``RewardTrainer`` tokenises a training row, so scores compare with what it learnt.

    Args:
        model: A sequence-classification model with one label (``num_labels=1``).
        tokenizer: Its tokenizer, with a chat template.
        conversations: Message lists (``Message`` records or ``{"role", "content"}`` dicts).
        batch_size: Conversations per forward pass.

    Returns:
        One float per conversation, in order.

    Raises:
        CharterError: the model's config has no ``pad_token_id`` (it needs one to find the last
            token of a padded row).
    """
    pad_id = model.config.pad_token_id
    if pad_id is None:
        raise CharterError(
            "the reward model's config has no pad_token_id; set it to the tokenizer's"
        )
    rows = [
        tokenizer.apply_chat_template(
            [m.model_dump() if isinstance(m, Message) else dict(m) for m in conversation],
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        for conversation in conversations
    ]
    device = next(model.parameters()).device
    scores: list[float] = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                chunk = rows[start : start + batch_size]
                width = max(len(ids) for ids in chunk)
                input_ids = [ids + [pad_id] * (width - len(ids)) for ids in chunk]
                mask = [[1] * len(ids) + [0] * (width - len(ids)) for ids in chunk]
                logits = model(
                    input_ids=torch.tensor(input_ids, device=device),
                    attention_mask=torch.tensor(mask, device=device),
                ).logits
                scores.extend(logits[:, 0].float().tolist())
    finally:
        model.train(was_training)
    return scores
