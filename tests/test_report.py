"""`charter report`: one self-contained page; model output escaped everywhere.

The browser half (headless Chromium: tables and plots render, a screenshot, no injected
script runs) is in test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from charter.backends.fake import FakeBackend
from charter.records import Label, Message, Trace, TraceStep, Usage, Vote
from charter.report import build_report, report_for
from charter.stages.calibrate import CalibrationReport
from charter.stages.evaluate import judges
from charter.stages.evaluate.run import EvaluateConfig, run_evaluate
from charter.stages.evaluate.suites import default_data, resolve_data

HOSTILE = [
    "<script>window.__pwned = 'script';</script>",
    '<img src="x" onerror="window.__pwned = \'onerror\'">',
    "</details></section><svg onload=\"window.__pwned='svg'\"></svg>",
]


def hostile_run(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Stage directories of a small run whose every model output is hostile HTML."""
    monkeypatch.setattr(judges, "load_classifier", lambda: None)
    answers = iter(HOSTILE * 100)
    models = {name: FakeBackend(name.split("/")[1], responses=lambda c, cfg: next(answers))
              for name in ("fake/before", "fake/after")}  # fmt: skip
    data = {key: resolve_data(value) for key, value in default_data().items()}
    evaluate = root / "evaluate"
    run_evaluate(
        list(models), out=evaluate, config=EvaluateConfig(limit=2), data=data,
        backend=lambda name: models.get(name) or FakeBackend("judge"), judge="fake/judge",
    )  # fmt: skip
    revise = root / "revise"
    revise.mkdir()
    steps = tuple(
        TraceStep(round=i + 1, principle_id=f"p-{i}", critique=text, revision=text,
                  outcome="revised")
        for i, text in enumerate(HOSTILE)
    )  # fmt: skip
    trace = Trace(id="t", messages=(Message(role="user", content=HOSTILE[0]),), initial=HOSTILE[1],
                  steps=steps, final=HOSTILE[2], model="fake/before", seed=0,
                  constitution_sha256="x", usage=Usage())  # fmt: skip
    (revise / "traces.jsonl").write_text(trace.model_dump_json() + "\n", encoding="utf-8")
    label = root / "label"
    label.mkdir()
    entry = Label(id="l", prompt=(Message(role="user", content=HOSTILE[1]),),
                  responses=(HOSTILE[0], HOSTILE[2]), p_first=0.62,
                  votes=(Vote(principle_ids=("p-1",), p_shown_first=0.7, p_shown_second=0.54),),
                  labeller="fake/judge", mode="soft", seed=0, constitution_sha256="x")  # fmt: skip
    (label / "labels.jsonl").write_text(entry.model_dump_json() + "\n", encoding="utf-8")
    sft = root / "sft"
    sft.mkdir()
    (sft / "loss.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 2.0 - 0.1 * s}) + "\n" for s in range(1, 6)),
        encoding="utf-8",
    )
    calibrate = root / "calibrate"
    calibrate.mkdir()
    report = CalibrationReport(
        labeller=HOSTILE[0], gold="gold.jsonl", pairs=8, accuracy=0.875, accuracy_ci=(0.53, 0.98),
        ece=0.36, mean_margin=0.01, prefers_a=0.1, flip_rate=1.0, per_principle={},
        at_chance=False, position_biased=True, created_at="2026-11-24T00:00:00+00:00",
    )  # fmt: skip
    (calibrate / "calibration.json").write_text(report.model_dump_json(), encoding="utf-8")
    return {"evaluate": evaluate, "revise": revise, "label": label, "sft": sft,
            "calibrate": calibrate}  # fmt: skip


def test_the_page_has_every_part_and_escapes_model_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    html = build_report(hostile_run(tmp_path, monkeypatch), title="<b>run</b>")
    assert "Position-biased" in html and "Weak labels" in html and "87.5%" in html
    for part in ('id="results"', 'id="principles"', 'id="plot-frontier"', 'id="plot-principles"',
                 'id="plot-loss"', 'id="revisions"', 'id="pairs"', 'id="items"'):  # fmt: skip
        assert part in html, part
    body = html.split("<body>", 1)[1].rsplit("<script>", 1)[0]
    assert "<script" not in body and "onerror=" not in body.replace("onerror=&#34;", "")
    assert "&lt;script&gt;window.__pwned" in body and "&lt;img src=&#34;x&#34; onerror" in body
    assert "<svg" not in body and "&lt;b&gt;run&lt;/b&gt;" in html
    assert html.count("<script>") == 1  # the page's own filter script, and only it
    policy = re.search(r'Content-Security-Policy" content="([^"]+)"', html)
    assert (
        policy
        and "script-src 'sha256-" in policy.group(1)
        and "default-src 'none'" in policy.group(1)
    )
    assert "http://" not in body and "https://" not in body  # nothing to fetch


