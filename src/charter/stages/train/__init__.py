"""Training on Charter's records: soft-label DPO and a soft Bradley–Terry reward model.

Only the ``train`` command imports this subpackage: its modules import torch and TRL at
module level, so ``import charter`` and ``charter --help`` never pay for them.
"""
