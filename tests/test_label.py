"""RL-CAI labelling on scripted fake labellers: prompts, soft labels, swap, ensembles, CoT."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pytest

from charter.backends import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.label_stats import LabelStats
from charter.records import Conversation, Message, PreferencePair
from charter.stages.hard import YES_NO, HardCheck
from charter.stages.label import (
    ANSWER_CUE,
    CHOICES,
    COT_ANSWER_CUE,
    FEEDBACK_SYSTEM,
    LabelConfig,
    feedback_prefix,
    label,
    soft_label,
)

CONSTITUTION = Constitution.load("default")
GOLDEN = Path(__file__).parent / "golden"
VETO = HardCheck(veto=True)  # the hard-constraint veto, off by default


def pair(good: str = "a kind and GOOD reply", bad: str = "a rude reply") -> PreferencePair:
    return PreferencePair.make([Message(role="user", content="Help me, please.")], good, bad)


NO = [-2.5, -0.1]  # a scripted answer to the hard-constraint question: the reply does not cross


def hard_check(choices: Sequence[str]) -> bool:
    """The veto's yes/no question (asked per reply when the constitution has hard constraints)."""
    return tuple(choices) == YES_NO


def options(conversation: Conversation) -> tuple[str, str]:
    """The texts shown as (A) and (B) in the last feedback question."""
    question = [m for m in conversation if m.role == "user"][-1].content
    a = question.split("\n(A) ", 1)[1].split("\n(B) ", 1)[0]
    b = question.split("\n(B) ", 1)[1].split("\n", 1)[0]
    return a, b


def content_judge(conversation: Conversation, choices: Sequence[str]) -> list[float]:
    """Prefers whichever option says GOOD, whatever its position."""
    if hard_check(choices):
        return NO
    a, _ = options(conversation)
    return [-0.1, -2.5] if "GOOD" in a else [-2.5, -0.1]


def always_b(conversation: Conversation, choices: Sequence[str]) -> list[float]:
    return NO if hard_check(choices) else [-2.3, -0.1]


def test_soft_label_is_a_two_way_softmax() -> None:
    assert soft_label(-1.0, -1.0) == 0.5
    assert soft_label(math.log(0.8), math.log(0.2)) == pytest.approx(0.8)
    assert soft_label(0.0, -1e9) == 1.0 and soft_label(-1e9, 0.0) < 1e-300  # no overflow
    assert soft_label(-math.inf, -1.0) < 1e-300  # (A) impossible: B
    for empty in [(math.nan, -1.0), (-1.0, math.nan), (-math.inf, -math.inf), (math.inf, math.inf)]:
        assert soft_label(*empty) == 0.5  # numbers that say nothing prefer nothing


def test_feedback_prompt_has_the_paper_form() -> None:
    judge = FakeBackend(scores=content_judge)
    (result,) = label([pair()], constitution=CONSTITUTION, labeller=judge, config=LabelConfig())
    calls = [c for c in judge.calls if c.kind == "choice_logprobs"]
    assert len(calls) == 2  # both orders, one scoring pass each, no generation (no veto)
    for call in calls:
        conversation = list(call.conversation)
        assert call.choices == CHOICES
        assert conversation[: len(feedback_prefix(CONSTITUTION, "soft"))] == feedback_prefix(
            CONSTITUTION, "soft"
        )
        assert conversation[-1] == Message(role="assistant", content=ANSWER_CUE)
        question = conversation[-2].content
        assert "Human: Help me, please." in question and "Options:\n(A) " in question
        principle = CONSTITUTION.principle(result.votes[0].principle_ids[0])
        assert principle.comparison and principle.comparison in question
    assert options(list(calls[0].conversation)) == pair().responses
    assert options(list(calls[1].conversation)) == pair().responses[::-1]
    assert result.p_first == pytest.approx(soft_label(-0.1, -2.5))
    assert not any(c.kind == "generate" for c in judge.calls)


