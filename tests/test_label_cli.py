"""`charter label` and `charter label calibrate`, in process, on the fake backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import write_jsonl

from charter.cli import cli
from charter.constitution import Constitution
from charter.stages import label as label_module
from charter.stages.hard import template_digest as hard_digest

FAKE = ("--policy", "fake/echo", "--labeller", "fake/echo")


@pytest.fixture(autouse=True)
def charter_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CHARTER_HOME", str(tmp_path / "home"))  # calibration store in tmp
    return tmp_path / "home"


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_label_writes_trl_preference_rows(tmp_path: Path, twenty_prompts: Path) -> None:
    out = tmp_path / "R"
    result = charter("label", *FAKE, "--prompts", twenty_prompts, "--out", out)
    assert result.exit_code == 0, result.output
    prefs = rows(out / "prefs.jsonl")
    assert len(prefs) == 20
    for row in prefs:
        assert [m["role"] for m in row["prompt"]] == ["user"]  # type: ignore[index, union-attr, attr-defined]
        assert [m["role"] for m in row["chosen"]] == ["assistant"]  # type: ignore[index, union-attr, attr-defined]
        assert [m["role"] for m in row["rejected"]] == ["assistant"]  # type: ignore[index, union-attr, attr-defined]
        assert 0.5 <= row["p_chosen"] <= 1.0  # type: ignore[operator]
        assert row["p_chosen_first"] is not None and row["p_chosen_second"] is not None
        p = (row["p_chosen_first"] + row["p_chosen_second"]) / 2  # type: ignore[operator]
        assert row["p_chosen"] == pytest.approx(p)
        assert row["labeller"] == "fake/echo" and row["mode"] == "soft" and row["principle_ids"]
    assert len(rows(out / "samples.jsonl")) == 20 and len(rows(out / "labels.jsonl")) == 20
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "labels": 20, "prefs": 20, "dropped": 0, "resumed": 0, "fallback_labels": 0,
        "labeller_calls": 40, "labeller_calls_this_session": 40,  # 20 pairs, both orders
    }  # fmt: skip
    assert manifest["usage"]["policy"]["calls"] == 40
    assert manifest["stats"]["per_principle"] and manifest["stats"]["flip_rate"] is not None
    assert "win-rate shift" in result.output and "has not been calibrated" in result.stderr


def test_resume_margin_and_settings(tmp_path: Path, twenty_prompts: Path) -> None:
    args = ("label", *FAKE, "--prompts", twenty_prompts, "--out", tmp_path / "R")
    charter(*args)
    before = (tmp_path / "R" / "prefs.jsonl").read_bytes()
    again = charter(*args)
    assert "20 resumed" in again.output and (tmp_path / "R" / "prefs.jsonl").read_bytes() == before
    changed = charter(*args, "--mode", "cot")
    assert changed.exit_code == 2 and '"soft" → "cot"' in changed.stderr
    manifest = json.loads((tmp_path / "R" / "manifest.json").read_text())
    assert manifest["templates"] == label_module.template_digest()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(label_module, "ANSWER_CUE", "The better option is:")
        templates = charter(*args)
    assert templates.exit_code == 2 and "other settings (templates: " in templates.stderr
    margin = charter(
        "label", *FAKE, "--prompts", twenty_prompts, "--min-margin", "0.3", "--out", tmp_path / "M"
    )
    kept = rows(tmp_path / "M" / "prefs.jsonl")
    assert len(rows(tmp_path / "M" / "labels.jsonl")) == 20 and 0 < len(kept) < 20
    assert all(r["p_chosen"] >= 0.8 for r in kept)  # type: ignore[operator]
    assert f"{20 - len(kept)} dropped" in margin.output


def test_hard_constraint_veto_and_its_warning(tmp_path: Path, twenty_prompts: Path) -> None:
    """--hard-veto with a constitution that has hard constraints: every reply is checked, a
    crossing reply is never chosen, and a labeller that says many replies cross (fake/echo
    guesses) is called out."""
    out = tmp_path / "H"
    result = charter("label", "--policy", "fake/echo", "--labeller", "fake/echo",
                     "--hard-veto", "--prompts", twenty_prompts, "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    labels = {r["id"]: r for r in rows(out / "labels.jsonl")}
    assert len(labels) == 20 and all(r["p_crosses"] is not None for r in labels.values())
    for row in rows(out / "prefs.jsonl"):
        label = labels[row["id"]]  # type: ignore[index]
        chosen = label["responses"].index(row["chosen"][0]["content"])  # type: ignore[attr-defined, index]
        assert not label["crossed"][chosen]  # type: ignore[index]
        if any(label["crossed"]):  # type: ignore[arg-type]
            assert row["p_chosen"] == 1.0
    both = sum(all(r["crossed"]) for r in labels.values())  # type: ignore[arg-type]
    manifest = json.loads((out / "manifest.json").read_text("utf-8"))
    assert manifest["counts"]["prefs"] == 20 - both and manifest["counts"]["labeller_calls"] == 80
    assert manifest["hard"] == {"threshold": 0.5, "templates": hard_digest()}
    assert "replies judged to cross one" in result.output
    assert "of replies to cross a hard constraint" in result.stderr  # guessing, said so


def test_cot_labels_stay_in_the_clamp(tmp_path: Path, twenty_prompts: Path) -> None:
    result = charter(
        "label", *FAKE, "--prompts", twenty_prompts, "--mode", "cot", "--out", tmp_path / "C"
    )
    assert result.exit_code == 0, result.output
    prefs = rows(tmp_path / "C" / "prefs.jsonl")
    assert prefs and all(0.5 <= r["p_chosen"] <= 0.6 for r in prefs)  # type: ignore[operator]
    labels = rows(tmp_path / "C" / "labels.jsonl")
    assert all(0.4 <= r["p_first"] <= 0.6 and r["votes"][0]["reasoning"] for r in labels)  # type: ignore[operator, index]


def test_votes_combined_by_priority(tmp_path: Path, twenty_prompts: Path) -> None:
    result = charter("label", *FAKE, "--prompts", twenty_prompts, "--principles-per-label", "3",
                     "--combine", "priority", "--out", tmp_path / "P")  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "P" / "manifest.json").read_text("utf-8"))
    assert manifest["config"]["combine"] == "priority"
    labels = rows(tmp_path / "P" / "labels.jsonl")
    assert labels and all(len(r["votes"]) == 3 for r in labels)  # type: ignore[arg-type]
    alone = charter("label", *FAKE, "--prompts", twenty_prompts, "--combine", "priority",
                    "--out", tmp_path / "Q")  # fmt: skip
    assert alone.exit_code == 2 and "--principles-per-label 2 or more" in alone.output


def test_pairs_file_and_simple_preset(tmp_path: Path, twenty_prompts: Path) -> None:
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": f"q{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(5)
    ])  # fmt: skip
    result = charter("label", "--labeller", "fake/echo", "--pairs", pairs, "--out", tmp_path / "P")
    assert result.exit_code == 0 and len(rows(tmp_path / "P" / "prefs.jsonl")) == 5
    charter(
        "revise",
        "--model",
        "fake/echo",
        "--prompts",
        twenty_prompts,
        "--rounds",
        "1",
        "--out",
        tmp_path / "V",
    )
    simple = charter("label", "--from-revise", tmp_path / "V", "--preset", "simple",
                     "--labeller", "nope/not-loaded", "--out", tmp_path / "S")  # fmt: skip
    assert simple.exit_code == 0, simple.output
    prefs = rows(tmp_path / "S" / "prefs.jsonl")
    traces = rows(tmp_path / "V" / "traces.jsonl")
    assert len(prefs) == 20
    assert all(r["p_chosen"] == 1.0 and r["mode"] == "simple" for r in prefs)
    final_of = {t["id"]: t["final"] for t in traces}
    assert {r["chosen"][0]["content"] for r in prefs} == set(final_of.values())  # type: ignore[index]


def test_dry_run_and_bad_options(
    tmp_path: Path, twenty_prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_backend(*args: object, **kwargs: object) -> None:
        raise AssertionError("dry run must not build a backend")

    monkeypatch.setattr("charter.backends.load_backend", no_backend)
    result = charter("label", "--prompts", twenty_prompts, "--dry-run", "--limit", "2")
    assert result.exit_code == 0
    assert result.output.count("Options:\n(A)") == 4 + 4  # 4 few-shot + 2 pairs x 2 orders
    assert "<answer 1 from the policy>" in result.output
    brief = Constitution.load("default").brief
    assert brief and result.output.count(brief) == 1  # in the shared prefix's system message
    both = charter(
        "label", "--prompts", twenty_prompts, "--pairs", twenty_prompts, "--out", tmp_path / "X"
    )
    assert both.exit_code == 2 and "exactly one source" in both.stderr
    preset = charter(
        "label", "--prompts", twenty_prompts, "--preset", "simple", "--out", tmp_path / "X"
    )
    assert preset.exit_code == 2 and "--from-revise" in preset.stderr


def test_calibrate_then_label_warns(
    tmp_path: Path, twenty_prompts: Path, charter_home: Path
) -> None:
    gold = write_jsonl(tmp_path / "gold.jsonl", [
        {"chosen": f"\n\nHuman: q{i}\n\nAssistant: kind {i}",
         "rejected": f"\n\nHuman: q{i}\n\nAssistant: rude {i}"}
        for i in range(12)
    ])  # fmt: skip
    result = charter(
        "label", "calibrate", "--labeller", "fake/echo", "--gold", gold, "--out", tmp_path / "K"
    )
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "ECE" in result.output
    report = json.loads((tmp_path / "K" / "calibration.json").read_text())
    assert report["pairs"] == 12 and 0 <= report["accuracy"] <= 1
    assert len(rows(tmp_path / "K" / "labels.jsonl")) == 12
    assert list((charter_home / "calibration").glob("*.json"))
    labelled = charter(
        "label", *FAKE, "--prompts", twenty_prompts, "--limit", "2", "--out", tmp_path / "R"
    )
    assert "has not been calibrated" not in labelled.stderr


def test_bad_inputs_fail_before_any_output(tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"},
                                                 {"prompt": "q", "chosen": "a"}])  # fmt: skip
    result = charter("label", "--labeller", "fake/echo", "--pairs", bad, "--out", tmp_path / "R")
    assert result.exit_code == 2 and f"{bad}:2:" in result.stderr
    assert not (tmp_path / "R").exists()
    missing = charter("label", "--labeller", "fake/echo", "--pairs", tmp_path / "nope.jsonl",
                      "--out", tmp_path / "R")  # fmt: skip
    assert missing.exit_code == 2 and "no pair file" in missing.stderr
    no_run = charter(
        "label", "--from-revise", tmp_path, "--preset", "simple", "--out", tmp_path / "R"
    )
    assert no_run.exit_code == 2 and "no traces.jsonl" in no_run.stderr
    assert not (tmp_path / "R").exists()


def test_an_impossible_sample_count_is_refused_before_any_model(
    tmp_path: Path, twenty_prompts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter import backends

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded for settings that cannot run")

    monkeypatch.setattr(backends, "load_backend", no_model)
    result = charter("label", *FAKE, "--prompts", twenty_prompts, "--samples", "100000",
                     "--out", tmp_path / "R")  # fmt: skip
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "--samples 100000 is more than" in result.stderr
    assert not (tmp_path / "R").exists()
