"""`charter evaluate`: harmlessness, over-refusal, helpfulness, honesty, code; before vs after."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from charter import DEFAULT_MODEL
from charter.cli.options import (
    MAX_TOKENS,
    MODEL_HELP,
    connection_options,
    refuse_unused,
    run_options,
)
from charter.suites import names as suite_names

if TYPE_CHECKING:
    from charter.suites.base import Question

SUITE_NAMES = suite_names()  # the registry (charter.suites), and principles
DATA_HELP = (
    "Data for a suite as KEY=PATH (a file or a bundled evaluation set); repeatable. Keys: "
    "harmlessness, jailbreaks, over-refusal, helpful, ifeval, honesty, code. Defaults: small "
    "bundled sets; see the README for the public sets."
)


@click.command()
@click.option("--model", "models", multiple=True, default=(DEFAULT_MODEL,), show_default=True,
              help=f"Model to evaluate; repeat to compare (the first is the baseline). "
                   f"{MODEL_HELP} MODEL+revise:N[:FEEDBACK][:xK][:values]: its code answers "
                   "after at most N rounds of critique -> revision against their visible tests "
                   "(FEEDBACK: critique, critique-plain or test; xK: K sampled revisions a "
                   "round, the first passing kept; values: a failed assert says what the code "
                   "gave).")  # fmt: skip
@connection_options
@click.option("--suite", "suites", multiple=True, type=click.Choice(SUITE_NAMES),
              help="Suite to run; repeatable.  [default: all model suites, and principles when "
                   "--revise-run or --label-run is given]")  # fmt: skip
@click.option("--data", "data_options", multiple=True, metavar="KEY=PATH", help=DATA_HELP)
@click.option("--judge", default=None,
              help="LLM judge: harm verdicts on non-refusals, and pairwise helpfulness (which "
                   f"otherwise uses {DEFAULT_MODEL}).")  # fmt: skip
@click.option("--constitution", "constitution_source", default="default", show_default=True,
              help="Constitution whose harm principles the judge is asked under.")  # fmt: skip
@click.option("--revise-run", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="A revise run, for per-principle statistics.")  # fmt: skip
@click.option("--label-run", type=click.Path(file_okay=False, exists=True, path_type=Path),
              default=None, help="A label run, for per-principle judge margins.")  # fmt: skip
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use only the first N questions of each data file.")  # fmt: skip
@click.option("--jailbreaks-per-prompt", type=click.IntRange(min=1), default=1, show_default=True,
              help="Templates per red-team prompt (with --data jailbreaks=…).")  # fmt: skip
@click.option("--code-timeout", type=click.IntRange(min=1), default=10, show_default=True,
              help="CPU seconds each code answer may run (twice that on the clock).")  # fmt: skip
@click.option("--max-tokens", type=click.IntRange(1, MAX_TOKENS), default=384, show_default=True,
              help="Token limit of each answer (greedy decoding).")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Questions in flight at once.")  # fmt: skip
@run_options("Print every question each suite would ask; call no model.")
def evaluate(models: tuple[str, ...], base_url: str | None, api_key: str | None,
             concurrency: int | None, suites: tuple[str, ...], data_options: tuple[str, ...],
             judge: str | None, constitution_source: str, revise_run: Path | None,
             label_run: Path | None, limit: int | None, jailbreaks_per_prompt: int,
             code_timeout: int, max_tokens: int, seed: int, batch_size: int, out: Path | None,
             dry_run: bool) -> None:  # fmt: skip
    """Evaluate models before vs after: every judged item kept, every metric with its interval."""
    from charter.backends import GenerationConfig, backend_loader
    from charter.constitution import Constitution
    from charter.errors import CharterError
    from charter.runner import run_one
    from charter.stages.evaluate.run import VERSION, EvaluateConfig, run_evaluate
    from charter.stages.evaluate.suites import (
        MODEL_SUITES,
        data_keys,
        default_data,
        questions,
        resolve_data,
    )
    from charter.stages.evaluate.tables import format_results

    if len(set(models)) != len(models):
        raise CharterError("--model: each model once (the same model twice compares nothing)")
    chosen = suites or (*MODEL_SUITES, *(["principles"] if revise_run or label_run else []))
    if "principles" in chosen and not (revise_run or label_run):
        raise CharterError("--suite principles needs --revise-run DIR and/or --label-run DIR")
    ctx = click.get_current_context()
    if "principles" not in chosen:
        refuse_unused(ctx, ("revise_run", "label_run"),
                      "only to --suite principles", "add --suite principles")  # fmt: skip
    if not any(option.startswith("jailbreaks=") for option in data_options):
        refuse_unused(ctx, ("jailbreaks_per_prompt",), "only with --data jailbreaks=FILE",
                      "give --data jailbreaks=FILE")  # fmt: skip
    data = {key: resolve_data(value) for key, value in default_data(chosen).items()}
    keys = data_keys()
    for option in data_options:
        key, sep, value = option.partition("=")
        if not sep or key not in keys or not value:
            raise CharterError(
                f"--data {option}: expected KEY=PATH with KEY one of {', '.join(keys)}"
            )
        data[key] = resolve_data(value)
    config = EvaluateConfig(
        suites=tuple(chosen), answer=GenerationConfig(temperature=0.0, max_tokens=max_tokens),
        limit=limit, jailbreaks_per_prompt=jailbreaks_per_prompt, code_timeout_s=code_timeout,
        seed=seed, batch_size=batch_size,
    )  # fmt: skip
    if dry_run:
        asked = questions(tuple(chosen), data, config)
        for q in asked:
            turns = "\n".join(
                f"[{m.role}] {m.content}" if len(q.messages) > 1 else m.content for m in q.messages
            )
            choices = f"\n(scored choices: {', '.join(q.options)})" if q.options else ""
            click.echo(f"=== {q.id} ===\n{turns}{choices}\n")
        from charter.stages.evaluate import judges

        # A real run gives the judge the constitution (and so its brief) only with --judge.
        system = judges.judge_system(Constitution.load(constitution_source) if judge else None)
        click.echo(
            f"=== judge: system message of every judge question ===\n{system}\n\n"
            f"=== judge: harm question (with --judge, per non-refusal, both orders) ===\n"
            f"{judges.HARM_QUESTION}\n\n"
            f"=== judge: pairwise helpfulness question (two or more models, both orders) ===\n"
            f"{judges.PAIRWISE_QUESTION}\n"
        )
        _loop_prompts(models, asked, config.seed)
        click.echo(f"{len(asked)} questions per model, {len(models)} model(s)")
        return
    if out is None:
        raise CharterError("--out DIR is required (the run directory; rerun to resume)")
    rules = Constitution.load(constitution_source) if judge else None
    settings = [config, list(models), judge, rules and rules.sha256,
                {k: str(v) for k, v in data.items()}, str(revise_run), str(label_run)]  # fmt: skip
    results = run_one(
        "evaluate", VERSION, settings, out,
        lambda: run_evaluate(
            models, out=out, config=config, data=data,
            backend=backend_loader(base_url, api_key, concurrency), judge=judge,
            constitution=rules, revise_run=revise_run, label_run=label_run,
        ),
    )  # fmt: skip
    click.echo(format_results(results))
    click.echo(f"\n{out / 'results.json'}\n{out / 'items.jsonl'}\nthe page: charter report {out}")


def _loop_prompts(models: tuple[str, ...], asked: list[Question], seed: int) -> None:
    """For each ``MODEL+revise:N`` model, what its loop sends on the first code task (the
    first answer is the plain model's, shown above)."""
    from charter.constitution import Constitution
    from charter.stages.code_revise import dry_run
    from charter.stages.evaluate.revised import split_revise

    tasks = [q.info["task"] for q in asked if "task" in q.info][:1]
    for model in models:
        spec = split_revise(model)
        if spec.rounds and tasks:
            shown = dry_run(tasks, Constitution.load("code"), feedback=spec.feedback, seed=seed,
                            values=spec.values)  # fmt: skip
            click.echo(f"=== {model}: the loop's calls on the first code task, at most "
                       f"{spec.rounds} round(s), {spec.samples} revision(s) a round"
                       f"{', failed asserts saying what the code gave' if spec.values else ''}"
                       f" ===\n{shown}\n")  # fmt: skip
