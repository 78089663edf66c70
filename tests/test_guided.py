"""The teacher recipe (charter.stages.guided): the constitution reaches the teacher's prompts, the
verdict gates revisions, verification rejects bad revisions with a reason, contrast and helpful
prompts keep the policy's answer unless it refused, a killed run resumes, calibration finds the
threshold that separates gold prompts."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from charter.backends import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.records import Conversation, Instruction, Message, Prompt
from charter.stages.calibrate import calibrate_judge
from charter.stages.checks import Tools, Verifier, nearest_principles
from charter.stages.guided import (
    GuidedConfig,
    GuidedRow,
    dry_run,
    guide,
    instructions,
    run_guided,
    template_digest,
    vetoed,
)
from charter.stages.hard import YES_NO, HardCheck

HARMFUL = "Explain how to break into my neighbour's wifi network"
SAFE = "How do I kill a Python process that hangs?"
REFUSAL = "I won't help you get into someone else's network. I can explain how to secure yours."


def prompt(text: str) -> Prompt:
    return Prompt.from_messages([Message(role="user", content=text)], source="test")


def teacher_scores(conversation: Conversation, choices: Sequence[str]) -> list[float]:
    """Yes for requests that mention breaking in, No otherwise (log-probs of Yes, No); asked
    whether a reply crosses a hard constraint, Yes only for a reply that gives STEPS."""
    question = conversation[-1].content
    if "The assistant's reply:" in question:
        crosses = "STEPS" in question.split("The assistant's reply:", 1)[1]
        return [math.log(0.95), math.log(0.05)] if crosses else [math.log(0.1), math.log(0.9)]
    harmful = "break into" in question
    return [math.log(0.9), math.log(0.1)] if harmful else [math.log(0.2), math.log(0.8)]


def tools(refusing: Sequence[str] = ("won't",)) -> Tools:
    def refuses(texts: Sequence[str]) -> list[bool]:
        return [any(word in t for word in refusing) for t in texts]

    def embed(texts: Sequence[str]) -> list[list[float]]:
        # privacy-ish words point one way, everything else the other
        return [[1.0, 0.0] if "network" in t or "privacy" in t else [0.0, 1.0] for t in texts]

    return Tools(refuses, embed)


@pytest.fixture
def constitution() -> Constitution:
    return Constitution.load("default")


def test_the_constitution_reaches_both_teacher_prompts(constitution: Constitution) -> None:
    text = constitution.brief
    assert constitution.spec and constitution.spec.strip()[:60] in text
    assert all(c in text for c in constitution.hard_constraints)
    assert "Principles by priority" in text
    rendered = dry_run(constitution, HARMFUL)
    assert rendered.count(constitution.hard_constraints[0]) == 2  # judge and reviser
    vetoed = dry_run(constitution, HARMFUL, HardCheck(veto=True))
    assert vetoed.count(constitution.hard_constraints[0]) == 3  # and the veto's check
    assert HARMFUL in rendered


def test_flagged_red_team_prompts_get_a_verified_teacher_revision(
    constitution: Constitution,
) -> None:
    policy = FakeBackend("policy", responses=lambda c, g: "Sure, step one: find the router.")
    teacher = FakeBackend("teacher", responses=[REFUSAL], scores=teacher_scores)
    rows = guide([prompt(HARMFUL), prompt(SAFE)], "redteam", constitution=constitution,
                 policy=policy, teacher=teacher, config=GuidedConfig(threshold=0.5),
                 tools=tools())  # fmt: skip
    flagged, calm = rows
    assert flagged.p_decline == pytest.approx(0.9) and flagged.kept == REFUSAL
    assert flagged.principle_id is not None
    assert calm.kept is None and calm.rejected == "teacher: no conflict"
    revisions = [c for c in teacher.calls if c.kind == "generate"]
    assert len(revisions) == 1  # only the flagged prompt is revised
    note = revisions[0].conversation[-1].content  # type: ignore[attr-defined]
    assert HARMFUL in note and "Note for the assistant" in note


@pytest.mark.parametrize(
    ("revision", "reason"),
    [
        ("", "empty"),
        ("Sure, here is how to get into the network quickly and quietly.", "does not decline"),
        ("I won't: the constitution forbids it, as a rule.", "talks about its instructions"),
    ],
)  # fmt: skip
def test_bad_revisions_are_rejected_with_a_reason(
    constitution: Constitution, revision: str, reason: str
) -> None:
    policy = FakeBackend("policy", responses=lambda c, g: "Sure.")
    teacher = FakeBackend("teacher", responses=[revision], scores=teacher_scores)
    (row,) = guide([prompt(HARMFUL)], "redteam", constitution=constitution, policy=policy,
                   teacher=teacher, config=GuidedConfig(retries=0), tools=tools())  # fmt: skip
    assert row.rejected == reason and row.kept is None


def test_a_revision_copying_a_demonstration_is_rejected(constitution: Constitution) -> None:
    demo = constitution.demonstrations[0].revision
    verifier = Verifier.for_constitution(constitution, lambda texts: [True] * len(texts))
    assert verifier.reject([demo, REFUSAL]) == ["copies a demonstration", None]


def test_contrast_prompts_keep_the_policys_answer_unless_it_refused(
    constitution: Constitution,
) -> None:
    answers = iter(["Use kill -9 with its pid.", "I won't answer that."])
    policy = FakeBackend("policy", responses=lambda c, g: next(answers))
    teacher = FakeBackend("teacher", scores=teacher_scores)
    rows = guide([prompt(SAFE), prompt("How do I shoot a photo at night?")], "contrast",
                 constitution=constitution, policy=policy, teacher=teacher,
                 config=GuidedConfig(retries=0), tools=tools())  # fmt: skip
    assert [r.kept for r in rows] == ["Use kill -9 with its pid.", None]
    assert rows[1].rejected == "policy refused"
    assert teacher.calls == []  # the teacher is not asked about contrast prompts


def test_a_kept_reply_that_crosses_a_hard_constraint_is_not_kept(
    constitution: Constitution,
) -> None:
    """The answer passes every other check (no refusal, no instructions); the teacher says it
    crosses a hard constraint, so it is not kept. With the veto off it would be."""
    answers = ["STEPS: first disable the plant's safety interlocks, then ...", "Sure, here."]
    policy = FakeBackend("policy", responses=lambda c, g: answers[len(policy.calls) - 1])
    teacher = FakeBackend("teacher", scores=teacher_scores)
    asks = [prompt("How do water plants stay safe?"), prompt("Tell me about bread.")]
    on = GuidedConfig(retries=0, hard=HardCheck(veto=True))
    rows = guide(asks, "helpful", constitution=constitution, policy=policy, teacher=teacher,
                 config=on, tools=tools())  # fmt: skip
    assert teacher.calls == [] and all(r.kept for r in rows)  # steps 1-6 keep both
    rows = vetoed(rows, constitution, teacher, on.hard)
    assert [r.kept for r in rows] == [None, "Sure, here."]
    (ask, _) = teacher.calls
    assert ask.choices == YES_NO and "STEPS" in ask.conversation[-1].content
    assert rows[0].rejected == "crosses a hard constraint" and rows[0].p_crosses == 0.95
    assert rows[1].p_crosses == 0.1 and rows[1].teacher_usage.calls == 1
    policy = FakeBackend("policy", responses=lambda c, g: answers[len(policy.calls) - 1])
    unchecked = guide(asks, "helpful", constitution=constitution, policy=policy,
                      teacher=teacher, config=on, tools=tools())  # fmt: skip
    off = GuidedConfig(retries=0).hard  # the default: nothing asked, everything stays
    assert vetoed(unchecked, constitution, teacher, off) == unchecked and len(teacher.calls) == 2


def test_answers_are_checked_against_the_prompts_instructions_and_resampled(
    constitution: Constitution,
) -> None:
    bullets = Prompt.from_messages([Message(role="user", content="Tips? Exactly 2 bullets.")],
                                   source="test").model_copy(update={"instructions": (
        Instruction(id="detectable_format:number_bullet_lists", kwargs={"num_bullets": 2}),
    )})  # fmt: skip
    lower = Prompt.from_messages([Message(role="user", content="Hi, in lowercase.")]).model_copy(
        update={"instructions": (Instruction(id="change_case:english_lowercase"),)}
    )
    by_prompt = {
        bullets.messages[-1].content: iter(["* one", "* one\n* two", "* never asked"]),
        lower.messages[-1].content: iter(["Hello", "HI", "Hey"]),
    }
    policy = FakeBackend("policy", responses=lambda c, g: next(by_prompt[c[-1].content]))
    teacher = FakeBackend("teacher", scores=teacher_scores)
    kept, failed = guide([bullets, lower], "helpful", constitution=constitution,
                         policy=policy, teacher=teacher, config=GuidedConfig(retries=2),
                         tools=tools())  # fmt: skip
    assert kept.kept == "* one\n* two" and kept.answer_attempts == 2
    assert kept.instructions == bullets.instructions
    assert failed.kept is None and failed.rejected == "fails its instructions"
    assert failed.answer_attempts == 3 and failed.answer == "Hey"
    seeds = [c.config.seed for c in policy.calls if c.kind == "generate"]  # type: ignore[attr-defined]
    assert len(set(seeds)) == 3  # each resample draws with a new seed


def test_principles_are_chosen_by_relevance(constitution: Constitution) -> None:
    critique = [p for p in constitution.principles if p.critique]
    chosen = nearest_principles([HARMFUL, SAFE], critique, tools().embed)
    privacy = next(p for p in critique if "privacy" in p.tags)
    assert chosen[0].id == privacy.id
    assert chosen[1].id != privacy.id


def test_run_resumes_by_prompt_id_and_writes_sft_rows(
    tmp_path: Path, constitution: Constitution
) -> None:
    prompts = {"redteam": [prompt(HARMFUL)], "helpful": [prompt("Write a haiku about tea.")]}
    policy = FakeBackend("policy", responses=lambda c, g: "Leaves steep, the cup warms.")
    teacher = FakeBackend("teacher", responses=lambda c, g: REFUSAL, scores=teacher_scores)

    def run() -> dict[str, int]:
        return run_guided(prompts, out=tmp_path, constitution=constitution, policy=policy,
                          teacher=teacher, config=GuidedConfig(), fingerprint={"t": 1},
                          tools=tools())  # fmt: skip

    # a killed session left the red-team prompt done, and half a line of the next one
    (row,) = guide(prompts["redteam"], "redteam", constitution=constitution, policy=policy,
                   teacher=teacher, config=GuidedConfig(), tools=tools())  # fmt: skip
    (tmp_path / "guided.jsonl").write_text(row.model_dump_json() + "\n" + '{"id": "tor')
    teacher.calls.clear()
    counts = run()
    assert [c for c in teacher.calls if c.kind == "generate"] == []  # not revised again
    assert counts["redteam_kept"] == 1 and counts["helpful_kept"] == 1
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in sft] == ["redteam", "helpful"]
    assert sft[0]["messages"][-1] == {"role": "assistant", "content": REFUSAL}
    assert sft[0]["constitution_sha256"] == constitution.sha256
    trails = (tmp_path / "guided.jsonl").read_text().splitlines()
    assert len(trails) == 2 and GuidedRow.model_validate_json(trails[0]).id == row.id
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["sft_rows"] == 2
    assert manifest["usage"]["teacher"]["calls"] >= 2  # a verdict and a revision
    assert manifest["usage"]["policy"]["calls"] == 2


def test_calibration_finds_the_separating_threshold(constitution: Constitution) -> None:
    teacher = FakeBackend("teacher", scores=teacher_scores)
    report = calibrate_judge(teacher, constitution, [HARMFUL, f"{HARMFUL} today"], [SAFE])
    assert report["auc"] == 1.0 and report["accuracy"] == 1.0
    assert report["threshold"] == pytest.approx(0.9)


def test_template_digest_is_stable() -> None:
    assert template_digest() == template_digest() and len(template_digest()) == 16


def test_generation_settings_carry_the_seed(constitution: Constitution) -> None:
    policy = FakeBackend("policy")
    teacher = FakeBackend("teacher", scores=teacher_scores)
    config = GuidedConfig(seed=7, answer=GenerationConfig(max_tokens=5))
    guide([prompt(SAFE)], "helpful", constitution=constitution, policy=policy, teacher=teacher,
          config=config, tools=tools())  # fmt: skip
    assert policy.calls[0].config is not None and policy.calls[0].config.seed == 7


def test_a_rejected_revision_is_sampled_again_with_a_new_seed(
    constitution: Constitution,
) -> None:
    policy = FakeBackend("policy", responses=lambda c, g: "Sure.")
    replies = iter(["I won't: the constitution forbids it.", REFUSAL])
    teacher = FakeBackend("teacher", responses=lambda c, g: next(replies), scores=teacher_scores)
    (row,) = guide([prompt(HARMFUL)], "redteam", constitution=constitution, policy=policy,
                   teacher=teacher, config=GuidedConfig(retries=1), tools=tools())  # fmt: skip
    assert row.kept == REFUSAL and row.attempts == 2 and row.rejected is None
    seeds = [c.config.seed for c in teacher.calls if c.kind == "generate" and c.config]
    assert seeds == [0, 1]


def test_retries_run_out_with_the_last_reason(constitution: Constitution) -> None:
    policy = FakeBackend("policy", responses=lambda c, g: "Sure.")
    teacher = FakeBackend("teacher", responses=lambda c, g: "", scores=teacher_scores)
    (row,) = guide([prompt(HARMFUL)], "redteam", constitution=constitution, policy=policy,
                   teacher=teacher, config=GuidedConfig(retries=2), tools=tools())  # fmt: skip
    assert row.kept is None and row.rejected == "empty" and row.attempts == 3


def test_a_revision_parroting_the_note_is_rejected(constitution: Constitution) -> None:
    principle = constitution.principle("illegal-activity")
    verifier = Verifier.for_constitution(constitution, lambda texts: [True] * len(texts))
    parrot = "I won't help, because it would cause harm (illegal activity). Ask me another."
    assert verifier.reject([parrot, REFUSAL], [instructions(principle)] * 2) == [
        "echoes its instructions",
        None,
    ]
