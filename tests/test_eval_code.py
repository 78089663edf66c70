"""The code suite's pieces: task files, code extraction, programs run in the sandbox."""

from __future__ import annotations

import gzip
import json
from importlib import resources
from pathlib import Path

import pytest

from charter.errors import CharterError
from charter.stages.evaluate.code import extract_code, load_code_tasks, program_for, run_tasks

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
