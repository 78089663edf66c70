"""Where preference pairs come from: a file, a ``revise`` run, or samples from a policy.

Pair files are JSONL; each row becomes one :class:`PreferencePair` whose first response is
the row's ``chosen`` (for calibration, the gold-preferred one):

- TRL preference rows: ``prompt`` (a string or messages) with ``chosen`` and ``rejected``
  (strings, or lists of messages whose last turn is the reply);
- ``prompt`` with ``responses: [first, second]``;
- Anthropic hh-rlhf rows: ``chosen`` and ``rejected`` transcripts
  (``\\n\\nHuman: … \\n\\nAssistant: …``) that share every turn but the last.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from charter.backends import Backend, GenerationConfig
from charter.errors import CharterError
from charter.iterate import batched
from charter.jsonl_rows import BadRow, read_json_rows
from charter.prompts import OnBadRow, ReadStats, good_rows, parse_messages, parse_transcript
from charter.records import Message, PreferencePair, Prompt, Samples, Trace, Usage
from charter.runs import read_jsonl

Pairing = Literal["all", "random"]


def load_pairs(
    path: Path, *, on_bad_row: OnBadRow = "error", stats: ReadStats | None = None
) -> Iterator[PreferencePair]:
    """Stream the pairs of a JSONL file (formats in the module docstring)."""
    if not path.is_file():
        raise CharterError(f"no pair file '{path}'")
    stats = stats if stats is not None else ReadStats()

    def parsed() -> Iterator[tuple[int, PreferencePair | BadRow]]:
        for number, row in read_json_rows(path):
            if isinstance(row, BadRow):
                yield number, row
                continue
            try:
                yield number, pair_from_row(row, f"{path}:{number}")
            except BadRow as bad:
                yield number, bad

    for pair in good_rows(parsed(), path, on_bad_row, stats):
        stats.prompts += 1
        yield pair


def labelled_by(path: Path) -> dict[str, Any] | None:
    """How the first row of a ``charter label`` output (``prefs.jsonl``) was labelled: its
    labeller, mode, seed, constitution hash and principles per label; None for other files."""
    for _, row in read_json_rows(path):
        if not isinstance(row, dict) or "p_chosen" not in row or "labeller" not in row:
            return None
        ids = row.get("principle_ids")
        return {"labeller": row["labeller"], "mode": row.get("mode"), "seed": row.get("seed"),
                "constitution_sha256": row.get("constitution_sha256"),
                "principles": len(ids) if isinstance(ids, list) else None}  # fmt: skip
    return None


def pair_from_row(row: Any, source: str) -> PreferencePair:
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    if "responses" in row:
        responses = row["responses"]
        if not (
            isinstance(responses, list)
            and len(responses) == 2
            and all(isinstance(r, str) for r in responses)
        ):
            raise BadRow("'responses' must be a list of two strings")
        return PreferencePair.make(_prompt(row), responses[0], responses[1], source)
    if "chosen" not in row or "rejected" not in row:
        raise BadRow("a pair needs 'chosen' and 'rejected', or 'prompt' and 'responses'")
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" not in row and isinstance(chosen, str) and isinstance(rejected, str):
        return _hh_pair(chosen, rejected, source)
    if "prompt" not in row:  # TRL implicit-prompt rows: full conversations
        chosen_turns, rejected_turns = (
            parse_messages(chosen, "chosen", last="assistant"),
            parse_messages(rejected, "rejected", last="assistant"),
        )
        if chosen_turns[:-1] != rejected_turns[:-1]:
            raise BadRow("'chosen' and 'rejected' must share every turn but the last")
        return PreferencePair.make(
            _ending_with_user(chosen_turns[:-1]),
            chosen_turns[-1].content,
            rejected_turns[-1].content,
            source,
        )
    origin = row.get("id") if "p_chosen" in row and isinstance(row.get("id"), str) else None
    return PreferencePair.make(_prompt(row), _reply(chosen, "chosen"),
                               _reply(rejected, "rejected"), source, origin)  # fmt: skip


def _prompt(row: dict[str, Any]) -> list[Message]:
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return [Message(role="user", content=prompt)]
    if isinstance(prompt, list):
        return parse_messages(prompt, "prompt")
    raise BadRow("'prompt' must be a non-empty string or a list of messages")


def _reply(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    turns = parse_messages(value, name, last="assistant")
    return turns[-1].content


def _ending_with_user(turns: Sequence[Message]) -> list[Message]:
    if not turns or turns[-1].role != "user":
        raise BadRow("the conversation before the replies must end with a user turn")
    return list(turns)


def _hh_pair(chosen: str, rejected: str, source: str) -> PreferencePair:
    good, bad = parse_transcript(chosen), parse_transcript(rejected)
    if len(good) < 2 or good[-1].role != "assistant" or bad[-1].role != "assistant":
        raise BadRow("hh-rlhf transcripts must end with an Assistant turn")
    if good[:-1] != bad[:-1]:
        raise BadRow("'chosen' and 'rejected' transcripts must share every turn but the last")
    return PreferencePair.make(
        _ending_with_user(good[:-1]), good[-1].content, bad[-1].content, source
    )


def pairs_from_revise(run_dir: Path) -> Iterator[PreferencePair]:
    """Hugging Face's simple preset: (final revision, initial answer) from a revise run."""
    traces = run_dir / "traces.jsonl"
    if not traces.is_file():
        raise CharterError(
            f"{run_dir} has no traces.jsonl; pass the --out directory of a revise run"
        )
    for trace in read_jsonl(traces, Trace):
        if trace.final.strip() != trace.initial.strip():
            yield PreferencePair.make(
                trace.messages, trace.final, trace.initial, f"{traces}#{trace.id}"
            )


