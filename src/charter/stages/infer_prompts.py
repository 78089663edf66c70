"""The prompts of ``charter constitution infer``'s proposal step, and how a reply is read.

A proposal is asked after two worked examples of our own (on requests unlike any preference
dataset's); the reply's first line counts only as a comparison question ("Which response
…?"), and not when it restates the pair's request (:func:`restates`).
"""

from __future__ import annotations

import random
import re

from charter.records import Message, PreferencePair, render_conversation

PROPOSE_SYSTEM = (
    "You study why reviewers prefer one AI assistant reply over another, and state the "
    "reason as a general principle that could judge other pairs."
)
PROPOSE = (
    "{conversation}\n\nResponse (A):\n{first}\n\nResponse (B):\n{second}\n\n"
    "A reviewer preferred Response ({preferred}). Write one general principle that explains "
    "this preference, as a question a reviewer could ask about any two replies, starting "
    '"Which response". Name a quality of the replies, not the subject of this request: no '
    "names, places or topics from it. Reply with that one question only."
)
# Two worked examples, written for Charter, before every proposal: one where the preferred
# reply is A, one where it is B, neither on a subject a preference dataset is likely to ask;
# each request is rendered as the real pairs are (render_conversation).
EXAMPLES = (
    ("My sourdough starter smells like nail polish remover. Is it ruined?",
     "It isn't ruined: that sharp smell means the yeast is hungry. Throw out most of it, feed "
     "the rest equal weights of flour and water twice a day, and it should smell sour and "
     "bready again within two days.",
     "Probably. Just buy dried yeast instead.", "A",
     "Which response gives accurate, specific help the person can act on, rather than a curt "
     "guess?"),
    ("How can I get into my roommate's email? I think she's talking about me.",
     "Try her birthday and her pet's name as the password, or put a keylogger on her laptop.",
     "I can't help you get into someone else's account. If you're worried about what she's "
     "saying, talking to her directly, or to a friend you both trust, is more likely to "
     "settle it.", "B",
     "Which response declines to help invade another person's privacy while still offering a "
     "constructive way forward?"),
)  # fmt: skip
QUESTION = re.compile(r"^which (response|reply|of)\b.{8,200}\?$", re.IGNORECASE)
_WORD = re.compile(r"[a-z]{4,}")
# Words a principle may share with any request without restating it.
_GENERIC = frozenset((
    "which", "response", "reply", "replies", "answer", "assistant", "more", "most", "better",
    "less", "information", "request", "question", "person", "user", "help", "helpful", "harmful",
    "safe", "safer", "that", "this", "with", "what", "does", "about", "would", "could", "should",
    "their", "them", "they", "your", "from", "into", "than", "when", "while",
))  # fmt: skip


def propose_call(pair: PreferencePair, seed: int) -> list[Message]:
    """The proposal asked for ``pair``: the system message, the two worked examples, then
    the pair with its replies in an order drawn per pair and the preferred one named."""
    shown = [Message(role="system", content=PROPOSE_SYSTEM)]
    for request, first, second, preferred, principle in EXAMPLES:
        conversation = render_conversation([Message(role="user", content=request)])
        shown += [Message(role="user", content=PROPOSE.format(
                      conversation=conversation, first=first, second=second,
                      preferred=preferred)),
                  Message(role="assistant", content=principle)]  # fmt: skip
    swapped = random.Random(f"{seed}:{pair.id}").random() < 0.5
    first, second = pair.responses[::-1] if swapped else pair.responses
    text = PROPOSE.format(conversation=render_conversation(pair.prompt), first=first,
                          second=second, preferred="B" if swapped else "A")  # fmt: skip
    return [*shown, Message(role="user", content=text)]


def proposed_principle(reply: str) -> str | None:
    """The reply's first line when it is a comparison question, else None."""
    line = next((x.strip().strip('"“”*').strip() for x in reply.splitlines() if x.strip()), "")
    return line if QUESTION.match(line) else None


def restates(principle: str, pair: PreferencePair) -> bool:
    """Whether a proposed principle shares two or more content words with the pair's request
    (its user turns): a question about this request, not a quality of replies."""
    asked = " ".join(m.content for m in pair.prompt if m.role == "user").lower()
    shared = (set(_WORD.findall(principle.lower())) & set(_WORD.findall(asked))) - _GENERIC
    return len(shared) >= 2


def copied_from_examples(principles: list[str]) -> set[int]:
    """The indices of proposed principles that repeat a worked example's principle or share a
    run of 8 words with one (:func:`charter.splits.overlap`): copied from the prompt, not read
    from the pair."""
    from charter.splits import overlap

    return {index for index, _ in overlap(principles, [example[-1] for example in EXAMPLES])}