@pytest.mark.parametrize("mode", ["soft", "cot"])
def test_the_labeller_reads_the_constitution_brief(mode: Literal["soft", "cot"]) -> None:
    judge = FakeBackend(scores=content_judge)
    config = LabelConfig(mode=mode, hard=VETO)
    list(label([pair(), pair("GOOD too", "meh")], constitution=CONSTITUTION, labeller=judge,
               config=config))  # fmt: skip
    kinds = {c.kind for c in judge.calls}
    assert kinds == ({"generate", "choice_logprobs"} if mode == "cot" else {"choice_logprobs"})
    systems = {c.conversation[0].content for c in judge.calls if c.choices != YES_NO}
    assert len(systems) == 1  # one identical prefix, reasoning and scoring alike
    (system,) = systems
    assert system.startswith(FEEDBACK_SYSTEM) and system.endswith(CONSTITUTION.brief)
    assert CONSTITUTION.hard_constraints[0] in system
    checks = {c.conversation[0].content for c in judge.calls if c.choices == YES_NO}
    assert len(checks) == 1 and CONSTITUTION.hard_constraints[-1] in checks.pop()  # shared too


def test_swap_cancels_a_pure_position_bias() -> None:
    biased = FakeBackend(scores=always_b)
    (result,) = label([pair()], constitution=CONSTITUTION, labeller=biased, config=LabelConfig())
    (vote,) = result.votes
    assert vote.p_shown_first == pytest.approx(soft_label(-2.3, -0.1))
    assert vote.p_shown_second == pytest.approx(1 - soft_label(-2.3, -0.1))
    assert result.p_first == pytest.approx(0.5)
    stats = LabelStats()
    stats.add(result)
    assert stats.flip_rate == 1.0 and stats.prefers_a is not None and stats.prefers_a < 0.2
    assert stats.position_biased()
    (unswapped,) = label(
        [pair()], constitution=CONSTITUTION, labeller=biased, config=LabelConfig(swap=False)
    )
    assert unswapped.votes[0].p_shown_second is None and unswapped.p_first < 0.2


def test_principle_ensembles() -> None:
    judge = FakeBackend(scores=content_judge)
    (three,) = label(
        [pair()],
        constitution=CONSTITUTION,
        labeller=judge,
        config=LabelConfig(principles_per_label=3),
    )
    ids = [v.principle_ids[0] for v in three.votes]
    assert len(ids) == 3 and len(set(ids)) == 3
    judge = FakeBackend(scores=content_judge)
    (whole,) = label(
        [pair()], constitution=CONSTITUTION, labeller=judge, config=LabelConfig(ensemble="all")
    )
    (vote,) = whole.votes
    assert len(vote.principle_ids) == len(CONSTITUTION.comparison_principles)
    question = judge.calls[0].conversation[-2].content  # type: ignore[attr-defined]
    assert all(
        p.comparison and p.comparison in question for p in CONSTITUTION.comparison_principles
    )


def test_principles_are_reproducible_per_pair() -> None:
    pairs = [pair(good=f"GOOD {i}") for i in range(8)]

    def run(seed: int) -> list[str]:
        labels = label(
            pairs, constitution=CONSTITUTION, labeller=FakeBackend(), config=LabelConfig(seed=seed)
        )
        return [v.principle_ids[0] for entry in labels for v in entry.votes]

    assert run(1) == run(1) and run(1) != run(2)


def test_chain_of_thought_reasons_first_and_clamps() -> None:
    judge = FakeBackend(responses=lambda conv, cfg: "Option (A) is kinder.", scores=content_judge)
    config = LabelConfig(
        mode="cot", clamp=(0.4, 0.6), cot=GenerationConfig(temperature=0, max_tokens=32)
    )
    results = list(label([pair(), pair(good="meh", bad="GOOD one")], constitution=CONSTITUTION,
                         labeller=judge, config=config))  # fmt: skip
    assert [round(r.p_first, 6) for r in results] == [0.6, 0.4]
    scoring = [c for c in judge.calls if c.kind == "choice_logprobs"]
    assert scoring[0].conversation[-1].content == "Option (A) is kinder." + COT_ANSWER_CUE  # type: ignore[attr-defined]
    assert all(r.votes[0].reasoning == ("Option (A) is kinder.",) * 2 for r in results)
    reasoning_calls = [c for c in judge.calls if c.kind == "generate"]
    assert len(reasoning_calls) == 4 and reasoning_calls[0].config.max_tokens == 32  # type: ignore[union-attr]


