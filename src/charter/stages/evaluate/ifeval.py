"""Judge-free instruction following: checks, in code, of IFEval-style verifiable instructions.

A prompt row carries ``prompt``, ``instruction_id_list`` and ``kwargs`` (one dict per
instruction), as in IFEval's ``input_data.jsonl``. Each supported instruction type has a check
here, written from the instruction's meaning (IFEval's reference checkers need NLTK data that
cannot be downloaded here). ``language:response_language`` identifies the response's language
with py3langid (the evaluate extra): langid.py's naive Bayes model, shipped inside its wheel,
deterministic — no random state to seed, unlike langdetect, which IFEval's reference uses. An
instruction type without a check (or whose library is missing) is unsupported: left out of the
score, never guessed, and counted by the evaluation. The strict score of a prompt is 1 when
every supported instruction of it is followed; a prompt with none is not scored.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from charter.errors import CharterError
from charter.jsonl_rows import BadRow, read_json_rows
from charter.records import Instruction

log = logging.getLogger(__name__)

Check = Callable[[str, dict[str, Any]], bool]
LANGUAGE = "language:response_language"
_WORD = re.compile(r"\b\w+(?:['’]\w+)?\b")


def _compare(count: int, relation: str, target: int) -> bool:
    if relation == "less than":
        return count < target
    if relation == "at least":
        return count >= target
    raise CharterError(f"unknown relation '{relation}': use 'less than' or 'at least'")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+|\n+", text.strip())
    return [p for p in parts if _words(p)]


def _occurrences(text: str, phrase: str) -> int:
    return len(re.findall(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, flags=re.IGNORECASE))


def _paragraphs(text: str, separator: str) -> list[str] | None:
    """Paragraphs split by ``separator``; None when one in the middle is empty."""
    parts = [p.strip() for p in re.split(separator, text.strip())]
    if any(not p for p in parts[1:-1]):
        return None
    return [p for p in parts if p]


def _no_fences(text: str) -> str:
    return re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.IGNORECASE)


def _nth_paragraph_first_word(text: str, k: dict[str, Any]) -> bool:
    paragraphs = _paragraphs(text, r"\n\s*\n")
    if not paragraphs or len(paragraphs) != k["num_paragraphs"]:
        return False
    nth = k["nth_paragraph"]
    if not 1 <= nth <= len(paragraphs):
        return False
    words = _words(paragraphs[nth - 1])
    return bool(words) and words[0].lower() == str(k["first_word"]).lower()


def _two_responses(text: str, _: dict[str, Any]) -> bool:
    parts = [p.strip() for p in text.split("******")]
    return len(parts) == 2 and all(parts) and parts[0] != parts[1]


def _json(text: str, _: dict[str, Any]) -> bool:
    try:
        json.loads(_no_fences(text))
    except ValueError:
        return False
    return True


@functools.cache
def _identifier() -> Any:
    """py3langid, or None (logged once) when the evaluate extra is not installed."""
    try:
        import py3langid  # type: ignore[import-untyped]  # ships no type information
    except ImportError:
        log.warning("%s is unsupported without py3langid: pip install 'charter[evaluate]'",
                    LANGUAGE)  # fmt: skip
        return None
    return py3langid


def _language(text: str, k: dict[str, Any]) -> bool:
    """IFEval's check: the response is in ``k["language"]`` (an ISO 639-1 code)."""
    language, _score = _identifier().classify(text)
    return bool(language == str(k["language"]).strip().lower())


