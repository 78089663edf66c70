"""``charter train score``: a trained reward model's scores for answers or preference pairs.

Reads ``prefs.jsonl`` rows (``prompt``/``chosen``/``rejected``, optional ``p_chosen``) or
conversation rows (``messages`` ending with the answer, as in ``sft.jsonl``) and writes one
score row per input. For pairs it also reports how often the model ranks the chosen answer
higher and how far its probability σ(r_chosen − r_rejected) is from the soft label.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.jsonl_rows import BadRow, read_json_rows
from charter.runs import write_atomic


def load_reward_model(name: str) -> tuple[Any, Any]:
    """A one-score sequence-classification model and its tokenizer (train run dir or hf/PATH)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from charter.stages.train.run import start_checkpoint

    path = start_checkpoint(name)
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "num_labels", None) != 1 or not any(
        arch.endswith("ForSequenceClassification") for arch in config.architectures or []
    ):
        raise CharterError(
            f"'{name}' is not a reward model (a one-score classification head): "
            "train one with `charter train rm`"
        )
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    return model, AutoTokenizer.from_pretrained(path)


def score_file(reward_model: str, data: Path, out: Path, batch_size: int = 8) -> dict[str, Any]:
    """Score every row of ``data`` into ``out`` (JSONL); return summary figures."""
    from charter.stages.train.soft_rm import score

    rows = _rows(data)
    model, tokenizer = load_reward_model(reward_model)
    pairs = "chosen" in rows[0]
    if pairs:
        conversations = [r["prompt"] + r["chosen"] for r in rows]
        conversations += [r["prompt"] + r["rejected"] for r in rows]
    else:
        conversations = [r["messages"] for r in rows]
    scores = score(model, tokenizer, conversations, batch_size=batch_size)
    results: list[dict[str, Any]] = []
    if pairs:
        for row, chosen, rejected in zip(
            rows, scores[: len(rows)], scores[len(rows) :], strict=True
        ):
            p_model = 1.0 / (1.0 + math.exp(rejected - chosen))
            results.append({"id": row.get("id"), "chosen_score": chosen,
                            "rejected_score": rejected, "p_chosen": row.get("p_chosen", 1.0),
                            "p_model": p_model})  # fmt: skip
    else:
        results = [{"id": row.get("id"), "score": s} for row, s in zip(rows, scores, strict=True)]
    write_atomic(out, "".join(json.dumps(r) + "\n" for r in results))
    figures: dict[str, Any] = {"rows": len(rows), "kind": "pairs" if pairs else "answers"}
    if pairs:
        decided = [r for r in results if r["p_chosen"] != 0.5]
        agree = [(r["p_model"] > 0.5) == (r["p_chosen"] > 0.5) for r in decided]
        figures["agreement"] = sum(agree) / len(agree) if agree else None
        figures["mean_abs_error"] = sum(abs(r["p_model"] - r["p_chosen"]) for r in results) / len(
            results
        )
    else:
        figures["mean_score"] = sum(scores) / len(scores)
    return figures


def _rows(data: Path) -> list[dict[str, Any]]:
    """Pair rows or conversation rows, each checked; one kind per file."""
    path = data / "prefs.jsonl" if data.is_dir() else data
    if not path.is_file():
        raise CharterError(f"no rows to score at '{data}': pass a JSONL file or a label run dir")
    rows: list[dict[str, Any]] = []
    for number, row in read_json_rows(path):
        where = f"{path}:{number}"
        if isinstance(row, BadRow) or not isinstance(row, dict):
            raise CharterError(f"{where}: {row if isinstance(row, BadRow) else 'not an object'}")
        if {"prompt", "chosen", "rejected"} <= row.keys():
            if not all(isinstance(row[k], list) for k in ("prompt", "chosen", "rejected")):
                raise CharterError(
                    f"{where}: 'prompt', 'chosen' and 'rejected' must be message lists "
                    "(TRL's conversational format, as `charter label` writes)"
                )
            kind = "pairs"
        elif isinstance(row.get("messages"), list) and row["messages"]:
            kind = "answers"
        else:
            raise CharterError(
                f"{where}: needs 'prompt', 'chosen' and 'rejected' (a preference pair) or "
                "'messages' ending with the answer"
            )
        if rows and kind != ("pairs" if "chosen" in rows[0] else "answers"):
            raise CharterError(f"{where}: mixes preference pairs and conversations; use one kind")
        rows.append(row)
    if not rows:
        raise CharterError(f"{path}: no rows to score")
    return rows
