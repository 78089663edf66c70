"""``charter train sft|dpo|rm``: TRL training on Charter's data, in a resumable run directory.

    charter train sft --data runs/revise --out runs/sft            # LoRA on the embedded model
    charter train dpo --model runs/sft --data runs/label --out runs/dpo
    charter train rm  --data runs/label --out runs/rm
    # GRPO (kind: grpo) runs from a run config's rl section: rl.algorithm: grpo

The starting model is the embedded default (its GGUF dequantised into transformers once and
cached), any ``hf/PATH`` checkpoint, a GGUF file (``local/PATH.gguf``), or an earlier train
run directory. SFT trains on the assistant turn only (prompt-completion rows), optionally
mixed with helpful rows; DPO and the reward model use each row's soft label ``p_chosen``
(see :mod:`charter.stages.train.soft_dpo`, :mod:`charter.stages.train.soft_rm`). The run
directory holds
``checkpoints/`` (a killed run resumes from the last one), ``model/`` (a Hugging Face
checkpoint for ``--model hf/PATH``; LoRA merged unless ``merge: false``), ``loss.jsonl``,
``manifest.json`` and, with ``gguf: true``, ``model.gguf`` for ``--model local/PATH.gguf``.

Several processes (``accelerate launch -m charter train …`` on GPUs, ``torchrun`` on CPUs;
see docs/scale-out.md) train data-parallel: every process trains, the model is saved with
the trainer's collective save (DeepSpeed ZeRO-3 and FSDP gather their shards there), and
only the main process writes the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.jsonl_rows import BadRow, read_json_rows
from charter.models import model_identity, models_dir, resolve_gguf
from charter.runs import Run, file_sha256, write_atomic
from charter.stages.train.config import TrainConfig

log = logging.getLogger(__name__)
VERSION = 1  # in cache keys and fingerprints: bump when what this stage writes changes

MODEL_DIR, CHECKPOINTS, LOSSES = "model", "checkpoints", "loss.jsonl"


def start_checkpoint(model: str) -> Path:
    """A Hugging Face checkpoint directory for a starting point name."""
    path = Path(model)
    if path.is_dir() and (path / "manifest.json").is_file() and (path / MODEL_DIR).is_dir():
        return path / MODEL_DIR  # an earlier charter train run
    provider, _, rest = model.partition("/")
    if provider == "hf" and (Path(rest) / "config.json").is_file():
        return Path(rest)
    if provider == "local":
        return _dequantised(resolve_gguf(rest))
    raise CharterError(
        f"cannot start training from '{model}': use local/smollm2-135m, local/PATH.gguf, "
        "hf/PATH (a checkpoint directory) or the --out directory of an earlier train run"
    )


def _dequantised(gguf: Path) -> Path:
    """The GGUF model as a float32 transformers checkpoint, converted once and cached."""
    target = models_dir() / "hf" / f"{gguf.stem}-{file_sha256(gguf)[:12]}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a transformers checkpoint (once) in %s", gguf, target)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A model loaded from GGUF keeps its quantisation markers and refuses save_pretrained.
    setattr(model, "hf_quantizer", None)  # noqa: B010 - the attribute is typed non-optional
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def rows_of(sources: tuple[str, ...], name: str) -> list[dict[str, Any]]:
    """Rows of ``name`` (sft.jsonl / prefs.jsonl) from files or run directories."""
    rows: list[dict[str, Any]] = []
    for source in sources:
        path = Path(source)
        path = path / name if path.is_dir() else path
        if not path.is_file():
            raise CharterError(f"no {name} at '{source}': pass the file or its run directory")
        for number, row in read_json_rows(path):
            if isinstance(row, BadRow) or not isinstance(row, dict):
                raise CharterError(
                    f"{path}:{number}: {row if isinstance(row, BadRow) else 'not an object'}"
                )
            rows.append(row)
    if not rows:
        raise CharterError(f"no training rows in {', '.join(sources)}")
    return rows


def weighted(rows: list[dict[str, Any]], repeat: dict[str, int]) -> list[dict[str, Any]]:
    """``rows`` with each row of kind K appearing ``repeat[K]`` times: scarce kinds weigh more.

    E.g. ``{"redteam": 4}``: the verdict pairs of one effect run were 24 "decline" against 92
    "answer" pairs, so DPO mostly learnt to answer (docs/results.md, attempt 4).
    """
    for kind, times in repeat.items():
        rows = rows + [row for row in rows if row.get("kind") == kind] * (times - 1)
    return rows


def sft_dataset(config: TrainConfig) -> list[dict[str, Any]]:
    """Prompt-completion rows (loss on the completion only), helpful rows mixed in."""
    rows = rows_of(config.data, "sft.jsonl")
    if config.kinds is not None:  # e.g. the guided stage's redteam/contrast/helpful rows
        rows = [row for row in rows if row.get("kind") in config.kinds]
        if not rows:
            raise CharterError(f"kinds {list(config.kinds)}: no SFT row has one of these kinds")
    rows = weighted(rows[: config.limit], config.repeat)
    if config.helpful and config.helpful_ratio > 0:
        helpful = rows_of((config.helpful,), "sft.jsonl")
        wanted = min(len(helpful), round(config.helpful_ratio * len(rows)))
        rows += random.Random(config.seed).sample(helpful, wanted)
    out = []
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages")
        if (
            not isinstance(messages, list)
            or len(messages) < 2
            or messages[-1].get("role") != "assistant"
        ):
            raise CharterError(f"SFT row {number}: 'messages' must end with an assistant turn")
        out.append({"prompt": messages[:-1], "completion": messages[-1:]})
    return out


def preference_dataset(config: TrainConfig) -> list[dict[str, Any]]:
    """TRL conversational preference rows with their soft labels."""
    rows = weighted(rows_of(config.data, "prefs.jsonl")[: config.limit], config.repeat)
    keep = ("prompt", "chosen", "rejected", "p_chosen")
    for number, row in enumerate(rows, start=1):
        if any(key not in row for key in keep[:3]):
            raise CharterError(f"preference row {number}: needs 'prompt', 'chosen' and 'rejected'")
    return [{k: row.get(k, 1.0) for k in keep} for row in rows]


def grpo_dataset(config: TrainConfig) -> list[dict[str, Any]]:
    """Prompts with the behaviour each asks for (:mod:`charter.stages.train.grpo`)."""
    from charter.stages.train.grpo import RL_PROMPTS, prompt_dataset

    return prompt_dataset(weighted(rows_of(config.data, RL_PROMPTS)[: config.limit], config.repeat))


def is_main_process() -> bool:
    """True unless this is a secondary process of a distributed launch (``RANK`` > 0)."""
    return int(os.environ.get("RANK", "0")) == 0


def run(config: TrainConfig, out: Path) -> dict[str, Any]:
    """:func:`train` through the runner (:func:`charter.runner.run_single`): ``charter train``
    and the Python API. Under a distributed launch only the main process holds the folder."""
    if not is_main_process():
        return train(config, out)
    from charter.runner import run_one

    return run_one("train", VERSION, config, out, lambda: train(config, out))


def train(config: TrainConfig, out: Path) -> dict[str, Any]:
    """Train as ``config`` says into ``out`` (resuming its last checkpoint); return figures.

    Under a distributed launch every process calls this; the others return ``{}``.
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")  # TRL pings the Hub otherwise
    start = start_checkpoint(config.model)
    dataset = {"sft": sft_dataset, "grpo": grpo_dataset}.get(config.kind, preference_dataset)(
        config
    )
    main = is_main_process()
    fingerprint = {"config": config.model_dump(mode="json"), "version": VERSION,
                   "start": model_identity(str(start)),
                   "data": [_digest(d) for d in config.data]}  # fmt: skip
    run = Run.open(out, "train", fingerprint) if main else None
    if run is not None and (done := _finished(run, config)) is not None:
        return done  # the same run, complete: its recorded figures, no model loaded
    from charter.stages.train.trainers import build_trainer

    trainer, tokenizer = build_trainer(config, start, dataset, out / CHECKPOINTS)
    if len(trainer.train_dataset) == 0:  # TRL's reward trainer drops rows over max_length
        raise CharterError(
            f"all {len(dataset)} rows are longer than max_length={config.max_length} tokens; "
            "raise --max-length"
        )
    # Read before training: the trainer rotates old checkpoints away.
    resume, state = _last_checkpoint(out / CHECKPOINTS, tidy=main)
    first_step, first_tokens = state.get("global_step", 0), state.get("num_input_tokens_seen") or 0
    if resume is not None:
        log.warning("resuming %s from %s", out, resume.name)
    began = time.monotonic()
    try:
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except BaseException:
        if run is not None:
            run.update(counts={"rows": len(dataset)}, usage={}, status="interrupted")
        raise
    seconds = time.monotonic() - began
    steps = trainer.state.global_step - first_step  # in this session
    tokens = trainer.state.num_input_tokens_seen - first_tokens
    if trainer.accelerator.num_processes > 1:
        model_dir = _save_distributed(trainer, tokenizer, config, out)
    else:
        model_dir = _save(trainer, tokenizer, config, out)
    if run is None:
        return {}
    losses = [e for e in trainer.state.log_history if "loss" in e]
    write_atomic(out / LOSSES, "".join(json.dumps(e) + "\n" for e in losses))
    figures = {
        "rows": len(dataset), "steps": trainer.state.global_step,
        "seconds": round(seconds, 1), "train_loss": result.training_loss,
        **_loss_ends([float(e["loss"]) for e in losses]),
        "seconds_per_step": round(seconds / max(1, steps), 2),
        "tokens_per_second": round(tokens / seconds, 1) if tokens else None,  # GRPO: uncounted
        "resumed_from_step": first_step or None, "model": str(model_dir),
    }  # fmt: skip
    if config.kind == "grpo":  # this session's groups by kind of prompt (train.grpo)
        figures["groups"] = trainer.charter_groups.summary()
    if config.gguf and config.kind != "rm":
        figures.update(_export(model_dir, out))
    run.manifest["figures"] = figures
    run.update(counts={"rows": len(dataset)}, usage={}, status="complete")
    return figures


