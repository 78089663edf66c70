"""`charter constitution diff`, and stage keys that cover only what a stage reads of the
constitution: a one-principle edit reruns only the stages it reaches."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from click.testing import CliRunner

from charter.backends import load_backend
from charter.cli import cli
from charter.constitution import resolve
from charter.pipeline import plan
from charter.run_config import RunConfig


def edited(tmp_path: Path, field: str, text: str) -> Path:
    """The default constitution with one field of its first principle rewritten."""
    data = yaml.safe_load(resolve("default").read_text("utf-8"))
    data["principles"][0][field] = text
    path = tmp_path / f"{field}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def keys(constitution: str, root: Path) -> dict[str, str]:
    config = RunConfig(constitution=constitution)
    return {s.name: s.key for s in plan(config, root, load_backend)}


def test_a_one_principle_edit_reruns_only_the_stages_that_read_it(tmp_path: Path) -> None:
    before = keys("default", tmp_path)
    comparison = keys(str(edited(tmp_path, "comparison", "Which reply is kinder?")), tmp_path)
    assert {n for n in before if before[n] != comparison[n]} == {
        "calibrate", "label", "dpo", "evaluate", "report"}  # fmt: skip
    critique = keys(str(edited(tmp_path, "critique", "Say what is unkind in it.")), tmp_path)
    assert {n for n in before if before[n] != critique[n]} == {
        "revise", "sft", "label", "dpo", "evaluate", "report"}  # fmt: skip
    tags = keys(str(edited(tmp_path, "tags", ["other"])), tmp_path)
    assert tags == before  # no prompt carries a principle's tags


def test_diff_names_the_principle_its_fields_and_the_stages(tmp_path: Path) -> None:
    new = edited(tmp_path, "comparison", "Which reply is kinder?")
    result = CliRunner().invoke(cli, ["constitution", "diff", "default", str(new)])
    assert result.exit_code == 0, result.output
    assert "~ principle general-harm: comparison" in result.output
    assert "changed parts: comparison; stages that rerun (and those after them): calibrate, " \
           "label" in result.output  # fmt: skip
    same = CliRunner().invoke(cli, ["constitution", "diff", "default", "default"])
    assert same.exit_code == 0 and "every stage of a run stays cached" in same.output


def test_diff_counts_the_rows_of_a_run_that_drew_a_changed_principle(tmp_path: Path) -> None:
    root = tmp_path / "run"
    revise = root / "revise-abc"
    revise.mkdir(parents=True)
    rows = [{"id": str(i), "principle_ids": [pid]}
            for i, pid in enumerate(["general-harm", "honesty", "general-harm"])]  # fmt: skip
    (revise / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    labels = root / "label-def"
    labels.mkdir()
    (labels / "labels.jsonl").write_text(json.dumps(
        {"id": "p", "votes": [{"principle_ids": ["privacy"]}]}) + "\n", "utf-8")  # fmt: skip
    (root / "run.json").write_text(json.dumps({"stages": [
        ["revise", {"key": "abc", "path": str(revise), "complete": True}],
        ["label", {"key": "def", "path": str(labels), "complete": True}],
    ]}), "utf-8")  # fmt: skip
    new = edited(tmp_path, "critique", "Say what is unkind in it.")
    result = CliRunner().invoke(cli, ["constitution", "diff", "default", str(new), "--run",
                                      str(root)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "revise: 2 of 3 rows of sft.jsonl drew a changed or removed principle" in result.output
    assert "label: 0 of 1 rows of labels.jsonl" in result.output
    missing = CliRunner().invoke(cli, ["constitution", "diff", "default", str(new), "--run",
                                       str(tmp_path)])  # fmt: skip
    assert missing.exit_code == 2 and "no run.json" in missing.output
