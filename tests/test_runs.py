"""Run directories: torn-line repair, atomic manifests, refusing to mix settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.records import Message, Prompt
from charter.runs import JsonlAppender, Run, read_jsonl, repair_jsonl, write_atomic


def test_repair_cuts_only_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a": 3, "b"')
    assert repair_jsonl(path) == len(b'{"a": 3, "b"')
    assert path.read_bytes() == b'{"a": 1}\n{"a": 2}\n'
    assert repair_jsonl(path) == 0
    path.write_bytes(b"no newline at all")
    repair_jsonl(path)
    assert path.read_bytes() == b""


def test_appender_and_reader_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    prompts = [Prompt.from_messages([Message(role="user", content=f"p{i}")]) for i in range(3)]
    with JsonlAppender(path) as out:
        for p in prompts:
            out.write(p)
    assert list(read_jsonl(path, Prompt)) == prompts
    with path.open("ab") as f:
        f.write(b'{"id": "broken"}\n')
    with pytest.raises(CharterError, match=r"p\.jsonl:4: not a valid Prompt row"):
        list(read_jsonl(path, Prompt))


def test_write_atomic_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_atomic(path, "old")
    write_atomic(path, "new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # the permissions open() gives under this umask
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


def test_run_refuses_other_settings_and_counts_sessions(tmp_path: Path) -> None:
    run = Run.open(tmp_path / "r", "revise", {"config": {"rounds": 4}, "model": "fake/echo"})
    run.update(counts={"traces": 1}, usage={}, status="complete")
    again = Run.open(tmp_path / "r", "revise", {"config": {"rounds": 4}, "model": "fake/echo"})
    assert again.manifest["sessions"] == 2
    again.update(counts={"traces": 1}, usage={}, status="complete")
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["environment"]["packages"]["charter"]
    with pytest.raises(CharterError) as one:
        Run.open(tmp_path / "r", "revise", {"config": {"rounds": 2}, "model": "fake/echo"})
    assert str(one.value) == (
        f"{tmp_path / 'r'}: made with other settings (config.rounds: 4 → 2); "
        "use a new --out or delete it"
    )
    with pytest.raises(CharterError, match="holds a 'revise' run"):
        Run.open(tmp_path / "r", "label", {})


def test_a_refused_resume_shows_each_differing_setting_old_and_new(tmp_path: Path) -> None:
    first = {"config": {"answer": {"temperature": 1.0}, "rounds": 2}, "model": "fake/a",
             "inputs": [{"name": "p.jsonl", "sha256": "0" * 64}], "templates": "t1"}  # fmt: skip
    Run.open(tmp_path / "r", "revise", first).update(counts={}, usage={}, status="interrupted")
    second = {"config": {"answer": {"temperature": 0.5}, "rounds": 2, "seed": 3},
              "model": "fake/b", "inputs": [{"name": "p.jsonl", "sha256": "1" * 64}],
              "templates": "t2"}  # fmt: skip
    with pytest.raises(CharterError) as err:
        Run.open(tmp_path / "r", "revise", second)
    old_inputs = '[{"name":"p.jsonl","sha256":"' + "0" * 30 + "…"  # cut to 60 characters
    new_inputs = '[{"name":"p.jsonl","sha256":"' + "1" * 30 + "…"
    assert str(err.value) == (
        f"{tmp_path / 'r'}: made with other settings (config.answer.temperature: 1.0 → 0.5; "
        f"config.seed: (not set) → 3; inputs: {old_inputs} → {new_inputs}; "
        'model: "fake/a" → "fake/b"; '
        "templates: this Charter version's prompt templates differ from the run's); "
        "use a new --out or delete it"
    )


def test_one_process_takes_its_own_lock_again_and_releases_it_as_often() -> None:
    """The runner locks a stage's folder, then the stage's run opens it: one process, twice."""
    import tempfile

    from charter.runs import lock_directory

    with tempfile.TemporaryDirectory() as folder:
        outer = lock_directory(Path(folder))
        inner = lock_directory(Path(folder))
        inner.release()
        assert outer.is_locked
        outer.release()
        assert not outer.is_locked


LOCK_HOLDER = """
import sys, time
from pathlib import Path
from charter.runs import Run
run = Run.open(Path(sys.argv[1]), "revise", {"x": 1})
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_cannot_open_a_run_directory_in_use(tmp_path: Path) -> None:
    import subprocess
    import sys

    from charter.errors import CharterError

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path)],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(CharterError, match=rf"in use by pid {holder.pid} .*give another --out"):
            Run.open(tmp_path, "revise", {"x": 1})
    finally:
        holder.kill()
        holder.wait()
    # the lock dies with its process: no stale lock
    run = Run.open(tmp_path, "revise", {"x": 1})
    run.update(counts={}, usage={}, status="complete")
    again = Run.open(tmp_path, "revise", {"x": 1})  # released when complete
    again.update(counts={}, usage={}, status="interrupted")


def test_two_charter_revise_at_once_into_one_directory(tmp_path: Path) -> None:
    import subprocess
    import sys

    from click.testing import CliRunner

    from charter.cli import cli

    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path / "out")],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        args = ["revise", "--model", "fake/echo", "--prompts", "demo-redteam"]
        result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "out")])
    finally:
        holder.kill()
        holder.wait()
    assert result.exit_code == 2 and f"in use by pid {holder.pid}" in result.output
    assert not (tmp_path / "out" / "sft.jsonl").exists()
