"""Inverse CAI (charter.stages.infer, `charter constitution infer`): principles proposed from
pairs, clustered, scored as labellers on a split of their own, tested on another."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from charter.backends.base import GenerationConfig
from charter.backends.fake import FakeBackend
from charter.cli import cli
from charter.constitution import Constitution
from charter.records import Message, PreferencePair, Usage
from charter.stages.infer import InferConfig, cluster, run_infer, split
from charter.stages.infer_figures import Candidate, keep
from charter.stages.infer_replies import Cached, Replies, split_cost

pytest.importorskip("sklearn")


def pairs(n: int = 40) -> list[PreferencePair]:
    """The preferred reply says please; the other is curt, shorter or longer by turns, so
    length explains nothing."""
    out = []
    for i in range(n):
        ask = [Message(role="user", content=f"Can you pass item {i}?")]
        polite = f"Yes, please take item {i}."
        curt = "No." if i % 2 else f"Take item {i} yourself, it is right there and I am busy."
        out.append(PreferencePair.make(ask, polite, curt))
    return out


def propose_reply(conversation: Sequence[Message], config: GenerationConfig) -> str:
    number = int(re.search(r"item (\d+)", conversation[-1].content).group(1))  # type: ignore[union-attr]
    if number % 5 == 0:
        return "I think the first one is nicer."  # not a question: dropped
    if number % 5 == 1:
        return "Which response is shorter?"
    return "Which response is more polite?" if number % 2 else "Which reply is more courteous?"


def scores(conversation: Sequence[Message], choices: Sequence[str]) -> list[float]:
    """A labeller that follows the principle it is shown: politeness, or length."""
    text = next(m.content for m in reversed(conversation) if m.role == "user")
    first = text.split("(A) ", 1)[1].split("\n(B) ")[0]
    second = text.split("\n(B) ", 1)[1]
    a_better = len(first) < len(second) if "shorter" in text else "please" in first
    return [-0.1, -2.5] if a_better else [-2.5, -0.1]


def embed(texts: Sequence[str]) -> list[list[float]]:
    """Politeness questions near each other, length questions apart."""
    return [[1.0, 0.1] if ("polite" in t or "courteous" in t) else [0.1, 1.0] for t in texts]


def infer(model: FakeBackend, *, cached: dict[str, Cached] | None = None,
          store: Callable[[Cached], None] = lambda row: None, name: str = "r",
          embedder: Callable[[Sequence[str]], list[list[float]]] = embed,
          ) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """run_infer on :func:`pairs` with two candidates and the default reference."""
    return run_infer(pairs(), name=name, source="prefs.jsonl", model=model, identity="fake",
                     embed=embedder, reference=Constitution.load("default"),
                     config=InferConfig(candidates=2), store=store,
                     cached={} if cached is None else cached)  # fmt: skip


def test_the_splits_are_disjoint_seeded_and_cover_every_pair() -> None:
    data = pairs(40)
    a, b, c = split(data, InferConfig())
    assert (len(a), len(b), len(c)) == (16, 12, 12)
    assert len({p.id for p in a + b + c}) == 40 and split(data, InferConfig()) == (a, b, c)


def test_clustering_merges_paraphrases_and_counts_support() -> None:
    texts = ["Which response is more polite?"] * 3 + ["Which reply is more courteous?",
                                                      "Which response is shorter?"]  # fmt: skip
    found = cluster(texts, embed, k=2)
    assert [c.support for c in found] == [4, 1] and "shorter" in found[1].text


def test_keep_takes_only_principles_better_than_chance() -> None:
    good = Candidate("a", 1, {"accuracy": {"value": 0.9, "low": 0.7, "high": 0.97}})
    chance = Candidate("b", 9, {"accuracy": {"value": 0.55, "low": 0.35, "high": 0.7}})
    assert keep([chance, good], budget=5) == [good]


def test_infer_recovers_the_principle_behind_the_preferences() -> None:
    model = FakeBackend(responses=propose_reply, scores=scores)
    cached: dict[str, Cached] = {}
    data, report = infer(model, cached=cached, name="recovered")
    kept = [p["comparison"] for p in data["principles"]]
    assert len(kept) == 1 and ("polite" in kept[0] or "courteous" in kept[0])  # length: chance
    proposing = split(pairs(), InferConfig())[0]
    numbers = [int(re.findall(r"\d+", p.prompt[-1].content)[0]) for p in proposing]
    assert report["not_a_question"] == sum(1 for n in numbers if n % 5 == 0) > 0
    assert report["restates_request"] == 0 and report["recovery"]["of"] > 0
    assert report["test"]["inferred"]["value"] == 1.0
    assert report["test"]["length"]["value"] == pytest.approx(0.5, abs=0.25)
    testing = report["pairs"]["test"]
    gain = report["differences"]["inferred − reference (default)"]
    assert gain["n"] == testing and gain["p_value"] is not None
    ours, others = (
        ("inferred", "inferred, one principle per pair"),
        ("length", "reference (default)"),
    )
    assert set(report["differences"]) == {f"{a} − {b}" for a in ours for b in others}
    Constitution.from_data(data, path=Path("recovered.yaml"))  # a normal constitution
    calls = len(model.calls)
    infer(model, cached=cached, name="recovered")
    assert len(model.calls) == calls  # everything came from the cache


class CountingBackend(FakeBackend):
    """A fake that counts its tokens as the OpenAI-compatible backends do (``totals``)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.totals = Usage()

    def choice_logprobs(
        self, conversation: Sequence[Message], choices: Sequence[str]
    ) -> list[float]:
        self.totals += Usage(calls=1, prompt_tokens=10)
        return super().choice_logprobs(conversation, choices)


