"""Visible tests that say what the code gave (`values` in the code loop), run in the sandbox."""

from __future__ import annotations

import pytest

from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.stages.code_revise import verify_revise
from charter.stages.evaluate.code import CodeTask, run_tasks
from charter.stages.evaluate.explain import explain_asserts
from charter.stages.evaluate.revised import split_revise

CODE = "```python\ndef add(a, b):\n    return a - b\n\ndef odd(n):\n    return n % 2 == 0\n```"


def outcome(test: str, explain: bool) -> tuple[str, str]:
    task = CodeTask(id="t", kind="mbpp", request="r", tests=test, visible=test)
    ran = run_tasks([task], [CODE], visible=True, explain=explain)[0]
    return ran.status, ran.detail


@pytest.mark.parametrize(
    ("test", "says"),
    [
        ("assert add(1, 2) == 3\n", "add(1, 2) gave -1; the test expects 3"),
        ("assert add(1, 2) > 0\n", "add(1, 2) gave -1; the test expects it > 0"),
        ("assert odd(3)\n", "odd(3) gave False; the test expects a true value"),
        ("assert not odd(4)\n", "odd(4) gave True; the test expects a false value"),
        ("import math\nassert add(5, 1) in (6, 7)\n", "add(5, 1) gave 4; the test expects it in"),
        ("assert add(0, list(range(40))[-1]) == 39\n", "gave -39; the test expects 39"),
    ],
)  # fmt: skip
def test_a_failed_visible_assert_says_what_the_code_gave(test: str, says: str) -> None:
    assert outcome(test, explain=False) == ("failed", "AssertionError")
    status, detail = outcome(test, explain=True)
    assert status == "failed" and detail.startswith("AssertionError: ") and says in detail


def test_pass_or_fail_is_unchanged_and_what_cannot_be_rewritten_runs_as_written() -> None:
    for test in ("assert add(2, 0) == 2\n", "assert add(2, 1) != 3\nx = 1\n", "assert 1 < 2 < 3\n"):
        assert outcome(test, explain=True)[0] == outcome(test, explain=False)[0] == "passed"
    assert explain_asserts("assert 1 < 2 < 3\n") == "assert 1 < 2 < 3\n"  # chained: as is
    assert explain_asserts("assert (\n") == "assert (\n"  # does not parse: as is
    long = outcome("assert [add(i, 0) for i in range(50)] == []\n", explain=True)[1]
    assert "..." in long and len(long) < 200  # long values are shortened


def test_the_loop_with_values_shows_the_model_what_its_code_gave() -> None:
    """`values` reaches the critique call; the loop's name carries it (`:values`)."""
    seen: list[str] = []

    def reply(conversation, config):  # type: ignore[no-untyped-def]
        seen.append(conversation[-1].content)
        return CODE if len(conversation) == 1 else "It subtracts."

    task = CodeTask(id="t", kind="mbpp", request="Write add.", tests="assert add(1, 2) == 3\n",
                    visible="assert add(1, 2) == 3\n")  # fmt: skip
    verify_revise(FakeBackend(responses=reply), [task], Constitution.load("code"), rounds=1,
                  values=True)  # fmt: skip
    assert any("Result: failed: AssertionError: add(1, 2) gave -1" in text for text in seen)
    spec = split_revise("local/x+revise:3:critique-plain:x4:values")
    assert spec.values and (spec.feedback, spec.samples) == ("critique-plain", 4)
    assert spec.base + spec.suffix == "local/x+revise:3:critique-plain:x4:values"
    assert split_revise("local/x+revise:3:values").feedback == "critique"


def test_each_expression_runs_once_and_the_asserts_own_message_stays() -> None:
    rewritten = explain_asserts("assert bump() == 5, 'the fifth call'\n")
    scope: dict[str, object] = {"calls": []}
    exec("def bump():\n    calls.append(1)\n    return len(calls)\n", scope)
    with pytest.raises(AssertionError) as failed:
        exec(rewritten, scope)
    assert str(failed.value) == "bump() gave 1; the test expects 5 (the fifth call)"
    assert scope["calls"] == [1]  # evaluated once, though the message shows the value
    is_not = explain_asserts("assert bump() is not 2\n")
    with pytest.raises(AssertionError, match="bump\\(\\) gave 2; the test expects it is not 2"):
        exec(is_not, scope)


def test_the_dry_run_shows_what_a_values_loop_prints() -> None:
    from charter.stages.code_revise import dry_run

    task = CodeTask(id="t", kind="mbpp", request="Write add.", tests="assert add(1, 2) == 3\n",
                    visible="assert add(1, 2) == 3\n")  # fmt: skip
    code = Constitution.load("code")
    assert "f(2) gave 3" in dry_run([task], code, values=True)
    assert "gave" not in dry_run([task], code)