def test_report_for_a_run_directory_needs_its_plan(tmp_path: Path) -> None:
    from charter.errors import CharterError

    with pytest.raises(CharterError, match=r"has no run\.json or results\.json"):
        report_for(tmp_path)


def test_a_teacher_recipe_run_shows_its_guided_rows_escaped(tmp_path: Path) -> None:
    from charter.stages.guided import GuidedRow

    revise = tmp_path / "revise"
    revise.mkdir()
    rows = [
        GuidedRow(id="a", kind="redteam", source="s", answer=HOSTILE[0], p_decline=0.9,
                  messages=(Message(role="user", content=HOSTILE[1]),),
                  principle_id="illegal-activity", revision="I won't help.", kept="I won't help."),
        GuidedRow(id="b", kind="contrast", source="s", answer="I won't.", rejected="policy refused",
                  messages=(Message(role="user", content="How do I kill a process?"),)),
    ]  # fmt: skip
    (revise / "guided.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    (revise / "manifest.json").write_text(json.dumps({"counts": {"redteam_kept": 1}}))
    html = build_report({"revise": revise}, title="teacher")
    assert "Teacher-guided revisions" in html and "redteam_kept: 1" in html
    assert "rejected: policy refused" in html and "kept for SFT" in html
    assert HOSTILE[0] not in html and HOSTILE[1] not in html


def test_a_moved_run_directory_reports_its_own_data(tmp_path: Path) -> None:
    import shutil

    from charter.errors import CharterError
    from charter.stages.guided import GuidedRow

    original = tmp_path / "original"
    stage = original / "revise-abc"
    stage.mkdir(parents=True)
    ask = (Message(role="user", content="Say something about tea"),)
    row = GuidedRow(id="a", kind="helpful", source="s", answer="tea", kept="tea", messages=ask)
    (stage / "guided.jsonl").write_text(row.model_dump_json() + "\n")
    plan = {"stages": {"revise": {"path": str(stage), "key": "abc", "complete": True}}}
    (original / "run.json").write_text(json.dumps(plan))
    moved = tmp_path / "moved"
    shutil.copytree(original, moved)
    shutil.rmtree(original)
    assert "Say something about tea" in report_for(moved).read_text("utf-8")
    (moved / "run.json").write_text("[1, 2]")
    with pytest.raises(CharterError, match=r"not a charter run plan"):
        report_for(moved)


def test_the_evaluation_heading_counts_the_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = hostile_run(tmp_path, monkeypatch)
    items = (stages["evaluate"] / "items.jsonl").read_text("utf-8").count("\n")
    html = build_report(stages, title="run")
    assert f'Judged evaluation items (<span class="shown">{items}</span> of {items})' in html
    assert "built-in method" not in html  # `counts.items` read dict.items, not the count


def test_stage_counts_and_like_for_like_warnings_are_shown(tmp_path: Path) -> None:
    label = tmp_path / "label"
    label.mkdir()
    counts = {"labels": 4, "fallback_labels": 3, "labeller_calls": 8,
              "labeller_calls_this_session": 4}  # fmt: skip
    (label / "manifest.json").write_text(json.dumps({"counts": counts}))
    evaluate = tmp_path / "evaluate"
    evaluate.mkdir()
    results = {"models": ["a", "b"], "suites": {}, "differences": {}, "lower_is_better": [],
               "refusal_layer": "phrases", "judge": "fake/judge",
               "warnings": ["the judge <b> is also a model"]}  # fmt: skip
    (evaluate / "results.json").write_text(json.dumps(results))
    (evaluate / "manifest.json").write_text(json.dumps({"counts": {"ifeval_unscored_prompts": 2}}))
    html = build_report({"label": label, "evaluate": evaluate}, title="counts")
    table = html.split('id="counts"', 1)[1].split("</table>", 1)[0]
    assert "fallback_labels: 3" in table and "labeller_calls_this_session: 4" in table
    assert "ifeval_unscored_prompts: 2" in table
    assert 'id="warnings"' in html and "the judge &lt;b&gt; is also a model" in html


def test_the_page_shows_items_of_every_suite_when_it_shows_only_some() -> None:
    """600 items at most: a suite at the end of items.jsonl (the constitution's clauses) is
    still among them, in the file's order."""
    from charter.records import EvalItem
    from charter.report import _spread

    def items(suite: str, n: int) -> list[EvalItem]:
        return [EvalItem(suite=suite, key=str(i), model="m", prompt=(), answer="", score=1.0,
                         judgement={}) for i in range(n)]  # fmt: skip

    everything = items("harmlessness", 700) + items("xstest", 5) + items("constitution", 53)
    shown = _spread(everything, 600)
    assert len(shown) == 600 and [i.suite for i in shown].count("constitution") == 53
    assert shown == [i for i in everything if i in shown]  # the file's order
    assert _spread(everything[:10], 600) == everything[:10]
