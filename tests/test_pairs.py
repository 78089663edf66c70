"""Where pairs come from: pair files in three formats, revise runs, policy samples."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_jsonl

from charter.backends import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.errors import CharterError
from charter.pairs import (
    check_sampling,
    load_pairs,
    pairs_from_revise,
    pairs_from_samples,
    sample_answers,
)
from charter.prompts import ReadStats
from charter.records import Message, Prompt, Samples, Usage

USER = {"role": "user", "content": "Help?"}


def test_pair_file_formats(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "Help?", "chosen": "yes", "rejected": "no"},
        {"prompt": [USER], "chosen": [{"role": "assistant", "content": "yes"}],
         "rejected": [{"role": "assistant", "content": "no"}]},
        {"chosen": [USER, {"role": "assistant", "content": "yes"}],
         "rejected": [USER, {"role": "assistant", "content": "no"}]},
        {"prompt": "Help?", "responses": ["yes", "no"]},
        {"chosen": "\n\nHuman: Help?\n\nAssistant: yes",
         "rejected": "\n\nHuman: Help?\n\nAssistant: no"},
    ])  # fmt: skip
    pairs = list(load_pairs(path))
    assert len(pairs) == 5
    assert {p.id for p in pairs} == {pairs[0].id}  # the same pair, five ways
    assert pairs[0].responses == ("yes", "no")
    assert pairs[0].prompt == (Message(role="user", content="Help?"),)


def test_hh_pairs_keep_their_context(tmp_path: Path) -> None:
    context = "\n\nHuman: hi\n\nAssistant: Hello! Note: ask away.\n\nHuman: how do I pick a lock?"
    path = write_jsonl(tmp_path / "hh.jsonl", [
        {"chosen": context + "\n\nAssistant: Call a locksmith.",
         "rejected": context + "\n\nAssistant: Use a pin."}
    ])  # fmt: skip
    (pair,) = load_pairs(path)
    assert [m.role for m in pair.prompt] == ["user", "assistant", "user"]
    assert pair.prompt[1].content == "Hello! Note: ask away."
    assert pair.responses == ("Call a locksmith.", "Use a pin.")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "x", "chosen": "a"}, "needs 'chosen' and 'rejected'"),
        ({"prompt": "x", "responses": ["a"]}, "two strings"),
        ({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: c\n\nAssistant: d"},
         "share every turn but the last"),
        ({"prompt": 5, "chosen": "a", "rejected": "b"}, "'prompt' must be"),
    ],
)  # fmt: skip
def test_bad_pair_rows(tmp_path: Path, row: dict[str, object], reason: str) -> None:
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "ok", "responses": ["a", "b"]}, row])
    with pytest.raises(CharterError, match=f"pairs.jsonl:2: .*{reason}"):
        list(load_pairs(path))
    stats = ReadStats()
    assert (
        len(list(load_pairs(path, on_bad_row="skip", stats=stats))) == 1 and len(stats.skipped) == 1
    )


def test_pairs_from_a_revise_run(tmp_path: Path) -> None:
    base = {"messages": [USER], "steps": [], "model": "fake/echo", "seed": 0,
            "constitution_sha256": "x", "usage": {}}  # fmt: skip
    write_jsonl(tmp_path / "traces.jsonl", [
        {**base, "id": "a", "initial": "bad", "final": "good"},
        {**base, "id": "b", "initial": "same", "final": "same"},
    ])  # fmt: skip
    (pair,) = pairs_from_revise(tmp_path)
    assert pair.responses == ("good", "bad")
    with pytest.raises(CharterError, match=r"no traces\.jsonl"):
        list(pairs_from_revise(tmp_path / "nowhere"))


def test_sampled_answers_differ_and_pair_up() -> None:
    prompts = [Prompt.from_messages([Message(role="user", content=f"q{i}")]) for i in range(3)]
    calls: list[int] = []
    config = GenerationConfig(seed=7)
    samples = list(sample_answers(prompts, FakeBackend(), samples=3, config=config, batch_size=2,
                                  on_calls=calls.append))  # fmt: skip
    assert [len(set(s.answers)) for s in samples] == [3, 3, 3]
    assert sum(calls) == 9 and all(s.usage.calls == 3 for s in samples)
    again = list(sample_answers(prompts, FakeBackend(), samples=3, config=GenerationConfig(seed=7)))
    assert [s.answers for s in again] == [s.answers for s in samples]
    assert len(list(pairs_from_samples(samples[0], "all", 0))) == 3
    (one,) = pairs_from_samples(samples[0], "random", 0)
    assert [one] == list(pairs_from_samples(samples[0], "random", 0))
    duplicate = samples[0].model_copy(update={"answers": ("same", "same")})
    assert list(pairs_from_samples(duplicate, "all", 0)) == []
    assert json.loads(one.model_dump_json())["responses"] == list(one.responses)


def many_answers(n: int) -> Samples:
    return Samples(id="p", messages=(Message(role="user", content="q"),),
                   answers=tuple(f"answer {i}" for i in range(n)), model="fake/echo", seed=0,
                   usage=Usage())  # fmt: skip


def test_pairs_are_bounded_seeded_and_made_lazily() -> None:
    samples = many_answers(3000)  # 4,498,500 pairs: a list of them would not fit in a test
    started = time.monotonic()
    bounded = list(pairs_from_samples(samples, "all", 0, max_pairs=50))
    assert len({p.id for p in bounded}) == 50
    assert bounded == list(pairs_from_samples(samples, "all", 0, max_pairs=50))  # seeded
    assert bounded != list(pairs_from_samples(samples, "all", 1, max_pairs=50))
    index = {a: i for i, a in enumerate(samples.answers)}
    positions = [(index[p.responses[0]], index[p.responses[1]]) for p in bounded]
    assert positions == sorted(positions) and all(i < j for i, j in positions)
    every = pairs_from_samples(samples, "all", 0)  # unbounded: still one pair at a time
    assert isinstance(every, Iterator)
    first = [(index[p.responses[0]], index[p.responses[1]]) for p in itertools.islice(every, 4)]
    assert first == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert time.monotonic() - started < 5
    small = many_answers(6)  # a bound above the 15 pairs there are changes nothing
    assert list(pairs_from_samples(small, "all", 0, max_pairs=99)) == list(
        pairs_from_samples(small, "all", 0)
    )


def test_impossible_sampling_is_refused() -> None:
    with pytest.raises(CharterError, match=r"--samples 100000 is more than 1024"):
        check_sampling(100_000, 64)
    with pytest.raises(CharterError, match="--max-pairs 0"):
        check_sampling(4, 0)
    check_sampling(1024, None)
