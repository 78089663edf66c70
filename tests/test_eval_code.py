"""The code suite's pieces: task files, code extraction, programs run in the sandbox."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.stages.evaluate.code import (
    CodeTask,
    docstring_asserts,
    extract_code,
    load_code_tasks,
    program_for,
    run_tasks,
)

SAMPLE = Path(str(resources.files("charter") / "data" / "eval" / "code.jsonl"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# Our reference answers to the bundled sample, written as a chat model would reply.
REFERENCE = {
    "charter/0": "Here you go:\n```python\ndef running_max(values):\n    out, best = [], None\n"
    "    for v in values:\n        best = v if best is None else max(best, v)\n"
    "        out.append(best)\n    return out\n```\nIt keeps the best so far.",
    "charter/1": "```python\ndef is_balanced(text):\n"
    "    pairs, stack = {')': '(', ']': '[', '}': '{'}, []\n"
    "    for c in text:\n        if c in '([{':\n            stack.append(c)\n"
    "        elif c in pairs and (not stack or stack.pop() != pairs[c]):\n"
    "            return False\n    return not stack\n```",
    # A body only, as some models answer a HumanEval prompt: the stub is put in front.
    "charter/2": "    words = sentence.lower()\n    for mark in '.,!?':\n"
    "        words = words.replace(mark, ' ')\n    counts = {}\n    for w in words.split():\n"
    "        counts[w] = counts.get(w, 0) + 1\n    return counts\n",
    "charter/3": "```py\ndef digit_sum(n):\n    return sum(int(d) for d in str(n))\n```",
    "charter/4": "```python\ndef chunk(items, size):\n"
    "    return [items[i:i + size] for i in range(0, len(items), size)]\n```",
    "charter/5": "```python\ndef second_largest(numbers):\n    values = sorted(set(numbers))\n"
    "    return values[-2] if len(values) > 1 else None\n```",
}


def test_the_sample_tasks_pass_with_right_answers_and_fail_with_wrong_ones() -> None:
    tasks = load_code_tasks(SAMPLE)
    assert [t.kind for t in tasks] == ["humaneval"] * 3 + ["mbpp"] * 3
    outcomes = run_tasks(tasks, [REFERENCE[t.id] for t in tasks])
    assert [o.status for o in outcomes] == ["passed"] * 6
    wrong = run_tasks(tasks, ["```python\ndef nothing():\n    return 0\n```"] * 6)
    assert not any(o.passed for o in wrong)


def test_extract_code_takes_the_first_fenced_block() -> None:
    assert extract_code("x\n```python\na = 1\n```\n```python\nb = 2\n```") == "a = 1\n"
    assert extract_code("```\nplain = 1\n```") == "plain = 1\n"
    assert extract_code("```python\nunclosed = 1\n") == "unclosed = 1\n"  # cut by max tokens
    assert extract_code("no fence = 1") == "no fence = 1"


def test_a_whole_function_answer_is_not_given_the_stub_twice() -> None:
    (task,) = load_code_tasks(SAMPLE)[:1]
    program = program_for(task, REFERENCE["charter/0"])
    assert program.count("def running_max") == 1 and program.rstrip().endswith("check(running_max)")


def test_bad_task_files_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "tasks.jsonl"
    bad.write_text(json.dumps({"task_id": "a", "text": "t", "test_list": ["assert 1"]}) + "\n"
                   + json.dumps({"task_id": "b", "prompt": "def f():\n"}) + "\n")  # fmt: skip
    with pytest.raises(CharterError, match=r"tasks.jsonl:2: a code task needs"):
        load_code_tasks(bad)
    array = tmp_path / "tasks.json"
    array.write_text('{"not": "an array"}')
    with pytest.raises(CharterError, match="is an array of tasks"):
        load_code_tasks(array)


@pytest.mark.skipif(not (SHARED / "humaneval").is_dir(), reason="shared HumanEval data absent")
def test_humaneval_reference_solutions_pass_in_the_sandbox() -> None:
    """The sandbox refuses misbehaviour, not ordinary code: reference solutions pass."""
    path = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(path) as lines:
        rows = [json.loads(line) for line in lines][:24]
    tasks = load_code_tasks(path)[:24]
    outcomes = run_tasks(tasks, [r["canonical_solution"] for r in rows])
    assert all(o.passed for o in outcomes), [
        (t.id, o) for t, o in zip(tasks, outcomes, strict=True) if not o.passed
    ]


def test_prose_examples_in_a_docstring_become_visible_tests() -> None:
    """HumanEval's second half writes examples as ``f(x) ➞ y``; only calls on literals that
    give a literal are tests, and only after the line that announces the examples."""
    prompt = (
        'def total(xs):\n    """Sum xs; the rule is total([]) = 1 in our notes.\n'
        "    Examples:\n    total([1, 2]) \u279e 3\n    total(xs) => 0\n"
        "    total([2, 2]) == 2 + 2 = 4\n    total([5]) # returns 5\n"
        '    for total([1, 1, 1]) == 3.\n    """\n'
    )
    visible = docstring_asserts(prompt, "total")
    assert visible.count("assert") == 3
    assert "total([1, 2])\n) == 3" in visible and "total([5])\n) == 5" in visible
    assert "total([1, 1, 1])\n) == 3" in visible
    assert "total([])" not in visible and "total(xs)" not in visible and "2 + 2" not in visible
    assert docstring_asserts(prompt) == ""  # prose is read only for a named entry point
    # a doctest example that is itself a comparison is asserted as written
    doctest_style = 'def f(x):\n    """\n    >>> f(2) == 4\n    """\n'
    assert docstring_asserts(doctest_style, "f") == "assert (\n    f(2) == 4\n), 'f(2) == 4'\n"


