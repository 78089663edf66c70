"""Progress bars: rich on a terminal, plain lines a log file can hold off one."""

from __future__ import annotations

import io
import re
import sys

import pytest

from charter import progress
from charter.progress import progress_bar


def test_off_a_terminal_a_bar_is_lines(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=3, desc="answer", unit="question") as bar:  # stderr is captured
        for _ in range(3):
            bar.update(1)
    shown = capsys.readouterr().err
    assert "\r" not in shown and shown.endswith("\n")
    lines = shown.splitlines()
    assert lines[0].startswith("answer:   0%") and lines[-1].startswith("answer: 100%")
    assert "3/3" in lines[-1] and len(lines) <= 3  # the start, the end, nothing per update


def test_a_disabled_bar_shows_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=2, desc="quiet", disable=True) as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_nested_bars_share_one_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """A training bar inside a stage's bar: one rich display, the inner bar gone when done,
    the stage's last state (done of total, unit, the step's figures) left on the screen."""
    screen = _Terminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("NO_COLOR", "1")
    with progress_bar(total=2, desc="revise", unit="call") as outer:
        for _ in range(2):
            with progress_bar(total=3, desc="train sft", unit="step") as inner:
                inner.update(3)
                inner.set_postfix(loss="0.412")
            outer.update(1)
        outer.set_postfix(kept=2)
    assert progress._display is None and progress._open == 0
    last = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue()).split("\n")
    final = [line.split("\r")[-1] for line in last if "revise" in line][-1]
    assert "2/2 call" in final and "kept=2" in final
    assert "\x1b[3" not in screen.getvalue()  # NO_COLOR: no colour codes


def test_a_scaled_bar_counts_in_units_of_a_thousand(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=3e9, desc="assemble", unit="B", unit_scale=True) as bar:
        bar.update(1.2e9)
    assert "40% 1.2G/3.0GB" in capsys.readouterr().err.splitlines()[-1]


def test_a_long_description_keeps_what_the_step_does_and_the_path_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    desc = "answer local//work/runs/demo/export-d6ceaf898806/model.gguf"
    with progress_bar(total=1, desc=desc, unit="question") as bar:
        bar.update(1)
    shown = capsys.readouterr().err.splitlines()[-1]
    assert shown.startswith("answer …") and "export-d6ceaf898806/model.gguf: 100%" in shown
    assert len(shown.split(":")[0]) <= progress.MAX_DESC
