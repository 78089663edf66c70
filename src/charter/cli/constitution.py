"""`charter constitution lint|show`."""

from __future__ import annotations

import click


@click.group()
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
        for check in p.checks:
            click.echo(f"  check (yes/no): {check}")
    click.echo(
        f"\n{len(c.demonstrations)} demonstrations: "
        + ", ".join(f"{d.id} ({d.principle})" for d in c.demonstrations)
    )
