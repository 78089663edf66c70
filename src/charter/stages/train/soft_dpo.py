"""DPO with the labeller's soft label: TRL's ``DPOTrainer`` reading ``p_chosen`` per pair.

RL-CAI labels are probabilities, not verdicts (DESIGN.md §1), and TRL has no DPO loss that
takes one per example. :class:`SoftDPOTrainer` is ``trl.DPOTrainer`` with that loss swapped
in; tokenisation, reference model, PEFT, precomputed reference log-probs, logging and
checkpointing are all TRL's. Rows are TRL conversational preference rows plus ``p_chosen``
(``prefs.jsonl``); a row without it trains as standard DPO::

    trainer = SoftDPOTrainer(model, ref_model=copy.deepcopy(model), args=DPOConfig(...),
                             train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()

A full (non-LoRA) fine-tune of a model built in memory needs that explicit ``ref_model``:
without one TRL reloads the reference from ``model.config.name_or_path``.
"""

from __future__ import annotations

from typing import Any

import torch
from trl.trainer.dpo_trainer import DPOTrainer

from charter.errors import CharterError
from charter.stages.train.losses import P_CHOSEN, SoftLabelCollator, soft_dpo_loss

# Batch keys that are not model inputs (TRL's own list plus ours).
_NOT_MODEL_INPUTS = {"completion_mask", "ref_chosen_logps", "ref_rejected_logps", P_CHOSEN}

# TRL's trainer methods are unannotated: type the base as Any rather than scatter ignores.
_DPOBase: Any = DPOTrainer


def check_supported(args: Any) -> None:
    """Raise if a ``DPOConfig`` asks for a DPO variant the soft loss does not replace.

    The soft loss generalises TRL's standard ``"sigmoid"`` loss only; the other loss types,
    LD-DPO's ``ld_alpha``, f-divergences and WPO weighting change Δ or the loss in ways it
    does not model, so they are refused rather than silently ignored.
    """
    problems = []
    if list(args.loss_type) != ["sigmoid"]:
        problems.append(f"loss_type={list(args.loss_type)!r} (only ['sigmoid'])")
    if args.ld_alpha is not None:
        problems.append(f"ld_alpha={args.ld_alpha}")
    if args.f_divergence_type != "reverse_kl":
        problems.append(f"f_divergence_type={args.f_divergence_type!r}")
    if args.use_weighting:
        problems.append("use_weighting=True")
    if problems:
        raise CharterError(
            "SoftDPOTrainer supports only standard sigmoid DPO with soft labels; unsupported "
            f"DPOConfig options: {', '.join(problems)}. Use trl.DPOTrainer for those (hard labels)."
        )


class SoftDPOTrainer(_DPOBase):  # type: ignore[misc]
    """``trl.DPOTrainer`` whose loss is the soft-label DPO loss of each row's ``p_chosen``.

    Takes ``DPOTrainer``'s arguments. Logs TRL's ``rewards/chosen``, ``rewards/rejected``,
    ``rewards/margins``, ``rewards/accuracies``, ``logps/chosen`` and ``logps/rejected``,
    plus ``p_chosen``, the mean soft label of the batch.

    Raises:
        CharterError: ``args`` asks for an option :func:`check_supported` refuses.
    """

    data_collator: Any  # TRL's collator, wrapped in a SoftLabelCollator

    def __init__(self, model: Any, ref_model: Any = None, args: Any = None, **kwargs: Any) -> None:
        if args is not None:  # None gets TRL's default DPOConfig: standard sigmoid DPO
            check_supported(args)
        super().__init__(model, ref_model, args, **kwargs)
        # Wrapped after TRL built its collator (and precomputed any reference log-probs with it).
        self.data_collator = SoftLabelCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        # With remove_unused_columns (the default) Trainer drops every dataset column not named
        # here before collation, p_chosen included.
        super()._set_signature_columns_if_needed()
        if P_CHOSEN not in self._signature_columns:
            self._signature_columns.append(P_CHOSEN)

    def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
        # TRL passes every batch key it does not know to the model; p_chosen is not an input.
        return super().compute_ref_log_probs(model, _without(inputs, {P_CHOSEN}))

    # Why the seam is here: TRL 1.16 computes Δ and the loss inline in `_compute_loss`, with no
    # hook for a per-example label, so we replace that one method for the configuration
    # `check_supported` allows. The forward with TRL's fused LM head, the reference
    # (`compute_ref_log_probs`: reference model, PEFT adapter off, or precomputed) and the
    # metrics follow TRL. It can go once TRL's DPO loss takes per-example label weights.
    def _compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool) -> Any:
        mode = "train" if self.model.training else "eval"
        model_kwargs = _without(inputs, _NOT_MODEL_INPUTS)
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:  # MoE: return the router's load-balancing loss
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        # Prompt-learning PEFT prepends virtual tokens to the outputs: keep the real positions.
        logps = outputs.log_probs[:, -(completion_mask.size(1) - 1) :].sum(dim=1)
        chosen_logps, rejected_logps = logps.chunk(2, dim=0)  # the batch is [chosen; rejected]
        ref_chosen_logps, ref_rejected_logps = self._reference_logps(inputs)
        chosen_logratios = chosen_logps - ref_chosen_logps
        rejected_logratios = rejected_logps - ref_rejected_logps
        p = inputs[P_CHOSEN].to(logps.dtype)
        loss = soft_dpo_loss(chosen_logratios - rejected_logratios, p, self.beta).mean()
        loss = loss * self.loss_weights[0]
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        self._log_metrics(mode, chosen_logratios, rejected_logratios, logps, p)
        if return_outputs:  # logits for compute_metrics (deprecated in TRL): one more forward
            with torch.no_grad():
                return loss, model(**model_kwargs)
        return loss

    def _reference_logps(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The reference log-probs of the chosen and rejected replies, wherever TRL keeps them."""
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        # The reference model, or (PEFT without one) the policy with its adapter switched off.
        reference = self.ref_model if self.ref_model is not None else self.model
        chosen, rejected = self.compute_ref_log_probs(reference, inputs)
        return chosen, rejected

    def _log_metrics(
        self,
        mode: str,
        chosen_logratios: torch.Tensor,
        rejected_logratios: torch.Tensor,
        logps: torch.Tensor,
        p: torch.Tensor,
    ) -> None:
        """Record the batch's rewards as TRL does, and its mean soft label."""
        chosen = self.beta * chosen_logratios.detach()
        rejected = self.beta * rejected_logratios.detach()
        chosen_logps, rejected_logps = logps.detach().chunk(2, dim=0)
        values = {
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "rewards/margins": chosen - rejected,
            "rewards/accuracies": (chosen > rejected).float(),
            "logps/chosen": chosen_logps,
            "logps/rejected": rejected_logps,
            P_CHOSEN: p,
        }
        for name, value in values.items():
            self._metrics[mode][name].append(self.accelerator.gather(value).mean().item())


def _without(inputs: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """A shallow copy of ``inputs`` without ``keys``."""
    return {key: value for key, value in inputs.items() if key not in keys}
