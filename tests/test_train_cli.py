"""`charter train sft|dpo|rm` end to end on a tiny random model (no download)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hf_tiny import build_tiny_checkpoint

from charter.cli import cli

pytest.importorskip("trl")


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny checkpoint, a fake revise run and a fake label run to train on."""
    root = tmp_path_factory.mktemp("train")
    prompts = root / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(8)))
    assert charter("revise", "--model", "fake/echo", "--prompts", prompts, "--rounds", "1",
                   "--out", root / "revise").exit_code == 0  # fmt: skip
    # Decisive labels (the simple preset: revision over initial answer, p = 1) so that a few
    # steps visibly lower the preference losses; soft labels are covered in test_train_losses.
    assert charter("label", "--from-revise", root / "revise", "--preset", "simple",
                   "--out", root / "label").exit_code == 0  # fmt: skip
    return {"tiny": build_tiny_checkpoint(root / "tiny"), "revise": root / "revise",
            "label": root / "label", "prompts": prompts}  # fmt: skip


def figures(out: Path) -> dict[str, object]:
    return json.loads((out / "manifest.json").read_text())["figures"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(("kind", "data"), [("sft", "revise"), ("dpo", "label"), ("rm", "label")])
def test_train_tiny_model(kind: str, data: str, runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / kind
    result = charter("train", kind, "--model", f"hf/{runs['tiny']}", "--data", runs[data],
                     "--max-steps", "6", "--learning-rate", "5e-3", "--batch-size", "2",
                     "--gradient-accumulation", "1", "--max-length", "256",
                     "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    numbers = figures(out)
    assert numbers["steps"] == 6
    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(isinstance(x, float) for x in losses)
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # it learns
    assert (out / "model" / "config.json").is_file() and (out / "adapter").is_dir()
    if kind != "rm":  # the trained model answers through Charter
        answer = charter("revise", "--model", f"hf/{out / 'model'}", "--prompts", runs["prompts"],
                         "--limit", "1", "--rounds", "1", "--max-tokens", "4",
                         "--out", tmp_path / "use")  # fmt: skip
        assert answer.exit_code == 0, answer.output


def test_config_file_and_flags(runs: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(f"model: hf/{runs['tiny']}\ndata: [{runs['revise']}]\nmax_steps: 2\n"
                      "max_length: 64\nlearning_rate: 0.001\nbatch_size: 9\n")  # fmt: skip
    result = charter(
        "train", "sft", "--config", config, "--batch-size", "2", "--out", tmp_path / "R"
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "R" / "manifest.json").read_text())
    assert manifest["config"]["batch_size"] == 2 and manifest["config"]["max_steps"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [x]\nlearning_rate: -1\n")
    error = charter("train", "sft", "--config", bad, "--out", tmp_path / "B")
    assert error.exit_code == 2 and "bad.yaml:2: learning_rate" in error.stderr
    missing = charter(
        "train", "dpo", "--model", f"hf/{runs['tiny']}", "--data", tmp_path, "--out", tmp_path / "M"
    )
    assert missing.exit_code == 2 and "no prefs.jsonl" in missing.stderr


def test_rows_longer_than_max_length_are_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    result = charter("train", "rm", "--model", f"hf/{runs['tiny']}", "--data", runs["label"],
                     "--max-length", "16", "--max-steps", "1", "--out", tmp_path / "R")  # fmt: skip
    assert result.exit_code == 2 and "raise --max-length" in result.stderr