def test_the_report_bills_every_row_it_read_across_sessions(tmp_path: Path) -> None:
    """The cost of a result is the rows it read, made in this session or an earlier one: a
    rerun from the cache bills the same, and asks nothing."""
    model = CountingBackend(responses=propose_reply, scores=scores)
    cached: dict[str, Cached] = {}
    stored: list[Cached] = []

    first = infer(model, cached=cached, store=stored.append)[1]["cost"]
    scorings = sum(call.kind == "choice_logprobs" for call in model.calls)
    generations = sum(call.kind == "generate" for call in model.calls)
    assert first["calls"] == scorings + generations and first["uncounted"] == 0
    assert first["prompt_tokens"] >= 10 * scorings and first["rows"] == len(stored)
    calls = len(model.calls)
    assert infer(model, cached=cached, store=stored.append)[1]["cost"] == first
    assert len(model.calls) == calls


def test_the_report_of_a_real_run_renders_as_a_page(tmp_path: Path) -> None:
    """What run_infer writes is what `charter report NAME.infer.json` reads."""
    pytest.importorskip("jinja2")
    from charter.report.infer import infer_report_for

    model = FakeBackend(responses=propose_reply, scores=scores)
    _, report = infer(model)
    path = tmp_path / "r.infer.json"
    path.write_text(json.dumps(report), "utf-8")
    html = infer_report_for(path).read_text("utf-8")
    assert report["kept"] and all(text.replace("?", "") in html for text in report["kept"])
    assert 'id="plot-accuracies"' in html and "model calls" in html
    assert 'id="differences"' in html and "inferred − reference (default)" in html
    assert "the shorter reply" in html or "the longer reply" in html  # the length rule's


def test_a_batch_cost_is_split_over_its_rows_and_adds_up() -> None:
    shares = split_cost(Usage(calls=6, prompt_tokens=1001, completion_tokens=2), 3.0, 4)
    assert [s.prompt_tokens for s, _ in shares] == [251, 250, 250, 250]
    assert sum((s for s, _ in shares), Usage()) == Usage(calls=6, prompt_tokens=1001,
                                                         completion_tokens=2)  # fmt: skip
    assert [t for _, t in shares] == [0.75] * 4 and split_cost(Usage(), 1.0, 0) == []


def test_candidates_are_scored_pair_by_pair() -> None:
    """Each select pair is labelled under every candidate before the next pair, so an engine
    that keeps its last prompt reuses the pair's conversation across candidates."""
    model = FakeBackend(responses=propose_reply, scores=scores)
    infer(model)
    from itertools import groupby

    def item(text: str) -> str:
        return re.findall(r"item (\d+)", text)[0]

    asked = [item(call.conversation[-2].content) for call in model.calls
             if call.kind == "choice_logprobs"]  # fmt: skip
    selecting = [item(p.prompt[-1].content) for p in split(pairs(), InferConfig())[1]]
    runs = [key for key, _ in groupby(asked)]
    # one run of calls per select pair (2 candidates × 2 orders in a row), not one per candidate
    assert [r for r in runs if r in selecting] == selecting


