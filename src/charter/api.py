"""Charter's Python API: the loop's steps as functions, and one function for the whole loop.

``from charter import Constitution, revise, label, train, evaluate, run_loop`` gives the same
stages the ``charter`` command runs, with the same run directories: each function writes its
outputs under ``out`` (with a ``manifest.json``), resumes what is already there, and returns
a summary. Models are named as on the command line: ``local/smollm2-135m`` (the embedded
default), ``local/PATH.gguf``, ``hf/PATH``, ``openai/NAME`` with ``base_url``, or
``fake/echo`` (a deterministic stand-in, for trying things out and for tests).

A worked example: ``docs/python-api.md`` (run as a test).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from charter import DEFAULT_MODEL
from charter.errors import CharterError

if TYPE_CHECKING:
    from charter.stages.code_revise import CodeTrace, Feedback
    from charter.stages.evaluate.code import CodeTask
    from charter.stages.label_run import LabelSummary
    from charter.stages.revise_run import ReviseSummary

Prompts = str | Path | Sequence[str]


def revise(
    prompts: Prompts,
    *,
    out: str | Path,
    model: str = DEFAULT_MODEL,
    constitution: str = "default",
    critic: str | None = None,
    rounds: int = 2,
    max_tokens: int = 256,
    seed: int = 0,
    base_url: str | None = None,
    api_key: str | None = None,
) -> ReviseSummary:
    """SL-CAI: answer each prompt, then critique and revise the answer ``rounds`` times.

    Args:
        prompts: a prompt file (JSONL, CSV, hh-rlhf), a bundled set's name (``demo-redteam``),
            or the prompts themselves as a list of strings.
        out: the run directory; ``out/sft.jsonl`` is the SFT data, ``out/traces.jsonl``
            every step. Calling again with the same arguments resumes.
        model: the model that answers (and critiques, unless ``critic`` is given).
        constitution: a bundled constitution's name or a YAML file.
        critic: a second model that writes critiques and revisions (e.g. a stronger one).

    Returns:
        The run's counts: prompts, SFT rows, revisions accepted, tokens, time.
    """
    from charter.backends import GenerationConfig, load_backend
    from charter.constitution import Constitution, resolve
    from charter.prompts import PromptSet
    from charter.runner import run_one
    from charter.stages.revise import ReviseConfig
    from charter.stages.revise_run import VERSION, run_revise

    out = Path(out)
    answer = GenerationConfig(temperature=1.0, max_tokens=max_tokens)
    sampling = GenerationConfig(temperature=0.7, max_tokens=max_tokens)
    config = ReviseConfig(rounds=rounds, seed=seed, answer=answer, critique=sampling,
                          revision=sampling)  # fmt: skip
    policy = load_backend(model, base_url=base_url, api_key=api_key)
    second = load_backend(critic, base_url=base_url, api_key=api_key) if critic else None
    source = _prompt_file(prompts, out)
    rules = Constitution.load(constitution)
    try:
        return run_one(
            "revise", VERSION, [config, model, critic, rules.sha256, source], out,
            lambda: run_revise(
                PromptSet([source]), out=out, constitution=rules,
                constitution_text=resolve(constitution).read_text("utf-8"),
                backend=policy, config=config, critic=second, progress=False,
            ),
        )  # fmt: skip
    finally:
        policy.close()
        if second is not None:
            second.close()


def solve_code(
    tasks: str | Path | Sequence[CodeTask],
    *,
    model: str = DEFAULT_MODEL,
    rounds: int = 3,
    constitution: str = "code",
    max_tokens: int = 512,
    seed: int = 0,
    feedback: Feedback = "critique",
    samples: int = 1,
    base_url: str | None = None,
    api_key: str | None = None,
) -> list[CodeTrace]:
    """Constitutional revision at answer time, for code: answer each task, run the answer
    against the task's visible tests in the sandbox, and while they fail (at most ``rounds``
    times) critique it under a principle with the test result in view, then revise.

    Args:
        tasks: a HumanEval (JSONL[.gz]) or MBPP (JSONL/JSON) file, or loaded ``CodeTask``s.
            Visible tests: MBPP's first assert, HumanEval's docstring examples; the rest are
            never shown to the model.
        rounds: revisions at most; 0 answers only.
        feedback: what comes between a failed test and the revision: ``critique`` (the model
            critiques its code under a drawn principle, after the constitution's
            demonstrations), ``critique-plain`` (without them) or ``test`` (no critique: the
            revision is asked straight from the test result).
        samples: revisions drawn a round after the critique (critique and revisions at
            temperature 0.8 when above 1), the first that passes the visible tests kept;
            ``feedback="critique-plain", samples=4`` is the loop chosen on MBPP validation.

    Returns:
        One trace per task, in order: ``trace.kept.answer`` is the answer to use,
        ``trace.attempts`` every answer with its visible-test result, ``trace.usage`` tokens.
    """
    from charter.backends import GenerationConfig, load_backend
    from charter.constitution import Constitution
    from charter.stages.code_revise import revision_for, verify_revise
    from charter.stages.evaluate.code import load_code_tasks

    loaded = load_code_tasks(Path(tasks)) if isinstance(tasks, str | Path) else list(tasks)
    greedy = GenerationConfig(temperature=0.0, max_tokens=max_tokens)
    backend = load_backend(model, base_url=base_url, api_key=api_key)
    try:
        return verify_revise(backend, loaded, Constitution.load(constitution), rounds=rounds,
                             seed=seed, answer=greedy, feedback=feedback, samples=samples,
                             revision=revision_for(greedy, samples))  # fmt: skip
    finally:
        backend.close()


def label(
    source: str | Path,
    *,
    out: str | Path,
    labeller: str = DEFAULT_MODEL,
    constitution: str = "default",
    mode: Literal["soft", "cot"] = "soft",
    base_url: str | None = None,
    api_key: str | None = None,
) -> LabelSummary:
    """RL-CAI: the labeller says which answer of each pair follows the constitution better.

    Args:
        source: a revise run directory (its first answer against its final revision) or a
            pairs file (JSONL with ``prompt``/``chosen``/``rejected``, TRL or hh-rlhf).
        out: the run directory; ``out/prefs.jsonl`` holds the pairs with their soft label
            ``p_chosen``, ready for :func:`train` with ``kind="dpo"``.
        labeller: the feedback model (calibrate it first: ``charter label calibrate``).
        mode: ``soft`` reads the labeller's log-probabilities; ``cot`` lets it reason first.
    """
    from charter.backends import load_backend
    from charter.constitution import Constitution, resolve
    from charter.runner import run_one
    from charter.stages.label import LabelConfig
    from charter.stages.label_run import VERSION, FilePairs, RevisePairs, run_label

    path = Path(source)
    pairs = RevisePairs(path) if path.is_dir() else FilePairs(path, "error", None)
    judge = load_backend(labeller, base_url=base_url, api_key=api_key)
    rules, config = Constitution.load(constitution), LabelConfig(mode=mode)
    try:
        return run_one(
            "label", VERSION, [config, labeller, rules.sha256, str(path)], Path(out),
            lambda: run_label(
                pairs, out=Path(out), constitution=rules,
                constitution_text=resolve(constitution).read_text("utf-8"), labeller=judge,
                config=config, progress=False,
            ),
        )  # fmt: skip
    finally:
        judge.close()


def train(
    kind: Literal["sft", "dpo", "rm"],
    data: str | Path | Sequence[str | Path],
    *,
    out: str | Path,
    model: str = DEFAULT_MODEL,
    **settings: Any,
) -> dict[str, Any]:
    """Train ``model`` on a revise run (``sft``) or a label run (``dpo``, ``rm``).

    Needs the ``train`` extra (PyTorch, TRL, PEFT). ``settings`` are those of ``charter
    train`` (:class:`charter.stages.train.config.TrainConfig`): ``epochs``, ``max_steps``,
    ``learning_rate``, ``lora``, ``beta``, ``gguf`` (also write ``model.gguf`` for
    ``local/PATH.gguf``) … ``out/model`` is then a checkpoint for ``hf/PATH``.

    Returns:
        The run's figures (steps, final loss, time) as written to its manifest.
    """
    from pydantic import ValidationError

    from charter.extras import check
    from charter.stages.train.config import TrainConfig
    from charter.yamlfile import first_error

    check(["sft"])  # a missing extra says which install line fixes it
    from charter.stages.train.run import run as training

    paths = [data] if isinstance(data, str | Path) else list(data)
    try:
        config = TrainConfig(kind=kind, model=model, data=tuple(str(p) for p in paths),
                             **settings)  # fmt: skip
    except ValidationError as err:
        where, problem = first_error(err)
        raise CharterError(f"train: {'.'.join(map(str, where))}: {problem}") from None
    return training(config, Path(out))


def evaluate(
    models: str | Sequence[str],
    *,
    out: str | Path,
    suites: Sequence[str] = ("harmlessness", "over-refusal", "helpfulness"),
    data: dict[str, str | Path] | None = None,
    judge: str | None = None,
    constitution: str = "default",
    limit: int | None = None,
    max_tokens: int = 192,
    base_url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Ask every model the same questions and score them; the first model is the baseline.

    Args:
        models: one model, or several to compare (differences come with paired intervals).
        suites: evaluation suites by name (``charter evaluate --help`` lists them).
        data: a suite's data by key (``harm``, ``xstest``, ``ifeval`` …): a file or a bundled
            evaluation set; the bundled samples otherwise.
        judge: the model that judges harm (None: harmful means "did not refuse", read by
            the refusal classifier). Never the policy itself in a fair comparison.
        limit: ask at most this many questions per suite.

    Returns:
        ``results.json`` as a dict: per suite and model, each metric with its interval.
    """
    from charter.backends import GenerationConfig, backend_loader
    from charter.constitution import Constitution
    from charter.runner import run_one
    from charter.stages.evaluate.run import VERSION, EvaluateConfig, run_evaluate
    from charter.stages.evaluate.suites import data_files

    names = [models] if isinstance(models, str) else list(models)
    files = data_files(data, suites)
    greedy = GenerationConfig(temperature=0.0, max_tokens=max_tokens)
    config = EvaluateConfig(suites=tuple(suites), limit=limit, answer=greedy)
    rules = Constitution.load(constitution) if judge else None
    settings = [config, names, judge, rules and rules.sha256, {k: str(v) for k, v in files.items()}]
    return run_one(
        "evaluate", VERSION, settings, Path(out),
        lambda: run_evaluate(
            names, out=Path(out), config=config, data=files,
            backend=backend_loader(base_url, api_key, None), judge=judge, constitution=rules,
            progress=False,
        ),
    )  # fmt: skip


