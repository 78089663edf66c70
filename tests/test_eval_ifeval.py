"""IFEval-style instruction checks: each one on an answer that follows it and one that does not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.errors import CharterError
from charter.stages.evaluate.ifeval import (
    CHECKS,
    InstructionPrompt,
    follows,
    load_instruction_prompts,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("punctuation:no_comma", {}, "No commas here.", "One, two."),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5},
     "one two three four five", "one two three"),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4},
     "it's only three", "this has four words"),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "One. Two!", "One. Two! Three?"),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First part.\n***\nSecond part.", "First.\n***\n\n***\nThird."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"},
     "Friday came.\n\nWeekend, at last.", "Friday came.\n\nSaturday, at last."),
    ("keywords:forbidden_words", {"forbidden_words": ["rock"]},
     "Rocky roads are fine.", "We love Rock music."),
    ("keywords:existence", {"keywords": ["tide", "moon"]},
     "The Moon pulls the tide.", "The moon is bright."),
    ("keywords:frequency", {"keyword": "story", "relation": "at least", "frequency": 2},
     "A story within a story.", "One story, many stories."),
    ("keywords:letter_frequency", {"letter": "z", "let_relation": "at least", "let_frequency": 2},
     "Zig zag.", "Zebra."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*one* and **two**", "only *one* here"),
    ("detectable_format:title", {}, "<<A Title>>\nBody.", "<<>> no title"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2},
     "Intro\n* first\n- second", "* first\n* second\n* third"),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "{a: 1}"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nA\nSECTION 2\nB", "SECTION 1\nonly one"),
    ("detectable_format:constrained_response", {}, "My answer is no.", "No."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], at [address].", "Dear [name]."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."},
     "Thanks.\nP.S. see you", "Thanks. PS see you"),
    ("startend:quotation", {}, '"All quoted."', '"Half quoted.'),
    ("startend:end_checker", {"end_phrase": "Any other questions?"},
     "Done. Any other questions?", "Any other questions? Done."),
    ("change_case:english_lowercase", {}, "all lower case.", "Not all lower."),
    ("change_case:english_capital", {}, "ALL CAPS HERE.", "ALL CAPS but one."),
    ("change_case:capital_word_frequency",
     {"capital_relation": "less than", "capital_frequency": 2},
     "Only ONE shout.", "TWO LOUD words."),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Say hi."},
     "Say hi. Hi!", "Hi! Say hi."),
    ("combination:two_responses", {}, "First answer.\n******\nSecond answer.",
     "Same.\n******\nSame."),
    ("language:response_language", {"language": "de"},
     "Das Wetter ist heute schön, und wir gehen später in den Park.",
     "The weather is nice today, and we will go to the park later."),
]  # fmt: skip


@pytest.mark.parametrize(("instruction", "kwargs", "good", "bad"), CASES)
def test_each_check(instruction: str, kwargs: dict[str, Any], good: str, bad: str) -> None:
    prompt = InstructionPrompt("p", "…", (instruction,), (kwargs,))
    assert follows(prompt, good) == {instruction: True}
    assert follows(prompt, bad) == {instruction: False}


def test_every_check_has_a_case() -> None:
    assert {case[0] for case in CASES} == set(CHECKS)


def test_unsupported_instructions_are_left_out_not_guessed() -> None:
    prompt = InstructionPrompt(
        "p", "…", ("made_up:instruction", "punctuation:no_comma"), ({"x": 1}, {})
    )
    assert prompt.supported == ("punctuation:no_comma",)
    assert prompt.unsupported == ("made_up:instruction",)
    assert follows(prompt, "no commas") == {"punctuation:no_comma": True}


@pytest.mark.parametrize(
    ("language", "text"),
    [("hi", "मुझे यह किताब बहुत पसंद है क्योंकि इसकी कहानी दिलचस्प है।"),
     ("ru", "Мне очень нравится эта книга, потому что её история интересна."),
     ("sw", "Ninapenda sana kitabu hiki kwa sababu hadithi yake inavutia sana."),
     ("fi", "Pidän tästä kirjasta todella paljon, koska sen tarina on kiinnostava.")],
    ids=["hi", "ru", "sw", "fi"],
)  # fmt: skip
def test_response_language_is_identified_the_same_way_every_time(language: str, text: str) -> None:
    prompt = InstructionPrompt("p", "…", ("language:response_language",), ({"language": language},))
    for _ in range(3):  # no random state: the same verdict each time
        assert follows(prompt, text) == {"language:response_language": True}


def test_bad_rows_and_missing_arguments_are_named(tmp_path: Path) -> None:
    path = tmp_path / "if.jsonl"
    path.write_text(json.dumps({"prompt": "x", "instruction_id_list": ["a"], "kwargs": []}) + "\n")
    with pytest.raises(CharterError, match=r"if.jsonl:1: needs 'prompt'"):
        load_instruction_prompts(path)
    prompt = InstructionPrompt("7", "…", ("keywords:existence",), ({},))
    with pytest.raises(CharterError, match="prompt 7: keywords:existence needs the argument"):
        follows(prompt, "text")


@pytest.mark.skipif(not (SHARED / "ifeval").is_dir(), reason="shared IFEval data absent")
def test_ifeval_file_loads_and_most_instructions_are_checked() -> None:
    prompts = load_instruction_prompts(SHARED / "ifeval" / "input_data.jsonl")
    assert len(prompts) == 541
    total = sum(len(p.instructions) for p in prompts)
    checked = sum(len(p.supported) for p in prompts)
    assert checked == total  # response_language (31 of 834) included
    for p in prompts:
        follows(p, "An answer.")  # every supported check runs on the real arguments
