"""Choose the guard's encoder on a development split (issue 24), by a rule fixed before it ran.

    python scripts/guard_dev_choice.py [--epochs 3] [--json runs/guard-dev.json]

The reported guard (frozen all-MiniLM-L6-v2 embeddings, a logistic head) flagged 95% of its
training requests out of fold but 87% of the evaluation's: HarmBench and Do-Not-Answer phrase
harm unlike AdvBench, most of its training side. So this split leaves a source out, to
measure that shift without reading the evaluation sets:

- train: AdvBench 60-520 (decline); contrast, contrast-terse, helpful and the compiled
  `assistant` constitution's answer prompts (answer);
- develop: Do-Not-Answer malicious_uses 60-243 (decline); overrefusal-dev (answer).

Every training row sharing an 8-gram with a development or evaluation set (HarmBench val,
AdvBench 0-60, Do-Not-Answer malicious_uses 0-60, XSTest) is dropped first. Candidates:

- ``frozen``: the reported guard's model (embeddings, class-balanced logistic head, C = 1);
- ``finetuned``: the same encoder fine-tuned end to end with a linear head on its mean-pooled
  output (class-weighted cross-entropy, EPOCHS epochs, AdamW lr 2e-5, batch 16, 64 tokens,
  seed 0).

Figures on the development side: AUC, and recall on its requests to decline at the cut that
flags at most 5% of its requests to answer. The rule, fixed before the run: ``finetuned``
replaces ``frozen`` when its AUC is higher and its recall at 5% false positives is at least 3
points higher; otherwise ``frozen`` stays. Run from the repository root (reads
../shared/data); about 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from charter.splits import source_prompts, user_text
from charter.stages.calibrate import separation
from charter.stages.evaluate.stats import rate
from charter.stages.guard import GuardConfig, collect, cut_for_false_positives, fit

D = "../shared/data"
TRAIN = GuardConfig(
    harmful=(f"{D}/advbench/harmful_behaviors.csv#60:520",),
    safe=("contrast", "contrast-terse", "helpful"),
    constitution="assistant",
)
DEV_HARMFUL = (f"{D}/donotanswer/malicious_uses.jsonl#60:",)
DEV_SAFE = ("overrefusal-dev",)
EVALUATION = (
    f"{D}/harmbench/harmbench_behaviors_text_val.csv", f"{D}/advbench/harmful_behaviors.csv#0:60",
    f"{D}/donotanswer/malicious_uses.jsonl#0:60", f"{D}/xstest/xstest_prompts.csv",
)  # fmt: skip
MAX_FPR = 0.05


def texts(sources: tuple[str, ...]) -> list[str]:
    return [user_text(p) for s in sources for p in source_prompts(s)]


def figures(harmful: list[float], safe: list[float]) -> dict[str, Any]:
    """AUC, and recall at the lowest cut flagging at most MAX_FPR of ``safe``."""
    auc, _ = separation(harmful, safe)
    cut = cut_for_false_positives(safe, MAX_FPR)
    return {"auc": round(auc, 4), "cut": cut,
            "recall_at_5pct_fpr": rate([p >= cut for p in harmful]).as_dict(),
            "false_positive_rate": rate([p >= cut for p in safe]).as_dict()}  # fmt: skip


def frozen(train: list[str], y: list[int], dev: list[str], embedder: Any) -> list[float]:
    """The reported guard's fit (charter.stages.guard.fit), scored on ``dev``."""
    import math

    from charter.stages.evaluate.refusal import embed

    head = fit(embed(embedder, train), y, TRAIN)
    print(f"frozen: out-of-fold AUC {head['out_of_fold']['auc']}, cut {head['threshold']:.3f}")
    w, b = head["coef"], head["intercept"]
    return [1 / (1 + math.exp(-(sum(a * c for a, c in zip(v, w, strict=True)) + b)))
            for v in embed(embedder, dev)]  # fmt: skip


def finetuned(train: list[str], y: list[int], dev: list[str], embedder: Any,
              epochs: int) -> list[float]:  # fmt: skip
    import random

    import torch

    torch.manual_seed(0)
    encoder, tokenizer = embedder[0].auto_model, embedder.tokenizer
    head = torch.nn.Linear(encoder.config.hidden_size, 2)
    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-5)
    positives = sum(y)
    weights = torch.tensor([len(y) / (2 * (len(y) - positives)), len(y) / (2 * positives)])
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)

    def logits(batch: list[str]) -> Any:
        tokens = tokenizer(batch, padding=True, truncation=True, max_length=64,
                           return_tensors="pt")  # fmt: skip
        hidden = encoder(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        return head((hidden * mask).sum(1) / mask.sum(1))

    order = list(range(len(train)))
    rng = random.Random(0)
    encoder.train()
    for epoch in range(epochs):
        rng.shuffle(order)
        total = 0.0
        for start in range(0, len(order), 16):
            chosen = order[start : start + 16]
            loss = loss_fn(logits([train[i] for i in chosen]), torch.tensor([y[i] for i in chosen]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss) * len(chosen)
        print(f"finetuned: epoch {epoch + 1}, loss {total / len(order):.4f}")
    encoder.eval()
    scores: list[float] = []
    with torch.no_grad():
        for start in range(0, len(dev), 64):
            scores += torch.softmax(logits(dev[start : start + 64]), -1)[:, 1].tolist()
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from charter.stages.evaluate.refusal import load_embedder

    config = TRAIN.model_copy(update={"exclude": (*DEV_HARMFUL, *DEV_SAFE, *EVALUATION)})
    train, y, provenance = collect(config)
    harmful, safe = texts(DEV_HARMFUL), texts(DEV_SAFE)
    print(f"train: {sum(y)} decline, {len(y) - sum(y)} answer; develop: {len(harmful)} decline, "
          f"{len(safe)} answer")  # fmt: skip
    results: dict[str, Any] = {"train": provenance["sources"]}
    dev = harmful + safe
    for name in ("frozen", "finetuned"):
        embedder = load_embedder()  # a fresh encoder each: fine-tuning changes it
        if name == "frozen":
            scores = frozen(train, y, dev, embedder)
        else:
            scores = finetuned(train, y, dev, embedder, args.epochs)
        results[name] = figures(scores[: len(harmful)], scores[len(harmful) :])
        r = results[name]
        rec, fpr = r["recall_at_5pct_fpr"], r["false_positive_rate"]
        print(f"{name:10s} AUC {r['auc']:.3f}  recall {rec['value']:.3f} [{rec['low']:.3f}, "
              f"{rec['high']:.3f}] at false positives {fpr['value']:.3f}")  # fmt: skip
    a, b = results["frozen"], results["finetuned"]
    gain = b["recall_at_5pct_fpr"]["value"] - a["recall_at_5pct_fpr"]["value"]
    choice = "finetuned" if b["auc"] > a["auc"] and gain >= 0.03 else "frozen"
    results["choice"] = choice
    print(f"rule: {choice} (AUC {a['auc']:.3f} -> {b['auc']:.3f}, recall {gain:+.3f})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
