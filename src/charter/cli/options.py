"""What the ``charter`` commands share: option groups, value types and small checks.

Imported by every command module (and by nothing heavy): click and the standard library only.
"""

from __future__ import annotations

import math
import os
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


class OutFile(click.Path):
    """A file to write, checked before anything runs: not "", not a directory, its folder
    not a file, and writable (missing folders are made when it is written)."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path names no file; name the file to write", param, ctx)
        path = Path(os.fsdecode(super().convert(value, param, ctx)))  # refuses a directory
        OutDir().convert(str(path.parent), param, ctx)
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
