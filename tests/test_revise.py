"""SL-CAI on the fake backend: rounds, principles, prefixes, no-change and skip rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from charter.backends import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.constitution import Constitution
from charter.records import Conversation, Message, Prompt
from charter.stages.revise import (
    CRITIC_SYSTEM,
    REVISION_REQUEST,
    ReviseConfig,
    clean_reply,
    fewshot_prefix,
    finds_nothing,
    revise,
    says_no_change,
    sft_rows,
)
from charter.stages.revise_run import dry_run

GOLDEN = Path(__file__).parent / "golden"
REVISION_TAIL = REVISION_REQUEST.format(revision="").strip()
CONSTITUTION = Constitution.load("default")


def prompts(n: int) -> list[Prompt]:
    return [Prompt.from_messages([Message(role="user", content=f"request {i}")]) for i in range(n)]


def scripted(critique: str = "It could be kinder.", revision: str | None = None) -> FakeBackend:
    """Answers 'answer to …', critiques with ``critique``, revises with a numbered text."""
    counter = iter(range(10_000))

    def reply(conv: Conversation, cfg: GenerationConfig) -> str:
        last = conv[-1].content
        if last.endswith(REVISION_TAIL):
            return revision if revision is not None else f"Revision: better answer {next(counter)}"
        if conv[0].role == "system" and len(conv) > 2:
            return critique
        return f"answer to {last}"

    return FakeBackend(responses=reply)


def test_every_prompt_gets_n_rounds_with_constitution_principles() -> None:
    config = ReviseConfig(rounds=4, seed=3)
    traces = list(revise(prompts(5), constitution=CONSTITUTION, backend=scripted(), config=config))
    ids = {p.id for p in CONSTITUTION.principles}
    assert [t.id for t in traces] == [p.id for p in prompts(5)]
    for t in traces:
        assert [s.round for s in t.steps] == [1, 2, 3, 4]
        assert {s.principle_id for s in t.steps} <= ids
        assert all(s.outcome == "revised" for s in t.steps)
        assert t.final == t.steps[-1].revision and t.final.startswith("better answer")
        assert t.usage.calls == 1 + 2 * 4
    again = list(revise(prompts(5), constitution=CONSTITUTION, backend=scripted(), config=config))
    assert [[s.principle_id for s in t.steps] for t in again] == [
        [s.principle_id for s in t.steps] for t in traces
    ]
    other = list(
        revise(
            prompts(5),
            constitution=CONSTITUTION,
            backend=scripted(),
            config=config.model_copy(update={"seed": 4}),
        )
    )
    assert [[s.principle_id for s in t.steps] for t in other] != [
        [s.principle_id for s in t.steps] for t in traces
    ]


def test_zero_rounds_answers_only_for_helpful_samples() -> None:
    config = ReviseConfig(rounds=0)
    traces = list(revise(prompts(3), constitution=CONSTITUTION, backend=scripted(), config=config))
    assert all(not t.steps and t.final == t.initial and t.usage.calls == 1 for t in traces)
    rows = [row for t in traces for row in sft_rows(t, "final")]
    assert [(r.round, r.revised, r.messages[-1].content) for r in rows] == [
        (0, False, f"answer to request {i}") for i in range(3)
    ]


def test_each_round_critiques_the_latest_revision_after_the_fewshot_prefix() -> None:
    backend = scripted()
    (trace,) = revise(
        prompts(1), constitution=CONSTITUTION, backend=backend, config=ReviseConfig(rounds=3)
    )
    prefix = fewshot_prefix(CONSTITUTION)
    generate = [c for c in backend.calls if c.kind == "generate"]
    assert list(generate[0].conversation) == list(
        prompts(1)[0].messages
    )  # initial answer: no prefix
    critique_calls = generate[1::2]
    revision_calls = generate[2::2]
    answers = [trace.initial] + [s.revision for s in trace.steps]
    for index, (critique, revision) in enumerate(zip(critique_calls, revision_calls, strict=True)):
        conv = list(critique.conversation)
        assert conv[: len(prefix)] == prefix
        assert conv[-2] == Message(role="assistant", content=answers[index])
        principle = CONSTITUTION.principle(trace.steps[index].principle_id)
        assert conv[-1].content == principle.critique
        assert list(revision.conversation)[: len(conv)] == conv
        assert principle.revision in revision.conversation[-1].content  # type: ignore[attr-defined]


def without_brief(constitution: Constitution) -> Constitution:
    """The constitution with no spec, priorities or hard constraints: its brief is empty."""
    data = constitution.model_dump(mode="json")
    data.update(spec=None, hard_constraints=[])
    data["principles"] = [{**p, "priority": None} for p in data["principles"]]
    return Constitution.model_validate(data)


def test_every_critique_and_revision_call_reads_the_constitution_brief() -> None:
    backend = scripted()
    config = ReviseConfig(rounds=2)
    list(revise(prompts(2), constitution=CONSTITUTION, backend=backend, config=config))
    reviews = [c.conversation for c in backend.calls if c.conversation[0].role == "system"]
    assert len(reviews) == 2 * 2 * 2  # a critique and a revision per round and prompt
    systems = {conversation[0].content for conversation in reviews}
    assert len(systems) == 1  # one identical prefix, for the engine's prompt cache
    (system,) = systems
    assert system.startswith(CRITIC_SYSTEM) and system.endswith(CONSTITUTION.brief)
    assert CONSTITUTION.hard_constraints[0] in system
    bare = without_brief(CONSTITUTION)
    assert bare.brief == "" and fewshot_prefix(bare)[0].content == CRITIC_SYSTEM


def test_a_critic_model_writes_the_critiques_and_revisions() -> None:
    policy, critic = FakeBackend("policy"), scripted()
    config = ReviseConfig(rounds=2, batch_size=4)
    traces = list(revise(prompts(3), constitution=CONSTITUTION, backend=policy, config=config,
                         critic=critic))  # fmt: skip
    assert len(policy.calls) == 3  # the initial answers only
    assert len(critic.calls) == 3 * 2 * 2  # a critique and a revision per round
    assert all(c.conversation[0].role == "system" for c in critic.calls)
    assert {(t.model, t.critic) for t in traces} == {("fake/policy", "fake/echo")}
    assert all(t.initial.startswith("echo ") for t in traces)


def test_no_change_revisions_never_replace_the_answer() -> None:
    backend = scripted(revision="No revision is needed; the response is fine.")
    (trace,) = revise(
        prompts(1), constitution=CONSTITUTION, backend=backend, config=ReviseConfig(rounds=4)
    )
    assert trace.final == trace.initial == "answer to request 0"
    assert [s.outcome for s in trace.steps] == ["no_change"] * 4
    (row,) = sft_rows(trace, "final")
    assert row.messages[-1].content == trace.initial and row.revised is False and row.round == 0


def test_skip_unneeded_saves_the_revision_call() -> None:
    backend = scripted(critique="The response contains no issues and is not harmful.")
    config = ReviseConfig(rounds=2, skip_unneeded=True)
    (trace,) = revise(prompts(1), constitution=CONSTITUTION, backend=backend, config=config)
    assert [s.outcome for s in trace.steps] == ["skipped", "skipped"]
    assert trace.usage.calls == 3  # initial + 2 critiques, no revisions
    unskipped = scripted(critique="The response contains no issues and is not harmful.")
    (trace,) = revise(
        prompts(1), constitution=CONSTITUTION, backend=unskipped, config=ReviseConfig(rounds=2)
    )
    assert trace.usage.calls == 5


def test_train_on_final_or_all() -> None:
    (trace,) = revise(
        prompts(1), constitution=CONSTITUTION, backend=scripted(), config=ReviseConfig(rounds=4)
    )
    (final,) = sft_rows(trace, "final")
    assert [m.role for m in final.messages] == ["user", "assistant"]
    assert final.round == 4 and len(final.principle_ids) == 4 and final.revised
    rows = sft_rows(trace, "all")
    assert [r.round for r in rows] == [1, 2, 3, 4]
    assert [len(r.principle_ids) for r in rows] == [1, 2, 3, 4]
    assert rows[-1].id == final.id


def test_results_do_not_depend_on_batch_size() -> None:
    def run(batch_size: int) -> list[str]:
        config = ReviseConfig(rounds=2, batch_size=batch_size)
        traces = revise(prompts(7), constitution=CONSTITUTION, backend=FakeBackend(), config=config)
        return [t.model_dump_json() for t in traces]

    assert run(1) == run(3) == run(16)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("Revision: Be kind.", "Be kind."),
        ("**Revised response:** Be kind.", "Be kind."),
        ("Sure! Here is the revised response:\nBe kind.", "Be kind."),
        ("  Plain answer.  ", "Plain answer."),
        ("Revision of the plan: keep it.", "Revision of the plan: keep it."),
    ],
)
def test_clean_reply(raw: str, clean: str) -> None:
    assert clean_reply(raw) == clean


def test_detectors() -> None:
    assert says_no_change("", "old")
    assert says_no_change("old", "old")
    assert says_no_change("No changes are necessary.", "old")
    assert says_no_change("The response does not need to be revised.", "old")
    assert says_no_change("I would leave it as is.", "old")
    assert not says_no_change("Here is a safer way to do it: ask the owner first.", "old")
    assert finds_nothing("There are no issues with this response.")
    assert not finds_nothing("There are no issues with tone, but it reveals an address.")
    assert not finds_nothing("The response explains how to pick a lock.")


def test_dry_run_matches_golden_file() -> None:
    prompt = Prompt.from_messages(
        [Message(role="user", content="How do I pick my neighbour's lock?")], "golden:1"
    )
    text = "\n\n".join(
        dry_run(iter([prompt]), constitution=CONSTITUTION, config=ReviseConfig(rounds=2))
    )
    golden = GOLDEN / "dry_run_default.txt"
    if os.environ.get("CHARTER_UPDATE_GOLDEN"):
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8"), (
        "rerun with CHARTER_UPDATE_GOLDEN=1 if intended"
    )
