"""The ``charter`` command line.

Only click is imported at start-up: each command module here imports click alone, and each
command imports what it needs when it runs, so ``charter --help`` stays fast. Errors in the
user's input print one line and exit 2.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
from typing import Any

import click

from charter.cli import constitution, evaluate, infer, label, models, revise, run, serve, train


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
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads of the embedded llama.cpp engine  [default: every usable core]",
)
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=None,
    help="Retries of a failed request to a model server, with backoff (0: fail at once)  "
    "[default: 6, about half a minute]",
)
def cli(verbose: int, threads: int | None, retries: int | None) -> None:
    """Charter: Constitutional AI, end to end.

    Write a constitution, generate critique→revision data, label preferences with AI
    feedback, train, and evaluate before vs after.
    """
    if threads is not None:  # read by every local/ model this command loads (and Ray workers)
        os.environ["CHARTER_THREADS"] = str(threads)
    if retries is not None:  # read by every openai/ and local/ backend the command builds
        os.environ["CHARTER_RETRIES"] = str(retries)
    if verbose < 2:  # library chatter (weight loading, shard writing) only at -vv
        for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(variable, "1")  # read when transformers/datasets load
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


for command in (constitution.constitution, evaluate.evaluate, label.label, models.models,
                revise.revise, run.run_command, run.demo, run.export_data, run.report,
                serve.serve, train.train):  # fmt: skip
    cli.add_command(command)
constitution.constitution.add_command(infer.infer_command)