def run_loop(
    config: str | Path = "demo",
    *,
    out: str | Path | None = None,
    until: str | None = None,
    base_url: str | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """The whole loop from one run config, as ``charter run CONFIG``: every stage, cached.

    Args:
        config: a bundled config's name (``demo``, ``effect`` …) or a YAML file.
        out: the run root (default ``runs/NAME``); each stage writes ``out/STAGE-KEY`` and a
            rerun skips the stages that are complete.
        until: stop after this stage (``calibrate``, ``revise``, ``sft`` …).

    Returns:
        The plan as written to ``out/run.json``: each stage's key, folder, completeness and
        time. ``out/report.html`` is the report when the loop ran to the end.
    """
    from charter.backends import backend_loader
    from charter.pipeline import plan
    from charter.run_config import bundled_config, load_run_config
    from charter.runner import run_pipeline, select

    settings = load_run_config(bundled_config(str(config)))
    root = Path(out) if out is not None else Path("runs") / settings.name
    stages = plan(settings, root, backend_loader(base_url, api_key, None))
    return run_pipeline(stages, select(stages, until, None), root, echo=lambda line: None)


def _prompt_file(prompts: Prompts, out: Path) -> str:
    """A prompt source for :class:`charter.prompts.PromptSet`: as given, or written to ``out``."""
    if isinstance(prompts, str | Path):
        return str(prompts)
    texts = list(prompts)
    if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise CharterError("revise: prompts must be a file, a bundled set, or non-empty strings")
    from charter.runs import write_atomic

    out.mkdir(parents=True, exist_ok=True)
    path = out / "prompts.jsonl"
    rows = (json.dumps({"messages": [{"role": "user", "content": t}]}) for t in texts)
    write_atomic(path, "".join(row + "\n" for row in rows))
    return str(path)
