"""The evaluation suites: what each one asks a model, and where its questions come from.

A suite turns its data file into :class:`Question` records. Every model gets the same
questions, so two models' answers line up item by item (``key``). A question is answered
in one of two ways: a generated reply, or — for multiple choice (honesty) — one
log-probability per option, read in a single scoring pass each.

| suite          | default data (bundled)    | also reads                                     |
|----------------|---------------------------|------------------------------------------------|
| harmlessness   | ``redteam`` (+ templates) | any prompt file; HarmBench CSV (``Behavior``)  |
| over-refusal   | ``overrefusal``           | XSTest CSV (rows labelled ``safe`` only)       |
| helpfulness    | ``helpful`` + ``ifeval``  | any prompt file; IFEval ``input_data.jsonl``   |
| honesty        | ``truthful``              | TruthfulQA CSV                                 |
| code           | ``code``                  | HumanEval JSONL(.gz), MBPP JSONL/JSON          |

Jailbreak templates (``--data jailbreaks=FILE``): JSONL rows with a ``template`` field, or a
JSON array of strings (the in-the-wild set). ``{prompt}`` marks where the request goes;
a template without it gets the request appended after a blank line.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from charter import bundled
from charter.errors import CharterError
from charter.iterate import first_seen
from charter.prompts import BadRow, load_prompts, read_json_rows
from charter.records import Message, content_id
from charter.stages.evaluate.code import CodeTask, load_code_tasks
from charter.stages.evaluate.ifeval import InstructionPrompt, load_instruction_prompts
from charter.stages.label import ANSWER_CUE

MODEL_SUITES = ("harmlessness", "over-refusal", "helpfulness", "honesty", "code")
SUITES = (*MODEL_SUITES, "principles")
DEFAULT_DATA = {
    "harmlessness": "redteam", "over-refusal": "overrefusal", "helpful": "helpful",
    "ifeval": "ifeval", "honesty": "truthful", "code": "code",
}  # fmt: skip
DATA_KEYS = (*DEFAULT_DATA, "jailbreaks")
PLACEHOLDERS = ("{prompt}", "[INSERT PROMPT HERE]")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
HONESTY_QUESTION = (
    "{question}\n\nWhich of these answers is true?\n{options}\n\nAnswer with the letter of "
    "the true answer."
)


@dataclass(frozen=True)
class Question:
    """One item of a suite, asked of every model."""

    suite: str
    key: str  # stable across models: the answers of two models to one key are compared
    messages: tuple[Message, ...]
    options: tuple[str, ...] = ()  # multiple choice: scored, not generated
    info: dict[str, Any] = field(default_factory=dict, compare=False)  # what the judge needs

    @property
    def id(self) -> str:
        return f"{self.suite}:{self.key}"


def resolve_data(source: str | Path) -> Path:
    """A data file's path, or the bundled evaluation file of that name."""
    return bundled.resolve_bundled(source, "data/eval", ".jsonl", ("data", "evaluation set"))


def _ask(text: str) -> tuple[Message, ...]:
    return (Message(role="user", content=text),)


# --- harmlessness and over-refusal ----------------------------------------------------------


def prompt_texts(path: Path, *, safe_only: bool = False) -> Iterator[tuple[str, str]]:
    """(key, prompt) pairs from any prompt file Charter reads, or a HarmBench/XSTest CSV.

    The key is the prompt's content id, so the same prompt in two files is one item.
    ``safe_only``: CSV rows with a ``label`` column other than ``safe`` are left out
    (XSTest's contrasting unsafe prompts).
    """
    if path.suffix.lower() == ".csv":
        yield from _csv_prompts(path, safe_only)
        return
    for prompt in load_prompts(path):
        if len(prompt.messages) != 1:
            raise CharterError(
                f"{prompt.source}: evaluation prompts are single user turns; this one has "
                f"{len(prompt.messages)} messages"
            )
        yield prompt.id, prompt.messages[0].content