def sample_answers(
    prompts: Iterable[Prompt], policy: Backend, *, samples: int, config: GenerationConfig,
    batch_size: int = 16, on_calls: Callable[[int], object] | None = None,
) -> Iterator[Samples]:  # fmt: skip
    """``samples`` answers per prompt, a batch of prompts in flight at a time.

    Sample ``k`` of every prompt uses seed ``config.seed * 1000 + k``, so the answers of a
    prompt differ from each other yet are reproducible.
    """
    for batch in batched(prompts, batch_size):
        answers: list[list[str]] = [[] for _ in batch]
        usage = [Usage() for _ in batch]
        for k in range(samples):
            seeded = config.model_copy(update={"seed": config.seed * 1000 + k})
            completions = policy.generate([p.messages for p in batch], seeded)
            for i, c in enumerate(completions):
                answers[i].append(c.text.strip())
                usage[i] += c.usage()
            if on_calls is not None:
                on_calls(len(completions))
        for prompt, texts, spent in zip(batch, answers, usage, strict=True):
            yield Samples(
                id=prompt.id, messages=prompt.messages, answers=tuple(texts),
                model=policy.name, seed=config.seed, usage=spent, source=prompt.source,
            )  # fmt: skip


def pairs_from_samples(
    samples: Samples, pairing: Pairing, seed: int, max_pairs: int | None = None
) -> Iterator[PreferencePair]:
    """Pairs of a prompt's distinct answers, made one at a time.

    ``all``: every pair, or with ``max_pairs`` a seeded choice of that many (in their
    ``itertools.combinations`` order); ``random``: one pair. The choice is seeded per prompt.
    ``n`` answers make ``n(n-1)/2`` pairs, so none is built before it is needed: pairs are
    drawn by their index in that order, never materialised as a list.
    """
    distinct = list(dict.fromkeys(a for a in samples.answers if a))
    total = len(distinct) * (len(distinct) - 1) // 2
    if not total:
        return
    rng = random.Random(f"{seed}:{samples.id}")
    if pairing == "random":  # randrange(n) draws what choice() of an n-item list did
        indices: Iterable[int] = [rng.randrange(total)]
    elif max_pairs is None or max_pairs >= total:
        indices = range(total)
    else:
        indices = sorted(rng.sample(range(total), max_pairs))  # range: no list of all pairs
    for index in indices:
        first, second = _pair_at(index, len(distinct))
        yield PreferencePair.make(samples.messages, distinct[first], distinct[second],
                                  samples.source)  # fmt: skip


def _pair_at(index: int, n: int) -> tuple[int, int]:
    """The ``index``-th pair of ``itertools.combinations(range(n), 2)``, computed."""
    low, high = 0, n - 1  # the first element: the last i whose pairs start at or before index
    while low < high:
        middle = (low + high + 1) // 2
        if _pairs_before(middle, n) <= index:
            low = middle
        else:
            high = middle - 1
    return low, low + 1 + index - _pairs_before(low, n)


def _pairs_before(first: int, n: int) -> int:
    """How many pairs come before the first one that starts with element ``first``."""
    return first * (2 * n - first - 1) // 2


MAX_SAMPLES = 1024


def check_sampling(samples: int, max_pairs: int | None) -> None:
    """Refuse, before any model call, sampling settings no run can finish.

    A prompt's answers are held in memory together and written as one ``samples.jsonl`` row,
    and each is one policy call, so ``samples`` has a ceiling; ``max_pairs`` bounds the
    labeller's work per prompt.
    """
    if samples < 2:
        raise CharterError(f"--samples {samples}: a pair needs at least 2 answers per prompt")
    if samples > MAX_SAMPLES:
        raise CharterError(
            f"--samples {samples} is more than {MAX_SAMPLES} answers per prompt (each prompt's "
            "answers are held in memory and stored as one row); sample fewer per prompt and "
            "use more prompts"
        )
    if max_pairs is not None and max_pairs < 1:
        raise CharterError(f"--max-pairs {max_pairs}: label at least 1 pair per prompt")
