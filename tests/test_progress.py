"""Progress bars off a terminal: plain lines a log file can hold, not carriage returns."""

from __future__ import annotations

import pytest

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
