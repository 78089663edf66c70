"""Charter: Constitutional AI, end to end.

The Python API (``docs/python-api.md``)::

    from charter import Constitution, revise, label, train, evaluate, run_loop

``revise`` (SL-CAI), ``label`` (RL-CAI feedback), ``train`` (SFT, DPO, reward model) and
``evaluate`` are the loop's steps, ``run_loop`` the whole loop from one config; they live in
:mod:`charter.api`, the stages they run in :mod:`charter.stages`. Every name here is imported
on first use, so ``import charter`` (and ``charter --help``) loads no heavy library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The embedded default: SmolLM2-135M-Instruct served by llama.cpp (see backends/local.py).
DEFAULT_MODEL = "local/smollm2-135m"

__all__ = [
    "DEFAULT_MODEL",
    "Constitution",
    "evaluate",
    "label",
    "revise",
    "run_loop",
    "solve_code",
    "train",
]

_LAZY = {
    "Constitution": "charter.constitution",
    "revise": "charter.api",
    "label": "charter.api",
    "train": "charter.api",
    "evaluate": "charter.api",
    "run_loop": "charter.api",
    "solve_code": "charter.api",
}

if TYPE_CHECKING:
    from charter.api import evaluate, label, revise, run_loop, solve_code, train
    from charter.constitution import Constitution


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'charter' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
