"""The loop's stages, one module each (README, "Layout"), and what every stage is.

A stage is an object that follows :class:`Stage`: its ``name``, the stages whose folders it
reads (``needs``), everything that decides what it writes (``settings``: typed configs, model
identities, prompt-template digests; ``inputs``: digests of the files it reads), the
``version`` of its output format, a rough ``estimate`` of its work, and ``run(out, folders)``,
which fills the folder ``out`` from the folders of its needs. It does nothing else:
:func:`charter.runner.plan` names its folder by a content key over all of the above and its
needs' keys, and :func:`charter.runner.run_pipeline` locks the run root, records when it
started and finished (so a killed run resumes), times it and shows one line for it.
:class:`Step` is the plain implementation :func:`charter.pipeline.plan` builds its stages from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


def family(name: str) -> str:
    """A stage's name without its round number: ``rl-dpo-2`` → ``rl-dpo``; ``sft`` → ``sft``."""
    return name.rstrip("0123456789").rstrip("-")


def constitution_parts(stage: str, teacher: bool) -> tuple[str, ...]:
    """The parts of the constitution (:data:`charter.constitution.PARTS`) a stage's prompts
    carry, so its key covers those and not the rest: a one-principle edit reruns only the
    stages that read what changed (and what depends on them). ``teacher``: recipe teacher,
    whose calibrate and label stages read the guided judge's parts."""
    guided = ("critique", "demonstrations", "brief")  # revise, verify, the teacher's verdicts
    reads = {
        "calibrate": guided if teacher else ("comparison", "demonstrations", "brief"),
        "label": guided if teacher else ("comparison", "demonstrations", "brief"),
        "baseline": ("brief",), "evaluate": ("brief",),  # the LLM judge's system message
        "revise": guided, "verify": guided, "rl-heldout": guided, "rl-prompts": guided,
    }  # fmt: skip
    return reads.get(family(stage), ())


class Stage(Protocol):
    """One step of the loop, as the runner sees it (module docstring)."""

    name: str
    version: int
    needs: tuple[str, ...]
    settings: Any
    inputs: Any
    estimate: Mapping[str, float]  # calls, tokens, seconds: rough upper bounds

    def run(self, out: Path, folders: Mapping[str, Path]) -> None:
        """Fill ``out``; ``folders`` holds the folder of every stage in ``needs``."""
        ...

    def check(self, out: Path) -> None:
        """After the stage is complete (ran or cached): stop the run if it must (a gate)."""
        ...


@dataclass
class Step:
    """A :class:`Stage` from its parts: ``action(out, folders)`` runs it, ``gate`` checks it."""

    name: str
    version: int
    needs: tuple[str, ...]
    settings: Any
    inputs: Any
    estimate: Mapping[str, float]
    action: Callable[[Path, Mapping[str, Path]], None] = field(repr=False)
    gate: Callable[[Path], None] | None = field(default=None, repr=False)

    def run(self, out: Path, folders: Mapping[str, Path]) -> None:
        self.action(out, folders)

    def check(self, out: Path) -> None:
        if self.gate is not None:
            self.gate(out)