def _finished(run: Run, config: TrainConfig) -> dict[str, Any] | None:
    """A complete earlier session's figures, if its model files are still there."""
    before = run.previous or {}
    figures = before.get("figures")
    if before.get("status") != "complete" or not isinstance(figures, dict):
        return None
    wanted = [Path(str(figures.get("model")))]
    if config.gguf and config.kind != "rm":
        wanted.append(run.path / "model.gguf")
    if not all(path.exists() for path in wanted):
        return None
    run.manifest["figures"] = figures
    run.update(counts=before.get("counts", {}), usage=before.get("usage", {}), status="complete")
    return dict(figures)


def _loss_ends(losses: list[float]) -> dict[str, Any]:
    """Mean loss over the first and the last quarter of the logged steps.

    One step's loss is one batch's, and batches differ: the ends of the run averaged over a
    quarter each show the trend, where the first and last single values mostly show noise.
    """
    if not losses:
        return {"first_loss": None, "last_loss": None, "loss_window": 0}
    window = max(1, len(losses) // 4)
    return {
        "first_loss": round(sum(losses[:window]) / window, 4),
        "last_loss": round(sum(losses[-window:]) / window, 4),
        "loss_window": window,
    }


def _digest(source: str) -> dict[str, str]:
    path = Path(source)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return {"source": source, "sha256": ",".join(file_sha256(f)[:16] for f in files if f.is_file())}


def _last_checkpoint(folder: Path, tidy: bool = True) -> tuple[Path | None, dict[str, Any]]:
    """The newest complete checkpoint and its trainer state; ones a kill cut short are removed.

    The trainer writes ``trainer_state.json`` last, so a checkpoint without a readable one was
    interrupted while saving; resuming from it would fail, and leaving it would confuse the
    trainer's rotation of old checkpoints. Only one process removes them (``tidy``).
    """
    steps = {int(p.name[11:]): p for p in folder.glob("checkpoint-*") if p.name[11:].isdigit()}
    for _, checkpoint in sorted(steps.items(), reverse=True):
        try:
            state: dict[str, Any] = json.loads((checkpoint / "trainer_state.json").read_text())
        except (OSError, ValueError):
            if tidy:
                log.warning("removing %s: it was cut short while saving", checkpoint)
                shutil.rmtree(checkpoint, ignore_errors=True)
            continue
        return checkpoint, state
    return None, {}


def _save(trainer: Any, tokenizer: Any, config: TrainConfig, out: Path) -> Path:
    model = trainer.model
    if config.lora:
        model.save_pretrained(out / "adapter")
        if config.merge:
            model = model.merge_and_unload()
    target = out / MODEL_DIR
    if not config.lora or config.merge:
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target if target.exists() else out / "adapter"


def _save_distributed(trainer: Any, tokenizer: Any, config: TrainConfig, out: Path) -> Path:
    """Save from every process (the trainer gathers sharded weights); merge LoRA on the main.

    ``trainer.save_model`` is collective under DeepSpeed and FSDP: all processes must call
    it. It writes the adapter for a LoRA model and the whole model otherwise.
    """
    target = out / MODEL_DIR
    saved = out / "adapter" if config.lora else target
    whole = not config.lora or config.merge  # as _save: model/ holds a whole checkpoint
    trainer.save_model(str(saved))
    trainer.accelerator.wait_for_everyone()
    if trainer.accelerator.is_main_process:
        if config.lora and config.merge:
            from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

            loader = AutoPeftModelForSequenceClassification if config.kind == "rm" else (
                AutoPeftModelForCausalLM
            )  # fmt: skip
            loader.from_pretrained(str(saved)).merge_and_unload().save_pretrained(target)
        if whole:
            tokenizer.save_pretrained(target)
    trainer.accelerator.wait_for_everyone()
    return target if whole else saved


def _export(model_dir: Path, out: Path) -> dict[str, Any]:
    from charter.stages.export import check_export, export_gguf

    # Checked once, here, so the manifest records the check's own figure; a wrong file is
    # removed by check_export, and nothing reads the stage's folder before it completes.
    path = export_gguf(model_dir, out / "model.gguf", dtype="f16", check=False)
    worst = check_export(model_dir, path, "f16")
    return {"gguf": str(path), "gguf_max_logprob_difference": worst}