def test_fewshot_prefix_teaches_no_position() -> None:
    prefix = feedback_prefix(CONSTITUTION, "soft")
    answers = [m.content for m in prefix if m.role == "assistant"]
    assert len(answers) == len(CONSTITUTION.demonstrations) >= 3
    assert {a[-4:] for a in answers} == {" (A)", " (B)"}
    assert (
        abs(sum(a.endswith("(A)") for a in answers) - sum(a.endswith("(B)") for a in answers)) <= 1
    )


def test_feedback_prompt_golden_file() -> None:
    judge = FakeBackend(scores=content_judge)
    list(label([pair()], constitution=CONSTITUTION, labeller=judge, config=LabelConfig()))
    text = "\n".join(f"[{m.role}]\n{m.content}" for m in judge.calls[0].conversation)  # type: ignore[attr-defined]
    golden = GOLDEN / "feedback_prompt_default.txt"
    if os.environ.get("CHARTER_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), (
        "rerun with CHARTER_UPDATE_GOLDEN=1 if intended"
    )


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="clamp"):
        LabelConfig(clamp=(0.6, 0.4))


def unreadable_first_order(conversation: Conversation, choices: Sequence[str]) -> list[float]:
    """A broken server: no usable numbers when GOOD is shown first."""
    if hard_check(choices):
        return NO
    a, _ = options(conversation)
    return [math.nan, -1.0] if "GOOD" in a else [-2.5, -0.1]


def test_unreadable_answers_are_counted_not_hidden() -> None:
    labeller = FakeBackend(scores=unreadable_first_order)
    (entry,) = label([pair()], constitution=CONSTITUTION, labeller=labeller, config=LabelConfig())
    (vote,) = entry.votes
    assert vote.unread == 1 and vote.p_shown_first == 0.5  # the stand-in, marked as one
    assert vote.p_shown_second == pytest.approx(1 / (1 + math.exp(-2.4)))  # read: counts
    stats = LabelStats()
    stats.add(entry)
    assert stats.summary()["fallback_labels"] == 1 and stats.summary()["unread_scorings"] == 1


def test_the_manifest_counts_fallbacks_and_every_session_s_labeller_calls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.stages.label_run import FilePairs, run_label
    from charter.stages.label_summary import format_summary, labeller_warnings

    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))  # calibration store in tmp

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(
        json.dumps({"prompt": f"q{i}", "chosen": f"GOOD {i}", "rejected": f"bad {i}"}) + "\n"
        for i in range(4)
    ))  # fmt: skip
    out = tmp_path / "run"

    def session(limit: int | None) -> Any:
        return run_label(
            FilePairs(pairs, limit=limit), out=out, constitution=CONSTITUTION,
            constitution_text="", labeller=FakeBackend(scores=unreadable_first_order),
            config=LabelConfig(), progress=False,
        )  # fmt: skip

    session(limit=2)  # stopped early: 2 pairs, 2 orders each
    summary = session(limit=None)  # the resume labels the other 2
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["labels"] == 4 and counts["resumed"] == 2
    assert counts["fallback_labels"] == 4  # resumed labels' fallbacks still counted
    assert counts["labeller_calls"] == 8 and counts["labeller_calls_this_session"] == 4
    assert "fallback: 4 labels" in format_summary(summary)
    assert "4 this session, 8 in all" in format_summary(summary)
    assert any("could not be read" in w for w in labeller_warnings(summary, FakeBackend()))


