"""The code suite's pieces: read HumanEval/MBPP-style tasks, ask for code, run it in the sandbox.

Task files are JSONL (optionally gzipped) or a JSON array, one task per row, in either shape:

- HumanEval: ``task_id``, ``prompt`` (signature and docstring), ``test`` (defines
  ``check(candidate)``), ``entry_point``;
- MBPP: ``task_id``, ``text`` or ``prompt`` (the request), ``test_list`` (assert lines),
  optional ``test_setup_code`` / ``test_imports``.

A model's answer is chat text: :func:`extract_code` takes its first fenced code block (or the
whole answer when there is none), and :func:`program_for` joins it with the task's tests into
one program for :func:`charter.stages.evaluate.sandbox.run_program`. A task passes when that program
exits 0 *and* prints, as its last line, a random token placed after the tests: an answer that
calls ``sys.exit(0)`` or ``os._exit(0)`` before the asserts run does not pass. Timeouts, limits
and blocked actions are failures (pass@1 with one greedy answer).
"""

from __future__ import annotations

import ast
import doctest
import hashlib
import json
import re
import secrets
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from charter.errors import CharterError
from charter.jsonl_rows import BadRow, read_json_rows
from charter.stages.evaluate.sandbox import DEFAULT_LIMITS, Limits, Outcome, run_program

HUMANEVAL_REQUEST = (
    "Complete this Python function. Reply with the whole function, imports included, in one "
    "```python code block.\n\n```python\n{prompt}```"
)
MBPP_REQUEST = (
    "{text}\nYour code must pass this test:\n\n{test}\n\nReply with the Python code in one "
    "```python code block."
)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class CodeTask:
    """One programming task and the tests that judge an answer."""

    id: str
    kind: Literal["humaneval", "mbpp"]
    request: str  # what the model is asked
    tests: str  # appended to the answer's code
    stub: str = ""  # HumanEval's signature and docstring, for answers that give a body only
    entry_point: str = ""
    # The tests the model may see (MBPP's first assert; HumanEval's docstring examples as
    # asserts), for execution-grounded revision. ``tests`` (all of them) only ever score.
    visible: str = ""
    statement: str = ""  # the task in its source's words, without our request template


def load_code_tasks(path: Path) -> list[CodeTask]:
    """Tasks from a HumanEval- or MBPP-style file; a malformed row stops with its line."""
    tasks = []
    for where, row in _rows(path):
        if isinstance(row, BadRow) or not isinstance(row, dict):
            raise CharterError(f"{where}: {row if isinstance(row, BadRow) else 'not an object'}")
        tasks.append(_task(row, where))
    if not tasks:
        raise CharterError(f"{path}: no code tasks")
    return tasks


def code_slice(sources: Sequence[str], folder: Path, name: str) -> Path:
    """One JSONL task file from ``sources`` (``PATH[#START:STOP]``, a slice by task position;
    HumanEval and MBPP rows may mix), named by a hash of the sources and their contents.

    Every row is checked as a task first, so a bad one stops with its file and line.
    """
    from charter.bundled import resolve_bundled
    from charter.runs import file_sha256, write_atomic
    from charter.splits import parse_source

    parsed = [parse_source(source) for source in sources]
    paths = [resolve_bundled(path, "data/eval", ".jsonl", ("data", "evaluation set"))
             for path, _, _ in parsed]  # fmt: skip
    digest = hashlib.sha256()
    for source, path in zip(sources, paths, strict=True):
        digest.update(f"{source}\0{file_sha256(path)}\0".encode())
    target = folder / f"{name}-{digest.hexdigest()[:12]}.jsonl"
    if target.is_file():
        return target
    lines = []
    for (_, start, stop), path in zip(parsed, paths, strict=True):
        for where, row in list(_rows(path))[start:stop]:
            if isinstance(row, BadRow) or not isinstance(row, dict):
                raise CharterError(
                    f"{where}: {row if isinstance(row, BadRow) else 'not an object'}"
                )
            _task(row, where)
            lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    if not lines:
        raise CharterError(f"{name}: no code tasks in {', '.join(sources)}")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(target, "".join(lines))
    return target


