"""The ``charter`` command line.

Only click is imported at start-up: each command module here imports click alone, and each
command imports what it needs when it runs, so ``charter --help`` stays fast. Errors in the
user's input print one line and exit 2.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from charter import DEFAULT_MODEL

if TYPE_CHECKING:
    from charter.ray_exec import RayExecutor

F = TypeVar("F", bound=Callable[..., Any])


MODEL_HELP = "provider/model: local/smollm2-135m, local/PATH.gguf, openai/NAME, hf/PATH, fake/echo."
# GenerationConfig.max_tokens's bound, repeated here so start-up imports click alone (a test
# checks they agree): a larger --max-tokens stops in click, not in a pydantic traceback.
MAX_TOKENS = 1_000_000


class Number(click.FloatRange):
    """A float option that is a finite number: click's FloatRange lets ``nan`` through its
    bounds (every comparison with nan is false), and a nan temperature reached pydantic."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


class OutDir(click.Path):
    """A directory to write a run into, checked before anything runs: not "" (that would
    write into the current directory), not a file or under one, and writable."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path would write into the current directory; name a "
                      "directory, e.g. runs/NAME", param, ctx)  # fmt: skip
        path = Path(os.fsdecode(super().convert(value, param, ctx)))  # refuses an existing file
        existing = path.absolute()
        while not os.path.lexists(existing) and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            self.fail(f"{existing} is a file, so {path} cannot be a directory; choose "
                      "another path", param, ctx)  # fmt: skip
        if not os.access(existing, os.W_OK | os.X_OK):
            self.fail(f"{existing} is not writable by this user; choose a directory you can "
                      "write to", param, ctx)  # fmt: skip
        return path


def given(ctx: click.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that the user set, as ``--flag``s."""
    from click.core import ParameterSource

    set_by_user = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    flags = {p.name: p.opts[0] for p in ctx.command.params}
    return [flags[n] for n in names if ctx.get_parameter_source(n) in set_by_user]


def refuse_unused(ctx: click.Context, names: tuple[str, ...], where: str,
                  instead: str = "") -> None:  # fmt: skip
    """One line when options that would be ignored were given:
    ``--x applies WHERE; INSTEAD, or leave it out``."""
    from charter.errors import CharterError

    unused = given(ctx, *names)
    if unused:
        one = len(unused) == 1
        leave = f"leave {'it' if one else 'them'} out"
        raise CharterError(f"{', '.join(unused)} {'applies' if one else 'apply'} {where}; "
                           f"{f'{instead}, or {leave}' if instead else leave}")  # fmt: skip


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


def executor_options(function: F) -> F:
    """Where the model calls run: in this process, or sharded over Ray workers."""
    return _apply([
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True,
                     help="local: this process; ray: Ray Data workers, one backend each "
                          "(pip install 'charter[ray]')."),
        click.option("--ray-address", default=None,
                     help="Ray cluster to join: auto or HOST:PORT [default: start one in this "
                          "process]."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Ray workers, each with its own backend and an equal share of the "
                          "CPUs.  [default: 1]"),
    ])(function)  # fmt: skip


def make_executor(
    executor: str, ray_address: str | None, workers: int | None, *, base_url: str | None,
    api_key: str | None, concurrency: int | None,
) -> RayExecutor | None:  # fmt: skip
    """The :class:`~charter.ray_exec.RayExecutor` the options ask for, or None (local)."""
    from charter.errors import CharterError

    if executor == "local":
        if ray_address is not None or workers is not None:
            raise CharterError("--ray-address and --workers apply to --executor ray")
        return None
    from charter import ray_exec

    ray_exec.import_ray()  # a missing extra fails here, before any work
    return ray_exec.RayExecutor(
        address=ray_address, workers=workers or 1, base_url=base_url, api_key=api_key,
        concurrency=concurrency,
    )  # fmt: skip


def run_options(dry_run_help: str) -> Callable[[F], F]:
    """``--out`` and ``--dry-run``, for every stage that writes a run directory."""
    return _apply([
        click.option("--out", type=OutDir(), default=None,
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

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # A file name in another encoding arrives as lone surrogates (PEP 383), which no
        # UTF-8 manifest, log or record can hold: refused here, before any command runs. So is
        # a NUL, which no path can hold (os calls raise ValueError); a shell cannot pass one,
        # but a caller of main() or cli() can (and may pass paths, not strings).
        args = [os.fspath(a) if isinstance(a, os.PathLike) else a for a in args]
        for i, arg in enumerate(args):
            option = f"{args[i - 1]} " if i and args[i - 1].startswith("-") else ""
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                click.echo(f"Error: {option}{_escaped(arg)}: not UTF-8 (a name in another "
                           "encoding); rename it to UTF-8 and rerun", err=True)  # fmt: skip
                ctx.exit(2)
            if "\0" in arg:
                click.echo(f"Error: {option}{arg!r}: contains a NUL character", err=True)
                ctx.exit(2)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        from charter.errors import CharterError  # light: no third-party imports

        try:
            return super().invoke(ctx)
        except CharterError as err:
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)
        except OSError as err:
            # A full disk is not a bug: one line, and the run (its manifest marked
            # interrupted by the stage) resumes when rerun. Exit 1: not the input's fault.
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            reason = (err.strerror or os.strerror(err.errno)).lower()  # no space left on device
            where = f" writing {err.filename}" if err.filename else ""
            click.echo(f"Error: {reason}{where}; free some space, then rerun the same command "
                       "to resume", err=True)  # fmt: skip
            ctx.exit(1)


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


def _escaped(arg: str) -> str:
    """An argument with its undecodable bytes shown as ``\\xff``."""
    try:
        return arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from bytes
        return arg.encode("utf-8", "backslashreplace").decode("utf-8")


def main() -> None:
    cli(prog_name="charter")


# The commands register themselves on `cli`; imported last, as they import `cli`.
from charter.cli import constitution, evaluate, label, models, revise, run, train  # noqa: E402, F401