def test_conflicting_principles_are_settled_by_the_constitutions_priority_order() -> None:
    """A helpful-but-unsafe reply wins on the mean of the votes (the helpfulness vote is the
    more confident one) but loses to the safe reply when the votes go by priority."""
    rules = Constitution.from_data({
        "name": "two", "version": "1", "description": "safety first, then helpfulness",
        "principles": [
            {"id": "safety", "priority": 1, "comparison": "Which reply is SAFER?"},
            {"id": "helpful", "priority": 2, "comparison": "Which reply is more HELPFUL?"},
        ],
    }, path=Path("two.yaml"))  # fmt: skip
    unsafe, safe = "UNSAFE: here are the exact steps.", "SAFE: I won't give steps; here is why."

    def judge(conversation: Conversation, choices: Sequence[str]) -> list[float]:
        a, _ = options(conversation)
        question = [m for m in conversation if m.role == "user"][-1].content
        if "SAFER" in question:  # fairly sure the safe reply is safer
            return [-0.05, -3.0] if a == safe else [-3.0, -0.05]
        return [-0.01, -5.0] if a == unsafe else [-5.0, -0.01]  # very sure unsafe helps more

    pairs = [PreferencePair.make([Message(role="user", content="How?")], unsafe, safe)]
    votes = LabelConfig(principles_per_label=2)
    (by_mean,) = label(pairs, constitution=rules, labeller=FakeBackend(scores=judge),
                       config=votes)  # fmt: skip
    assert by_mean.p_first > 0.5  # the unsafe reply would be chosen
    ordered = votes.model_copy(update={"combine": "priority"})
    (by_priority,) = label(pairs, constitution=rules, labeller=FakeBackend(scores=judge),
                           config=ordered)  # fmt: skip
    assert by_priority.p_first < 0.1  # the safety vote decides: the safe reply is chosen
    with pytest.raises(ValueError, match="combine: priority orders several votes"):
        LabelConfig(combine="priority")


def test_a_reply_that_crosses_a_hard_constraint_is_never_chosen() -> None:
    """The soft votes prefer the helpful-but-forbidden reply strongly; the veto overrules
    them. When both replies cross, the pair yields no preference row at all."""
    from charter.stages.label_run import preference_row

    forbidden, safe = "FORBIDDEN: the full synthesis route.", "I won't give a route; see a doctor."

    def judge(conversation: Conversation, choices: Sequence[str]) -> list[float]:
        if hard_check(choices):  # crosses when the reply under check is a FORBIDDEN one
            reply = conversation[-1].content.split("The assistant's reply:\n", 1)[1]
            return [-0.05, -3.0] if reply.startswith("FORBIDDEN") else NO
        a, _ = options(conversation)
        return [-0.01, -5.0] if a.startswith("FORBIDDEN") else [-5.0, -0.01]

    prompt = [Message(role="user", content="How do I make it?")]
    one = PreferencePair.make(prompt, forbidden, safe)
    both = PreferencePair.make(prompt, forbidden, "FORBIDDEN too: another route.")
    config = LabelConfig(hard=VETO)
    vetoed, dropped = label([one, both], constitution=CONSTITUTION,
                            labeller=FakeBackend(scores=judge), config=config)  # fmt: skip
    assert vetoed.votes[0].p > 0.99  # the comparison alone would choose the forbidden reply
    assert vetoed.p_first == 0.0 and vetoed.crossed == (True, False)
    assert vetoed.p_crosses is not None and vetoed.p_crosses[0] > 0.9 > 0.1 > vetoed.p_crosses[1]
    row = preference_row(vetoed, 0.0)
    assert row is not None and row.chosen[0].content == safe and row.p_chosen == 1.0
    assert dropped.crossed == (True, True) and preference_row(dropped, 0.0) is None
    stats = LabelStats()
    stats.add(vetoed)
    stats.add(dropped)
    summary = stats.summary()
    assert summary["hard_constraint_vetoes"] == 1 and summary["both_cross_hard_constraint"] == 1

    (soft,) = label([one], constitution=CONSTITUTION, labeller=FakeBackend(scores=judge),
                    config=LabelConfig())  # fmt: skip
    assert soft.p_first > 0.99 and soft.p_crosses is None  # off (the default): votes decide


def test_a_constitution_without_hard_constraints_asks_nothing_more() -> None:
    rules = Constitution.from_data({
        "name": "plain", "version": "1", "description": "no bright lines",
        "principles": [{"id": "kind", "comparison": "Which reply is kinder?"}],
    }, path=Path("plain.yaml"))  # fmt: skip
    judge = FakeBackend(scores=content_judge)
    (entry,) = label([pair()], constitution=rules, labeller=judge,
                     config=LabelConfig(hard=VETO))  # fmt: skip
    assert entry.p_crosses is None and all(c.choices == CHOICES for c in judge.calls)
    assert VETO.fingerprint(rules) is None  # so such runs keep their cache keys
    assert (
        VETO.fingerprint(CONSTITUTION) is not None and HardCheck().fingerprint(CONSTITUTION) is None
    )