def _rows(path: Path) -> Iterator[tuple[str, object]]:
    """(where, row) pairs from JSONL (line numbers) or a JSON array (item numbers)."""
    if path.suffix != ".json":
        for number, row in read_json_rows(path):
            yield f"{path}:{number}", row
        return
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CharterError(f"{path}: not readable as JSON ({err})") from None
    if not isinstance(items, list):
        raise CharterError(f"{path}: a .json task file is an array of tasks; use JSONL otherwise")
    for number, row in enumerate(items, start=1):
        yield f"{path}: task {number}", row


def _task(row: dict[str, Any], where: str) -> CodeTask:
    task_id = str(row.get("task_id", where))
    if {"prompt", "test", "entry_point"} <= row.keys():
        entry = str(row["entry_point"])
        return CodeTask(
            id=task_id, kind="humaneval", request=HUMANEVAL_REQUEST.format(prompt=row["prompt"]),
            tests=f"{row['test']}\n\ncheck({entry})\n", stub=str(row["prompt"]), entry_point=entry,
            visible=docstring_asserts(str(row["prompt"]), entry), statement=str(row["prompt"]),
        )  # fmt: skip
    text = row.get("text", row.get("prompt"))
    tests = row.get("test_list")
    if isinstance(text, str) and isinstance(tests, list) and tests:
        setup = "\n".join([*row.get("test_imports", []), row.get("test_setup_code", "")])
        return CodeTask(
            id=task_id, kind="mbpp", request=MBPP_REQUEST.format(text=text, test=tests[0]),
            tests=setup.strip() + "\n" + "\n".join(tests) + "\n",
            visible=setup.strip() + "\n" + tests[0] + "\n", statement=text,
        )  # fmt: skip
    raise CharterError(
        f"{where}: a code task needs 'prompt', 'test' and 'entry_point' (HumanEval) or "
        "'text'/'prompt' and a non-empty 'test_list' (MBPP)"
    )


def docstring_asserts(prompt: str, entry_point: str = "") -> str:
    """A HumanEval prompt's examples as assert lines (none when it shows none).

    ``>>>`` examples are read as doctest would: an expected value that is not a Python
    expression (printed text) is compared as the repr the example shows, and an example that
    is itself a comparison (``>>> f(x) == y``) is asserted as written. A prompt without them
    (most of HumanEval's second half) writes its examples in prose, ``f(x) ➞ y``,
    ``f(x) => y``, ``f(x) == y``, ``f(x) returns y``: those lines that call ``entry_point`` with
    literal arguments and give a literal value are read too (others, such as ``is_happy(a)
    => False`` or ``f(x) == 1 + 9 = 10``, are not tests and are skipped).
    """
    lines = []
    for example in doctest.DocTestParser().get_examples(prompt):
        call = example.source.strip()
        # The parser reads on to the docstring's closing quotes when they follow the value.
        want = re.split(r'^\s*(?:"""|\'\'\')', example.want, flags=re.MULTILINE)[0].strip()
        if "\n" in call:
            continue  # a multi-line example: not a call with a value
        if not want:
            if _comparison(call):
                lines.append(f"assert (\n    {call}\n), {call!r}\n")
            continue  # otherwise a statement
        try:
            ast.parse(want, mode="eval")
        except SyntaxError:
            want = repr(want)
            call = f"repr({call}\n)"  # on its own line: the example may end in a comment
        lines.append(f"assert (\n    {call}\n) == {want}, {example.source.strip()!r}\n")
    if not lines and entry_point:
        lines = [f"assert (\n    {call}\n) == {want}, {f'{call} -> {want}'!r}\n"
                 for call, want in _written_examples(prompt, entry_point)]  # fmt: skip
    return "".join(lines)


# What stands between a call and its value in HumanEval's prose examples, longest first.
_GIVES = re.compile(r"\s*(?:#\s*)?(?:==>|=>|➞|->|→|==|=|should return|returns)\s*")


