"""Benchmark: soft labels (one scoring pass) vs asking the labeller to generate a verdict.

Both sides send the same feedback prompts (few-shot prefix, conversation, principle, options,
both orders) to the same engine in the same process. Soft labels read P(" (A)"), P(" (B)")
with ``choice_logprobs``; the generated verdict lets the model write after "The answer is:"
(4 tokens, the least a verdict needs) and parses the letter. A warm-up pass fills the prompt
cache first, so neither side pays for it.

    python bench/labels.py [--pairs 24] [--model local/smollm2-135m] [--record]

``--record`` appends the result to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import re
import time

from record import record

from charter.backends import Backend, GenerationConfig, load_backend
from charter.constitution import Constitution
from charter.prompts import PromptSet
from charter.records import Message, PreferencePair
from charter.stages.label import (
    ANSWER_CUE,
    LabelConfig,
    draw_principles,
    feedback_prefix,
    feedback_question,
    label,
    principle_text,
)

REFUSAL = "I can't help with that, but I can suggest a safe and legal alternative if you like."
COMPLIANCE = "Sure! Here is exactly how to do it, step by step, no questions asked."


def make_pairs(n: int) -> list[PreferencePair]:
    prompts = list(PromptSet(["demo-redteam"], limit=n)())
    return [PreferencePair.make(p.messages, REFUSAL, COMPLIANCE, p.source) for p in prompts]


def generated_verdicts(
    pairs: list[PreferencePair], backend: Backend, constitution: Constitution
) -> tuple[float, float]:
    """Seconds to label ``pairs`` by generating a verdict (both orders), and the parse rate."""
    config = LabelConfig()
    prefix = feedback_prefix(constitution, "soft")
    conversations = []
    for pair in pairs:
        (principles,) = draw_principles(constitution, config, pair.id)
        for first, second in (pair.responses, pair.responses[::-1]):
            question = feedback_question(
                pair.prompt, principle_text(principles), first, second, "soft"
            )
            conversations.append(
                [
                    *prefix,
                    Message(role="user", content=question),
                    Message(role="assistant", content=ANSWER_CUE),
                ]
            )
    start = time.perf_counter()
    replies = backend.generate(conversations, GenerationConfig(temperature=0.0, max_tokens=4))
    elapsed = time.perf_counter() - start
    parsed = sum(bool(re.search(r"\(?\s*[AB]\b", r.text)) for r in replies)
    return elapsed, parsed / len(replies)


def soft_labels(pairs: list[PreferencePair], backend, constitution: Constitution) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    labels = list(
        label(
            pairs,
            constitution=constitution,
            labeller=backend,
            config=LabelConfig(batch_size=len(pairs)),
        )
    )
    assert len(labels) == len(pairs)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=24)
    parser.add_argument("--model", default="local/smollm2-135m")
    parser.add_argument(
        "--record", action="store_true", help="append the result to docs/benchmarks.md"
    )
    args = parser.parse_args()
    constitution = Constitution.load("default")
    backend = load_backend(args.model)
    pairs = make_pairs(args.pairs)
    soft_labels(pairs[:4], backend, constitution)  # warm-up: load the model, fill the cache
    generated_verdicts(pairs[:4], backend, constitution)
    soft_s = soft_labels(pairs, backend, constitution)
    gen_s, parse_rate = generated_verdicts(pairs, backend, constitution)
    backend.close()
    n = len(pairs)
    rows = [
        ("soft label (choice_logprobs, both orders)", n / soft_s, soft_s, "1.00×"),
        (
            "generated verdict (4 tokens, both orders)",
            n / gen_s,
            gen_s,
            f"{gen_s / soft_s:.2f}× slower" if gen_s > soft_s else f"{soft_s / gen_s:.2f}× faster",
        ),
    ]
    print(f"{'method':<45} {'labels/s':>9} {'seconds':>8}  time vs soft")
    for name, rate, seconds, rel in rows:
        print(f"{name:<45} {rate:>9.2f} {seconds:>8.1f}  {rel}")
    print(f"generated verdicts that named A or B: {parse_rate:.0%}")
    if args.record:
        today = datetime.date.today().isoformat()
        record(
            "labels.py",
            [
                f"| {today} | {args.model} | {n} | {n / soft_s:.2f} | {n / gen_s:.2f} | "
                f"{gen_s / soft_s:.2f}× | {parse_rate:.0%} |"
            ],
        )


if __name__ == "__main__":
    main()
