"""`charter report NAME.infer.json`: the page of an inferred constitution, escaped, and one
clear error for a file that is not such a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from charter.cli import cli
from charter.errors import CharterError
from charter.report.infer import infer_report_for, read_infer

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

HOSTILE = "Which response <script>window.__pwned = 1</script> is kinder?"


def estimate(value: float, n: int = 150) -> dict[str, float | int]:
    return {"value": value, "low": value - 0.08, "high": value + 0.07, "n": n}


def report(kept: bool = True) -> dict[str, object]:
    scores = {"accuracy": estimate(0.66), "relevance": 0.31, "position_bias": 0.52}
    candidates = [{"text": HOSTILE, "support": 7, **scores},
                  {"text": "Which response is shorter?", "support": 2,
                   "accuracy": estimate(0.49), "relevance": 0.1, "position_bias": 0.6}]  # fmt: skip
    return {
        "pairs": {"propose": 200, "select": 150, "test": 150}, "proposals": 180,
        "not_a_question": 12, "restates_request": 8, "candidates": candidates,
        "kept": [HOSTILE] if kept else [],
        "test": {"inferred": estimate(0.61) if kept else None,
                 "inferred, one principle per pair": estimate(0.6) if kept else None,
                 "constant": {"value": 0.5, "n": 150, "note": "always the first shown"},
                 "longer_reply": estimate(0.55), "reference (default)": estimate(0.58),
                 "per_principle": {HOSTILE: scores} if kept else {}},
        "recovery": {"threshold": 0.7, "recovered": 1, "of": 2, "principles": [
            {"reference": "harm", "nearest": HOSTILE, "cosine": 0.74},
            {"reference": "honesty", "nearest": HOSTILE, "cosine": 0.41}]},
        "cost": {"calls": 10400, "prompt_tokens": 5_000_000, "cached_tokens": 2_000_000,
                 "completion_tokens": 9000, "model_seconds": 9000.0, "rows": 5300,
                 "uncounted": 0},
        "run": {"model": "local/teacher", "source": "prefs.jsonl", "pairs": 500, "seed": 0,
                "reference": "default", "candidates": 24, "budget": 8,
                "session_seconds": 600.0},
    }  # fmt: skip


def test_the_page_shows_every_part_and_escapes_the_principles(tmp_path: Path) -> None:
    path = tmp_path / "hh.infer.json"
    path.write_text(json.dumps(report()), "utf-8")
    page = infer_report_for(path)
    assert page == tmp_path / "hh.infer.html"
    html = page.read_text("utf-8")
    assert "<script>" not in html and "&lt;script&gt;" in html  # model text is escaped
    assert "script-src" not in html and "default-src 'none'" in html  # no script may run
    for part in ('id="test"', 'id="kept"', 'id="candidates"', 'id="recovery"',
                 'id="plot-accuracies"', "10,400 model calls", "above chance"):  # fmt: skip
        assert part in html, part
    assert "0.610" in html and "[0.530, 0.680] n=150" in html  # the interval, with its n


def test_a_result_that_kept_nothing_says_so(tmp_path: Path) -> None:
    path = tmp_path / "none.infer.json"
    path.write_text(json.dumps(report(kept=False)), "utf-8")
    html = infer_report_for(path).read_text("utf-8")
    assert "Nothing was kept" in html and 'id="plot-accuracies"' not in html


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [("x.json", "{}", "not a charter run directory or a report of constitution infer"),
     ("x.infer.json", "[1, 2", "not a report of charter constitution infer"),
     ("x.infer.json", json.dumps({**report(), "candidates": [{"text": 3}]}), "candidates.0"),
     ("x.infer.json", json.dumps({**report(), "cost": {"calls": 1}}), "cost.prompt_tokens"),
     ("x.infer.json", json.dumps({**report(), "kept": ["Which is it?"]}), "not among the")],
)  # fmt: skip
def test_a_file_that_is_not_an_infer_report_is_one_clear_error(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    with pytest.raises(CharterError, match=message):
        infer_report_for(path)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # nothing half-written


def test_charter_report_takes_a_run_directory_or_an_infer_report(tmp_path: Path) -> None:
    path = tmp_path / "hh.infer.json"
    path.write_text(json.dumps(report()), "utf-8")
    result = CliRunner().invoke(cli, ["report", str(path)])
    assert result.exit_code == 0 and "hh.infer.html" in result.output
    other = tmp_path / "notes.txt"
    other.write_text("hello", "utf-8")
    result = CliRunner().invoke(cli, ["report", str(other)])
    assert result.exit_code == 2 and "notes.txt: not a charter run directory" in result.output
    assert read_infer(path)["per_principle"]  # moved out of the test table when read
