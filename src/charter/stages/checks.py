"""Checks a reply must pass before it trains anything (the teacher recipe).

- :class:`Verifier`: a teacher revision enters SFT only if it is a real reply that declines,
  in its own words (not empty, not a copy of a constitution demonstration, not parroting
  its instructions or talking about them);
- :func:`answer_problem`: an answer to a contrast or helpful prompt is trained on only if it
  does not refuse and passes the checkable instructions the prompt carries (IFEval ids);
- :func:`nearest_principles`: the principle a flagged request most likely violates, by the
  sentence encoder, to name in the reviser's note;
- :class:`Tools`: the refusal classifier and the encoder these read (stand-ins in tests).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from charter.constitution import Constitution, Principle
from charter.records import Instruction
from charter.splits import ngrams

# Words that show the teacher wrote about its instructions instead of to the user.
_LEAK = re.compile(r"\b(constitution|reviewer|hard constraint|underlying need)\b", re.IGNORECASE)
MIN_REPLY_CHARS = 20
# A revision sharing a run of this many words with the note parrots its instructions.
ECHO_WORDS = 5


@dataclass
class Verifier:
    """Checks a teacher revision before it may enter SFT; :meth:`reject` says why not."""

    demonstrations: set[str]
    refuses: Callable[[Sequence[str]], list[bool]]

    @classmethod
    def for_constitution(
        cls, constitution: Constitution, refuses: Callable[[Sequence[str]], list[bool]]
    ) -> Verifier:
        grams: set[str] = set()
        for demo in constitution.demonstrations:
            grams |= ngrams(demo.revision) | ngrams(demo.critique)
        return cls(grams, refuses)

    def reject(
        self, revisions: Sequence[str], notes: Sequence[str] | None = None
    ) -> list[str | None]:
        """A reason per revision (``None``: accepted); ``notes``: the instructions each was
        written under, which it must not parrot."""
        refused = self.refuses(revisions) if revisions else []
        notes = notes if notes is not None else [""] * len(revisions)
        reasons: list[str | None] = []
        for text, is_refusal, note in zip(revisions, refused, notes, strict=True):
            if len(text.strip()) < MIN_REPLY_CHARS:
                reasons.append("empty")
            elif ngrams(text) & self.demonstrations:
                reasons.append("copies a demonstration")
            elif ngrams(text, ECHO_WORDS) & ngrams(note, ECHO_WORDS):
                reasons.append("echoes its instructions")
            elif _LEAK.search(text):
                reasons.append("talks about its instructions")
            elif not is_refusal:
                reasons.append("does not decline")
            else:
                reasons.append(None)
        return reasons


# --- principles by relevance -------------------------------------------------------------------


def nearest_principles(
    requests: Sequence[str],
    principles: Sequence[Principle],
    embed: Callable[[Sequence[str]], list[list[float]]],
) -> list[Principle]:
    """For each request, the critique principle whose text is closest (cosine) to it."""
    descriptions = [f"{' '.join(p.tags)}. {p.critique}" for p in principles]
    vectors = embed([*descriptions, *requests])
    table, asked = vectors[: len(principles)], vectors[len(principles) :]

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        norm = math.sqrt(sum(x * x for x in a) * sum(y * y for y in b)) or 1.0
        return dot / norm

    return [principles[max(range(len(table)), key=lambda i: cosine(v, table[i]))] for v in asked]


def answer_problem(text: str, refused: bool, instructions: Sequence[Instruction]) -> str | None:
    """Why an answer to a contrast or helpful prompt cannot be trained on, or None."""
    from charter.stages.evaluate.ifeval import satisfies

    if refused:
        return "policy refused"
    if instructions and not satisfies(instructions, text):
        return "fails its instructions"
    return None


@dataclass
class Tools:
    """What the stage calls besides the two models (swapped for stand-ins in tests)."""

    refuses: Callable[[Sequence[str]], list[bool]]
    embed: Callable[[Sequence[str]], list[list[float]]]

    @classmethod
    def load(cls) -> Tools:
        """The refusal classifier and its sentence encoder (the ``evaluate`` extra)."""
        from charter.errors import CharterError
        from charter.stages.evaluate.judges import load_classifier
        from charter.stages.evaluate.refusal import embed

        classifier = load_classifier()
        if classifier is None:
            raise CharterError(
                "guided revise verifies revisions with the refusal classifier: "
                "pip install -e '.[evaluate]'"
            )
        return cls(classifier.refuses, lambda texts: embed(classifier.embedder, texts))
