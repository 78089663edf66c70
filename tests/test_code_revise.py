"""Execution-grounded critique → revision for code (`verify_revise`), on a scripted model.

The scripted model answers with a buggy function, critiques it, and revises it into one that
passes; the sandbox really runs every attempt. What the model is shown is checked: the
visible test and the failure, never the hidden tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from charter.backends.base import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.records import Conversation
from charter.stages.code_revise import verified_rows, verify_revise
from charter.stages.evaluate.code import CodeTask, docstring_asserts, load_code_tasks, run_tasks
from charter.stages.evaluate.sandbox import Limits

BUGGY = "```python\ndef add(a, b):\n    return a - b\n```"
FIXED = "```python\ndef add(a, b):\n    return a + b\n```"
HIDDEN = "assert add(-7, 2) == -5\n"


def task() -> CodeTask:
    return CodeTask(id="t1", kind="mbpp", request="Write add(a, b).\nassert add(1, 2) == 3",
                    tests="assert add(1, 2) == 3\n" + HIDDEN,
                    visible="assert add(1, 2) == 3\n")  # fmt: skip


def scripted(seen: list[str], asked: list[str] | None = None) -> FakeBackend:
    """A model that writes BUGGY, critiques it, then writes FIXED; ``asked`` collects the
    first questions it was asked."""

    def reply(conversation: Conversation, config: GenerationConfig) -> str:
        last = conversation[-1].content
        seen.append(last)
        if len(conversation) == 1:
            if asked is not None:
                asked.append(last)
            return BUGGY
        if "corrected program" in last:
            return FIXED
        return "The function subtracts instead of adding, so add(1, 2) gives -1."

    return FakeBackend(responses=reply)


def test_a_failing_answer_is_critiqued_with_its_test_result_and_the_revision_verified() -> None:
    seen: list[str] = []
    code = Constitution.load("code")
    (trace,) = verify_revise(scripted(seen), [task()], code, rounds=3)
    assert [a.status for a in trace.attempts] == ["failed", "passed"]  # stops once it passes
    assert trace.attempts[1].principle in {p.id for p in code.principles}
    assert "subtracts" in (trace.attempts[1].critique or "")
    critique_ask = next(text for text in seen if "Result:" in text)
    assert "assert add(1, 2) == 3" in critique_ask and "failed" in critique_ask
    assert all(HIDDEN.strip() not in text for text in seen)  # hidden tests never shown
    assert trace.verified_revision and trace.usage.calls == 3
    (row,) = verified_rows([trace], model="fake/echo", seed=0, constitution=code)
    assert row.messages[-1].content == FIXED and row.round == 1 and row.revised
    # The verified revision also passes the hidden tests here (scored apart, never shown).
    assert run_tasks([task()], [trace.final.answer])[0].passed


def test_feedback_without_demonstrations_or_without_a_critique() -> None:
    """critique-plain: no worked demonstration before the critique; test: no critique at
    all, the revision asked straight from the test result under the principle."""
    code = Constitution.load("code")
    demo_text = code.demonstrations[0].critique
    for feedback, calls in (("critique-plain", 3), ("test", 2)):
        seen: list[str] = []
        backend = scripted(seen)
        (trace,) = verify_revise(backend, [task()], code, rounds=3, feedback=feedback)
        assert [a.status for a in trace.attempts] == ["failed", "passed"], feedback
        assert trace.usage.calls == calls
        sent = [m.content for call in backend.calls for m in call.conversation]
        assert demo_text not in sent  # the demonstration is not shown
    assert trace.attempts[1].critique is None
    revise_ask = backend.calls[-1].conversation[-1].content
    assert "Result: failed" in revise_ask and "corrected program" in revise_ask


def test_sampled_revisions_keep_the_first_that_passes_the_visible_test() -> None:
    """samples=3: three revisions after the one critique, each with its own seed; only the
    second passes, and it is kept. More than one sample at temperature 0 is refused."""
    from charter.errors import CharterError

    def reply(conversation: Conversation, config: GenerationConfig) -> str:
        if len(conversation) == 1:
            return BUGGY
        if "corrected program" in conversation[-1].content:
            return FIXED if (config.seed or 0) // 1000 == 1 else BUGGY  # the second sample
        return "It subtracts."

    code = Constitution.load("code")
    sampled = GenerationConfig(temperature=0.8, max_tokens=64)
    (trace,) = verify_revise(FakeBackend(responses=reply), [task()], code, rounds=2,
                             revision=sampled, samples=3)  # fmt: skip
    assert [a.status for a in trace.attempts] == ["failed", "passed"]
    assert trace.final.answer == FIXED and (trace.final.samples, trace.final.passing) == (3, 1)
    assert trace.usage.calls == 1 + 1 + 3  # answer, critique, three revisions
    # each attempt records the call that wrote it: the kept revision is round 1's second draw
    assert [(a.seed, a.finish_reason) for a in trace.attempts] == [(0, "stop"), (1001, "stop")]
    with pytest.raises(CharterError, match="temperature above 0"):
        verify_revise(FakeBackend(responses=reply), [task()], code, samples=2)


def test_a_revision_cut_at_the_token_limit_gives_no_row() -> None:
    """Its code passes, but the reply ran to the token limit: no SFT row (verified or
    passing) teaches that ending; the same revision ended by the model is a row."""
    from charter.stages.code_revise import CodeAttempt, CodeTrace

    code = Constitution.load("code")

    def trace(ending: str) -> CodeTrace:
        return CodeTrace(task_id="t1", request="Write add(a, b).", attempts=[
            CodeAttempt(round=0, answer=BUGGY, status="failed"),
            CodeAttempt(round=1, answer=FIXED, status="passed", finish_reason=ending)])  # fmt: skip

    for passing in (False, True):
        assert verified_rows([trace("length")], model="m", seed=0, constitution=code,
                             passing=passing) == []  # fmt: skip
        assert len(verified_rows([trace("stop")], model="m", seed=0, constitution=code,
                                 passing=passing)) == 1  # fmt: skip


def test_a_passing_answer_is_not_revised_and_gives_no_row() -> None:
    (trace,) = verify_revise(FakeBackend(responses=lambda c, g: FIXED), [task()],
                             Constitution.load("code"), rounds=3)  # fmt: skip
    assert [a.status for a in trace.attempts] == ["passed"] and not trace.verified_revision
    assert verified_rows([trace], model="m", seed=0, constitution=Constitution.load("code")) == []


def test_rounds_are_bounded_and_every_failure_is_kept() -> None:
    """Every failed attempt is in the trace; the answer to use stays the first one, since no
    revision did better on the visible test."""
    replies = iter([BUGGY] + [BUGGY.replace("a - b", f"a - b - {i}") for i in range(1, 9)])
    (trace,) = verify_revise(FakeBackend(responses=lambda c, g: next(replies)), [task()],
                             Constitution.load("code"), rounds=2)  # fmt: skip
    assert [a.round for a in trace.attempts] == [0, 1, 2]
    assert all(a.status == "failed" for a in trace.attempts) and not trace.verified_revision
    assert trace.final.answer != BUGGY and trace.kept.answer == BUGGY


def test_humaneval_docstring_examples_become_the_visible_tests(tmp_path: Path) -> None:
    prompt = ('def double(x):\n    """Twice x.\n    >>> double(2)\n    4\n    >>> str(double(1))'
              "  # a comment\n    '2'\n    \"\"\"\n")  # fmt: skip
    visible = docstring_asserts(prompt)
    assert "double(2)" in visible and '"""' not in visible
    row = '{"task_id": "H/0", "prompt": %s, "test": "def check(f):\\n    assert f(5) == 10", ' \
          '"entry_point": "double"}'  # fmt: skip
    import json

    path = tmp_path / "he.jsonl"
    path.write_text(row % json.dumps(prompt) + "\n", encoding="utf-8")
    (loaded,) = load_code_tasks(path)
    assert loaded.visible == visible and "f(5)" not in loaded.visible
    good, wrong = "    return 2 * x\n", "    return x + 2\n"
    # x + 2 passes double(2) == 4 but fails str(double(1)) == '2'; the hidden test fails too
    outcomes = run_tasks([loaded, loaded], [good, wrong], visible=True)
    assert [o.passed for o in outcomes] == [True, False]


