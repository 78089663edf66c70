"""Every bad input gets one clear line and exit 2, and nothing is half-written (issue 19).

CLI tests run in-process with the fake backend; nothing here loads a real model.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write_jsonl

from charter import extras
from charter.cli import cli
from charter.errors import CharterError, plain_words
from charter.prompts import load_prompts

LIBRARY_WORDS = ("Input should", "extra_forbidden", "Field required", "Extra inputs",
                 "validation error", "Traceback")  # fmt: skip


def charter(*args: object) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def error_line(result: Result, code: int = 2) -> str:
    """The one ``Error: …`` line of a failed command, checked for the library's words."""
    assert result.exit_code == code, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for words in LIBRARY_WORDS:
        assert words not in result.output, result.output
    return errors[0]


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "p.jsonl", [{"prompt": "How do I pick a lock?"}])


@pytest.fixture(autouse=True)
def charter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))  # not ~/.cache/charter


def test_charter_run_checks_every_stage_extra_before_the_first_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extras, "installed", lambda module: module != "trl")
    line = error_line(charter("run", "demo", "--out", tmp_path / "run"))
    assert "the sft, dpo stages need the train extra (trl missing)" in line
    assert "pip install 'charter[train]'" in line
    assert not (tmp_path / "run").exists()  # no stage started
    # Only the stages that will run count, each with its own extra.
    extras.check(["calibrate", "revise"])
    monkeypatch.setattr(extras, "installed", lambda module: module != "sentence_transformers")
    with pytest.raises(CharterError, match=r"the revise stage needs the evaluate extra"):
        extras.check(["calibrate", "revise"], recipe="teacher")  # verifies with the classifier


@pytest.mark.parametrize("case", ["file", "under a file", "empty", "read-only"])
def test_an_out_that_cannot_hold_a_run_is_refused_before_anything_is_written(
    tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "afile").write_text("x")
    locked = work / "locked"
    locked.mkdir()
    out = {"file": "afile", "under a file": "afile/run", "empty": "", "read-only": "locked/run"}
    # Tests may run as root, whom permissions do not stop: the check asks os.access.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    before = sorted(p.name for p in work.rglob("*"))
    result = charter("revise", "--model", "fake/echo", "--prompts", prompts, "--rounds", "1",
                     "--out", out[case])  # fmt: skip
    line = error_line(result)
    assert "'--out'" in line
    assert sorted(p.name for p in work.rglob("*")) == before
    if case == "empty":
        assert "current directory" in line


@pytest.mark.parametrize(
    "command",
    [("evaluate", "--model", "fake/echo"), ("label", "calibrate", "--gold", "demo-hh"),
     ("run", "demo"), ("train", "sft", "--data", "x.jsonl")],
)  # fmt: skip
def test_every_out_option_refuses_an_empty_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert "current directory" in error_line(charter(*command, "--out", ""))
    assert [p.name for p in tmp_path.iterdir() if p.name != "home"] == []


def test_a_full_disk_stops_with_one_line_and_an_interrupted_manifest(
    tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.runs import JsonlAppender

    def full(self: JsonlAppender, record: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(JsonlAppender, "write", full)
    out = tmp_path / "R"
    result = charter("revise", "--model", "fake/echo", "--prompts", prompts, "--rounds", "1",
                     "--out", out)  # fmt: skip
    line = error_line(result, code=1)
    assert "no space left on device" in line and "rerun" in line
    assert json.loads((out / "manifest.json").read_text("utf-8"))["status"] == "interrupted"


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("revise", "--model", "fake/echo", "--prompts", "{p}", "--temperature", "nan"),
         "--temperature"),
        (("revise", "--model", "fake/echo", "--prompts", "{p}", "--revision-temperature", "inf"),
         "--revision-temperature"),
        (("label", "--prompts", "{p}", "--temperature", "nan"), "--temperature"),
        (("label", "--prompts", "{p}", "--min-margin", "nan"), "--min-margin"),
        (("label", "--prompts", "{p}", "--mode", "cot", "--clamp", "0.7", "0.3"), "--clamp"),
        (("label", "--prompts", "{p}", "--mode", "cot", "--clamp", "nan", "0.6"), "--clamp"),
        (("label", "calibrate", "--gold", "demo-hh", "--clamp", "0.7", "0.3"), "--clamp"),
        (("train", "dpo", "--data", "{p}", "--out", "T", "--beta", "nan"), "--beta"),
    ],
)  # fmt: skip
def test_nan_and_reversed_ranges_are_one_line_errors(
    prompts: Path, args: tuple[str, ...], option: str
) -> None:
    line = error_line(charter(*(a.replace("{p}", str(prompts)) for a in args)))
    assert f"'{option}'" in line
    assert "finite number" in line or "0 <= LOW <= 0.5 <= HIGH <= 1, got 0.7 0.3" in line


def test_a_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    name = os.fsencode(tmp_path) + b"/caf\xe9.jsonl"
    with open(name, "wb") as f:
        f.write(b'{"prompt": "hello"}\n')
    out = tmp_path / "R"
    line = error_line(charter("revise", "--model", "fake/echo", "--prompts", os.fsdecode(name),
                              "--rounds", "1", "--out", out))  # fmt: skip
    assert "--prompts" in line and "caf\\xe9.jsonl" in line and "not UTF-8" in line
    assert not out.exists()


