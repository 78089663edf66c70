"""`charter label` (RL-CAI preference labels) and `charter label calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click

from charter import DEFAULT_MODEL
from charter.cli.options import (
    MAX_TOKENS,
    Number,
    OutDir,
    connection_options,
    executor_options,
    make_executor,
    prompt_options,
    refuse_unused,
    run_options,
)

if TYPE_CHECKING:
    from charter.backends import Backend
    from charter.prompts import Format, OnBadRow
    from charter.stages.label import LabelConfig
    from charter.stages.label_run import PairSource


def labeller_options(function: Any) -> Any:
    """How the labeller judges: shared by `label` and `label calibrate`."""
    options = [
        click.option("--labeller", default=DEFAULT_MODEL, show_default=True,
                     help="Feedback model (provider/model); use a stronger one than the policy."),
        click.option("--constitution", "constitution_source", default="default", show_default=True,
                     help="Bundled constitution name or YAML path."),
        click.option("--mode", type=click.Choice(["soft", "cot"]), default="soft",
                     show_default=True,
                     help="soft: read P(A), P(B) directly; cot: reason first, then read them."),
        click.option("--principles-per-label", type=click.IntRange(min=1), default=1,
                     show_default=True, help="Principles drawn per label, verdicts averaged."),
        click.option("--ensemble", type=click.Choice(["sample", "all"]), default="sample",
                     show_default=True,
                     help="sample: draw principles per label; all: the whole constitution."),
        click.option("--combine", type=click.Choice(["mean", "priority"]), default="mean",
                     show_default=True,
                     help="How votes make a label: their mean, or the constitution's priority "
                          "order (the highest-ranked decisive vote wins; needs "
                          "--principles-per-label 2 or more)."),
        click.option("--hard-veto/--no-hard-veto", default=False, show_default=True,
                     help="Ask whether each reply crosses one of the constitution's hard "
                          "constraints; one that does never wins a label (constitutions "
                          "with hard constraints only; check the labeller first: "
                          "scripts/hard_veto_check.py)."),
        click.option("--hard-threshold", type=Number(0.5, 1, max_open=True),
                     default=0.5, show_default=True,
                     help="The veto fires when p(crosses) is above this."),
        click.option("--swap/--no-swap", default=True, show_default=True,
                     help="Score both orders of the options and average (removes position bias)."),
        click.option("--clamp", type=(Number(), Number()), default=(0.4, 0.6),
                     show_default=True, callback=_clamp_range, metavar="LOW HIGH",
                     help="Range the label is clamped into in cot mode."),
        click.option("--cot-max-tokens", type=click.IntRange(1, MAX_TOKENS), default=192,
                     show_default=True, help="Length of the reasoning in cot mode."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
                     help="Pairs in flight at once."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return connection_options(function)


def _clamp_range(ctx: click.Context, param: click.Parameter,
                 value: tuple[float, float]) -> tuple[float, float]:  # fmt: skip
    low, high = value
    if not 0.0 <= low <= 0.5 <= high <= 1.0:
        raise click.BadParameter(f"LOW HIGH must satisfy 0 <= LOW <= 0.5 <= HIGH <= 1, got "
                                 f"{low:g} {high:g}; e.g. --clamp 0.4 0.6")  # fmt: skip
    return value


def _config(mode: str, principles_per_label: int, ensemble: str, swap: bool,
            clamp: tuple[float, float], cot_max_tokens: int, seed: int,
            batch_size: int, combine: str = "mean",
            hard: tuple[bool, float] = (False, 0.5)) -> LabelConfig:  # fmt: skip
    from charter.backends import GenerationConfig
    from charter.stages.label import LabelConfig

    if mode == "soft":
        refuse_unused(click.get_current_context(), ("clamp", "cot_max_tokens"),
                      "to --mode cot, and the mode is soft", "add --mode cot")  # fmt: skip
    if combine == "priority" and (principles_per_label < 2 or ensemble == "all"):
        from charter.errors import CharterError

        raise CharterError("--combine priority orders several votes per label: add "
                           "--principles-per-label 2 or more, with --ensemble sample")  # fmt: skip
    return LabelConfig.model_validate({
        "combine": combine, "hard": {"veto": hard[0], "threshold": hard[1]},
        "mode": mode, "principles_per_label": principles_per_label, "ensemble": ensemble,
        "swap": swap, "clamp": clamp, "seed": seed, "batch_size": batch_size,
        "cot": GenerationConfig(temperature=0.0, max_tokens=cot_max_tokens),
    })  # fmt: skip


@click.group(invoke_without_command=True)
@labeller_options
@prompt_options(
    required=False,
    prompts_help="Prompts to sample answer pairs for from --policy (file or bundled set).",
)
@click.option(
    "--policy", default=DEFAULT_MODEL, show_default=True, help="Model that answers --prompts."
)
@click.option(
    "--samples",
    type=click.IntRange(min=2),
    default=2,
    show_default=True,
    help="Answers sampled per prompt.",
)
@click.option(
    "--pairing",
    type=click.Choice(["all", "random"]),
    default="all",
    show_default=True,
    help="Label every pair of a prompt's answers, or one random pair.",
)
@click.option(
    "--max-pairs",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="With --pairing all: at most this many pairs per prompt, a seeded choice.",
)
@click.option(
    "--temperature",
    type=Number(0, 5),
    default=1.0,
    show_default=True,
    help="Policy sampling temperature.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(1, MAX_TOKENS),
    default=256,
    show_default=True,
    help="Policy answer length.",
)
@click.option(
    "--pairs",
    "pairs_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Pairs to label: TRL prompt/chosen/rejected, prompt/responses or hh-rlhf JSONL.",
)
@click.option(
    "--from-revise",
    type=click.Path(file_okay=False, path_type=Path),
    help="Pairs from a revise run: (final revision, initial answer).",
)
@click.option(
    "--preset",
    type=click.Choice(["simple"]),
    default=None,
    help="simple: with --from-revise, chosen = revision, rejected = initial, p = 1; no labeller.",
)
@click.option(
    "--min-margin",
    type=Number(0, 0.5),
    default=0.0,
    show_default=True,
    help="Drop labels with |p - 0.5| below this from prefs.jsonl.",
)
@executor_options
@run_options("Print the feedback prompts; call no model.")
@click.pass_context
def label(ctx: click.Context, /, **options: Any) -> None:
    """RL-CAI: AI-feedback preference labels from the constitution → prefs.jsonl."""
    if ctx.invoked_subcommand is not None:
        return
    _label(**options)


def _label(*, labeller: str, constitution_source: str, mode: str, principles_per_label: int,
           ensemble: str, combine: str, hard_veto: bool, hard_threshold: float, swap: bool,
           clamp: tuple[float, float], cot_max_tokens: int, seed: int,
           batch_size: int, base_url: str | None, api_key: str | None, concurrency: int | None,
           prompt_sources: tuple[str, ...], policy: str, samples: int,
           pairing: Literal["all", "random"], max_pairs: int, temperature: float, max_tokens: int,
           pairs_file: Path | None, from_revise: Path | None, preset: str | None,
           min_margin: float, fmt: Format, prompt_column: str | None, on_bad_row: OnBadRow,
           limit: int | None, executor: str, ray_address: str | None, workers: int | None,
           out: Path | None, dry_run: bool) -> None:  # fmt: skip
    from charter.backends import GenerationConfig, load_backend
    from charter.constitution import Constitution, resolve
    from charter.errors import CharterError
    from charter.pairs import check_sampling
    from charter.prompts import PromptSet
    from charter.runner import run_one
    from charter.stages import label_run, label_summary

    if prompt_sources:
        check_sampling(samples, max_pairs)  # before any model is loaded or called
    given = [bool(prompt_sources), pairs_file is not None, from_revise is not None]
    if sum(given) != 1:
        raise CharterError("give exactly one source of pairs: --prompts, --pairs or --from-revise")
    if not prompt_sources:
        refuse_unused(click.get_current_context(),
                      ("policy", "samples", "pairing", "max_pairs", "temperature", "max_tokens",
                       "fmt", "prompt_column"),
                      "to --prompts (answers sampled from --policy), not to "
                      f"{'--pairs' if pairs_file else '--from-revise'}")  # fmt: skip
    if preset == "simple" and from_revise is None:
        raise CharterError(
            "--preset simple takes its pairs from a revise run: add --from-revise DIR"
        )
    c = Constitution.load(constitution_source)
    config = _config(
        mode,
        principles_per_label,
        ensemble,
        swap,
        clamp,
        cot_max_tokens,
        seed,
        batch_size,
        combine,
        (hard_veto, hard_threshold),
    )

    def connect(name: str) -> Backend:
        return load_backend(name, base_url=base_url, api_key=api_key, concurrency=concurrency)

    source: PairSource
    if prompt_sources:
        prompts = PromptSet(list(prompt_sources), fmt=fmt, prompt_column=prompt_column,
                            on_bad_row=on_bad_row, limit=limit)  # fmt: skip
        for _ in prompts() if dry_run else ():  # a bad or empty file stops before any output
            pass
        generation = GenerationConfig(temperature=temperature, max_tokens=max_tokens, seed=seed)
        policy_backend = None if dry_run else connect(policy)
        source = label_run.PolicyPairs(prompts, policy_backend, samples, pairing, generation,  # type: ignore[arg-type]
                                       batch_size, max_pairs)  # fmt: skip
    elif pairs_file is not None:
        source = label_run.FilePairs(pairs_file, on_bad_row, limit)
    else:
        assert from_revise is not None
        source = label_run.RevisePairs(from_revise)
    if dry_run:
        for block in label_run.dry_run(source, constitution=c, config=config, limit=limit or 3):
            click.echo(block + "\n")
        return
    if out is None:
        raise CharterError("--out DIR is required (the run directory; rerun to resume)")
    ray = make_executor(executor, ray_address, workers, base_url=base_url, api_key=api_key,
                        concurrency=concurrency)  # fmt: skip
    judge: Backend | None = None if preset == "simple" else connect(labeller)
    try:
        # The sources as given: the stage reads (and checks) them itself, before any output.
        sources: list[Any] = [list(prompt_sources), str(pairs_file), str(from_revise), policy,
                            samples, pairing, max_pairs, limit, fmt, prompt_column]  # fmt: skip
        settings = [config, labeller if judge else None, c.sha256, sources, min_margin]
        summary = run_one(
            "label", label_run.VERSION, settings, out,
            lambda: label_run.run_label(
                source, out=out, constitution=c, labeller=judge, config=config,
                min_margin=min_margin,
                constitution_text=resolve(constitution_source).read_text("utf-8"),
            ),
            executor=ray,
        )  # fmt: skip
    finally:
        if ray is not None:
            ray.close()
        for backend in (judge, getattr(source, "policy", None)):
            if backend is not None:
                backend.close()
    click.echo(label_summary.format_summary(summary))
    warnings = label_summary.labeller_warnings(summary, judge)
    for warning in warnings:
        click.echo(f"WARNING: {warning}", err=True)
    step = "calibrate the labeller first (see the warnings), then " if warnings else ""
    click.echo(f"next: {step}charter train dpo --data {out} --model hf/SFT_RUN/model --out RUN")


@label.command()
@labeller_options
@click.option(
    "--gold",
    "gold",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Gold preferences: JSONL[.gz] with chosen/rejected (TRL or hh-rlhf).",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Gold pairs to score.",
)
@click.option(
    "--on-bad-row", type=click.Choice(["error", "skip"]), default="error", show_default=True
)
@click.option(
    "--out",
    type=OutDir(),
    default=None,
    help="Also write the labels and the report here.",
)
def calibrate(*, labeller: str, constitution_source: str, mode: str, principles_per_label: int,
              ensemble: str, combine: str, hard_veto: bool, hard_threshold: float, swap: bool,
              clamp: tuple[float, float], cot_max_tokens: int,
              seed: int, batch_size: int, base_url: str | None, api_key: str | None,
              concurrency: int | None, gold: Path, limit: int, on_bad_row: OnBadRow,
              out: Path | None) -> None:  # fmt: skip
    """Score a labeller against gold preferences: accuracy, ECE, position bias."""
    from itertools import islice

    from charter.backends import load_backend
    from charter.constitution import Constitution
    from charter.models import model_identity
    from charter.pairs import load_pairs
    from charter.progress import progress_bar
    from charter.prompts import ReadStats
    from charter.runs import JsonlAppender, file_sha256, write_atomic
    from charter.stages import calibrate as calibration
    from charter.stages.label import label as label_pairs

    c = Constitution.load(constitution_source)
    config = _config(
        mode,
        principles_per_label,
        ensemble,
        swap,
        clamp,
        cot_max_tokens,
        seed,
        batch_size,
        combine,
        (hard_veto, hard_threshold),
    )
    stats = ReadStats()
    pairs = list(islice(load_pairs(gold, on_bad_row=on_bad_row, stats=stats), limit))
    judge = load_backend(labeller, base_url=base_url, api_key=api_key, concurrency=concurrency)
    try:
        with progress_bar(unit="call", desc="calibrate") as bar:
            labels = list(label_pairs(pairs, constitution=c, labeller=judge, config=config,
                                      on_calls=bar.update))  # fmt: skip
    finally:
        judge.close()
    report = calibration.calibration_report(
        labels,
        labeller=judge.name,
        gold=gold.name,
        model=model_identity(judge.name),
        gold_sha256=file_sha256(gold),
    )
    saved = calibration.save_calibration(report)
    click.echo(calibration.format_report(report))
    if stats.skipped:
        click.echo(f"skipped {len(stats.skipped)} bad gold rows (see the warnings above)")
    click.echo(f"saved: {saved} (charter label reads it to warn about this labeller)")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        with JsonlAppender(out / "labels.jsonl") as writer:
            for entry in labels:
                writer.write(entry)
        write_atomic(out / "calibration.json", report.model_dump_json(indent=2))
    for warning in calibration.verdict(report):
        click.echo(f"WARNING: {warning}", err=True)
