"""The CLI, in process: what a new user runs, with the fake backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write_jsonl

from charter.cli import cli
from charter.constitution import Constitution
from charter.errors import CharterError
from charter.prompts import PromptSet
from charter.stages import revise as revise_module


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_help_lists_every_command() -> None:
    result = charter("--help")
    assert result.exit_code == 0
    for command in ("constitution", "revise"):
        assert command in result.output
    assert "lint" in charter("constitution", "--help").output


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys; from charter.cli import main; sys.argv = ['charter', '--help']\n"
        "try: main()\nexcept SystemExit: pass\n"
        "heavy = ('pydantic', 'yaml', 'tqdm', 'torch', 'httpx', 'xllamacpp', 'ray')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]")


def test_lint_default_and_a_broken_file(tmp_path: Path) -> None:
    ok = charter("constitution", "lint", "default")
    assert ok.exit_code == 0 and "16 critique/revision principles" in ok.output
    broken = tmp_path / "broken.yaml"
    text = (Path(__file__).parent.parent / "src/charter/constitutions/default.yaml").read_text()
    first_revision = text.index("    revision:")
    end = text.index("\n", first_revision) + 1
    broken.write_text(text[:first_revision] + text[end:], encoding="utf-8")
    bad = charter("constitution", "lint", broken)
    assert bad.exit_code == 2
    assert str(broken) in bad.stderr and "general-harm" in bad.stderr and "revision" in bad.stderr
    assert "Traceback" not in bad.output and len(bad.stderr.strip().splitlines()) == 1


def test_show(tmp_path: Path) -> None:
    result = charter("constitution", "show", "default")
    assert result.exit_code == 0 and "helpful-not-evasive" in result.output
    data = json.loads(charter("constitution", "show", "default", "--json").output)
    assert data["name"] == "default"
    code = charter("constitution", "show", "code")
    assert "check (yes/no): The code does not call eval or exec." in code.output
    # Every principle of the code constitution has its critique, revision and checks.
    assert all(p.critique and p.revision and p.checks
               for p in Constitution.load("code").principles)  # fmt: skip


def test_revise_twenty_prompts(tmp_path: Path, twenty_prompts: Path) -> None:
    out = tmp_path / "R"
    result = charter("revise", "--model", "fake/echo", "--constitution", "default",
                     "--prompts", twenty_prompts, "--rounds", "4", "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    sft = lines(out / "sft.jsonl")
    assert len(sft) == 20
    assert all([m["role"] for m in row["messages"]] == ["user", "assistant"] for row in sft)  # type: ignore[union-attr]
    traces = lines(out / "traces.jsonl")
    ids = {p.id for p in Constitution.load("default").principles}
    assert len(traces) == 20
    for trace in traces:
        steps = trace["steps"]
        assert [s["round"] for s in steps] == [1, 2, 3, 4]  # type: ignore[index, union-attr]
        assert all(s["principle_id"] in ids and s["critique"] for s in steps)  # type: ignore[index, union-attr]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["constitution"]["sha256"] == Constitution.load("default").sha256
    assert manifest["status"] == "complete" and manifest["counts"]["sft_rows"] == 20
    assert manifest["usage"]["calls"] == 20 * 9 and manifest["usage"]["prompt_tokens"] > 0
    assert manifest["inputs"][0]["sha256"] and manifest["config"]["rounds"] == 4
    assert Constitution.load(out / "constitution.yaml").sha256 == manifest["constitution"]["sha256"]
    assert "20 SFT rows" in result.output and "revise" in result.stderr  # summary and progress


def test_revise_hh_transcripts(tmp_path: Path, hh_file: Path) -> None:
    out = tmp_path / "R"
    assert (
        charter(
            "revise", "--model", "fake/echo", "--prompts", hh_file, "--rounds", "1", "--out", out
        ).exit_code
        == 0
    )
    sft = lines(out / "sft.jsonl")
    assert sorted(len(r["messages"]) for r in sft) == [2, 2, 2, 4, 4, 6]  # type: ignore[arg-type]


def test_rerun_resumes_and_changes_nothing(tmp_path: Path, twenty_prompts: Path) -> None:
    args = ("revise", "--model", "fake/echo", "--prompts", twenty_prompts, "--rounds", "2",
            "--out", tmp_path / "R")  # fmt: skip
    charter(*args)
    before = (tmp_path / "R" / "sft.jsonl").read_bytes()
    reads: list[int] = []
    with pytest.MonkeyPatch.context() as patch:  # count passes over the prompt file
        original = PromptSet.__call__
        patch.setattr(PromptSet, "__call__", lambda self: reads.append(1) or original(self))
        again = charter(*args)
    assert again.exit_code == 0 and "20 resumed" in again.output
    assert len(reads) == 1  # a finished run's rerun reads its prompts once, to count them
    assert (tmp_path / "R" / "sft.jsonl").read_bytes() == before
    other = charter(*args[:-4], "--rounds", "3", "--out", tmp_path / "R")
    assert other.exit_code == 2
    assert "made with other settings (config.rounds: 2 → 3); use a new --out" in other.stderr


@pytest.mark.parametrize(
    ("command", "files"),
    [
        (("revise", "--model", "fake/echo", "--rounds", "1"),
         {"traces": "traces.jsonl", "sft_rows": "sft.jsonl"}),
        (("label", "--policy", "fake/echo", "--labeller", "fake/echo"),
         {"labels": "labels.jsonl", "prefs": "prefs.jsonl"}),
    ],
    ids=["revise", "label"],
)  # fmt: skip
def test_a_rerun_with_a_smaller_limit_leaves_counts_that_match_the_files(
    tmp_path: Path, twenty_prompts: Path, monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...], files: dict[str, str],
) -> None:  # fmt: skip
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))  # label's calibration store
    out = tmp_path / "R"
    for limit in ("10", "4"):
        result = charter(*command, "--prompts", twenty_prompts, "--limit", limit, "--out", out)
        assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    for count, name in files.items():
        assert manifest["counts"][count] == len(lines(out / name)) == 10, count
    if command[0] == "revise":  # every prompt the traces answer, and the limit that reached them
        assert manifest["counts"]["prompts"] == 10 and manifest["limit"] == 10


def test_a_run_made_with_other_prompt_templates_refuses_to_resume(
    tmp_path: Path, twenty_prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "R"
    args = ("revise", "--model", "fake/echo", "--prompts", twenty_prompts, "--limit", "3",
            "--rounds", "1", "--out", out)  # fmt: skip
    assert charter(*args).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["templates"] == revise_module.template_digest()
    traces = (out / "traces.jsonl").read_bytes()
    monkeypatch.setattr(revise_module, "CRITIC_SYSTEM", revise_module.CRITIC_SYSTEM + " Be brief.")
    again = charter(*args)
    assert again.exit_code == 2 and len(again.stderr.strip().splitlines()) == 1
    assert (
        f"{out}: made with other settings (templates: this Charter version's prompt "
        "templates differ from the run's); use a new --out or delete it" in again.stderr
    )
    assert (out / "traces.jsonl").read_bytes() == traces


def test_dry_run_prints_prompts_and_calls_no_model(
    tmp_path: Path, twenty_prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_backend(*args: object, **kwargs: object) -> None:
        raise AssertionError("dry run must not build a backend")

    monkeypatch.setattr("charter.backends.load_backend", no_backend)
    result = charter(
        "revise", "--prompts", twenty_prompts, "--limit", "2", "--dry-run", "--rounds", "4"
    )
    assert result.exit_code == 0
    c = Constitution.load("default")
    assert (
        result.output.count(": critique call") == 8 and result.output.count(": revision call") == 8
    )
    shown = [p for p in c.critique_principles if p.critique and p.critique in result.output]
    assert shown and all(p.revision and p.revision in result.output for p in shown)
    assert c.brief and c.brief in result.output and c.hard_constraints[0] in result.output
    assert result.output.count(c.hard_constraints[0]) == 1  # in the shared prefix, shown once
    assert not any(tmp_path.glob("*/manifest.json"))


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"nope": 1}])
    result = charter("revise", "--prompts", bad, "--out", tmp_path / "R")
    assert result.exit_code == 2 and f"{bad}:2:" in result.stderr
    assert not (tmp_path / "R").exists()  # validated before anything is written
    skipped = charter(
        "revise",
        "--model",
        "fake/echo",
        "--prompts",
        bad,
        "--on-bad-row",
        "skip",
        "--rounds",
        "1",
        "--out",
        tmp_path / "S",
    )
    assert skipped.exit_code == 0 and "1 bad rows skipped" in skipped.output
    assert (
        json.loads((tmp_path / "S" / "manifest.json").read_text())["counts"]["bad_rows_skipped"]
        == 1
    )
    missing = charter("revise", "--prompts", tmp_path / "missing.jsonl", "--out", tmp_path / "R")
    assert missing.exit_code == 2 and "no prompt file" in missing.stderr
    assert charter("revise", "--model", "nope/x", "--prompts", bad, "--on-bad-row", "skip",
                   "--out", tmp_path / "T").exit_code == 2  # fmt: skip


def test_threads_reach_the_local_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from charter.backends.local import engine_threads, usable_cores

    monkeypatch.setenv("CHARTER_THREADS", "")  # unset, and put back as it was after the test
    assert engine_threads() == usable_cores()
    result = CliRunner().invoke(cli, ["--threads", "1", "constitution", "lint", "default"])
    assert result.exit_code == 0, result.output
    assert engine_threads() == 1  # what every local/ model of the command then uses
    monkeypatch.setenv("CHARTER_THREADS", "zero")
    with pytest.raises(CharterError, match="CHARTER_THREADS='zero': give a whole number"):
        engine_threads()
    bad = CliRunner().invoke(cli, ["--threads", "0", "constitution", "lint", "default"])
    assert bad.exit_code == 2 and "--threads" in bad.output


def test_retries_reach_every_server_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from charter.backends.openai import OpenAIBackend

    monkeypatch.setenv("CHARTER_RETRIES", "")  # unset, and put back as it was after the test
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").max_retries == 6
    result = CliRunner().invoke(cli, ["--retries", "0", "constitution", "lint", "default"])
    assert result.exit_code == 0, result.output
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1").max_retries == 0
    assert OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", max_retries=3).max_retries == 3
    monkeypatch.setenv("CHARTER_RETRIES", "-1")
    with pytest.raises(CharterError, match="CHARTER_RETRIES='-1': give a whole number of retries"):
        OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")
    bad = CliRunner().invoke(cli, ["--retries", "-1", "constitution", "lint", "default"])
    assert bad.exit_code == 2 and "--retries" in bad.output


def test_library_progress_bars_are_off_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.delenv(variable, raising=False)
    assert CliRunner().invoke(cli, ["-vv", "constitution", "lint", "default"]).exit_code == 0
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert CliRunner().invoke(cli, ["constitution", "lint", "default"]).exit_code == 0
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1"
    code = (
        "import os; os.environ['HF_HUB_DISABLE_PROGRESS_BARS'] = '1'; "
        "from transformers.utils import logging; print(logging.is_progress_bar_enabled())"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert shown.stdout.strip() in ("False", ""), shown  # "": transformers not installed
