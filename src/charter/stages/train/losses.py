"""Soft-label preference losses (pure torch): the RL-CAI targets of DESIGN.md §1.

The feedback model gives each pair a soft label ``p = P(chosen is better)`` instead of a hard
0/1 verdict. Both losses below are the cross-entropy between that label and the model's
Bradley–Terry probability ``σ(x)`` that ``chosen`` wins, where ``x`` is a reward margin:

    L(x, p) = −[p·log σ(x) + (1 − p)·log σ(−x)]

With ``p = 1`` it is the usual hard loss ``−log σ(x)``; with ``p = 1/2`` and ``x = 0`` its
gradient is exactly zero. ``F.logsigmoid`` keeps it finite for any margin.

The soft label reaches the loss as the batch key ``p_chosen``: :class:`SoftLabelCollator`
puts it there for both trainers (``soft_dpo.py``, ``soft_rm.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from charter.errors import CharterError

P_CHOSEN = "p_chosen"
"""The dataset column (``PreferenceRow.p_chosen``) and batch key that holds the soft label."""


def _soft_logistic(margin: Tensor, p: Tensor | float) -> Tensor:
    """Per-example ``−[p·log σ(margin) + (1 − p)·log σ(−margin)]``."""
    return -(p * F.logsigmoid(margin) + (1 - p) * F.logsigmoid(-margin))


def soft_dpo_loss(delta: Tensor, p: Tensor | float, beta: float) -> Tensor:
    """Soft-label DPO loss, per example.

        L = −[p·log σ(βΔ) + (1 − p)·log σ(−βΔ)]
        Δ = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))

    ``βΔ`` is DPO's implicit reward margin of the chosen reply ``c`` over the rejected ``r``.
    With ``p = 1`` this is TRL's ``"sigmoid"`` DPO loss ``−log σ(βΔ)``.

    Args:
        delta: Δ per example, shape ``(batch,)``.
        p: P(chosen is better) per example, in [0, 1]: a tensor like ``delta`` or a number.
        beta: DPO's β, the strength of the KL penalty towards the reference model.

    Returns:
        The loss per example, shape ``(batch,)``; take ``.mean()`` for a batch loss.
    """
    return _soft_logistic(beta * delta, p)


def soft_bt_loss(r_chosen: Tensor, r_rejected: Tensor, p: Tensor | float) -> Tensor:
    """Soft-target Bradley–Terry loss for a reward model, per example.

        L = −[p·log σ(r_c − r_r) + (1 − p)·log σ(r_r − r_c)]

    With ``p = 1`` this is the standard reward-model loss ``−log σ(r_c − r_r)``.

    Args:
        r_chosen: The reward model's scalar for each chosen reply, shape ``(batch,)``.
        r_rejected: The scalar for each rejected reply, shape ``(batch,)``.
        p: P(chosen is better) per example, in [0, 1]: a tensor like ``r_chosen`` or a number.

    Returns:
        The loss per example, shape ``(batch,)``.
    """
    return _soft_logistic(r_chosen - r_rejected, p)


def soft_labels(examples: Sequence[Mapping[str, Any]]) -> Tensor:
    """The ``p_chosen`` of each dataset row as a float tensor; a missing label reads 1.0.

    A row without ``p_chosen`` (or with ``None``) is an ordinary hard preference, which the
    soft trainers train exactly as TRL's stock ones do.

    Raises:
        CharterError: a label lies outside [0, 1] (a bad preference file).
    """
    labels = [1.0 if row.get(P_CHOSEN) is None else float(row[P_CHOSEN]) for row in examples]
    bad = [p for p in labels if not 0.0 <= p <= 1.0]  # also catches NaN
    if bad:
        raise CharterError(f"{P_CHOSEN} must lie in [0, 1]; got {bad[0]}")
    return torch.tensor(labels, dtype=torch.float32)


@dataclass(frozen=True)
class SoftLabelCollator:
    """A TRL preference collator whose batches also carry ``p_chosen``, one per pair.

    TRL's collators build their batch from the token-id columns only and drop every other
    key, so the soft label would never reach ``compute_loss``; this wrapper adds it back.
    """

    collator: Callable[[list[dict[str, Any]]], dict[str, Any]]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        p = soft_labels(examples)  # before the collator runs: TRL's vision collator edits rows
        batch = self.collator(examples)
        batch[P_CHOSEN] = p
        return batch
