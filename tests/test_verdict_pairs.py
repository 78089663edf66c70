"""Verdict pairs (charter.stages.verdict_pairs): the SFT model's samples are paired against each
prompt's desired behaviour — decline flagged red-team requests, answer contrast and helpful
prompts — with the guided stage's verified reply as the fallback chosen answer; a run killed
while sampling resumes without sampling again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.records import Conversation, Instruction, Message, Samples
from charter.runs import JsonlAppender
from charter.stages.guided import GuidedRow
from charter.stages.hard import HardCheck, Veto
from charter.stages.verdict_pairs import VerdictPairsConfig, chosen_prompts, pair, run_verdict_pairs

REFUSAL = "I won't help with that, but I can explain how to stay safe."


def row(kind: str, text: str, kept: str | None = "kept reply") -> GuidedRow:
    return GuidedRow(id=f"{kind}-{text}", kind=kind, source="test", answer="first answer",
                     messages=(Message(role="user", content=text),), kept=kept)  # fmt: skip


def refuses(texts: Sequence[str]) -> list[bool]:
    return ["won't" in t for t in texts]


def test_a_complying_sample_of_a_harmful_request_is_rejected_for_a_refusing_one() -> None:
    made = pair(row("redteam", "hack"), ["Step 1: scan ports.", REFUSAL], [False, True],
                VerdictPairsConfig())  # fmt: skip
    assert not isinstance(made, str)
    assert made.chosen[0].content == REFUSAL and made.rejected[0].content == "Step 1: scan ports."
    assert made.chosen_from == "sample" and made.desired == "decline" and made.p_chosen == 0.9


def test_without_a_good_sample_the_guided_reply_is_chosen() -> None:
    made = pair(row("contrast", "kill a process", kept="Use kill -9."), [REFUSAL, REFUSAL],
                [True, True], VerdictPairsConfig())  # fmt: skip
    assert not isinstance(made, str)
    assert made.chosen[0].content == "Use kill -9." and made.chosen_from == "guided"
    assert made.rejected[0].content == REFUSAL and made.desired == "answer"


def test_an_answer_that_ignores_its_instructions_is_rejected_for_one_that_follows_them() -> None:
    lowercase = row("helpful", "say hi in lowercase").model_copy(
        update={"instructions": (Instruction(id="change_case:english_lowercase"),)}
    )
    made = pair(lowercase, ["Hi There", "hi there"], [False, False], VerdictPairsConfig())
    assert not isinstance(made, str)
    assert made.chosen[0].content == "hi there" and made.rejected[0].content == "Hi There"
    assert pair(lowercase, ["hi", "hey"], [False, False], VerdictPairsConfig()) == (
        "already answers"
    )


@pytest.mark.parametrize(
    ("kind", "answers", "why"),
    [("redteam", [REFUSAL, REFUSAL], "already declines"),
     ("helpful", ["A haiku.", "Another haiku."], "already answers")],
)  # fmt: skip
def test_a_prompt_whose_samples_all_behave_gives_no_pair(
    kind: str, answers: list[str], why: str
) -> None:
    assert pair(row(kind, "x"), answers, refuses(answers), VerdictPairsConfig()) == why


def test_prompts_are_the_kept_rows_with_kinds_taken_in_turn() -> None:
    rows = [row("redteam", "a"), row("redteam", "b"), row("redteam", "c", kept=None),
            row("contrast", "d"), row("helpful", "e")]  # fmt: skip
    assert [r.id for r in chosen_prompts(rows, 4)] == [
        "redteam-a",
        "contrast-d",
        "helpful-e",
        "redteam-b",
    ]


def test_run_pairs_resumes_and_writes_prefs_dpo_can_read(tmp_path: Path) -> None:
    guided, out = tmp_path / "guided", tmp_path / "pairs"
    guided.mkdir()
    rows = [row("redteam", "hack"), row("contrast", "kill"), row("helpful", "haiku")]
    (guided / "guided.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    policy = FakeBackend("sft", responses=lambda c, g: (
        "Sure, step one." if "hack" in c[-1].content else REFUSAL))  # fmt: skip
    config = VerdictPairsConfig(samples=2)
    # a killed session sampled the first prompt already
    out.mkdir()
    with JsonlAppender(out / "samples.jsonl") as sink:
        sink.write(Samples(id=rows[0].id, messages=rows[0].messages, answers=("Sure.", REFUSAL),
                           model="sft", seed=0, usage={"calls": 2}))  # fmt: skip
    counts = run_verdict_pairs(guided, out=out, policy=policy, refuses=refuses, config=config,
                               fingerprint={"sft": "sft-1"})  # fmt: skip
    asked = [c.conversation[-1].content for c in policy.calls if c.kind == "generate"]  # type: ignore[attr-defined]
    assert "hack" not in asked and len(asked) == 4  # two prompts, two samples each
    assert counts["pairs"] == 3 and counts["chosen from guided"] == 2
    prefs = [json.loads(line) for line in (out / "prefs.jsonl").read_text().splitlines()]
    assert [p["kind"] for p in prefs] == ["redteam", "contrast", "helpful"]
    assert prefs[0]["chosen"][0]["content"] == REFUSAL
    assert prefs[1]["rejected"][0]["content"] == REFUSAL
    from charter.stages.train.config import TrainConfig
    from charter.stages.train.run import preference_dataset

    dataset = preference_dataset(TrainConfig(kind="dpo", model="x", data=(str(out),)))
    assert len(dataset) == 3 and dataset[0]["p_chosen"] == 0.9
    weighted = TrainConfig(kind="dpo", model="x", data=(str(out),), repeat={"redteam": 3})
    chosen = [row["chosen"][0]["content"] for row in preference_dataset(weighted)]
    assert len(chosen) == 5 and chosen.count(REFUSAL) == 3  # the decline pair, three times
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["pairs"] == 3


def test_a_chosen_sample_that_crosses_a_hard_constraint_gives_way_to_the_guided_reply(
    tmp_path: Path,
) -> None:
    """The contrast sample that answers crosses a hard constraint (the teacher's check says
    so), so the guided stage's checked reply is chosen instead."""
    guided, out = tmp_path / "guided", tmp_path / "pairs"
    guided.mkdir()
    rows = [row("contrast", "grid")]
    (guided / "guided.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    replies = iter(["ATTACK PLAN for the grid: first ...", "I won't, sorry."])
    policy = FakeBackend("sft", responses=lambda c, g: next(replies))

    def teacher_says(conversation: Conversation, choices: Sequence[str]) -> list[float]:
        reply = conversation[-1].content.split("The assistant's reply:", 1)[1]
        return [-0.05, -3.0] if "ATTACK PLAN" in reply else [-3.0, -0.05]  # Yes, No

    teacher = FakeBackend("teacher", scores=teacher_says)
    veto = Veto(HardCheck(), teacher, Constitution.load("default"))
    counts = run_verdict_pairs(guided, out=out, policy=policy, refuses=refuses,
                               config=VerdictPairsConfig(samples=2),
                               fingerprint={"sft": "sft-1"}, veto=veto)  # fmt: skip
    asked = [c.conversation[-1].content for c in teacher.calls]  # type: ignore[attr-defined]
    prefs = [json.loads(line) for line in (out / "prefs.jsonl").read_text().splitlines()]
    assert len(asked) == 1 and "ATTACK PLAN" in asked[0]  # only chosen samples are checked
    (made,) = prefs
    assert made["rejected"][0]["content"] == "I won't, sorry."
    assert made["chosen"][0]["content"] == "kept reply" and made["chosen_from"] == "guided"
    assert counts["chosen crossed a hard constraint"] == 1
