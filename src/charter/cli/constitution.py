"""`charter constitution lint|show|compile|diff` (``infer``: :mod:`charter.cli.infer`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from charter.cli.options import OutDir, OutFile, connection_options

if TYPE_CHECKING:
    from charter.spec import Spec
    from charter.stages.compile import CompileConfig


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


@constitution.command("compile")
@click.argument("spec_path", metavar="SPEC.md", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    type=OutFile(),
    default=None,
    help="The constitution YAML to write [default: SPEC.yaml beside SPEC.md].",
)
@click.option(
    "--model",
    default="local/qwen2.5-coder-1.5b-instruct",
    show_default=True,
    help="The teacher that reads the clauses.",
)
@connection_options
@click.option(
    "--checks",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Yes/no statements asked for per clause.",
)
@click.option(
    "--tests",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="Refuse and answer test prompts asked for per clause, each.",
)
@click.option("--max-tokens", type=click.IntRange(16, 2048), default=160, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--cache",
    "cache_dir",
    type=OutDir(),
    default=None,
    help="Where teacher replies are kept [default: ~/.cache/charter/compile].",
)
@click.option(
    "--screen/--no-screen",
    default=True,
    show_default=True,
    help="Keep only test prompts the teacher's own verdict agrees with (decline or answer).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="The verdict's cut for --screen [default: the cut that best separates the two kinds].",
)
@click.option("--dry-run", is_flag=True, help="Print every prompt it would send; call no model.")
def compile_command(
    spec_path: Path, output: Path | None, model: str, base_url: str | None, api_key: str | None,
    concurrency: int | None, checks: int, tests: int, max_tokens: int, seed: int,
    cache_dir: Path | None, screen: bool, threshold: float | None, dry_run: bool,
) -> None:  # fmt: skip
    """Compile a long-form constitution (Markdown or plain text) into principles, yes/no
    checks and test prompts, each linked to its clause; cached and deterministic."""
    from charter.errors import CharterError
    from charter.spec import read_spec
    from charter.stages.compile import CompileConfig, framing, requests

    if spec_path.suffix.lower() in (".yaml", ".yml"):
        raise CharterError(f"{spec_path}: a YAML file; compile reads a Markdown or plain-text "
                           "constitution (constitution lint checks a YAML one)")  # fmt: skip
    output = output or spec_path.with_suffix(".yaml")
    spec = read_spec(spec_path)
    config = CompileConfig(checks=checks, tests=tests, max_tokens=max_tokens, seed=seed,
                           screen=screen, threshold=threshold)  # fmt: skip
    asks = requests(spec, config)
    if dry_run:
        for clause, ask, conversation in asks:
            click.echo(f"--- {clause.id} ({spec_path}:{clause.line}) {ask}\n"
                       f"{conversation[-1].content}\n")  # fmt: skip
        framed = sum(1 for c in spec.clauses if framing(spec, c))
        click.echo(f"{len(spec.clauses)} clauses ({framed} framing the document, "
                   f"{len(spec.hard_constraints)} hard constraints, {len(spec.priorities)} "
                   f"priorities): {len(asks)} prompts to {model}")  # fmt: skip
        return
    _compile(spec, output, model, base_url, api_key,
             concurrency, config, cache_dir, len(asks))  # fmt: skip


def _compile(
    spec: Spec, output: Path, model: str, base_url: str | None, api_key: str | None,
    concurrency: int | None, config: CompileConfig, cache_dir: Path | None, n: int,
) -> None:  # fmt: skip
    import yaml

    from charter.backends import load_backend
    from charter.constitution import Constitution
    from charter.models import model_identity
    from charter.progress import progress_bar
    from charter.runs import JsonlAppender, write_atomic
    from charter.stages.compile import Reply, compile_spec

    cache, cached = reply_cache(cache_dir, "compile", output, Reply)
    backend = load_backend(model, base_url=base_url, api_key=api_key, concurrency=concurrency)
    bar = progress_bar(total=n, unit="prompt", desc="compile")
    try:
        with bar, JsonlAppender(cache) as sink:
            compiled = compile_spec(spec, backend, model_identity(model), config, cached,
                                    sink.write, progress=bar.update)  # fmt: skip
    finally:
        backend.close()
    Constitution.from_data(compiled.data, path=output)  # validated before anything is written
    text = yaml.safe_dump(compiled.data, sort_keys=False, allow_unicode=True, width=100)
    header = (f"# Compiled from {spec.path.name} by `charter constitution compile` with "
              f"{model} (seed {config.seed}).\n"
              "# Each principle's source names its clause; edit freely.\n")  # fmt: skip
    write_atomic(output, header + text)
    c = compiled.counts
    click.echo(f"compiled {c['principles']} principles ({len(spec.hard_constraints)} hard "
               f"constraints, {len(spec.priorities)} priorities), {c['checks']} checks, "
               f"{c['refuse prompts']} refuse + {c['answer prompts']} answer test prompts; "
               f"dropped {c['checks dropped']} checks, {c['rule fallback']} rules kept as the "
               f"clause's own words")  # fmt: skip
    auc = c["verdict AUC x1000 (refuse vs answer prompts)"] / 1000
    if c["screen skipped: verdict AUC below min_auc"]:
        click.echo(f"not screened: the teacher's verdict does not tell the refuse prompts from "
                   f"the answer prompts (AUC {auc:.3f} < {config.min_auc}); read the test "
                   "prompts before using them")  # fmt: skip
    elif config.screen:
        click.echo(f"screened by the teacher's verdict (AUC refuse vs answer prompts {auc:.3f}): "
                   f"dropped {c['refuse prompts the verdict disagrees with']} refuse and "
                   f"{c['answer prompts the verdict disagrees with']} answer prompts")  # fmt: skip
    click.echo(str(output))
    click.echo(f"next: charter constitution show {output}")


@constitution.command("diff")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@click.option(
    "--run",
    "run_root",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="A charter run root: count the rows of its data that drew a changed principle.",
)
@click.option("--teacher", is_flag=True, help="Name the stages as recipe: teacher reads them.")
def diff_command(old: str, new: str, run_root: Path | None, teacher: bool) -> None:
    """What changed between two constitutions (names or paths), and which stages and rows
    of a run the change invalidates."""
    from charter.constitution import Constitution
    from charter.constitution_diff import diff, run_rows
    from charter.errors import CharterError

    a, b = Constitution.load(old), Constitution.load(new)
    d = diff(a, b)
    click.echo(f"{a.name} {a.version} ({a.sha256[:12]}) → {b.name} {b.version} ({b.sha256[:12]})")
    for pid in d.added:
        click.echo(f"  + principle {pid}")
    for pid in d.removed:
        click.echo(f"  - principle {pid}")
    for pid, fields in d.changed.items():
        click.echo(f"  ~ principle {pid}: {', '.join(fields)}")
    for line in d.hard_added:
        click.echo(f"  + hard constraint: {line}")
    for line in d.hard_removed:
        click.echo(f"  - hard constraint: {line}")
    if d.spec_changed:
        click.echo("  ~ spec")
    if d.demonstrations_changed:
        click.echo("  ~ demonstrations")
    if not d.parts:
        click.echo("no change a stage reads: every stage of a run stays cached")
        return
    stages = d.stages(teacher)
    click.echo(f"changed parts: {', '.join(d.parts)}; stages that rerun (and those after them): "
               f"{', '.join(stages) or 'none'}")  # fmt: skip
    if run_root is not None:
        if not (run_root / "run.json").is_file():
            raise CharterError(f"--run {run_root}: no run.json; name the root of a charter run")
        for stage, name, hit, total in run_rows(run_root, d.principles):
            click.echo(f"  {stage}: {hit} of {total} rows of {name} drew a changed or removed "
                       "principle")  # fmt: skip


def reply_cache(cache_dir: Path | None, name: str, output: Path, record: Any) -> tuple[Path, Any]:
    """The model-reply cache of a command (``--cache``, default ~/.cache/charter/NAME) and
    what it holds; ``output``'s folder made, and refused if it is itself a folder."""
    from charter.errors import CharterError
    from charter.models import models_dir
    from charter.runs import read_stored

    cache = (cache_dir or models_dir().parent / name) / "replies.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_dir():  # e.g. the --cache folder just made
        raise CharterError(f"-o {output}: a folder; name the YAML file to write")
    return cache, {r.id: r for r in read_stored(cache, record)}
