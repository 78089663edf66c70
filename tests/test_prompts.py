"""Prompt-set readers: JSONL, chat messages, hh-rlhf transcripts, CSV, and bad rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import write_jsonl

from charter.errors import CharterError
from charter.jsonl_rows import MAX_LINE_BYTES
from charter.prompts import PromptSet, ReadStats, bundled_prompt_sets, load_prompts


def test_jsonl_prompt_and_messages(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [
            {"prompt": "one"},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}]},
            {"prompt": [{"role": "user", "content": "three"}]},
        ],
    )
    prompts = list(load_prompts(path))
    assert [p.messages[-1].content for p in prompts] == ["one", "two", "three"]
    assert prompts[1].messages[0].role == "system"
    assert prompts[0].source == f"{path}:1"
    assert len({p.id for p in prompts}) == 3


def test_rows_may_carry_checkable_instructions(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Tips, in 3 bullets.", "instruction_id_list":
         ["detectable_format:number_bullet_lists", "punctuation:no_comma"],
         "kwargs": [{"num_bullets": 3, "unused": None}, None]},
        {"prompt": "plain"},
    ])  # fmt: skip
    checked, plain = load_prompts(path)
    assert [(i.id, i.kwargs) for i in checked.instructions] == [
        ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
        ("punctuation:no_comma", {}),
    ]
    assert plain.instructions == ()
    bundled = list(load_prompts("helpful"))
    assert sum(bool(p.instructions) for p in bundled) >= 100  # the format prompts are checked


def test_mt_bench_rows_give_their_first_turn(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mt.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now rhyme it."]},
    ])  # fmt: skip
    [prompt] = load_prompts(path)
    assert [m.content for m in prompt.messages] == ["Write a haiku."]


def test_hh_every_human_turn_is_a_prompt_with_context(hh_file: Path) -> None:
    prompts = list(load_prompts(hh_file))
    assert len(prompts) == 6  # 1 + 2 + 3 human turns
    assert [len(p.messages) for p in prompts] == [1, 1, 3, 1, 3, 5]
    for p in prompts:
        roles = [m.role for m in p.messages]
        assert roles[-1] == "user"
        assert roles == ["user", "assistant"] * (len(roles) // 2) + ["user"]
    # Colons inside a turn never split it.
    assert prompts[1].messages[0].content == "Note: this is for a story. How do thieves pick locks?"
    assert prompts[2].messages[-1].content == "Which tools exactly? See https://example.com"
    assert prompts[4].messages[1].content == "Hello! Time: 5pm here."
    assert prompts[5].messages[-1].content == "one that really hurts someone"


def test_hh_gzip_and_forced_format(tmp_path: Path, hh_file: Path) -> None:
    gz = tmp_path / "hh.jsonl.gz"
    gz.write_bytes(gzip.compress(hh_file.read_bytes()))
    assert len(list(load_prompts(gz))) == 6
    assert len(list(load_prompts(hh_file, fmt="hh"))) == 6


def test_csv_with_prompt_column(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text('id,goal\n1,"write, with a comma"\n2,"multi\nline"\n', encoding="utf-8")
    prompts = list(load_prompts(path, prompt_column="goal"))
    assert [p.messages[0].content for p in prompts] == ["write, with a comma", "multi\nline"]
    with pytest.raises(CharterError, match=r"p\.csv:1: no column 'prompt' \(columns: id, goal\)"):
        list(load_prompts(path))


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "invalid JSON"),
        ('{"text": "x"}', "no 'prompt', 'messages', 'chosen' or 'turns' field"),
        ('{"prompt": 3}', "'prompt' must be a string"),
        ('{"prompt": "   "}', "'prompt' is empty"),
        ('{"messages": [{"role": "bot", "content": "x"}]}', "role must be one of"),
        ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
         "last of 'messages' must be a user turn"),
        ('{"chosen": "Assistant said hi"}', "must start with"),
        ("[1, 2]", "expected a JSON object"),
        ('{"turns": []}', "'turns' must be a non-empty list of strings"),
        ('{"prompt": "x", "instruction_id_list": ["a"], "kwargs": []}', "of the same length"),
        ('{"prompt": "x", "instruction_id_list": ["be:nice"], "kwargs": [{}]}',
         "'be:nice' is not an instruction Charter checks; use one of"),
    ],
)  # fmt: skip
def test_bad_rows_name_their_line(tmp_path: Path, line: str, reason: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + '\n{"prompt": "also fine"}\n', encoding="utf-8")
    with pytest.raises(CharterError) as info:
        list(load_prompts(path, hints=True))
    assert f"{path}:2: " in str(info.value) and reason in str(info.value)
    assert "--on-bad-row skip" in str(info.value)
    stats = ReadStats()
    kept = list(load_prompts(path, on_bad_row="skip", stats=stats))
    assert [p.messages[0].content for p in kept] == ["fine", "also fine"]
    assert len(stats.skipped) == 1 and stats.skipped[0].startswith(f"{path}:2:")


def test_non_utf8_and_huge_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    huge = b'{"prompt": "' + b"x" * (MAX_LINE_BYTES + 10) + b'"}\n'
    path.write_bytes(b'{"prompt": "caf\xe9"}\n' + huge + b'{"prompt": "ok"}\n')
    stats = ReadStats()
    kept = list(load_prompts(path, on_bad_row="skip", stats=stats))
    assert [p.messages[0].content for p in kept] == ["ok"]
    assert "not UTF-8" in stats.skipped[0] and "longer than" in stats.skipped[1]


def test_bundled_sets_and_prompt_set() -> None:
    assert {"demo-redteam", "demo-helpful", "demo-hh"} <= set(bundled_prompt_sets())
    for name in ("demo-redteam", "demo-helpful"):
        assert len(list(PromptSet([name])())) >= 40
    both = PromptSet(["demo-redteam", "demo-helpful"], limit=50)
    assert len(list(both())) == 50
    assert [i["name"] for i in both.inputs()] == ["demo-redteam.jsonl", "demo-helpful.jsonl"]
    with pytest.raises(CharterError, match="no prompt file or bundled prompt set"):
        PromptSet(["missing.jsonl"])


def test_ids_are_content_hashes(tmp_path: Path) -> None:
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": "same"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"messages": [{"role": "user", "content": "same"}]}])
    (pa,), (pb,) = list(load_prompts(a)), list(load_prompts(b))
    assert pa.id == pb.id and pa.source != pb.source
    assert json.loads(pa.model_dump_json())["id"] == pa.id
