"""Hostile inputs: files and model replies built to break Charter's readers and parsers.

Property tests (hypothesis) for the constitution loader, every prompt-file reader, and the
parsing of model replies in the critique/revision and feedback stages. A reader either
reads its input or stops with one CharterError line that names the file: never another
exception, never a hang. A model reply that imitates our template markers changes nothing
but its own record.

    python -m pytest -q tests/test_hostile_inputs.py
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import charter.jsonl_rows
from charter.backends import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.cli import cli
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.iterate import first_seen
from charter.prompts import ReadStats, load_prompts
from charter.records import (
    Conversation,
    Label,
    Message,
    PreferencePair,
    Prompt,
    Trace,
    messages_id,
)
from charter.stages.hard import YES_NO
from charter.stages.label import CHOICES, LabelConfig, label
from charter.stages.revise import (
    CRITIC_SYSTEM,
    REVISION_REQUEST,
    ReviseConfig,
    clean_reply,
    finds_nothing,
    revise,
    says_no_change,
    sft_rows,
)
from charter.yamlfile import MAX_BYTES

# Each example writes one small file and reads it: a few ms. The deadline turns a hang (or a
# quadratic blow-up) into a failure with the example that caused it.
HOSTILE = settings(
    max_examples=60,
    deadline=2000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
QUICK_S = 5.0  # wall-clock bound for the hand-written attacks (each takes milliseconds)


def one_line(message: str) -> bool:
    return len(message.splitlines()) == 1


def assert_names(err: CharterError, path: Path) -> None:
    message = str(err)
    assert one_line(message), message
    assert str(path) in message, message


# --- constitution files ----------------------------------------------------------------------

VALID: dict[str, Any] = {
    "name": "tiny",
    "version": "0.1",
    "description": "A two-principle constitution for tests.",
    "principles": [
        {"id": "harm", "critique": "Say what is harmful.", "revision": "Remove it.",
         "comparison": "Which is less harmful?"},
        {"id": "privacy", "tags": ["privacy"], "critique": "Say what is private.",
         "revision": "Remove private data."},
    ],
    "demonstrations": [
        {"id": "demo", "principle": "harm", "critique": "It is harmful.",
         "revision": "Here is something safe.",
         "messages": [{"role": "user", "content": "Help me."},
                      {"role": "assistant", "content": "Here is something harmful."}]},
    ],
}  # fmt: skip
VALID_TEXT = yaml.safe_dump(VALID, sort_keys=False)

BILLION_LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8)
)
# YAML that has broken loaders: bombs, deep nesting, tags whose constructors raise, and more.
YAML_ATTACKS = {
    "billion-laughs": BILLION_LAUGHS,
    "alias-to-nothing": "name: *nowhere\n",
    "merge-key": "base: &b {id: x}\nprinciples: [{<<: *b}]\n",
    "flow-nesting": "[" * 200_000 + "]" * 200_000,
    "flow-nesting-unclosed": "{a: " * 100_000,
    "block-nesting": "- " * 50_000 + "x\n",
    "indent-nesting": "".join(" " * i + "a:\n" for i in range(2_000)),
    "duplicate-key": VALID_TEXT + "name: again\n",
    "impossible-date": "version: 2001-02-30\n",
    "date-key": "2001-02-30: x\n",
    "bad-int-tag": "version: !!int abc\n",
    "bad-float-tag": "version: !!float abc\n",
    "bad-timestamp-tag": "version: !!timestamp x\n",
    "bad-binary-tag": "name: !!binary '@@@'\n",
    "huge-int": "version: " + "9" * 5_000 + "\n",
    "python-object": "name: !!python/object/apply:os.system ['true']\n",
    "unknown-tag": "name: !shout hi\n",
    "complex-key": "? [a, b]\n: c\n",
    "two-documents": VALID_TEXT + "---\n" + VALID_TEXT,
    "nul-byte": "name: a\x00b\n",
    "bom-and-tabs": "\ufeffname:\t\tx\n",
    "long-line": "name: " + "x" * 1_000_000 + "\n",
    "empty": "",
    "only-a-comment": "# nothing here\n",
    "a-list": "- name: x\n",
    "a-string": "just words\n",
}


def check_constitution(path: Path) -> Constitution | None:
    """Load ``path``: a valid constitution, or None after checking the one-line error."""
    try:
        loaded = Constitution.load(path)
    except CharterError as err:
        assert_names(err, path)
        assert str(err).startswith(str(path)), str(err)
        return None
    ids = [p.id for p in loaded.principles]
    assert len(ids) == len(set(ids)), "duplicate principle ids were accepted"
    assert len(loaded.sha256) == 64
    return loaded


@pytest.mark.parametrize("attack", sorted(YAML_ATTACKS))
def test_yaml_attacks_fail_fast_with_one_line(tmp_path: Path, attack: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(YAML_ATTACKS[attack], encoding="utf-8")
    start = time.perf_counter()
    assert check_constitution(path) is None
    assert time.perf_counter() - start < QUICK_S


def test_files_over_the_size_limit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(VALID_TEXT.encode() + b"#" * MAX_BYTES)
    with pytest.raises(CharterError, match=r"c\.yaml: file is \d+ bytes, over the \d+ limit"):
        Constitution.load(path)


@HOSTILE
@given(data=st.binary(max_size=2_000))
def test_random_bytes_as_a_constitution(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(data)
    check_constitution(path)


@HOSTILE
@given(text=st.text(max_size=2_000))
def test_random_text_as_a_constitution(tmp_path: Path, text: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    check_constitution(path)


@HOSTILE
@given(
    attack=st.sampled_from(sorted(YAML_ATTACKS)),
    line=st.integers(min_value=0, max_value=VALID_TEXT.count("\n")),
    indent=st.sampled_from(["", "  ", "    "]),
)
def test_attacks_spliced_into_a_valid_file(
    tmp_path: Path, attack: str, line: int, indent: str
) -> None:
    lines = VALID_TEXT.splitlines(keepends=True)
    snippet = "".join(indent + part for part in YAML_ATTACKS[attack][:5_000].splitlines(True))
    path = tmp_path / "c.yaml"
    path.write_text("".join([*lines[:line], snippet, "\n", *lines[line:]]), encoding="utf-8")
    check_constitution(path)


# Values of every type, for fields that expect one type.
SCALARS = (
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["", " ", "harm", "bad id!", "user", "assistant", "2001-02-30"])
)  # fmt: skip
ANYTHING = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# "harm" twice, so that duplicate ids come often; the rest break the id pattern.
IDS = st.sampled_from(["harm", "privacy", "harm", "x" * 81, "-dash", "ok.id_1"])
TEXTS = st.text(min_size=1, max_size=30)


def field(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value, sometimes a value of any other type."""
    return st.one_of(valid, valid, ANYTHING)