CHECKS: dict[str, Check] = {
    "punctuation:no_comma": lambda t, k: "," not in t,
    "length_constraints:number_words": lambda t, k: _compare(
        len(_words(t)), k["relation"], k["num_words"]
    ),
    "length_constraints:number_sentences": lambda t, k: _compare(
        len(_sentences(t)), k["relation"], k["num_sentences"]
    ),
    "length_constraints:number_paragraphs": lambda t, k: (
        (p := _paragraphs(t, r"\s*\*\*\*\s*")) is not None and len(p) == k["num_paragraphs"]
    ),
    "length_constraints:nth_paragraph_first_word": _nth_paragraph_first_word,
    "keywords:forbidden_words": lambda t, k: all(
        _occurrences(t, w) == 0 for w in k["forbidden_words"]
    ),
    "keywords:existence": lambda t, k: all(_occurrences(t, w) > 0 for w in k["keywords"]),
    "keywords:frequency": lambda t, k: _compare(
        _occurrences(t, k["keyword"]), k["relation"], k["frequency"]
    ),
    "keywords:letter_frequency": lambda t, k: _compare(
        t.lower().count(str(k["letter"]).lower()), k["let_relation"], k["let_frequency"]
    ),
    "detectable_format:number_highlighted_sections": lambda t, k: (
        len([h for h in re.findall(r"\*+([^\n*]+)\*+", t) if h.strip()]) >= k["num_highlights"]
    ),
    "detectable_format:title": lambda t, k: re.search(r"<<[^\n<>]*\w[^\n<>]*>>", t) is not None,
    "detectable_format:number_bullet_lists": lambda t, k: (
        len(re.findall(r"^\s*(?:\*(?!\*)|-)\s+\S", t, flags=re.MULTILINE)) == k["num_bullets"]
    ),
    "detectable_format:json_format": _json,
    "detectable_format:multiple_sections": lambda t, k: (
        len(re.split(rf"\s?{re.escape(k['section_spliter'])}\s?\d+\s?", t)) - 1 >= k["num_sections"]
    ),
    "detectable_format:constrained_response": lambda t, k: any(
        option in t for option in ("My answer is yes.", "My answer is no.", "My answer is maybe.")
    ),
    "detectable_content:number_placeholders": lambda t, k: (
        len(re.findall(r"\[[^\[\]\n]+\]", t)) >= k["num_placeholders"]
    ),
    "detectable_content:postscript": lambda t, k: (
        re.search(rf"^\s*{re.escape(k['postscript_marker'])}", t, re.IGNORECASE | re.MULTILINE)
        is not None
    ),
    "startend:quotation": lambda t, k: len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"',
    "startend:end_checker": lambda t, k: (
        t.strip().lower().endswith(str(k["end_phrase"]).strip().lower())
    ),
    "change_case:english_lowercase": lambda t, k: t == t.lower() and t != t.upper(),
    "change_case:english_capital": lambda t, k: t == t.upper() and t != t.lower(),
    "change_case:capital_word_frequency": lambda t, k: _compare(
        sum(1 for w in _words(t) if w.isupper()), k["capital_relation"], k["capital_frequency"]
    ),
    "combination:repeat_prompt": lambda t, k: (
        t.strip().lower().startswith(str(k["prompt_to_repeat"]).strip().lower())
    ),
    "combination:two_responses": _two_responses,
    LANGUAGE: _language,
}


def checkable(instruction: str) -> bool:
    """Whether ``instruction`` has a check here that can run (its library installed)."""
    return instruction in CHECKS and (instruction != LANGUAGE or _identifier() is not None)


@dataclass(frozen=True)
class InstructionPrompt:
    """A prompt with verifiable instructions, and each instruction's arguments."""

    id: str
    prompt: str
    instructions: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(i for i in self.instructions if checkable(i))

    @property
    def unsupported(self) -> tuple[str, ...]:
        return tuple(i for i in self.instructions if not checkable(i))


def load_instruction_prompts(path: Path) -> list[InstructionPrompt]:
    """IFEval-style rows; a malformed one stops with its line."""
    prompts = []
    for number, row in read_json_rows(path):
        where = f"{path}:{number}"
        if isinstance(row, BadRow) or not isinstance(row, dict):
            raise CharterError(f"{where}: {row if isinstance(row, BadRow) else 'not an object'}")
        ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
        if not (isinstance(row.get("prompt"), str) and isinstance(ids, list)
                and isinstance(kwargs, list) and len(ids) == len(kwargs)):  # fmt: skip
            raise CharterError(
                f"{where}: needs 'prompt', 'instruction_id_list' and 'kwargs' (one dict per "
                "instruction)"
            )
        clean = tuple({k: v for k, v in (kw or {}).items() if v is not None} for kw in kwargs)
        prompts.append(
            InstructionPrompt(str(row.get("key", number)), row["prompt"], tuple(ids), clean)
        )
    return prompts


def follows(prompt: InstructionPrompt, response: str) -> dict[str, bool]:
    """Whether ``response`` follows each supported instruction of ``prompt``."""
    results = {}
    for instruction, kwargs in zip(prompt.instructions, prompt.kwargs, strict=True):
        if checkable(instruction):
            try:
                results[instruction] = CHECKS[instruction](response, kwargs)
            except KeyError as err:
                raise CharterError(
                    f"prompt {prompt.id}: {instruction} needs the argument {err}"
                ) from None
    return results


def satisfies(instructions: Sequence[Instruction], response: str) -> bool:
    """Whether ``response`` passes every instruction a training prompt carries.

    The same checks as the evaluation, used to verify training answers
    (charter.stages.guided, charter.stages.verdict_pairs); an instruction whose check cannot
    run here is not held against it.
    """
    prompt = InstructionPrompt("", "", tuple(i.id for i in instructions),
                               tuple(i.kwargs for i in instructions))  # fmt: skip
    return all(follows(prompt, response).values())


def unscored(prompts: Sequence[InstructionPrompt]) -> dict[str, int]:
    """What goes unscored for want of a check: IFEval instructions, and prompts with none."""
    counts = {
        "ifeval_unsupported_instructions": sum(len(p.unsupported) for p in prompts),
        "ifeval_unscored_prompts": sum(1 for p in prompts if not p.supported),
    }
    if counts["ifeval_unsupported_instructions"]:
        kinds = sorted({i for p in prompts for i in p.unsupported})
        log.warning("%d IFEval instructions have no check and are left out of the score (%s); "
                    "%d prompts have none left and are not scored",
                    counts["ifeval_unsupported_instructions"], ", ".join(kinds),
                    counts["ifeval_unscored_prompts"])  # fmt: skip
    return counts