def test_revise_verify_writes_a_resumable_run_of_verified_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`charter revise --verify`: a task whose answer passes at once, one fixed by revision,
    one never fixed; a killed run resumes to the same rows; bad inputs are one line."""
    import json

    from click.testing import CliRunner

    from charter.backends import fake
    from charter.cli import cli

    rows = [{"task_id": 1, "text": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3",
             "assert add(-7, 2) == -5"]},
            {"task_id": 2, "text": "Write neg(x).", "test_list": ["assert neg(2) == -2"]},
            {"task_id": 3, "text": "Write sq(x).", "test_list": ["assert sq(3) == 9"]},
            {"task_id": 4, "text": "Write inc(x).", "test_list": ["assert inc(1) == 2",
             "assert inc(5) == 6"]}]  # fmt: skip
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    answers = {
        "add": (BUGGY, FIXED),
        "neg": ("```python\ndef neg(x):\n    return -x\n```",) * 2,
        "sq": ("```python\ndef sq(x):\n    return x\n```",) * 2,
        "inc": ("```python\ndef inc(x):\n    return 2\n```",) * 2,
    }  # fits its one test

    def reply(conversation: Conversation, config: GenerationConfig) -> str:
        name = next(n for n in answers if f"Write {n}(" in conversation[-1].content
                    or any(f"Write {n}(" in m.content for m in conversation))  # fmt: skip
        last = conversation[-1].content
        if "corrected program" in last:
            return answers[name][1]
        return "It is wrong." if "Result:" in last else answers[name][0]

    monkeypatch.setattr(fake, "_echo", reply)  # what fake/echo answers from the command line
    out = tmp_path / "run"
    args = ["revise", "--verify", "--prompts", str(tasks), "--rounds", "2", "--model",
            "fake/echo", "--batch-size", "1", "--out", str(out)]  # fmt: skip
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert "2 passed their visible tests at once, 1 after revision, 1 still failing" in first.output
    assert "of those passing, 2 pass all their task's tests (1 of the revisions)" in first.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["passed_by_round"] == {"0": 2, "1": 1}
    # inc passes its visible test and fails its other one: counted, not hidden
    assert {k: v for k, v in manifest["counts"].items() if k.startswith("all_tests")} == {
        "all_tests_verified_revisions": 1, "all_tests_of_verified_revisions": 1,
        "all_tests_passing_answers": 2, "all_tests_of_passing_answers": 3}  # fmt: skip
    (row,) = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert row["prompt_id"] == "1" and "a + b" in row["messages"][1]["content"]
    # passing.jsonl: every answer that passes, the first answer of task 2 included
    passing = [json.loads(line) for line in (out / "passing.jsonl").read_text().splitlines()]
    assert [(r["prompt_id"], r["revised"]) for r in passing] == [
        ("1", True), ("2", False), ("4", False)]  # fmt: skip
    traces = (out / "traces.jsonl").read_text().splitlines()
    assert [len(json.loads(t)["attempts"]) for t in traces] == [2, 1, 3, 1]  # trail per task
    # Killed after the first task (its row lost): the rerun re-derives the row, finishes.
    (out / "traces.jsonl").write_text(traces[0] + "\n" + traces[1][:20], encoding="utf-8")
    (out / "sft.jsonl").write_text("", encoding="utf-8")
    (out / "passing.jsonl").write_text("", encoding="utf-8")
    manifest["status"] = "interrupted"
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "stage.json").unlink(missing_ok=True)
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "(1 resumed)" in again.output
    assert (out / "traces.jsonl").read_text().splitlines() == traces
    assert len((out / "sft.jsonl").read_text().splitlines()) == 1
    assert len((out / "passing.jsonl").read_text().splitlines()) == 3

    for bad, says in (
        (["--prompts", str(tmp_path / "none.jsonl")], "no such code task file"),
        (["--prompts", str(tasks), "--prompts", str(tasks)], "give --prompts once"),
        (["--prompts", str(tasks), "--train-on", "all"], "--train-on applies to prose prompts"),
    ):
        result = CliRunner().invoke(cli, ["revise", "--verify", *bad, "--model", "fake/echo",
                                          "--out", str(tmp_path / "bad")])  # fmt: skip
        assert result.exit_code == 2 and says in result.output, (bad, result.output)
        assert not (tmp_path / "bad").exists()
    prose_args = ["--prompts", "demo-redteam", "--feedback", "test", "--model", "fake/echo"]
    prose = CliRunner().invoke(cli, ["revise", *prose_args, "--out", str(tmp_path / "bad")])
    assert prose.exit_code == 2 and "--feedback applies to --verify" in prose.output
    assert not (tmp_path / "bad").exists()


def test_revise_verify_takes_the_loops_feedback(tmp_path: Path) -> None:
    """--feedback test: no critique is asked, the revision comes from the test result; the
    option's choices are the loop's own."""
    import json

    from click.testing import CliRunner

    from charter.cli import cli
    from charter.cli.revise import revise
    from charter.stages.code_revise import FEEDBACKS

    tasks = add_tasks(tmp_path / "tasks.jsonl", 2)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["revise", "--verify", "--prompts", str(tasks), "--rounds",
                                      "1", "--feedback", "test", "--model", "fake/echo",
                                      "--out", str(out)], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    traces = [json.loads(line) for line in (out / "traces.jsonl").open()]
    assert all(t["usage"]["calls"] == 2 and t["attempts"][1]["critique"] is None for t in traces)
    assert json.loads((out / "manifest.json").read_text())["config"]["feedback"] == "test"
    (option,) = [p for p in revise.params if p.name == "feedback"]
    assert tuple(option.type.choices) == FEEDBACKS  # type: ignore[attr-defined]
    x3 = ["--rounds", "1", "--samples", "3", "--model", "fake/echo", "--out", str(tmp_path / "x3")]
    sampled = CliRunner().invoke(cli, ["revise", "--verify", "--prompts", str(tasks), *x3],
                                 catch_exceptions=False)  # fmt: skip
    assert sampled.exit_code == 0, sampled.output
    traces = [json.loads(line) for line in (tmp_path / "x3" / "traces.jsonl").open()]
    assert all(t["attempts"][1]["samples"] == 3 for t in traces)
    assert json.loads((tmp_path / "x3" / "manifest.json").read_text())["config"]["revision"][
        "temperature"] == 0.8  # fmt: skip
    greedy = CliRunner().invoke(cli, ["revise", "--verify", "--prompts", str(tasks), "--samples",
                                      "2", "--revision-temperature", "0", "--model", "fake/echo",
                                      "--out", str(tmp_path / "bad")])  # fmt: skip
    assert greedy.exit_code == 2 and "give one above 0" in greedy.output
    assert not (tmp_path / "bad").exists()


def test_revise_verify_dry_run_shows_every_kind_of_call_and_no_hidden_test(
    tmp_path: Path,
) -> None:
    """--verify --dry-run: the first answer calls and one round's critique and revision calls,
    with placeholders; no model is loaded, nothing is written, the hidden tests never shown;
    charter run prints the same for a code recipe's first task, charter evaluate for a
    MODEL+revise model."""
    from click.testing import CliRunner

    from charter.cli import cli

    tasks = add_tasks(tmp_path / "tasks.jsonl", 5)
    args = ["revise", "--verify", "--prompts", str(tasks), "--model", "local/not-installed",
            "--dry-run"]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--feedback", "critique-plain"])
    assert result.exit_code == 0, result.output
    assert result.output.count("first answer call") == 3  # three tasks shown
    assert "critique call" in result.output and "<the model's answer>" in result.output
    assert "assert add(1, 2) == 3" in result.output and "add(-7, 2)" not in result.output
    assert "Your code was run against this test" in result.output
    test_only = CliRunner().invoke(cli, [*args, "--feedback", "test"])
    assert test_only.exit_code == 0 and "critique call" not in test_only.output
    assert "revision call (after the shared prefix)" in test_only.output
    assert list(tmp_path.iterdir()) == [tasks]  # nothing written
    config = tmp_path / "run.yaml"
    config.write_text(f"""