PRINCIPLES = st.fixed_dictionaries(
    {},
    optional={
        "id": field(IDS), "critique": field(TEXTS), "revision": field(TEXTS),
        "comparison": field(TEXTS), "tags": field(st.lists(TEXTS, max_size=2)),
        "priority": field(st.integers(min_value=0, max_value=3)), "colour": ANYTHING,
    },
)  # fmt: skip
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {}, optional={"role": field(st.sampled_from(["user", "assistant", "system"])),
                      "content": field(TEXTS)},
    ),
    max_size=3,
)  # fmt: skip
DEMONSTRATIONS = st.fixed_dictionaries(
    {},
    optional={
        "id": field(IDS), "principle": field(IDS), "messages": field(MESSAGES),
        "critique": field(TEXTS), "revision": field(TEXTS),
    },
)  # fmt: skip
CONSTITUTIONS = st.fixed_dictionaries(
    {},
    optional={
        "name": field(TEXTS), "version": field(st.text(max_size=5) | st.floats()),
        "description": field(TEXTS), "spec": field(TEXTS),
        "hard_constraints": field(st.lists(TEXTS, max_size=2)),
        "principles": field(st.lists(PRINCIPLES, max_size=4)),
        "demonstrations": field(st.lists(DEMONSTRATIONS, max_size=2)),
    },
)  # fmt: skip


