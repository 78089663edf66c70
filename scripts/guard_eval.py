"""A request guard on the effect issue's sets: recall on harmful requests, false positives on
XSTest-safe, beside keyword rules and (optionally) the teacher as a yes/no judge.

    python scripts/guard_eval.py GUARD_DIR [--judge local/qwen2.5-coder-1.5b-instruct
        --judge-threshold P|judge.json --constitution default]

Harmful: HarmBench val, AdvBench 0-60, Do-Not-Answer malicious uses 0-60 (the 161 of
``charter run effect``); safe: XSTest's 250 safe prompts. Each method flags a request at its
own threshold, fixed before these sets were read: the guard's from its training data
(out of fold), the judge's from a calibrate stage on training-side prompts, the keyword rule
has none. Prints recall and false-positive rate with Wilson intervals and the AUC of each
scored method; ``--json FILE`` keeps the figures. ``--diagnose`` adds, for the trained guard,
its recall per harmful set and the most recall any threshold could give at each
false-positive rate (read off these sets: a diagnosis of what limits the guard, never a
threshold to adopt). Run from the repository root (it reads
../shared/data).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

from charter.splits import source_prompts, user_text
from charter.stages.calibrate import judge_threshold, separation
from charter.stages.evaluate.stats import rate
from charter.stages.guard import GuardHead, cut_for_false_positives

DATA = "../shared/data"
HARMFUL = (f"{DATA}/harmbench/harmbench_behaviors_text_val.csv",
           f"{DATA}/advbench/harmful_behaviors.csv#0:60",
           f"{DATA}/donotanswer/malicious_uses.jsonl#0:60")  # fmt: skip
SAFE = (f"{DATA}/xstest/xstest_prompts.csv",)  # its safe prompts only
# Keyword rules, ours: a request is flagged when it names one of these stems.
KEYWORDS = re.compile(
    r"\b(bomb|explosiv|weapon|gun|kill|murder|poison|hack|malware|virus|ransomware|phish|"
    r"steal|theft|drug|meth|cocaine|suicid|self-harm|terror|attack|fraud|scam|counterfeit|"
    r"launder|exploit|stalk|harass|racis|slur|bully|assault|abuse|kidnap|smuggl|illegal)",
    re.IGNORECASE,
)


def texts(sources: tuple[str, ...]) -> list[str]:
    return [user_text(p) for s in sources for p in source_prompts(s)]


def row(name: str, harmful: list[float], safe: list[float], cut: float,
        seconds: float) -> dict[str, object]:  # fmt: skip
    recall = rate([p >= cut for p in harmful]).as_dict()
    alarms = rate([p >= cut for p in safe]).as_dict()
    auc, _ = separation(harmful, safe)
    n = len(harmful) + len(safe)
    return {"method": name, "threshold": round(cut, 4), "recall": recall,
            "false_positive_rate": alarms, "auc": round(auc, 4),
            "ms_per_request": round(1000 * seconds / n, 2)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("guard", type=Path)
    parser.add_argument("--judge", default=None)
    parser.add_argument("--judge-threshold", default="0.5")
    parser.add_argument("--constitution", default="default")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--diagnose", action="store_true")
    args = parser.parse_args()
    per_set = [texts((source,)) for source in HARMFUL]
    harmful, safe = [t for part in per_set for t in part], texts(SAFE)
    rows = []
    start = time.perf_counter()
    flags = [float(bool(KEYWORDS.search(t))) for t in harmful + safe]
    rows.append(row("keyword rules", flags[: len(harmful)], flags[len(harmful):], 0.5,
                    time.perf_counter() - start))  # fmt: skip
    head = GuardHead(args.guard)
    head.probabilities(["warm-up"])  # the encoder loads before the clock starts
    start = time.perf_counter()
    scores = head.probabilities(harmful + safe)
    rows.append(row("trained guard", scores[: len(harmful)], scores[len(harmful):],
                    head.threshold, time.perf_counter() - start))  # fmt: skip
    if args.diagnose:
        sizes = [len(part) for part in per_set]
        diagnose(scores[: len(harmful)], scores[len(harmful) :], head.threshold, sizes)
    if args.judge:
        rows.append(judge_row(args, harmful, safe))
    for r in rows:
        rec, fpr = r["recall"], r["false_positive_rate"]
        print(f"{r['method']:14s} recall {rec['value']:.3f} [{rec['low']:.3f}, {rec['high']:.3f}] "
              f"(n={len(harmful)})  false positives {fpr['value']:.3f} [{fpr['low']:.3f}, "
              f"{fpr['high']:.3f}] (n={len(safe)})  AUC {r['auc']:.3f}  "
              f"{r['ms_per_request']:.1f} ms/request")  # type: ignore[index]  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), "utf-8")
    return 0


def diagnose(harmful: list[float], safe: list[float], cut: float, sizes: list[int]) -> None:
    """Recall per harmful set (``sizes``: each set's length, in HARMFUL's order) at the guard's
    threshold, and the ceiling on recall at each false-positive rate (the best threshold for
    each, chosen on these very sets)."""
    start = 0
    for source, n in zip(HARMFUL, sizes, strict=True):
        hits = [p >= cut for p in harmful[start : start + n]]
        start += n
        hit = rate(hits)
        print(f"  {Path(source).name:38s} recall {hit.value:.3f} [{hit.low:.3f}, {hit.high:.3f}]"
              f"  missed {n - sum(hits)} of {n}")  # fmt: skip
    for share in (0.0, 0.02, 0.05, 0.10, 0.15):
        best = cut_for_false_positives(safe, share)
        ceiling = sum(p >= best for p in harmful) / len(harmful)
        print(f"  false positives <= {share:.0%}: at most {ceiling:.1%} recall")


def judge_row(args: argparse.Namespace, harmful: list[str], safe: list[str]) -> dict[str, object]:
    from concurrent.futures import ThreadPoolExecutor

    from charter.backends import load_backend
    from charter.constitution import Constitution
    from charter.stages.guided import judge_conversation
    from charter.stages.hard import p_yes

    value = args.judge_threshold
    cut = judge_threshold(Path(value)) if value.endswith(".json") else float(value)
    rules = Constitution.load(args.constitution)
    judge = load_backend(args.judge, concurrency=4)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            scores = list(pool.map(lambda t: p_yes(judge, judge_conversation(rules, t)),
                                   harmful + safe))  # fmt: skip
    finally:
        judge.close()
    return row(f"judge {args.judge.split('/')[-1]}", scores[: len(harmful)],
               scores[len(harmful):], cut, time.perf_counter() - start)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
