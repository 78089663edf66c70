"""`charter run`, `charter demo` and `charter report`: the whole loop and its report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from charter.cli.options import OutDir, connection_options, executor_options, make_executor

if TYPE_CHECKING:
    from charter.run_config import RunConfig

TEACHER = "qwen2.5-coder-1.5b-instruct"  # charter demo uses it when installed
ExecutorOptions = tuple[str, str | None, int | None]  # --executor, --ray-address, --workers
RAY_STAGES = {"revise", "label"}  # the policy-critic recipe's stages: their calls shard over Ray
STAGE_HELP = "calibrate, export, baseline, revise, sft, label, dpo, evaluate, report, rl-dpo-R, …"


def _loop(config_path: Path | RunConfig, out: Path | None, until: str | None,
          only: str | None, dry_run: bool, base_url: str | None, api_key: str | None,
          concurrency: int | None,
          executor: ExecutorOptions = ("local", None, None)) -> None:  # fmt: skip
    from charter import extras, pipeline, runner
    from charter.backends import backend_loader
    from charter.errors import CharterError
    from charter.run_config import RunConfig, load_run_config

    if until is not None and only is not None:
        raise CharterError(f"--until {until} and --only {only} contradict each other: "
                           "--until runs every stage up to one, --only runs one; give one "
                           "of them")  # fmt: skip
    config = config_path if isinstance(config_path, RunConfig) else load_run_config(config_path)
    root = out or Path("runs") / config.name
    stages = pipeline.plan(config, root, backend_loader(base_url, api_key, concurrency))
    chosen = runner.select(stages, until, only)
    if not dry_run:  # a missing extra stops the run now, not at its stage minutes later
        extras.check([s.name for s in chosen if not s.complete], recipe=config.recipe)
    click.echo(f"charter run '{config.name}' in {root}\n{runner.describe(stages, chosen)}")
    if dry_run:
        if config.recipe == "teacher" and config.prompts.redteam:
            from charter.constitution import Constitution
            from charter.splits import source_prompts
            from charter.stages.guided import dry_run as teacher_prompts

            first = source_prompts(config.prompts.redteam[0])[0].messages[-1].content
            rendered = teacher_prompts(Constitution.load(config.constitution), first,
                                       config.label.hard)  # fmt: skip
            click.echo(f"\nthe teacher's prompts for the first red-team prompt:\n\n{rendered}")
        if config.recipe == "code":
            click.echo(f"\nthe loop's prompts for the first task of code.tasks:\n\n"
                       f"{_code_prompts(config)}")  # fmt: skip
        return
    ray = make_executor(*executor, base_url=base_url, api_key=api_key, concurrency=concurrency)
    if ray is not None:
        local = sorted({s.name for s in chosen if not s.complete} - RAY_STAGES)
        click.echo(f"--executor ray: {', '.join(sorted(RAY_STAGES))} on {ray.workers} Ray "
                   f"worker(s); {', '.join(local) or 'nothing else'} in this process")  # fmt: skip
    began = time.monotonic()
    try:
        ran = runner.run_pipeline(stages, chosen, root, echo=click.echo, executor=ray)
    finally:
        if ray is not None:
            ray.close()
    click.echo(f"\nall stages done in {time.monotonic() - began:.0f}s")
    click.echo(runner.summary(chosen, ran))
    rounds = [s.path for s in chosen if s.name.startswith("rl-reward-")]
    if rounds:
        from charter.stages.rl_reward import format_rounds

        click.echo("\n" + format_rounds(rounds))
    results = next(s.path for s in stages if s.name == "evaluate") / "results.json"
    if results.is_file() and any(s.name == "evaluate" for s in chosen):
        from charter.stages.evaluate.tables import format_results

        click.echo("\n" + format_results(json.loads(results.read_text("utf-8"))))
    from charter.report import REPORT

    report = root / REPORT
    if report.is_file() and any(s.name == "report" for s in chosen):
        click.echo(f"\nreport: {report}")
        click.echo(f"next: open the report in a browser; charter export {root} --format hf "
                   "--out DIR writes the training data for other tools")  # fmt: skip


def loop_options(function: click.decorators.FC) -> click.decorators.FC:
    for option in reversed([
        click.option("--out", type=OutDir(), default=None,
                     help="Run directory [default: runs/NAME]; rerun to resume."),
        click.option("--until", metavar="STAGE", default=None,
                     help=f"Stop after this stage of the plan ({STAGE_HELP})."),
        click.option("--only", metavar="STAGE", default=None,
                     help="Run this stage only (its inputs must be done)."),
        click.option("--dry-run", is_flag=True,
                     help="Show the plan and the estimate of time and tokens; run nothing."),
    ]):  # fmt: skip
        function = option(function)
    return connection_options(function)


@click.command(name="run")
@click.argument("config_name", metavar="CONFIG.yaml|NAME")
@loop_options
@executor_options
def run_command(config_name: str, out: Path | None, until: str | None, only: str | None,
                dry_run: bool, base_url: str | None, api_key: str | None,
                concurrency: int | None, executor: str, ray_address: str | None,
                workers: int | None) -> None:  # fmt: skip
    """The whole Constitutional AI loop from one config file (cached, resumable).

    NAME is a bundled config: demo, or effect (the teacher recipe on SmolLM2-135M, measured
    on public evaluation sets read from ../shared/data; see docs/results.md). With
    --executor ray the revise and label stages of the policy-critic recipe send their model
    calls to Ray workers; the outputs and cache keys are the same either way.
    """
    from charter.run_config import bundled_config

    config_path = bundled_config(config_name)
    _loop(config_path, out, until, only, dry_run, base_url, api_key, concurrency,
          (executor, ray_address, workers))  # fmt: skip


@click.command()
@loop_options
def demo(out: Path | None, until: str | None, only: str | None, dry_run: bool,
         base_url: str | None, api_key: str | None, concurrency: int | None) -> None:  # fmt: skip
    """A small but complete loop on the embedded model, then the report.

    With the teacher installed (charter models install qwen2.5-coder-1.5b-instruct) the demo
    runs the effect recipe at demo size (configs/demo-teacher.yaml); without it, the policy
    critiques itself (configs/demo.yaml), which proves the plumbing but not the effect.
    """
    from charter.errors import CharterError
    from charter.models import resolve_gguf
    from charter.run_config import bundled_config

    try:
        resolve_gguf(TEACHER)
        config = bundled_config("demo-teacher")
    except CharterError:
        click.echo(f"the teacher is not installed, so the policy critiques itself and the "
                   f"before/after shows the plumbing, not the effect; for the effect recipe: "
                   f"charter models install {TEACHER}", err=True)  # fmt: skip
        config = bundled_config("demo")
    _loop(config, out or Path("runs/demo"), until, only, dry_run, base_url, api_key, concurrency)


@click.command("export")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["hf", "parquet", "jsonl"]),
    default="hf",
    show_default=True,
    help="hf: datasets.load_from_disk; parquet or jsonl: one file per split",
)
@click.option("--out", "-o", type=OutDir(), required=True,
              help="a new folder for the dataset and its card (README.md)")  # fmt: skip
def export_data(run_dir: Path, fmt: str, out: Path) -> None:
    """Export a run's SFT and preference data as a dataset (TRL- and datasets-ready)."""
    from charter import extras
    from charter.dataset_export import export_dataset

    if not extras.installed("datasets"):  # the rows are checked against fixed column types
        from charter.errors import CharterError

        raise CharterError("charter export needs the datasets package (the train extra): "
                           "pip install 'charter[train]'")  # fmt: skip
    counts = export_dataset(run_dir, out, fmt)  # type: ignore[arg-type]
    rows = ", ".join(f"{split} {n} rows" for split, n in counts.items())
    click.echo(f"{out}: {rows} ({fmt}), card in {out / 'README.md'}")


@click.command()
@click.argument("run_dir", metavar="RUN_DIR|NAME.infer.json",
                type=click.Path(exists=True, path_type=Path))  # fmt: skip
def report(run_dir: Path) -> None:
    """Write RUN_DIR/report.html for a charter run directory or a finished charter evaluate
    folder, or NAME.infer.html beside the report of charter constitution infer."""
    if run_dir.is_dir():
        from charter.report import report_for

        click.echo(report_for(run_dir))
    else:
        from charter.report.infer import infer_report_for

        click.echo(infer_report_for(run_dir))


def _code_prompts(config: RunConfig) -> str:
    """What the verify stage of a ``recipe: code`` run sends, for the first task it reads."""
    from charter.constitution import Constitution
    from charter.models import models_dir
    from charter.stages.code_revise import dry_run
    from charter.stages.evaluate.code import code_slice, load_code_tasks

    tasks = load_code_tasks(code_slice(config.code.tasks, models_dir().parent / "inputs",
                                       "code-tasks"))  # fmt: skip
    return dry_run(tasks[:1], Constitution.load(config.constitution), feedback=config.code.feedback)