name: code
constitution: code
recipe: code
models: {{policy: fake/echo}}
code: {{tasks: [{tasks}], feedback: critique-plain}}
evaluate: {{suites: [code], trained: [sft], harm_judge: false,
           data_sources: {{code: [{tasks}#0:1]}}}}
""", encoding="utf-8")  # fmt: skip
    planned = CliRunner().invoke(cli, ["run", str(config), "--dry-run", "--out",
                                       str(tmp_path / "runs")])  # fmt: skip
    assert planned.exit_code == 0, planned.output
    assert "the loop's prompts for the first task of code.tasks" in planned.output
    assert "critique call" in planned.output and "add(-7, 2)" not in planned.output
    evaluated = CliRunner().invoke(cli, ["evaluate", "--model", "fake/echo", "--model",
                                         "fake/echo+revise:2:test", "--suite", "code", "--data",
                                         f"code={tasks}", "--dry-run"])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert "fake/echo+revise:2:test: the loop's calls on the first code task" in evaluated.output
    assert "revision call (after the shared prefix)" in evaluated.output
    assert "add(-7, 2)" not in evaluated.output


def test_solve_code_is_the_loop_at_answer_time(tmp_path: Path) -> None:
    import json

    import charter

    path = tmp_path / "tasks.jsonl"
    row = {"task_id": 7, "text": "Write add(a, b).", "test_list": ["assert add(1, 2) == 3"]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (trace,) = charter.solve_code(path, model="fake/echo", rounds=1)
    assert trace.task_id == "7" and [a.round for a in trace.attempts] == [0, 1]
    assert trace.usage.calls == 3  # answer, critique, revision
    (trace,) = charter.solve_code(path, model="fake/echo", rounds=1, feedback="test")
    assert trace.usage.calls == 2 and trace.attempts[1].critique is None  # answer, revision
    (trace,) = charter.solve_code(path, model="fake/echo", rounds=1, samples=3)
    assert trace.usage.calls == 5 and trace.attempts[1].samples == 3  # + critique, 3 revisions


def add_tasks(path: Path, n: int) -> Path:
    """An MBPP-shaped task file of ``n`` add(a, b) tasks: the first test visible, one hidden."""
    import json

    rows = [{"task_id": i, "text": f"Write add(a, b), case {i}.",
             "test_list": ["assert add(1, 2) == 3", "assert add(-7, 2) == -5"]}
            for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_the_evaluation_compares_a_model_with_itself_plus_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODEL+revise:N: the same model's code answers after the loop, scored on every test and
    compared with its plain answers on the same tasks (paired interval and McNemar)."""
    import json

    from charter.stages.evaluate import judges
    from charter.stages.evaluate.run import EvaluateConfig, run_evaluate
    from charter.stages.evaluate.suites import default_data, resolve_data

    tasks = add_tasks(tmp_path / "tasks.jsonl", 6)
    seen: list[str] = []
    asked: list[str] = []
    model = scripted(seen, asked)
    data = {key: resolve_data(value) for key, value in default_data().items()}
    monkeypatch.setattr(judges, "load_classifier", lambda: None)  # phrases only
    results = run_evaluate(
        ["fake/echo", "fake/echo+revise:2"], out=tmp_path / "eval",
        config=EvaluateConfig(suites=("code",)), data={**data, "code": tasks},
        backend=lambda name: model,
    )  # fmt: skip
    code = results["suites"]["code"]
    assert code["fake/echo"]["pass@1"]["value"] == 0.0
    assert code["fake/echo+revise:2"]["pass@1"]["value"] == 1.0  # hidden test passes too
    gain = results["differences"]["fake/echo+revise:2 − fake/echo"]["code"]["pass@1"]
    assert gain["value"] == 1.0 and gain["n"] == 6 and gain["p_value"] < 0.05
    assert all("add(-7, 2)" not in text for text in seen)  # the hidden test never shown
    assert any("Result: failed" in text for text in seen)
    assert len(asked) == 6  # the loop started from the plain answers: each task asked once
    traces = [json.loads(line) for line in (tmp_path / "eval" / "code-traces.jsonl").open()]
    assert len(traces) == 6 and {t["model"] for t in traces} == {"fake/echo+revise:2"}
    assert [a["status"] for a in traces[0]["attempts"]] == ["failed", "passed"]
    assert "subtracts" in traces[0]["attempts"][1]["critique"]
    from charter.report import report_for
    from charter.report.code import code_tables

    tables = code_tables(tmp_path / "eval", results["models"])
    assert [(r["model"], r["solved"], r["tasks"]) for r in tables["costs"]] == [
        ("fake/echo", 0, 6), ("fake/echo+revise:2", 6, 6)
    ]  # fmt: skip
    assert tables["trail"] == [{
        "model": "fake/echo+revise:2", "tasks": 6, "gained": 6, "lost": 0, "failed_visible": 6,
        "fixed_visible": 6, "fixed_by_round": {1: 6}, "fixed_pass_all": 6,
    }]  # fmt: skip
    page = report_for(tmp_path / "eval").read_text("utf-8")  # an evaluate folder has a page
    assert 'id="code-trail"' in page and "6 in round 1" in page and "p=0.031" in page


def test_the_evaluation_takes_the_loops_feedback_from_the_model_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MODEL+revise:N:test revises straight from the test result (no critique call), and the
    name keeps the feedback apart from the default loop's; a feedback no loop has is refused."""
    import json

    from charter.errors import CharterError
    from charter.stages.evaluate import judges
    from charter.stages.evaluate.revised import split_revise
    from charter.stages.evaluate.run import EvaluateConfig, run_evaluate

    tasks = add_tasks(tmp_path / "tasks.jsonl", 3)
    seen: list[str] = []
    monkeypatch.setattr(judges, "load_classifier", lambda: None)
    temperatures: list[float] = []
    model = scripted(seen)
    generate = model.generate
    model.generate = lambda c, g: temperatures.append(g.temperature) or generate(c, g)  # type: ignore[method-assign]
    results = run_evaluate(
        ["fake/echo", "fake/echo+revise:2:test", "fake/echo+revise:1:test:x2"],
        out=tmp_path / "eval", config=EvaluateConfig(suites=("code",)), data={"code": tasks},
        backend=lambda name: model,
    )  # fmt: skip
    assert results["suites"]["code"]["fake/echo+revise:2:test"]["pass@1"]["value"] == 1.0
    traces = [json.loads(line) for line in (tmp_path / "eval" / "code-traces.jsonl").open()]
    assert [a["critique"] for a in traces[0]["attempts"]] == [None, None]
    sampled = [t for t in traces if t["model"].endswith(":x2")]
    assert len(sampled) == 3 and all(t["attempts"][1]["samples"] == 2 for t in sampled)
    assert 0.8 in temperatures and 0.0 in temperatures  # :xK samples; the rest is greedy
    # a kept revision's answer records its own call's settings beside the first answer's,
    # and the loop's settings are no reason to call the comparison unlike
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers.jsonl").open()]
    revised = [a for a in answers if a["model"].endswith(":x2")]
    assert all(a["decoding"]["temperature"] == 0.0 for a in answers)
    assert {a["decoding"]["revision"]["temperature"] for a in revised} == {0.8}
    assert {a["decoding"]["revision"]["seed"] for a in revised} == {1}  # round 1, first draw
    assert not any("decoding" in w for w in results["warnings"])
    assert not any("subtracts" in text for text in seen)  # the critique was never asked for
    assert split_revise("local/x+revise:3").suffix == "+revise:3"
    with pytest.raises(CharterError, match="FEEDBACK from critique, critique-plain, test"):
        split_revise("local/x+revise:3:vibes")
    for name, samples in (("local/x+revise:3:critique-plain:x4", 4), ("local/x+revise:2:x2", 2)):
        spec = split_revise(name)
        assert spec.samples == samples and spec.base + spec.suffix == name
    with pytest.raises(CharterError, match=":xK takes K from 1 to 16"):
        split_revise("local/x+revise:3:test:x99")
    # a loop's other spelling is the same model: its answers are found on a rerun
    again = run_evaluate(
        ["fake/echo", "fake/echo+revise:2:test:x1", "fake/echo+revise:1:test:x2"],
        out=tmp_path / "eval", config=EvaluateConfig(suites=("code",)), data={"code": tasks},
        backend=lambda name: model,
    )  # fmt: skip
    assert "fake/echo+revise:2:test" in again["suites"]["code"]
    rows = (tmp_path / "eval" / "answers.jsonl").read_text("utf-8").splitlines()
    assert len(rows) == 9  # 3 models x 3 tasks, none answered twice


def test_the_sandbox_holds_for_every_attempt_of_the_loop(tmp_path: Path) -> None:
    """Hostile answers and hostile revisions, 8 tasks at once: each attempt is stopped by its
    limit or refused, nothing is written outside the sandbox, and the loop goes on."""
    hostile = {
        "loop": "while True:\n    pass",
        "memory": "block = bytearray(10 * 2**30)",
        "socket": "import socket\nsocket.create_connection(('127.0.0.1', 9))",
        "escape": f"open({str(tmp_path / 'escaped.txt')!r}, 'w').write('x')",
    }
    names = list(hostile) * 2

    def reply(conversation: Conversation, config: GenerationConfig) -> str:
        asked = conversation[-1].content if len(conversation) == 1 else ""
        task = next((n for n in hostile if f"case {n}" in asked), None)
        if task is not None:  # the first answer: hostile code
            return f"```python\n{hostile[task]}\n```"
        if "corrected program" in conversation[-1].content:  # the revision: hostile again
            return f"```python\n{hostile['escape']}\n```"
        return "It misbehaves."

    tasks = [CodeTask(id=f"{n}-{i}", kind="mbpp", request=f"Write add(a, b), case {n}.",
                      tests="assert add(1, 2) == 3\n", visible="assert add(1, 2) == 3\n")
             for i, n in enumerate(names)]  # fmt: skip
    limits = Limits(cpu_seconds=2, wall_seconds=4.0, memory_mb=256)
    traces = verify_revise(FakeBackend(responses=reply), tasks, Constitution.load("code"),
                           rounds=1, limits=limits)  # fmt: skip
    first = {t.task_id.split("-")[0]: t.attempts[0].status for t in traces}
    assert first == {"loop": "timeout", "memory": "memory", "socket": "blocked",
                     "escape": "blocked"}  # fmt: skip
    assert all(t.attempts[1].status == "blocked" for t in traces)  # the revisions too
    assert not (tmp_path / "escaped.txt").exists()


def test_a_code_run_config_writes_verified_rows_trains_on_them_and_evaluates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``recipe: code`` end to end: a scripted teacher revises the training tasks, a tiny
    llama is fine-tuned on the verified revisions, and baseline and SFT model are scored on
    the evaluation tasks; a training task that repeats an evaluation task is dropped."""
    import json

    from hf_tiny import build_tiny_checkpoint

    from charter import runner
    from charter.backends import load_backend
    from charter.pipeline import plan
    from charter.run_config import load_run_config
    from charter.stages.evaluate import judges

    monkeypatch.setattr(judges, "load_classifier", lambda: None)

    def mbpp(path: Path, texts: list[str], tests: tuple[str, str] = (
        "assert add(1, 2) == 3", "assert add(5, 5) == 10")) -> None:  # fmt: skip
        rows = [{"task_id": i, "text": text, "test_list": list(tests)}
                for i, text in enumerate(texts)]  # fmt: skip
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    # The third repeats the evaluation's statement; the fourth, reworded, shares its test call
    mbpp(tmp_path / "train.jsonl", ["Write add(a, b) for integers.", "Write add(a, b) for floats.",
                                    "Return the sum of two numbers, named add.",
                                    "Add two values."])  # fmt: skip
    lines = (tmp_path / "train.jsonl").read_text("utf-8").splitlines()
    lines[3] = lines[3].replace("add(5, 5) == 10", "add(-7, 2) == -5")
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    mbpp(
        tmp_path / "eval.jsonl",
        ["Return the sum of two numbers, named add."],
        ("assert add(3, 4) == 7", HIDDEN),
    )
    tiny = build_tiny_checkpoint(tmp_path / "tiny")
    config = tmp_path / "run.yaml"
    config.write_text(f"""
name: code
constitution: code
recipe: code
models: {{policy: hf/{tiny}, teacher: fake/teacher}}
code: {{tasks: [train.jsonl#0:4], rounds: 2, max_tokens: 16}}
sft: {{max_steps: 1, max_length: 128}}
evaluate: {{suites: [code], trained: [sft], harm_judge: false, max_tokens: 8,
           data_sources: {{code: [eval.jsonl]}}}}
""", encoding="utf-8")  # fmt: skip
    seen: list[str] = []
    teacher = scripted(seen)

    def backend(name: str) -> Any:
        return teacher if name == "fake/teacher" else load_backend(name)

    stages = plan(load_run_config(config), tmp_path / "run", backend)
    assert [s.name for s in stages] == ["baseline", "verify", "sft", "evaluate", "report"]
    runner.run_pipeline(stages, stages, tmp_path / "run", echo=lambda line: None)
    (verify,) = (tmp_path / "run").glob("verify-*")
    assert json.loads((verify / "overlap.json").read_text())["tasks"] == {
        "read": 4, "kept": 2, "exact": 1, "test call": 1}  # fmt: skip
    rows = [json.loads(line) for line in (verify / "sft.jsonl").open()]
    assert len(rows) == 2 and all("a + b" in r["messages"][1]["content"] for r in rows)
    assert all("add(-7, 2)" not in text for text in seen)  # the hidden test never shown
    (evaluated,) = (tmp_path / "run").glob("evaluate-*")
    results = json.loads((evaluated / "results.json").read_text())
    assert len(results["models"]) == 2 and "sft-" in results["models"][1]
    assert all("pass@1" in m for m in results["suites"]["code"].values())
    page = (tmp_path / "run" / "report.html").read_text("utf-8")
    assert "Code: what each model spent" in page and 'id="code-trail"' not in page  # no loop


@pytest.mark.parametrize(("extra", "message"), [
    ("", "recipe: code needs code.tasks"),
    ("code: {tasks: [t.jsonl]}\nevaluate: {trained: [dpo]}\n", "trains the SFT model only"),
])  # fmt: skip
def test_a_code_run_config_names_what_it_lacks(tmp_path: Path, extra: str, message: str) -> None:
    from charter.errors import CharterError
    from charter.run_config import load_run_config

    config = tmp_path / "run.yaml"
    config.write_text("recipe: code\n" + extra, encoding="utf-8")
    with pytest.raises(CharterError, match=message):
        load_run_config(config)


def test_what_sft_trains_on_is_chosen_after_the_loop(tmp_path: Path) -> None:
    """``code.train_on: passing`` trains on every passing answer from the same verify run
    (its key unchanged); ``code.feedback`` is the loop's, so it changes the verify key."""
    from charter.pipeline import plan
    from charter.run_config import load_run_config

    add_tasks(tmp_path / "train.jsonl", 2)
    (tmp_path / "eval.jsonl").write_text(
        '{"task_id": 9, "text": "Write mul(a, b).", "test_list": ["assert mul(2, 3) == 6"]}\n',
        encoding="utf-8",
    )

    def keys(code: str) -> dict[str, str]:
        config = tmp_path / "run.yaml"
        config.write_text(
            "recipe: code\nconstitution: code\nmodels: {policy: fake/p, teacher: fake/t}\n"
            f"code: {{tasks: [train.jsonl], {code}}}\n"
            "evaluate: {suites: [code], trained: [sft], data_sources: {code: [eval.jsonl]}}\n",
            encoding="utf-8",
        )
        stages = plan(load_run_config(config), tmp_path / "run", lambda name: None)
        return {s.name: s.key for s in stages}

    plain, passing = keys("rounds: 1"), keys("rounds: 1, train_on: passing")
    assert plain["verify"] == passing["verify"] and plain["sft"] != passing["sft"]
    assert keys("rounds: 1, feedback: test")["verify"] != plain["verify"]
    assert keys("rounds: 1, samples: 4")["verify"] != plain["verify"]