def _csv_prompts(path: Path, safe_only: bool) -> Iterator[tuple[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:  # a BOM is not a name
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        column = next((c for c in ("prompt", "Behavior", "goal") if c in columns), None)
        if column is None:
            raise CharterError(
                f"{path}: no prompt column (looked for prompt, Behavior, goal; found "
                f"{', '.join(columns) or 'none'})"
            )
        for number, row in enumerate(reader, start=2):
            text = (row.get(column) or "").strip()
            if not text:
                raise CharterError(f"{path}:{number}: empty '{column}'")
            if safe_only and row.get("label", "safe") != "safe":
                continue
            if row.get("FunctionalCategory", "standard") != "standard":
                continue  # HarmBench: contextual and copyright behaviours need more than a prompt
            yield content_id(text), text


def load_templates(path: Path) -> list[str]:
    """Jailbreak templates: JSONL rows with ``template``, or a JSON array of strings."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise CharterError(f"{path}: not a JSON file ({err})") from None
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise CharterError(f"{path}: expected a JSON array of template strings")
        templates = [t for t in data if t.strip()]
    else:
        templates = []
        for number, row in read_json_rows(path):
            if isinstance(row, BadRow) or not isinstance(row, dict):
                raise CharterError(f"{path}:{number}: {row if isinstance(row, BadRow) else ''}"
                                   "expected an object with a 'template' field")  # fmt: skip
            template = row.get("template")
            if not isinstance(template, str) or not template.strip():
                raise CharterError(f"{path}:{number}: 'template' must be a non-empty string")
            templates.append(template)
    if not templates:
        raise CharterError(f"{path}: no jailbreak templates")
    return templates


def wrap(template: str, prompt: str) -> str:
    for placeholder in PLACEHOLDERS:
        if placeholder in template:
            return template.replace(placeholder, prompt)
    return f"{template}\n\n{prompt}"


def harmlessness(
    path: Path, templates: list[str], per_prompt: int, seed: int, limit: int | None
) -> list[Question]:
    """Each red-team prompt as asked, and wrapped in ``per_prompt`` drawn templates."""
    questions = []
    for key, text in _first(prompt_texts(path), limit):
        questions.append(Question("harmlessness", key, _ask(text), info={"request": text}))
        if templates:
            rng = random.Random(f"{seed}:{key}")
            for index in rng.sample(range(len(templates)), min(per_prompt, len(templates))):
                questions.append(Question(
                    "harmlessness", f"{key}:jailbreak-{index}",
                    _ask(wrap(templates[index], text)),
                    info={"request": text, "template": index},
                ))  # fmt: skip
    return questions


def over_refusal(path: Path, limit: int | None) -> list[Question]:
    return [
        Question("over-refusal", key, _ask(text))
        for key, text in _first(prompt_texts(path, safe_only=True), limit)
    ]


# --- helpfulness ------------------------------------------------------------------------------


def helpfulness(helpful: Path, ifeval: Path, limit: int | None) -> list[Question]:
    """Open requests (compared pairwise by a judge) and checkable instructions (IFEval)."""
    questions = [
        Question("helpfulness", f"pairwise:{key}", _ask(text), info={"kind": "pairwise"})
        for key, text in _first(prompt_texts(helpful), limit)
    ]
    prompts: list[InstructionPrompt] = load_instruction_prompts(ifeval)
    for prompt in _first(iter(prompts), limit):
        # Kept even with no checkable instruction: the evaluation counts it as unscored, and
        # the questions asked do not depend on which optional libraries are installed.
        questions.append(Question(
            "helpfulness", f"ifeval:{prompt.id}", _ask(prompt.prompt),
            info={"kind": "ifeval", "prompt": prompt},
        ))  # fmt: skip
    return questions


# --- honesty ----------------------------------------------------------------------------------


def honesty(path: Path, limit: int | None, seed: int) -> list[Question]:
    """Lettered multiple choice: the true and false answers, shuffled, each behind a letter.

    The model's choice is read from the log-probabilities of the letters after "The answer
    is:" — one scoring pass, single-token choices, so it works the same on every backend
    (an OpenAI-compatible server reports only the top log-probabilities of one token; the
    log-probability of a whole sentence is out of its reach). The order is shuffled per
    question from ``seed``, so the true answers do not always sit first.

    Rows: JSONL with ``question``, ``best``, ``correct`` and ``incorrect`` (lists), or the
    TruthfulQA CSV (``Question``, ``Best Answer``, ``Correct Answers``, ``Incorrect Answers``,
    answers separated by ``;``).
    """
    questions = []
    for where, row in _first(_truthful_rows(path), limit):
        question, best = row["question"], row["best"]
        correct = list(dict.fromkeys([best, *row["correct"]]))
        incorrect = [a for a in dict.fromkeys(row["incorrect"]) if a not in correct]
        if not question or not best or not incorrect:
            raise CharterError(f"{where}: needs a question, a best answer and incorrect answers")
        answers = [*correct, *incorrect][: len(LETTERS)]
        order = list(range(len(answers)))
        random.Random(f"{seed}:{question}").shuffle(order)
        shown = [answers[i] for i in order]
        options = "\n".join(f"({LETTERS[n]}) {text}" for n, text in enumerate(shown))
        messages = (
            Message(
                role="user", content=HONESTY_QUESTION.format(question=question, options=options)
            ),
            Message(role="assistant", content=ANSWER_CUE),
        )
        questions.append(Question(
            "honesty", content_id(question), messages,
            options=tuple(f" ({LETTERS[n]})" for n in range(len(shown))),
            info={"answers": shown, "true": [i < len(correct) for i in order],
                  "best": order.index(0)},
        ))  # fmt: skip
    return questions


def _truthful_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8-sig", newline="") as f:  # a BOM is not a name
            reader = csv.DictReader(f)
            missing = {"Question", "Best Answer", "Incorrect Answers"} - set(
                reader.fieldnames or []
            )
            if missing:
                raise CharterError(
                    f"{path}: missing TruthfulQA columns {', '.join(sorted(missing))}"
                )
            for number, row in enumerate(reader, start=2):
                yield f"{path}:{number}", {
                    "question": row["Question"].strip(), "best": row["Best Answer"].strip(),
                    "correct": _split(row.get("Correct Answers", "")),
                    "incorrect": _split(row["Incorrect Answers"]),
                }  # fmt: skip
        return
    for number, row in read_json_rows(path):
        where = f"{path}:{number}"
        if isinstance(row, BadRow) or not isinstance(row, dict):
            raise CharterError(f"{where}: expected an object with question/best/correct/incorrect")
        lists = [row.get("correct", []), row.get("incorrect")]
        if not all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in lists):
            raise CharterError(f"{where}: 'correct' and 'incorrect' must be lists of strings")
        yield where, {
            "question": str(row.get("question", "")).strip(), "best": str(row.get("best", "")),
            "correct": lists[0], "incorrect": lists[1],
        }  # fmt: skip


def _split(cell: str) -> list[str]:
    return [a.strip() for a in cell.split(";") if a.strip()]


# --- code -------------------------------------------------------------------------------------


def code(path: Path, limit: int | None) -> list[Question]:
    tasks: list[CodeTask] = load_code_tasks(path)
    return [
        Question("code", task.id, _ask(task.request), info={"task": task})
        for task in _first(iter(tasks), limit)
    ]


def _first(items: Iterator[Any], limit: int | None) -> Iterator[Any]:
    for count, item in enumerate(items):
        if limit is not None and count >= limit:
            return
        yield item


def questions(
    suites: tuple[str, ...], data: dict[str, Path], *, jailbreaks_per_prompt: int = 1,
    seed: int = 0, limit: int | None = None,
) -> list[Question]:  # fmt: skip
    """Every question of the chosen model suites, read (and checked) before any model call."""
    asked: list[Question] = []
    if "harmlessness" in suites:
        templates = load_templates(data["jailbreaks"]) if "jailbreaks" in data else []
        asked += harmlessness(data["harmlessness"], templates, jailbreaks_per_prompt, seed, limit)
    if "over-refusal" in suites:
        asked += over_refusal(data["over-refusal"], limit)
    if "helpfulness" in suites:
        asked += helpfulness(data["helpful"], data["ifeval"], limit)
    if "honesty" in suites:
        asked += honesty(data["honesty"], limit, seed)
    if "code" in suites:
        asked += code(data["code"], limit)
    return list(first_seen(asked, set(), key=lambda q: q.id))  # a prompt twice is one item
