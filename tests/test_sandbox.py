"""The code sandbox: misbehaving generated programs fail their test and harm nothing."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.stages.evaluate.sandbox import Limits, network_isolated, run_program

FAST = Limits(cpu_seconds=1, wall_seconds=4, memory_mb=512)
SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"


@pytest.fixture(autouse=True)
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Scratch directories go under tmp_path, so a test can see none is left behind."""
    scratch_root = tmp_path / "tmp"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    yield scratch_root
    assert list(scratch_root.iterdir()) == []  # every scratch directory was removed


def test_a_correct_program_passes_and_a_wrong_one_fails() -> None:
    assert run_program(SOLUTION + TESTS, FAST).passed
    wrong = run_program("def add(a, b):\n    return a - b\n" + TESTS, FAST)
    assert wrong.status == "failed" and "AssertionError" in wrong.detail


def test_an_endless_loop_is_stopped_by_the_cpu_limit() -> None:
    outcome = run_program("while True:\n    pass\n", FAST)
    assert outcome.status == "timeout" and not outcome.passed
    assert run_program(SOLUTION + TESTS, FAST).passed  # the next program is unaffected


def test_a_sleeping_program_is_stopped_by_the_wall_clock() -> None:
    outcome = run_program("import time\ntime.sleep(600)\n", Limits(wall_seconds=1.5))
    assert outcome.status == "timeout" and outcome.seconds < 10


def test_allocating_10_gb_fails_without_touching_the_machine() -> None:
    outcome = run_program("block = bytearray(10 * 2**30)\n" + SOLUTION + TESTS, FAST)
    assert outcome.status == "memory" and not outcome.passed


def test_opening_a_socket_is_refused() -> None:
    program = "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)\n"
    outcome = run_program(program, FAST)
    assert outcome.status == "blocked" and "socket" in outcome.detail


def test_writing_outside_the_scratch_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    for program in (
        f"open({str(target)!r}, 'w').write('x')\n",
        f"import os\nos.close(os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY))\n",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
    ):
        outcome = run_program(program, FAST)
        assert outcome.status == "blocked", (program, outcome)
    assert not target.exists()
    inside = "open('notes.txt', 'w').write('ok')\nassert open('notes.txt').read() == 'ok'\n"
    assert run_program(inside, FAST).passed  # its own scratch directory is writable


def test_deleting_files_and_starting_processes_are_refused(tmp_path: Path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text("precious")
    for program in (
        f"import os\nos.remove({str(keep)!r})\n",
        f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n",
        f"import os\nos.system('rm -f {keep}')\n",
        "import subprocess\nsubprocess.run(['true'])\n",
        "import os\nos.fork()\n",
        "import ctypes\n",
    ):
        assert run_program(program, FAST).status == "blocked", program
    assert keep.read_text() == "precious"


def test_a_fork_bomb_starts_nothing() -> None:
    for program in (
        "import os\nwhile True:\n    os.fork()\n",
        "import multiprocessing as mp\nwhile True:\n    mp.Process(target=print).start()\n",
        "import os\nos.system(':(){ :|:& };:')\n",
    ):
        outcome = run_program(program, FAST)
        assert outcome.status == "blocked" and not outcome.passed, (program, outcome)
    assert run_program(SOLUTION + TESTS, FAST).passed  # and the machine is still usable


def test_the_home_directory_is_out_of_reach() -> None:
    home = Path.home()
    target = home / "charter-sandbox-escape.txt"
    for program in (  # the user's real home, by its path
        f"open({str(target)!r}, 'w').write('x')\n",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
    ):
        outcome = run_program(program, FAST)
        assert outcome.status == "blocked", (program, outcome)
    # "~" is the program's own scratch directory (HOME points there), removed afterwards.
    tilde = "import os\nopen(os.path.expanduser('~/note.txt'), 'w').write('x')\n"
    tilde += f"assert os.path.expanduser('~') != {str(home)!r}\n"
    assert run_program(tilde, FAST).passed
    assert not target.exists() and not (home / "note.txt").exists()


def test_endless_output_is_capped() -> None:
    outcome = run_program("while True:\n    print('x' * 4096)\n", Limits(file_mb=1))
    assert not outcome.passed and outcome.status in {"failed", "error"}


@pytest.mark.skipif(not network_isolated(), reason="no network namespaces on this system")
def test_the_program_has_no_network_interface_up() -> None:
    program = (  # /proc/net/dev lists the interfaces of the process's own network namespace
        "names = [line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]]\n"
        "assert names == ['lo'], names\n"
    )
    assert run_program(program, FAST).passed