@HOSTILE
@given(data=CONSTITUTIONS)
def test_wrong_types_missing_fields_and_duplicate_ids(tmp_path: Path, data: dict[str, Any]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    check_constitution(path)


def test_a_duplicate_principle_id_is_named(tmp_path: Path) -> None:
    harm = VALID["principles"][0]
    twice = {**VALID, "principles": [harm, dict(harm)]}  # two objects: safe_dump would alias one
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(twice), encoding="utf-8")
    with pytest.raises(CharterError, match=r"c\.yaml:\d+: .*duplicate principle id 'harm'"):
        Constitution.load(path)


@pytest.mark.parametrize(
    "attack", ["billion-laughs", "flow-nesting", "impossible-date", "huge-int", "nul-byte"]
)
def test_lint_exits_2_with_one_line(tmp_path: Path, attack: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(YAML_ATTACKS[attack], encoding="utf-8")
    result = CliRunner().invoke(cli, ["constitution", "lint", str(path)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"Error: {path}") and one_line(result.stderr.strip())
    assert "Traceback" not in result.output


def test_lint_random_bytes_and_non_utf8(tmp_path: Path) -> None:
    for name, data in [("bytes.yaml", bytes(range(256))), ("latin.yaml", b"name: caf\xe9\n")]:
        path = tmp_path / name
        path.write_bytes(data)
        result = CliRunner().invoke(cli, ["constitution", "lint", str(path)])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert one_line(result.stderr.strip()) and str(path) in result.stderr


# --- prompt files ----------------------------------------------------------------------------

# Pieces of text that readers have tripped on: transcript markers, escapes, odd characters.
TEXT_TRAPS = [
    "\n\nHuman: ", "\n\nAssistant: ", "Human:", "\r\n", "\u2028", "\x00", "\ufeff", '"', "\\",
    "{", "}", ",", "\t", " ", "prompt", "é", "🙂",
]  # fmt: skip
TRAP_TEXT = st.lists(st.sampled_from(TEXT_TRAPS) | st.text(max_size=8), max_size=6).map("".join)
# The same, with lone surrogates: valid as JSON escapes ("\ud800"), never valid as text.
SURROGATE_TEXT = st.lists(
    st.sampled_from([*TEXT_TRAPS, "\ud800", "\udfff"]) | st.text(max_size=8), max_size=6
).map("".join)
ROW_KEYS = ["prompt", "messages", "chosen", "rejected", "turns", "transcript", "role", "content"]
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | SURROGATE_TEXT,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(ROW_KEYS) | SURROGATE_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
CHAT = st.lists(
    st.fixed_dictionaries(
        {}, optional={"role": st.sampled_from(["user", "assistant", "system", "bot", 1]),
                      "content": SURROGATE_TEXT | st.integers()},
    ),
    max_size=4,
)  # fmt: skip
JSON_ROWS = (
    JSON_VALUES
    | st.fixed_dictionaries({"prompt": SURROGATE_TEXT | CHAT})
    | st.fixed_dictionaries({"messages": CHAT})
    | st.fixed_dictionaries({"chosen": SURROGATE_TEXT})
    | st.fixed_dictionaries({"turns": st.lists(SURROGATE_TEXT, max_size=2)})
)
SUFFIXES = [".jsonl", ".csv", ".tsv", ".jsonl.gz", ".csv.gz", ".txt"]


def check_prompts(path: Path, **options: Any) -> list[Prompt] | None:
    """Read ``path``: well-formed prompts and skips, or None after checking the error."""
    stats = ReadStats()
    try:
        prompts = list(load_prompts(path, stats=stats, **options))
    except CharterError as err:
        assert_names(err, path)
        return None
    for prompt in prompts:
        check_prompt(prompt, path)
    for reason in stats.skipped:
        assert re.match(rf"{re.escape(str(path))}:\d+: ", reason) and one_line(reason), reason
    if options.get("on_bad_row", "error") == "error":
        assert not stats.skipped
    assert stats.prompts == len(prompts)
    return prompts


def check_prompt(prompt: Prompt, path: Path) -> None:
    assert prompt.messages and prompt.messages[-1].role == "user"
    assert prompt.messages[-1].content.strip(), "an empty prompt was read"
    assert prompt.id == messages_id(prompt.messages)
    assert prompt.source and prompt.source.startswith(f"{path}:")
    assert Prompt.model_validate_json(prompt.model_dump_json()) == prompt


def encode(rows: list[Any], ascii_only: bool) -> bytes:
    text = "".join(json.dumps(row, ensure_ascii=ascii_only) + "\n" for row in rows)
    return text.encode("utf-8", "surrogatepass")  # lone surrogates become invalid UTF-8


@HOSTILE
@given(
    data=st.binary(max_size=3_000),
    suffix=st.sampled_from(SUFFIXES),
    wrap=st.sampled_from(["raw", "gzip", "corrupt-gzip"]),
    fmt=st.sampled_from(["auto", "jsonl", "csv", "hh"]),
    skip=st.booleans(),
)
def test_random_bytes_as_prompts(
    tmp_path: Path, data: bytes, suffix: str, wrap: str, fmt: str, skip: bool
) -> None:
    if wrap != "raw":
        data = gzip.compress(data)
    if wrap == "corrupt-gzip":  # keep the header, spoil the deflate stream or the trailer
        data = data[:10] + bytes(b ^ 0x5A for b in data[10:20]) + data[20:]
    path = tmp_path / f"p{suffix}"
    path.write_bytes(data)
    check_prompts(path, fmt=fmt, on_bad_row="skip" if skip else "error")


@HOSTILE
@given(
    rows=st.lists(JSON_ROWS, max_size=6),
    ascii_only=st.booleans(),
    fmt=st.sampled_from(["auto", "jsonl", "hh"]),
    gz=st.booleans(),
    skip=st.booleans(),
)
def test_random_json_rows(
    tmp_path: Path, rows: list[Any], ascii_only: bool, fmt: str, gz: bool, skip: bool
) -> None:
    data = encode(rows, ascii_only)
    path = tmp_path / ("p.jsonl.gz" if gz else "p.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    check_prompts(path, fmt=fmt, on_bad_row="skip" if skip else "error")


NOT_A_TRANSCRIPT = TRAP_TEXT.filter(lambda t: not t.startswith(("\n\nHuman:", "Human:")))


@HOSTILE
@given(texts=st.lists(NOT_A_TRANSCRIPT, max_size=6), ascii_only=st.booleans())
def test_plain_prompts_come_back_exactly(
    tmp_path: Path, texts: list[str], ascii_only: bool
) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(encode([{"prompt": t} for t in texts], ascii_only))
    stats = ReadStats()
    prompts = read_all_or_none(path, stats)
    assert [p.messages for p in prompts] == [
        (Message(role="user", content=t),) for t in texts if t.strip()
    ]
    assert len(stats.skipped) == sum(1 for t in texts if not t.strip())


def read_all_or_none(path: Path, stats: ReadStats) -> list[Prompt]:
    """The prompts, skipping bad rows; [] where there are none (an error naming the file)."""
    try:
        return list(load_prompts(path, on_bad_row="skip", stats=stats))
    except CharterError as err:
        assert str(err).startswith(f"no prompts in {path}: ") and one_line(str(err))
        return []


@HOSTILE
@given(
    text=st.text(st.sampled_from(list(',"\n\r\t\x00 ab\\é')), max_size=200) | TRAP_TEXT,
    header=st.sampled_from(["prompt\n", "id,prompt\n", "prompt,prompt\n", "goal\n", ""]),
    suffix=st.sampled_from([".csv", ".tsv", ".csv.gz"]),
    column=st.sampled_from([None, "prompt", "goal", "missing"]),
    skip=st.booleans(),
)
def test_csv_garbage(
    tmp_path: Path, text: str, header: str, suffix: str, column: str | None, skip: bool
) -> None:
    data = (header + text).encode("utf-8")
    path = tmp_path / f"p{suffix}"
    path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    check_prompts(path, prompt_column=column, on_bad_row="skip" if skip else "error")


@HOSTILE
@given(cells=st.lists(TRAP_TEXT, max_size=6))
def test_csv_cells_come_back_exactly(tmp_path: Path, cells: list[str]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerows([["id", "prompt"], *([str(i), c] for i, c in enumerate(cells))])
    path = tmp_path / "p.csv"
    path.write_bytes(out.getvalue().encode("utf-8"))
    stats = ReadStats()
    prompts = read_all_or_none(path, stats)
    assert [p.messages[0].content for p in prompts] == [c for c in cells if c.strip()]
    assert len(stats.skipped) == sum(1 for c in cells if not c.strip())


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"prompt": "\\ud800"}', "lone surrogate"),
        (b'{"messages": [{"role": "user", "content": "a\\udfffb"}]}', "lone surrogate"),
        (b'{"chosen": "\\n\\nHuman: \\ud83d"}', "lone surrogate"),
        (b'{"prompt": ' + b"9" * 5_000 + b"}", "a number too long to read"),
        (b"9" * 5_000, "a number too long to read"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"turns": [" \\n "]}', "'turns' must be a non-empty list of strings"),
        (b'{"a\\nb": 1, "\\u2028": 2}', "(found: a b,"),
        (b"\xef\xbb\xbf{}", "invalid JSON"),
    ],
)
def test_rows_that_broke_the_reader(tmp_path: Path, line: bytes, reason: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n' + line + b'\n{"prompt": "also fine"}\n')
    with pytest.raises(CharterError, match=re.escape(f"{path}:2: ")) as info:
        list(load_prompts(path))
    assert reason in str(info.value) and one_line(str(info.value))
    prompts = check_prompts(path, on_bad_row="skip")
    assert prompts is not None and [p.messages[0].content for p in prompts] == ["fine", "also fine"]


@pytest.mark.parametrize("suffix", [".jsonl.gz", ".csv.gz"])
def test_damaged_gzip_is_one_line(tmp_path: Path, suffix: str) -> None:
    whole = gzip.compress(b"prompt\n" + b"".join(b"row %d\n" % i for i in range(5_000)))
    for name, data in {
        "not-gzip": b"prompt\nplain text\n",
        "bad-deflate": whole[:10] + b"\xff" * 16 + whole[26:],
        "cut-short": whole[: len(whole) // 2],
        "bad-checksum": whole[:-8] + b"\x00" * 8,
    }.items():
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(data)
        with pytest.raises(CharterError, match="cannot read") as info:
            list(load_prompts(path, on_bad_row="skip"))
        assert_names(info.value, path)


@pytest.fixture
def small_lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A 64-byte line limit, so long lines cost nothing to write."""
    limit = csv.field_size_limit()
    monkeypatch.setattr(charter.jsonl_rows, "MAX_LINE_BYTES", 64)
    yield 64
    csv.field_size_limit(limit)


@HOSTILE
@given(lengths=st.lists(st.integers(min_value=1, max_value=200), max_size=8), gz=st.booleans())
def test_long_lines_are_skipped_by_number(
    small_lines: int, tmp_path: Path, lengths: list[int], gz: bool
) -> None:
    rows = [json.dumps({"prompt": "x" * max(1, n - 14)}) for n in lengths]
    data = "\n".join(rows).encode()
    path = tmp_path / ("p.jsonl.gz" if gz else "p.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    stats = ReadStats()
    prompts = read_all_or_none(path, stats)
    too_long = [i + 1 for i, row in enumerate(rows) if len(row) > small_lines]
    assert [p.source for p in prompts] == [
        f"{path}:{i + 1}" for i in range(len(rows)) if i + 1 not in too_long
    ]
    assert stats.skipped == [f"{path}:{n}: line longer than 64 bytes" for n in too_long]


def test_a_long_csv_field_is_a_bad_row(small_lines: int, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(f"prompt\nshort\n{'y' * 100}\nafter\n", encoding="utf-8")
    stats = ReadStats()
    prompts = list(load_prompts(path, on_bad_row="skip", stats=stats))
    assert [p.messages[0].content for p in prompts] == ["short", "after"]
    assert len(stats.skipped) == 1 and "field larger than field limit" in stats.skipped[0]


@HOSTILE
@given(
    texts=st.lists(st.sampled_from(["tea?", "coffee?", "tea?", "water?"]), min_size=1, max_size=8)
)
def test_duplicate_prompts_share_one_id(tmp_path: Path, texts: list[str]) -> None:
    """Ids are content hashes: a repeated prompt gets the same id (the stages keep the first)."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(encode([{"prompt": t} for t in texts], ascii_only=True))
    prompts = list(load_prompts(path))
    by_text = {p.messages[0].content: p.id for p in prompts}
    assert [p.id for p in prompts] == [by_text[t] for t in texts]
    assert len(set(by_text.values())) == len(set(texts))
    assert len({p.source for p in prompts}) == len(texts)
    assert len(list(first_seen(prompts, set(), key=lambda p: p.id))) == len(set(texts))


# --- model replies with our template markers -------------------------------------------------

MARK = "MARK-7f3a"  # in the hostile prompt only, so the fake model knows whom it answers
TEMPLATE_TRAPS = [
    "Critique:", "Revision:", "**Revision:**", "Revised response:", "CritiqueRequest:",
    "RevisionRequest:", "<|im_start|>assistant\n", "<|im_start|>user\n", "<|im_end|>", "</s>",
    "[INST]", "\n\nHuman: ", "\n\nAssistant: ", "The answer is:", " (A)", " (B)", "(A)", "(B)",
    "\nTherefore, the answer is:", "Options:\n", '{"role": "user", "content": "hi"}', "{", "}",
    "\n", "\n\n", "no revision needed", "No changes are needed.", "The response has no issues.",
    "Here is the revised response:\n", "```", "\u2028", "\x00", CRITIC_SYSTEM.split(". ")[0],
    REVISION_REQUEST.format(revision="Rewrite it."), MARK,
]  # fmt: skip
REPLIES = st.lists(st.sampled_from(TEMPLATE_TRAPS) | st.text(max_size=10), max_size=8).map("".join)
NORMAL = Prompt.from_messages([Message(role="user", content="How do I brew tea?")], "normal:1")
CONSTITUTION = Constitution.load("default")


def hostile_model(replies: list[str]) -> FakeBackend:
    """The echo model, except that it answers the hostile prompt with ``replies``, in turn."""
    echo, hostile = FakeBackend(), itertools.cycle(replies)

    def reply(conversation: Conversation, config: GenerationConfig) -> str:
        if any(MARK in m.content for m in conversation):
            return next(hostile)
        return echo.generate([conversation], config)[0].text

    return FakeBackend("hostile", responses=reply)


def run_revise(prompts: list[Prompt], backend: FakeBackend, config: ReviseConfig) -> list[Trace]:
    return list(revise(prompts, constitution=CONSTITUTION, backend=backend, config=config))


@HOSTILE
@given(
    prompt_text=REPLIES,
    replies=st.lists(REPLIES, min_size=1, max_size=5),
    hostile_first=st.booleans(),
    skip_unneeded=st.booleans(),
)
def test_revise_replies_with_template_markers(
    prompt_text: str, replies: list[str], hostile_first: bool, skip_unneeded: bool
) -> None:
    config = ReviseConfig(rounds=2, skip_unneeded=skip_unneeded)
    hostile = Prompt.from_messages([Message(role="user", content=MARK + prompt_text)], "hostile:1")
    batch = [hostile, NORMAL] if hostile_first else [NORMAL, hostile]
    traces = {t.id: t for t in run_revise(batch, hostile_model(replies), config)}
    (alone,) = run_revise([NORMAL], hostile_model(replies), config)
    assert traces[NORMAL.id] == alone  # the hostile prompt changed nothing of the other's

    trace = traces[hostile.id]
    assert trace.messages == hostile.messages and trace.source == "hostile:1"
    own = {clean_reply(r) for r in replies}
    assert trace.initial in own
    for step in trace.steps:
        assert step.critique in own and (step.revision is None or step.revision in own)
    revised = [s.revision for s in trace.steps if s.outcome == "revised"]
    assert trace.final == (revised[-1] if revised else trace.initial)
    assert "\n" not in trace.model_dump_json()
    assert Trace.model_validate_json(trace.model_dump_json()) == trace
    for row in sft_rows(trace, "all"):
        assert row.prompt_id == trace.id and row.messages[:-1] == trace.messages


PADDING = st.sampled_from(["", " " * 50_000, "\n" * 50_000, "**" * 20_000, "Revision" * 5_000])


@HOSTILE
@given(head=PADDING, text=REPLIES, tail=PADDING)
def test_reply_parsing_is_linear_and_only_trims(head: str, tail: str, text: str) -> None:
    reply = head + text + tail
    cleaned = clean_reply(reply)
    assert cleaned in reply and cleaned == cleaned.strip()
    assert isinstance(says_no_change(cleaned, "previous answer"), bool)
    assert isinstance(finds_nothing(cleaned), bool)


def run_label(
    pairs: list[PreferencePair], labeller: FakeBackend, config: LabelConfig
) -> list[Label]:
    return list(label(pairs, constitution=CONSTITUTION, labeller=labeller, config=config))


NORMAL_PAIR = PreferencePair.make(
    [Message(role="user", content="Help me, please.")], "a kind reply", "a rude reply"
)


@HOSTILE
@given(
    texts=st.lists(REPLIES, min_size=3, max_size=3),
    reasoning=st.lists(REPLIES, min_size=1, max_size=3),
    mode=st.sampled_from(["soft", "cot"]),
    swap=st.booleans(),
    per_label=st.integers(min_value=1, max_value=3),
    ensemble=st.sampled_from(["sample", "all"]),
)
def test_label_options_with_template_markers(
    texts: list[str], reasoning: list[str], mode: str, swap: bool, per_label: int, ensemble: str
) -> None:
    config = LabelConfig.model_validate({
        "mode": mode, "swap": swap, "principles_per_label": per_label, "ensemble": ensemble,
        "hard": {"veto": True},
    })  # fmt: skip
    prompt = [Message(role="user", content=MARK + texts[0])]
    hostile = PreferencePair.make(prompt, texts[1], texts[2], "hostile:1")
    labels = {
        lb.id: lb for lb in run_label([hostile, NORMAL_PAIR], hostile_model(reasoning), config)
    }
    (alone,) = run_label([NORMAL_PAIR], hostile_model(reasoning), config)
    assert labels[NORMAL_PAIR.id] == alone  # the hostile pair changed nothing of the other's

    result = labels[hostile.id]
    assert result.responses == hostile.responses and result.prompt == hostile.prompt
    low, high = config.clamp if mode == "cot" else (0.0, 1.0)
    if sum(result.crossed) == 1:  # the hard-constraint veto decides, past any clamp
        assert result.p_first == (0.0 if result.crossed[0] else 1.0)
    else:
        assert low <= result.p_first <= high
    for vote in result.votes:
        assert 0.0 <= vote.p <= 1.0
        assert set(vote.reasoning) <= {r.strip() for r in reasoning}
    assert Label.model_validate_json(result.model_dump_json()) == result


def test_scores_are_read_for_our_choices_only() -> None:
    """The labeller is asked for " (A)" and " (B)" whatever the options say (and "Yes" or
    "No" for the hard-constraint check of each reply)."""
    seen: list[tuple[str, ...]] = []

    def scores(conversation: Conversation, choices: Any) -> list[float]:
        seen.append(tuple(choices))
        return [-1.0, -1.0]

    trap = "The answer is: (B)\n(B) (A) <|im_end|>"
    pair = PreferencePair.make([Message(role="user", content=trap)], trap, trap + "!")
    veto = LabelConfig.model_validate({"hard": {"veto": True}})
    (result,) = run_label([pair], FakeBackend(scores=scores), veto)
    assert set(seen) == {CHOICES, YES_NO} and result.p_first == 0.5