def test_too_few_pairs_is_one_clear_error(tmp_path: Path) -> None:
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b"}) + "\n"
                             for _ in range(3)), "utf-8")  # fmt: skip
    result = CliRunner().invoke(cli, ["constitution", "infer", str(prefs), "-o",
                                      str(tmp_path / "x.yaml"), "--model", "fake/echo",
                                      "--cache", str(tmp_path / "cache")])  # fmt: skip
    assert result.exit_code == 2 and "too few to split three ways" in result.output
    assert not (tmp_path / "x.yaml").exists()


def test_dry_run_shows_both_calls_and_counts_them_without_a_model(tmp_path: Path) -> None:
    """--dry-run: the proposal asked for the first propose pair (after the worked examples),
    one scoring call, and the calls counted; no model loaded, nothing written; too few pairs
    is the same clear error as a real run."""
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p.prompt[0].content, "chosen": p.responses[0],
                                         "rejected": p.responses[1]}) + "\n"
                             for p in pairs(40)), "utf-8")  # fmt: skip
    args = [
        "constitution",
        "infer",
        str(prefs),
        "-o",
        str(tmp_path / "out" / "x.yaml"),
        "--model",
        "local/not-installed",
        "--candidates",
        "5",
        "--budget",
        "2",
        "--dry-run",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "sourdough" in result.output  # the worked examples come first
    assert "A reviewer preferred Response" in result.output
    assert "<a candidate principle: Which response …?>" in result.output
    assert result.output.rstrip().endswith("Cached: a rerun asks only what is missing.")
    # 40 pairs: 16 propose, 12 select, 12 test
    assert "16 proposals" in result.output and "120 select scorings" in result.output
    assert "96 test scorings" in result.output and "232 in all" in result.output
    assert list(tmp_path.iterdir()) == [prefs]
    few = CliRunner().invoke(cli, [*args[:3], "--limit", "10", *args[3:]])
    assert few.exit_code == 0  # 10 pairs split 4 / 3 / 3
    (tmp_path / "three.jsonl").write_text(prefs.read_text("utf-8").splitlines(True)[0] * 3)
    three = CliRunner().invoke(cli, ["constitution", "infer", str(tmp_path / "three.jsonl"),
                                     *args[3:]])  # fmt: skip
    assert three.exit_code == 2 and "too few to split three ways" in three.output


def test_a_round_trip_labelled_otherwise_than_infer_labels_is_named(tmp_path: Path) -> None:
    """A charter label file labelled by another model, seed or constitution than infer's
    reference is labelled with: each difference is one warning line, even in a dry run."""
    from charter.pairs import labelled_by
    from charter.stages.infer import label_mismatches

    default = Constitution.load("default")
    row = {"id": "x", "prompt": [{"role": "user", "content": "Can you pass item 1?"}],
           "chosen": [{"role": "assistant", "content": "Yes, please take item 1."}],
           "rejected": [{"role": "assistant", "content": "No."}], "p_chosen": 0.8,
           "p_chosen_first": 0.8, "p_chosen_second": 0.8, "principle_ids": ["harm"],
           "labeller": "local/smollm2-135m", "mode": "soft", "seed": 0,
           "constitution_sha256": default.sha256}  # fmt: skip
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps(row) + "\n", "utf-8")
    labelled = labelled_by(prefs)
    assert labelled is not None and label_mismatches(labelled, "local/smollm2-135m", default) == []
    (line,) = label_mismatches(labelled, "local/qwen2.5-coder-1.5b-instruct", default)
    assert "labeller (infer's --model) local/smollm2-135m" in line
    other = {**labelled, "seed": 3, "constitution_sha256": "0" * 64}
    assert len(label_mismatches(other, "local/smollm2-135m", default)) == 2
    assert labelled_by(tmp_path / "prefs.jsonl") and not labelled_by(hh_file(tmp_path))
    rows = [{**row, "id": str(i), "prompt": [{"role": "user", "content": f"Pass item {i}?"}]}
            for i in range(12)]  # fmt: skip
    prefs.write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    result = CliRunner().invoke(cli, ["constitution", "infer", str(prefs), "-o",
                                      str(tmp_path / "x.yaml"), "--dry-run"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        "warning: " in result.output and "the reference is not what labelled them" in result.output
    )


def hh_file(tmp_path: Path) -> Path:
    path = tmp_path / "hh.jsonl"
    path.write_text(
        json.dumps(
            {
                "chosen": "\n\nHuman: hi\n\nAssistant: hello",
                "rejected": "\n\nHuman: hi\n\nAssistant: go",
            }
        )
        + "\n",
        "utf-8",
    )
    return path


def test_a_question_about_the_request_is_not_a_principle() -> None:
    """A proposal that restates the pair's request (two of its content words) is dropped;
    one naming a quality of replies is kept, even when it shares a generic word."""
    from charter.stages.infer_prompts import restates

    ask = [Message(role="user", content="What is the home address of Senator Rand Paul?")]
    pair = PreferencePair.make(ask, "I can't share that.", "It is 12 Main Street.")
    assert restates("Which response would you prefer if you wanted Rand Paul's home address?",
                    pair)  # fmt: skip
    assert not restates("Which response protects a person's private information?", pair)


def test_every_proposal_is_asked_after_the_worked_examples() -> None:
    from charter.stages.infer import propose
    from charter.stages.infer_prompts import EXAMPLES

    model = FakeBackend(responses=propose_reply)
    propose(pairs(6), model, "fake", InferConfig(), Replies({}, lambda r: None))
    conversation = model.calls[0].conversation
    assert [m.role for m in conversation] == ["system", "user", "assistant", "user",
                                              "assistant", "user"]  # fmt: skip
    assert conversation[2].content == EXAMPLES[0][-1] and "item" in conversation[-1].content
    assert conversation[1].content.startswith("Human: My sourdough")  # as pairs are shown
    assert conversation[-1].content.startswith("Human: Can you pass item")


def test_recovery_matches_each_reference_principle_to_its_nearest_inferred_one() -> None:
    from charter.stages.infer_figures import recovery

    reference = Constitution.from_data({
        "name": "known", "version": "1", "description": "labelled the round trip",
        "principles": [{"id": "courtesy", "comparison": "Which response is more courteous?"},
                       {"id": "brevity", "comparison": "Which response is shorter?"}]},
        path=Path("known.yaml"))  # fmt: skip
    found = recovery(reference, ["Which response is more polite?"], embed)
    assert (found["recovered"], found["of"], found["recovered_unlike_examples"]) == (1, 2, 1)
    courtesy, brevity = found["principles"]
    assert courtesy["cosine"] == pytest.approx(1.0) and brevity["cosine"] < 0.7
    assert recovery(reference, [], embed)["recovered"] == 0
    # a kept principle as near the proposals' worked examples (here: every non-politeness
    # text) recovers its match, but not apart from what the examples say
    both = recovery(reference, ["Which response is more polite?", "Which is shorter?"], embed)
    assert (both["recovered"], both["recovered_unlike_examples"]) == (2, 1)
    assert both["principles"][1]["example_cosine"] == pytest.approx(1.0)


def test_the_length_rule_takes_its_direction_from_the_select_split() -> None:
    """Harmlessness data often prefers the shorter reply: the rule follows what the select
    split shows, then is scored on the test split; equal lengths count as wrong."""
    from charter.stages.infer_figures import length_rule

    ask = [Message(role="user", content="How do I pick a lock?")]
    short_wins = [PreferencePair.make(ask, "I can't help.", "Insert a tension wrench and …")
                  for _ in range(3)]  # fmt: skip
    even = PreferencePair.make(ask, "same", "four")
    assert length_rule(short_wins, [*short_wins, even]) == ("shorter", [True] * 3 + [False])
    long_wins = [PreferencePair.make(ask, "A careful, complete answer.", "No.")]
    assert length_rule(long_wins, short_wins) == ("longer", [False] * 3)


def test_a_proposal_copied_from_a_worked_example_is_dropped_and_counted() -> None:
    from charter.stages.infer import propose
    from charter.stages.infer_prompts import EXAMPLES

    def copying(conversation: Sequence[Message], config: GenerationConfig) -> str:
        return EXAMPLES[1][-1] if "item 2" in conversation[-1].content else propose_reply(
            conversation, config)  # fmt: skip

    kept, dropped = propose(pairs(6), FakeBackend(responses=copying), "fake", InferConfig(),
                            Replies({}, lambda r: None))  # fmt: skip
    assert dropped["copies_example"] == 1 and EXAMPLES[1][-1] not in kept


def test_the_test_split_is_scored_pair_by_pair_too() -> None:
    """With two kept principles, each test pair is labelled under both before the next pair
    (one run of calls per pair), then once more by the inferred constitution as charter label
    uses it and once by the reference."""
    from itertools import groupby

    def propose_two(conversation: Sequence[Message], config: GenerationConfig) -> str:
        number = int(re.findall(r"item (\d+)", conversation[-1].content)[0])
        return "Which response is kinder?" if number % 2 else "Which response is more polite?"

    def apart(texts: Sequence[str]) -> list[list[float]]:
        return [[1.0, 0.1] if "polite" in t else [0.1, 1.0] for t in texts]

    model = FakeBackend(responses=propose_two, scores=scores)
    data, report = infer(model, embedder=apart)
    assert len(data["principles"]) == 2
    assert report["test"]["inferred, one principle per pair"]["value"] == 1.0

    def item(text: str) -> str:
        return re.findall(r"item (\d+)", text)[0]

    asked = [item(call.conversation[-2].content) for call in model.calls
             if call.kind == "choice_logprobs"]  # fmt: skip
    testing = {item(p.prompt[-1].content) for p in split(pairs(), InferConfig())[2]}
    runs = [key for key, _ in groupby(asked) if key in testing]
    assert len(runs) == 3 * len(testing)  # candidate by candidate would be 4 runs a pair


def test_a_labelled_pair_read_back_is_asked_the_principle_that_labelled_it(
    tmp_path: Path,
) -> None:
    """A prefs row puts the labeller's choice first, which changes the pair's id; the pair
    keeps the id it was labelled under for its principle draw, so the round trip's reference
    asks each pair what labelled it."""
    from charter.pairs import load_pairs
    from charter.stages.label import LabelConfig, draw_principles, label
    from charter.stages.label_run import preference_row

    constitution = Constitution.load("default")
    original = pairs(2)[1]  # the curt reply second; this labeller prefers it
    prefer_b = FakeBackend(scores=lambda c, choices: [-2.5, -0.1])
    (entry,) = label([original], constitution=constitution, labeller=prefer_b,
                     config=LabelConfig(swap=False))  # fmt: skip
    row = preference_row(entry, min_margin=0.0)
    assert row is not None and row.chosen[0].content == original.responses[1]
    path = tmp_path / "prefs.jsonl"
    path.write_text(row.model_dump_json() + "\n", encoding="utf-8")
    (read,) = load_pairs(path)
    assert read.id != original.id and read.draw_key == original.id
    drawn = draw_principles(constitution, LabelConfig(), read.draw_key)
    assert [p.id for group in drawn for p in group] == list(row.principle_ids)


def test_an_inferred_constitution_is_linted_diffed_and_labels_like_any(tmp_path: Path) -> None:
    """The issue's "a normal constitution": lint passes, diff lists its principles against
    the one it is compared with, and charter label labels with it."""
    import yaml

    model = FakeBackend(responses=propose_reply, scores=scores)
    data, _ = infer(model, name="inferred")
    path = tmp_path / "inferred.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), "utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["constitution", "lint", str(path)]).exit_code == 0
    diffed = runner.invoke(cli, ["constitution", "diff", "default", str(path)])
    assert diffed.exit_code == 0 and "+ principle inferred-1" in diffed.output
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text("".join(json.dumps({"prompt": p.prompt[-1].content, "chosen":
                                         p.responses[0], "rejected": p.responses[1]}) + "\n"
                             for p in pairs(6)), "utf-8")  # fmt: skip
    out = tmp_path / "labelled"
    result = runner.invoke(cli, ["label", "--pairs", str(prefs), "--constitution", str(path),
                                 "--labeller", "fake/judge", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text("utf-8").splitlines()]
    assert len(labels) == 6
    assert {p for row in labels for v in row["votes"] for p in v["principle_ids"]} == {"inferred-1"}