def test_a_whole_function_answer_keeps_the_prompts_imports_and_helpers() -> None:
    """As the reference harness runs prompt and completion together: an answer that gives the
    whole function is not failed for leaving out a helper its prompt defines."""
    stub = ("import math\n\n\ndef helper(x):\n    return math.floor(x)\n\n\n"
            'def solve(x):\n    """Twice the floor of x."""\n')  # fmt: skip
    task = CodeTask(
        id="H/1",
        kind="humaneval",
        request="",
        stub=stub,
        entry_point="solve",
        tests="assert solve(2.5) == 4\n",
        visible="assert solve(1.5) == 2\n",
    )
    answer = "```python\ndef solve(x):\n    return 2 * helper(x)\n```"
    program = program_for(task, answer)
    assert program.count("def solve") == 1 and "def helper" in program
    assert [o.passed for o in run_tasks([task, task], [answer, "    return 2 * x\n"])] == [
        True, False]  # fmt: skip


@pytest.mark.skipif(not (SHARED / "humaneval").is_dir(), reason="shared HumanEval data absent")
def test_humaneval_visible_tests_hold_for_the_reference_solutions() -> None:
    """139 of HumanEval's 164 prompts show examples the loop may test against; the reference
    solutions pass all of them but three, where the docstring itself is wrong."""
    path = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    with gzip.open(path) as lines:
        rows = [json.loads(line) for line in lines]
    tasks = load_code_tasks(path)
    assert sum(1 for t in tasks if t.visible) == 139
    outcomes = run_tasks(tasks, [r["canonical_solution"] for r in rows], visible=True)
    failing = {t.id for t, o in zip(tasks, outcomes, strict=True) if not o.passed}
    # 47: median([-10, 4, 6, 1000, 10, 20]) is 8.0, not 15.0; 116 sorts by binary ones;
    # 148 shows ("Venus") for the tuple ("Venus",)
    assert failing == {"HumanEval/47", "HumanEval/116", "HumanEval/148"}


EXITS = ["import sys; sys.exit(0)", "import os; os._exit(0)", "raise SystemExit(0)", "exit()"]


@pytest.mark.parametrize("exit_call", EXITS)
def test_an_answer_that_exits_before_the_tests_does_not_pass(exit_call: str) -> None:
    tasks = load_code_tasks(SAMPLE)
    gamed = [f"```python\n{exit_call}\n```" for _ in tasks]
    outcomes = run_tasks(tasks, gamed)
    assert not any(o.passed for o in outcomes)
    assert {o.detail for o in outcomes} == {"exited before its tests finished"}
    # printing after its own exit cannot fake the token: it is random per program
    faked = [f"```python\nprint('charter-tests-done-0')\n{exit_call}\n```" for _ in tasks]
    assert not any(o.passed for o in run_tasks(tasks, faked))


def test_an_answer_that_prints_still_passes() -> None:
    tasks = load_code_tasks(SAMPLE)[3:4]
    answer = REFERENCE[tasks[0].id].replace("```py\n", "```py\nprint('hello')\n")
    assert run_tasks(tasks, [answer])[0].passed


def test_the_same_answer_to_a_task_runs_once_for_every_model(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop that kept the first answer shares that answer's outcome with the plain model,
    rather than a second run that a loaded machine might time out differently."""
    from charter.records import Answer
    from charter.stages.evaluate.run import EvaluateConfig
    from charter.suites import code as suite

    config = EvaluateConfig(suites=("code",))
    asked = suite.Code().questions({"code": SAMPLE}, config)[:2]
    runs: list[str] = []
    real = suite.run_tasks
    monkeypatch.setattr(suite, "run_tasks", lambda t, a, lim: runs.extend(a) or real(t, a, lim))
    right, wrong = REFERENCE[asked[0].info["task"].id], "```python\ndef nothing():\n    pass\n```"
    answers = {(m, q.id): Answer(id=f"{m}{q.id}", model=m, question=q.id, answer=text)
               for m, texts in (("plain", [right, wrong]), ("loop", [right, right]))
               for q, text in zip(asked, texts, strict=True)}  # fmt: skip
    outcomes = suite.Code().prepare(answers, asked, config)
    assert len(runs) == 3  # the three distinct (task, answer) pairs
    assert outcomes[("plain", asked[0].id)] is outcomes[("loop", asked[0].id)]
    assert [outcomes[(m, asked[1].id)].passed for m in ("plain", "loop")] == [False, False]
