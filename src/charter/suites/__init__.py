"""Evaluation suites by name: the one registry ``charter evaluate --suite`` and run configs read.

Each suite is one module exposing ``SUITE``, an object that follows
:class:`charter.suites.base.Suite`: the data it reads (with a bundled default), the judges
it needs, how it turns data into questions, how it scores one answer and which metrics it
reports. Listed here as lazy ``"module:attribute"`` strings, so naming a suite imports
nothing; :func:`register` adds one (a suite of your own, in one file).

``principles`` is not in the registry: it reads revise and label runs, not model answers
(:func:`charter.stages.evaluate.principles.principle_stats`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from charter.errors import CharterError

if TYPE_CHECKING:
    from charter.suites.base import Suite

SUITES: dict[str, str] = {
    "harmlessness": "charter.suites.harmlessness:SUITE",
    "over-refusal": "charter.suites.over_refusal:SUITE",
    "helpfulness": "charter.suites.helpfulness:SUITE",
    "honesty": "charter.suites.honesty:SUITE",
    "code": "charter.suites.code:SUITE",
    "constitution": "charter.suites.constitution:SUITE",
}
# Asked only when named (--suite, evaluate.suites): not in the default list, and their data
# (with its hash, which every evaluation's cache key covers) is read only then.
OPT_IN = ("constitution",)
RUN_SUITES = ("principles",)  # scored from the loop's own runs, not from answers


def names() -> tuple[str, ...]:
    """Every suite name ``--suite`` accepts: the registry's, then ``principles``."""
    return (*SUITES, *RUN_SUITES)


def check(chosen: tuple[str, ...] | list[str], where: str = "--suite") -> None:
    """Stop on a suite name that is not registered, listing the valid ones."""
    for name in chosen:
        if name not in SUITES and name not in RUN_SUITES:
            raise CharterError(f"{where} {name}: no such suite; valid: {', '.join(names())}")


def load(name: str) -> Suite:
    """The suite registered as ``name`` (imported now)."""
    check([name])
    module, _, attribute = SUITES[name].partition(":")
    suite: Suite = getattr(importlib.import_module(module), attribute)
    return suite


def register(name: str, target: str) -> None:
    """Register ``"module:attribute"`` as suite ``name`` (replacing one of that name)."""
    if ":" not in target:
        raise CharterError(f"suite {name}: {target!r} is not 'module:attribute'")
    SUITES[name] = target
