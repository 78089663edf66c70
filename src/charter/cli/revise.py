"""`charter revise`: SL-CAI from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from charter.cli.options import (
    MAX_TOKENS,
    Number,
    executor_options,
    make_executor,
    model_options,
    prompt_options,
    refuse_unused,
    run_options,
)

if TYPE_CHECKING:
    from charter.prompts import Format, OnBadRow
    from charter.stages.code_revise import Feedback


@click.command()
@model_options
@click.option("--critic", default=None,
              help="Model for the critiques and revisions (default: --model).")  # fmt: skip
@click.option(
    "--constitution",
    "constitution_source",
    default="default",
    show_default=True,
    help="Bundled constitution name or YAML path.",
)
@prompt_options(
    required=True,
    prompts_help="Prompt file (JSONL, CSV, hh-rlhf JSONL[.gz]) or bundled set name; repeatable.",
)
@click.option(
    "--rounds",
    type=click.IntRange(0, 64),
    default=4,
    show_default=True,
    help="Critique→revision rounds per prompt (0: answers only, e.g. helpful samples to mix "
    "into SFT).",
)
@click.option(
    "--train-on",
    type=click.Choice(["final", "all"]),
    default="final",
    show_default=True,
    help="SFT rows from the final revision, or from every revision.",
)
@click.option(
    "--skip-unneeded", is_flag=True, help="Skip the revision when the critique finds nothing."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--temperature",
    type=Number(0, 5),
    default=1.0,
    show_default=True,
    help="Temperature of the initial answer.",
)
@click.option(
    "--revision-temperature",
    type=Number(0, 5),
    default=0.7,
    show_default=True,
    help="Temperature of critiques and revisions.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, MAX_TOKENS),
    default=256,
    show_default=True,
    help="Token limit of each answer, critique and revision.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Prompts in flight at once.",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Code tasks (HumanEval/MBPP file as --prompts): run each answer against the task's "
    "visible tests in a sandbox, critique with the result, keep only revisions that pass "
    "(constitution: code).",
)
@click.option(
    "--feedback",
    type=click.Choice(["critique", "critique-plain", "test"]),
    default="critique",
    show_default=True,
    help="--verify: what comes between a failed test and the revision (critique-plain: "
    "without the constitution's demonstrations; test: the test result alone).",
)
@click.option(
    "--samples",
    type=click.IntRange(1, 16),
    default=1,
    show_default=True,
    help="--verify: revisions drawn a round after the critique, the first that passes kept "
    "(more than one: --revision-temperature defaults to 0.8).",
)
@executor_options
@run_options("Print every prompt that would be sent; call no model.")
def revise(model: str, base_url: str | None, api_key: str | None, concurrency: int | None,
           critic: str | None, constitution_source: str, prompt_sources: tuple[str, ...],
           fmt: Format, prompt_column: str | None, on_bad_row: OnBadRow, limit: int | None,
           rounds: int,
           train_on: Literal["final", "all"], skip_unneeded: bool, seed: int, temperature: float,
           revision_temperature: float, max_tokens: int, batch_size: int, verify: bool,
           feedback: Feedback, samples: int, executor: str,
           ray_address: str | None, workers: int | None, out: Path | None,
           dry_run: bool) -> None:  # fmt: skip
    """SL-CAI: critique and revise answers against the constitution; write SFT data."""
    from charter.backends import GenerationConfig, backend_loader, load_backend
    from charter.constitution import Constitution, resolve
    from charter.errors import CharterError
    from charter.prompts import PromptSet
    from charter.runner import run_one
    from charter.stages import revise_run
    from charter.stages.revise import ReviseConfig

    if verify:
        _verify(model, base_url, api_key, concurrency, constitution_source, prompt_sources,
                limit, rounds, seed, temperature, revision_temperature, max_tokens, batch_size,
                feedback, samples, out, dry_run)  # fmt: skip
        return
    refuse_unused(click.get_current_context(), ("feedback", "samples"), "to --verify")
    if rounds == 0:
        refuse_unused(click.get_current_context(),
                      ("critic", "skip_unneeded", "revision_temperature", "train_on"),
                      "to critique→revision rounds, and --rounds 0 has none")  # fmt: skip
    c = Constitution.load(constitution_source)
    config = ReviseConfig(
        rounds=rounds,
        train_on=train_on,
        skip_unneeded=skip_unneeded,
        seed=seed,
        answer=GenerationConfig(temperature=temperature, max_tokens=max_tokens),
        critique=GenerationConfig(temperature=revision_temperature, max_tokens=max_tokens),
        revision=GenerationConfig(temperature=revision_temperature, max_tokens=max_tokens),
        batch_size=batch_size,
    )
    prompts = PromptSet(
        list(prompt_sources),
        fmt=fmt,
        prompt_column=prompt_column,
        on_bad_row=on_bad_row,
        limit=limit,
    )
    if dry_run:
        for _ in prompts():  # every file read first: a bad or empty one stops before any output
            pass
        for block in revise_run.dry_run(prompts(), constitution=c, config=config):
            click.echo(block + "\n")
        return
    if out is None:
        raise CharterError("--out DIR is required (the run directory; rerun to resume)")
    ray = make_executor(executor, ray_address, workers, base_url=base_url, api_key=api_key,
                        concurrency=concurrency)  # fmt: skip
    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    reviser = None
    try:
        if critic is not None and critic != model:
            reviser = backend_loader(base_url, api_key, concurrency)(critic)
        settings = [config, model, critic, c.sha256, list(prompt_sources), fmt, limit]
        summary = run_one(
            "revise", revise_run.VERSION, settings, out,
            lambda: revise_run.run_revise(
                prompts, out=out, constitution=c, backend=backend, config=config,
                constitution_text=resolve(constitution_source).read_text("utf-8"),
                critic=reviser,
            ),
            executor=ray,
        )  # fmt: skip
    finally:
        if ray is not None:
            ray.close()
        backend.close()
        if reviser is not None:
            reviser.close()
    u = summary.usage
    click.echo(
        f"revise: {summary.traces} prompts ({summary.resumed} resumed, {summary.duplicates} "
        f"duplicates dropped, {summary.bad_rows} bad rows skipped), {summary.sft_rows} SFT rows; "
        f"revisions {summary.revised} accepted, {summary.no_change} no-change kept out, "
        f"{summary.skipped} skipped; tokens {u.prompt_tokens} prompt ({u.cached_tokens} cached) "
        f"+ {u.completion_tokens} generated; {summary.wall_time_s:.1f}s\n{out / 'sft.jsonl'}"
    )
    click.echo(f"next: charter train sft --data {out} --out RUN  (or charter label "
               f"--from-revise {out} --out RUN for preference pairs)")  # fmt: skip


def _verify(model: str, base_url: str | None, api_key: str | None, concurrency: int | None,
            constitution_source: str, prompt_sources: tuple[str, ...], limit: int | None,
            rounds: int, seed: int, temperature: float, revision_temperature: float,
            max_tokens: int, batch_size: int, feedback: Feedback, samples: int,
            out: Path | None, dry_run: bool) -> None:  # fmt: skip
    """``revise --verify``: critique → revision of code, grounded in its visible tests."""
    from charter.backends import GenerationConfig, load_backend
    from charter.constitution import Constitution, resolve
    from charter.errors import CharterError
    from charter.stages.code_revise_run import VerifyConfig, run_verify
    from charter.stages.evaluate.code import load_code_tasks

    ctx = click.get_current_context()
    refuse_unused(ctx, ("critic", "train_on", "skip_unneeded", "fmt", "prompt_column",
                        "on_bad_row", "executor", "ray_address", "workers"),
                  "to prose prompts, not to --verify")  # fmt: skip
    if len(prompt_sources) != 1:
        raise CharterError("--verify reads one code task file: give --prompts once "
                           "(HumanEval JSONL[.gz] or MBPP JSONL/JSON)")  # fmt: skip
    source = Path(prompt_sources[0])
    if not source.is_file():
        raise CharterError(f"--prompts {source}: no such code task file")
    tasks = load_code_tasks(source)[:limit]
    # Defaults for code: the code constitution, greedy answers and revisions (pass@1).
    unset = click.core.ParameterSource.DEFAULT
    if ctx.get_parameter_source("constitution_source") is unset:
        constitution_source = "code"
    if ctx.get_parameter_source("temperature") is unset:
        temperature = 0.0
    if ctx.get_parameter_source("revision_temperature") is unset:
        from charter.stages.code_revise import SAMPLED_TEMPERATURE

        revision_temperature = SAMPLED_TEMPERATURE if samples > 1 else 0.0
    if samples > 1 and revision_temperature <= 0:
        raise CharterError(f"--samples {samples} draws revisions at --revision-temperature "
                           f"{revision_temperature:g}, all the same: give one above 0")  # fmt: skip
    c = Constitution.load(constitution_source)
    if dry_run:
        from charter.stages.code_revise import dry_run as loop_prompts

        if tasks:
            click.echo(loop_prompts(tasks[:3], c, feedback=feedback, seed=seed))
        return
    if out is None:
        raise CharterError("--out DIR is required (the run directory; rerun to resume)")
    config = VerifyConfig(
        rounds=rounds, seed=seed, batch_size=batch_size, feedback=feedback, samples=samples,
        answer=GenerationConfig(temperature=temperature, max_tokens=max_tokens),
        revision=GenerationConfig(temperature=revision_temperature, max_tokens=max_tokens),
    )  # fmt: skip
    from charter.runner import run_one
    from charter.stages import code_revise_run

    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    try:
        settings = [config, model, c.sha256, str(source), limit]
        summary = run_one(
            "revise-verify", code_revise_run.VERSION, settings, out,
            lambda: run_verify(tasks, source=source, out=out, constitution=c, backend=backend,
                               config=config,
                               constitution_text=resolve(constitution_source).read_text("utf-8")),
        )  # fmt: skip
    finally:
        backend.close()
    counts, u = summary.counts(), summary.usage
    click.echo(
        f"revise --verify: {summary.tasks} tasks ({summary.resumed} resumed): "
        f"{counts['passed_initially']} passed their visible tests at once, "
        f"{counts['verified_revisions']} after revision, {summary.still_failing} still failing; "
        f"of those passing, {counts.get('all_tests_passing_answers', 0)} pass all their task's "
        f"tests ({counts.get('all_tests_verified_revisions', 0)} of the revisions); "
        f"{summary.sft_rows} verified SFT rows ({summary.passing_rows} passing answers in "
        f"{out / 'passing.jsonl'}); tokens {u.prompt_tokens} prompt + "
        f"{u.completion_tokens} generated; {summary.wall_time_s:.1f}s\n{out / 'sft.jsonl'}"
    )
    click.echo(f"next: charter train sft --data {out} --out RUN")
