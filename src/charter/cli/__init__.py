"""The ``charter`` command line.

Only click is imported at start-up: each command module here imports click alone, and each
command imports what it needs when it runs, so ``charter --help`` stays fast. Errors in the
user's input print one line and exit 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from charter import DEFAULT_MODEL

F = TypeVar("F", bound=Callable[..., Any])


MODEL_HELP = "provider/model: local/smollm2-135m, local/PATH.gguf, openai/NAME, hf/PATH, fake/echo."


def model_options(function: F) -> F:
    """``--model`` and the options that reach it, for commands that call one model."""
    return click.option("--model", default=DEFAULT_MODEL, show_default=True, help=MODEL_HELP)(
        connection_options(function)
    )


def connection_options(function: F) -> F:
    """The options that reach a model server, shared by every command that calls models."""
    options = [
        click.option("--base-url", default=None,
                     help="OpenAI-compatible server for openai/… [env: OPENAI_BASE_URL]."),
        click.option("--api-key", default=None,
                     help="API key for openai/… [env: OPENAI_API_KEY]; never logged or saved."),
        click.option("--concurrency", type=click.IntRange(min=1), default=None,
                     help="Requests in flight (server slots for local/…).  "
                          "[default: 8; local: 1 below 8 cores, else 4]"),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def backend_loader(
    base_url: str | None, api_key: str | None, concurrency: int | None
) -> Callable[[str], Any]:
    """``name -> Backend`` for commands that call several models: the connection options
    reach the ``openai/…`` ones (``--base-url`` would be an error for the others)."""
    from charter.backends import load_backend

    def load(name: str) -> Any:
        remote = name.startswith("openai/")
        return load_backend(
            name, base_url=base_url if remote else None, api_key=api_key if remote else None,
            concurrency=concurrency,
        )  # fmt: skip

    return load


def prompt_options(*, required: bool, prompts_help: str) -> Callable[[F], F]:
    """Where prompts come from and how rows are read: shared by revise and label."""
    options = [
        click.option("--prompts", "prompt_sources", multiple=True, required=required,
                     help=prompts_help),
        click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv", "hh"]),
                     default="auto", show_default=True, help="Prompt file format."),
        click.option("--prompt-column", default=None,
                     help="CSV column holding the prompt [default: prompt]."),
        click.option("--on-bad-row", type=click.Choice(["error", "skip"]), default="error",
                     show_default=True, help="Stop at a bad input row, or skip and count it."),
        click.option("--limit", type=click.IntRange(min=1), default=None,
                     help="Use only the first N inputs."),
    ]  # fmt: skip
    return _apply(options)


def run_options(dry_run_help: str) -> Callable[[F], F]:
    """``--out`` and ``--dry-run``, for every stage that writes a run directory."""
    return _apply([
        click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Run directory (rerun the same command to resume)."),
        click.option("--dry-run", is_flag=True, help=dry_run_help),
    ])  # fmt: skip


def _apply(options: list[Callable[[F], F]]) -> Callable[[F], F]:
    def decorate(function: F) -> F:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


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


def main() -> None:
    cli(prog_name="charter")


# The commands register themselves on `cli`; imported last, as they import `cli`.
from charter.cli import constitution, evaluate, label, models, revise, run, train  # noqa: E402, F401