def _written_examples(prompt: str, entry_point: str) -> Iterator[tuple[str, str]]:
    """(call, value) for each prose example line ``entry_point(literals) GIVES literal``,
    read after the last line that says "example" (and is not one) when one does
    (HumanEval/130 defines its sequence as ``tri(1) = 3`` before its examples, where ``tri``
    returns a list)."""
    lines = prompt.splitlines()
    said = [i for i, line in enumerate(lines)
            if "example" in line.lower() and f"{entry_point}(" not in line]  # fmt: skip
    for line in lines[said[-1] + 1 if said else 0 :]:
        for match in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\(", line):
            end = _closing_paren(line, match.end() - 1)
            if end is None:
                continue
            call, rest = line[match.start() : end + 1], line[end + 1 :]
            gives = _GIVES.match(rest)
            if gives is None or not _literal_call(call):
                continue
            want = rest[gives.end() :].strip().rstrip(".").strip()
            if _literal(want):
                yield call, want


def _closing_paren(line: str, start: int) -> int | None:
    """The index of the parenthesis closing the one at ``start`` (quotes respected)."""
    depth, quote = 0, ""
    for i in range(start, len(line)):
        char = line[i]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
            if depth == 0:
                return i
    return None


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return bool(text)


def _literal_call(call: str) -> bool:
    """A call whose arguments are all literals (``f(a)`` names a variable the test lacks)."""
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, ast.Call) and all(
        _literal(ast.unparse(arg)) for arg in [*node.args, *(k.value for k in node.keywords)]
    )


def _comparison(source: str) -> bool:
    try:
        node = ast.parse(source, mode="eval").body
    except SyntaxError:
        return False
    return isinstance(node, ast.Compare) and [type(op) for op in node.ops] == [ast.Eq]


def extract_code(answer: str) -> str:
    """The first fenced code block of a chat answer, or the whole answer without fences."""
    match = _FENCE.search(answer)
    return match.group(1) if match else answer


def program_for(
    task: CodeTask, answer: str, sentinel: str = "", *, visible: bool = False,
    explain: bool = False,
) -> str:  # fmt: skip
    """The answer's code followed by the task's tests (and, after them, ``print(sentinel)``).

    ``visible``: only the tests the model may see (:attr:`CodeTask.visible`); with
    ``explain``, rewritten to say what the code gave when one fails
    (:func:`~charter.stages.evaluate.explain.explain_asserts`).
    """
    from charter.stages.evaluate.explain import explain_asserts

    code = extract_code(answer)
    if task.kind == "humaneval":
        code = _with_prompt(task, code)
    finish = f"\nprint({sentinel!r}, flush=True)\n" if sentinel else ""
    tests = task.tests
    if visible:
        tests = explain_asserts(task.visible) if explain else task.visible
    return f"{code}\n\n{tests}{finish}"


def _with_prompt(task: CodeTask, code: str) -> str:
    """A HumanEval answer with what its prompt defines: the whole stub before a body-only
    answer; before a whole function, the prompt's code above the function (its imports and
    the helpers it may call, e.g. ``poly`` in HumanEval/32), as the reference harness runs
    prompt and completion together, so an answer is not failed for leaving them out."""
    entry = re.escape(task.entry_point)
    if not re.search(rf"def\s+{entry}\b", code):
        return task.stub + code  # the answer is the function's body only
    own = re.search(rf"^def\s+{entry}\b", task.stub, re.MULTILINE)
    return (task.stub[: own.start()] if own else "") + code


def run_tasks(
    tasks: list[CodeTask], answers: list[str], limits: Limits = DEFAULT_LIMITS, workers: int = 2,
    *, visible: bool = False, explain: bool = False,
) -> list[Outcome]:  # fmt: skip
    """Each answer's outcome against its task's tests (``visible``: the visible ones only;
    ``explain``: saying what the code gave, :func:`program_for`), ``workers`` at a time."""
    if len(tasks) != len(answers):
        raise ValueError(f"{len(tasks)} tasks but {len(answers)} answers")
    sentinels = [f"charter-tests-done-{secrets.token_hex(16)}" for _ in tasks]
    programs = [program_for(t, a, s, visible=visible, explain=explain)
                for t, a, s in zip(tasks, answers, sentinels, strict=True)]  # fmt: skip
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: run_program(job[0], limits, sentinel=job[1]),
                             zip(programs, sentinels, strict=True)))  # fmt: skip