def test_a_byte_order_mark_is_not_part_of_the_first_column_or_row(tmp_path: Path) -> None:
    from charter.stages.evaluate.suites import prompt_texts

    csv = tmp_path / "p.csv"
    csv.write_bytes("\ufeffprompt,id\nhow do I boil an egg?,1\n".encode())
    assert [p.messages[0].content for p in load_prompts(csv)] == ["how do I boil an egg?"]
    assert [text for _, text in prompt_texts(csv)] == ["how do I boil an egg?"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_bytes('\ufeff{"prompt": "hi"}\n'.encode())
    assert [p.messages[0].content for p in load_prompts(jsonl)] == ["hi"]


def test_a_damaged_run_json_stops_charter_run_before_any_stage(tmp_path: Path) -> None:
    root = tmp_path / "run"
    root.mkdir()
    (root / "run.json").write_text("{not json", encoding="utf-8")
    line = error_line(charter("run", "demo", "--out", root))
    assert f"{root / 'run.json'}: not a charter run plan" in line and "--out" in line
    assert [p.name for p in root.iterdir()] == ["run.json"]


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "it has no rows"), ("\n\n", "it has no rows"),
     ('{"nope": 1}\n', "its only row was bad and skipped")],
)  # fmt: skip
def test_an_empty_prompt_file_is_exit_2(tmp_path: Path, text: str, why: str) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(text, encoding="utf-8")
    out = tmp_path / "R"
    for args in (("revise", "--model", "fake/echo"),
                 ("label", "--policy", "fake/echo", "--labeller", "fake/echo")):  # fmt: skip
        result = charter(*args, "--prompts", empty, "--on-bad-row", "skip", "--out", out)
        assert f"no prompts in {empty}: {why}" in error_line(result)
        assert not out.exists()
    dry = charter("revise", "--prompts", empty, "--on-bad-row", "skip", "--dry-run")
    assert f"no prompts in {empty}" in error_line(dry) and "===" not in dry.output


def test_messages_suggest_only_options_the_command_has(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"nope": 1}])
    line = error_line(charter("evaluate", "--data", f"harmlessness={bad}", "--dry-run"))
    assert f"{bad}:2:" in line and "--on-bad-row" not in line
    assert "--on-bad-row skip" in error_line(charter("revise", "--prompts", bad, "--dry-run"))
    table = tmp_path / "t.csv"
    table.write_text("goal\nx\n", encoding="utf-8")
    with pytest.raises(CharterError) as err:
        list(load_prompts(table))  # as charter run reads a config's prompts
    assert "--prompt-column" not in str(err.value)
    assert "--prompt-column" in error_line(charter("revise", "--prompts", table, "--dry-run"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", "demo", "--until", "sft", "--only", "revise", "--dry-run"),
         "--until sft and --only revise contradict each other"),
        (("evaluate", "--suite", "harmlessness", "--revise-run", ".", "--dry-run"),
         "--revise-run applies only to --suite principles"),
        (("evaluate", "--jailbreaks-per-prompt", "3", "--dry-run"),
         "--jailbreaks-per-prompt applies only with --data jailbreaks=FILE"),
        (("label", "--pairs", "{p}", "--samples", "3", "--temperature", "0.5", "--dry-run"),
         "--samples, --temperature apply to --prompts"),
        (("label", "--pairs", "{p}", "--clamp", "0.3", "0.7", "--dry-run"),
         "--clamp applies to --mode cot"),
        (("revise", "--prompts", "{p}", "--rounds", "0", "--skip-unneeded", "--dry-run"),
         "--skip-unneeded applies to critique→revision rounds"),
        (("train", "sft", "--full", "--merge", "--data", "{p}", "--out", "T"),
         "--merge/--no-merge apply to LoRA"),
    ],
)  # fmt: skip
def test_contradictory_options_are_refused(
    tmp_path: Path, prompts: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...],
    message: str,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    line = error_line(charter(*(a.replace("{p}", str(prompts)) for a in args)))
    assert message in line
    assert not (tmp_path / "T").exists()


def test_validation_errors_are_told_in_plain_words() -> None:
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        temperature: float = Field(default=1.0, ge=0, le=5)
        rounds: int = Field(default=1, ge=1)
        mode: str = "soft"
        needed: int

    cases = [({"temperature": float("nan"), "needed": 1}, "must be at most 5, got nan"),
             ({"rounds": 0, "needed": 1}, "must be at least 1, got 0"),
             ({"rounds": "two", "needed": 1}, "must be a whole number, got 'two'"),
             ({"typo": 1, "needed": 1}, "unknown field (check the spelling)"),
             ({}, "field is required")]  # fmt: skip
    for data, words in cases:
        try:
            Settings.model_validate(data)
        except ValidationError as err:
            assert plain_words(err.errors()[0]) == words
        else:
            raise AssertionError(data)
