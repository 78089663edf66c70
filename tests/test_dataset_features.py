"""Charter's outputs as `datasets` shards with fixed column types: shards always concatenate."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.records import Label, Message, PreferenceRow, Samples, SFTRow, Vote

datasets = pytest.importorskip("datasets")

from charter.dataset_features import column_types, load_rows  # noqa: E402

USER = (Message(role="user", content="Help?"),)


def write(path: Path, records: list[typing.Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json() + "\n" for r in records), encoding="utf-8")
    return path


def sft(principle_ids: tuple[str, ...]) -> SFTRow:
    return SFTRow(id="s", messages=(*USER, Message(role="assistant", content="Sure.")),
                  prompt_id="p", round=len(principle_ids), principle_ids=principle_ids,
                  revised=bool(principle_ids), model="fake/echo", seed=0,
                  constitution_sha256="c")  # fmt: skip


def label(votes: tuple[Vote, ...], p_first: float) -> Label:
    return Label(id="l", prompt=USER, responses=("a", "b"), p_first=p_first, votes=votes,
                 labeller="fake/echo", mode="soft", seed=0, constitution_sha256="c")  # fmt: skip


def test_shards_with_empty_and_filled_lists_concatenate(tmp_path: Path) -> None:
    shards = [write(tmp_path / "a" / "sft.jsonl", [sft(())]),
              write(tmp_path / "b" / "sft.jsonl", [sft(("harm", "honesty"))])]  # fmt: skip
    joined = datasets.concatenate_datasets([load_rows(s) for s in shards])
    assert joined["principle_ids"] == [[], ["harm", "honesty"]]
    assert joined.features["principle_ids"] == load_rows(shards[1]).features["principle_ids"]
    # labels: the simple preset's (no votes, p = 1) beside chain-of-thought ones (reasoning)
    simple = write(tmp_path / "a" / "labels.jsonl", [label((), 1.0)])
    vote = Vote(principle_ids=("harm",), p_shown_first=0.7, reasoning=("A is kinder.",))
    cot = write(tmp_path / "b" / "labels.jsonl", [label((vote,), 0.6)])
    plain = vote.model_copy(update={"reasoning": ()})
    soft = write(tmp_path / "c" / "labels.jsonl", [label((plain,), 0.6)])
    labels = datasets.concatenate_datasets([load_rows(p) for p in (simple, soft, cot)])
    assert [len(v) for v in labels["votes"]] == [0, 1, 1]
    prefs = PreferenceRow(id="r", prompt=USER, chosen=(Message(role="assistant", content="a"),),
                          rejected=(Message(role="assistant", content="b"),), p_chosen=1.0,
                          p_chosen_first=None, p_chosen_second=None, principle_ids=(),
                          labeller="preset/simple", mode="simple", seed=0,
                          constitution_sha256="c")  # fmt: skip
    filled = prefs.model_copy(update={"p_chosen_first": 0.8, "principle_ids": ("harm",)})
    rows = [
        load_rows(write(tmp_path / folder / "prefs.jsonl", [row]))
        for folder, row in (("a", prefs), ("b", filled))
    ]
    assert datasets.concatenate_datasets(rows)["p_chosen_first"] == [None, 0.8]


def test_every_field_charter_writes_has_a_type() -> None:
    from charter.stages.guided import GuidedRow, sft_rows
    from charter.stages.verdict_pairs import VerdictPair

    types = column_types()
    for record in (SFTRow, PreferenceRow, Label, Samples, VerdictPair):
        assert set(record.model_fields) <= set(types), record.__name__
    assert set(types["votes"][0]) == set(Vote.model_fields)
    guided = GuidedRow(id="g", kind="redteam", source="s", answer="x", messages=USER, kept="No.")
    assert set(sft_rows([guided], "c", "fake/teacher")[0]) <= set(types)


def test_a_column_charter_does_not_write_is_named(tmp_path: Path) -> None:
    path = tmp_path / "odd.jsonl"
    path.write_text('{"id": "x", "score": 3}\n', encoding="utf-8")
    with pytest.raises(CharterError, match="no fixed type for column 'score'"):
        load_rows(path)
