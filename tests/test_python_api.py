"""The Python API as documented: docs/python-api.md's worked example runs as it stands.

It is the embedded model for real (revise, label, one SFT step, evaluate), at toy size, so a
change that breaks the documented API fails here and not in a user's hands.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import charter

DOC = Path(__file__).parent.parent / "docs" / "python-api.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text("utf-8"), re.DOTALL)


def test_the_package_names_its_api_without_loading_it() -> None:
    assert set(charter.__all__) >= {"Constitution", "revise", "label", "train", "evaluate",
                                    "run_loop"}  # fmt: skip
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = charter.nope  # type: ignore[attr-defined]
    for name in ("revise", "label", "train", "evaluate", "run_loop"):
        assert getattr(charter, name).__doc__, name
    # Naming the API loads no model library: that happens when a step runs.
    code = (
        "import sys; from charter import Constitution, revise, train, evaluate; "
        "print(sorted(m for m in ('torch', 'transformers', 'xllamacpp') if m in sys.modules))"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]", shown


def test_the_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)
    example = blocks()[0]
    exec(compile(example, str(DOC), "exec"), {"__name__": "example"})
    shown = capsys.readouterr().out
    assert re.search(r"^\d+ principles, sha256 [0-9a-f]{12}$", shown, re.MULTILINE), shown
    assert "2 SFT rows" in shown and "SFT: 1 step(s)" in shown, shown
    assert "['harmlessness']" in shown, shown
    work = tmp_path / "runs" / "python-api"
    for stage in ("revise", "label", "sft", "evaluate"):
        assert (work / stage / "manifest.json").is_file(), stage
    # Called again, every step finds its run complete and does no new work.
    exec(compile(example, str(DOC), "exec"), {"__name__": "example"})
    assert "2 SFT rows" in capsys.readouterr().out
