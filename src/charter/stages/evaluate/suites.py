"""The evaluation's questions, across the chosen suites (each suite: :mod:`charter.suites`).

| suite          | data key: default (bundled)            | also reads                            |
|----------------|----------------------------------------|---------------------------------------|
| harmlessness   | ``harmlessness``: ``redteam``          | any prompt file; HarmBench, AdvBench  |
|                | ``jailbreaks`` (optional templates)    | JSONL ``template`` rows, JSON array   |
| over-refusal   | ``over-refusal``: ``overrefusal``      | XSTest CSV (``safe`` rows only)       |
| helpfulness    | ``helpful``: ``helpful``               | any prompt file                       |
|                | ``ifeval``: ``ifeval``                 | IFEval ``input_data.jsonl``           |
| honesty        | ``honesty``: ``truthful``              | TruthfulQA CSV                        |
| code           | ``code``: ``code``                     | HumanEval JSONL(.gz), MBPP JSONL/JSON |
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from charter import suites as registry
from charter.iterate import first_seen
from charter.suites.base import Question, prompt_texts, resolve_data

if TYPE_CHECKING:
    from charter.stages.evaluate.run import EvaluateConfig

__all__ = ["MODEL_SUITES", "Question", "data_files", "data_keys", "default_data", "prompt_texts",
           "questions", "resolve_data"]  # fmt: skip

# The built-in suites asked by default, in their order (registry.OPT_IN ones only by name).
MODEL_SUITES = tuple(name for name in registry.SUITES if name not in registry.OPT_IN)


def default_data(chosen: Sequence[str] = ()) -> dict[str, str]:
    """Each data key of the default suites and of the opt-in ones ``chosen`` names, with its
    bundled default."""
    found: dict[str, str] = {}
    for name in (*MODEL_SUITES, *(n for n in registry.OPT_IN if n in chosen)):
        found.update(registry.load(name).data)
    return found


def data_files(
    given: Mapping[str, str | Path] | None = None, chosen: Sequence[str] = ()
) -> dict[str, Path]:
    """Every suite's data file: ``given`` (a file or bundled set, by key) over the defaults
    (opt-in suites' only when ``chosen`` names them)."""
    return {
        key: resolve_data(str(source))
        for key, source in {**default_data(chosen), **(given or {})}.items()
    }


def data_keys() -> tuple[str, ...]:
    """Every data key a suite reads (``--data KEY=PATH``), optional ones included."""
    keys = dict.fromkeys(default_data(registry.OPT_IN))
    for name in registry.SUITES:
        keys.update(dict.fromkeys(registry.load(name).optional_data))
    return tuple(keys)


def questions(
    chosen: tuple[str, ...], data: dict[str, Path], config: EvaluateConfig
) -> list[Question]:
    """Every question of the chosen suites, read (and checked) before any model call."""
    asked: list[Question] = []
    for name in chosen:
        if name in registry.SUITES:
            asked += registry.load(name).questions(data, config)
    return list(first_seen(asked, set(), key=lambda q: q.id))  # a prompt twice is one item
