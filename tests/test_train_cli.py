"""`charter train sft|dpo|rm` end to end on a tiny random model (no download)."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
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
    assert "'loss'" not in result.output and "'grad_norm'" not in result.output  # no log dicts
    assert f"train {kind}" in result.stderr and "6/6" in result.stderr  # one line: step of total
    numbers = figures(out)
    assert numbers["steps"] == 6 and numbers["resumed_from_step"] is None
    assert isinstance(numbers["tokens_per_second"], float) and numbers["tokens_per_second"] > 0
    losses = [json.loads(line)["loss"] for line in (out / "loss.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and all(isinstance(x, float) for x in losses)
    assert sum(losses[-2:]) < sum(losses[:2]), losses  # it learns
    assert (out / "model" / "config.json").is_file() and (out / "adapter").is_dir()
    if kind == "sft":  # the same command again: complete, so its figures and no training
        again = charter("train", kind, "--model", f"hf/{runs['tiny']}", "--data", runs[data],
                        "--max-steps", "6", "--learning-rate", "5e-3", "--batch-size", "2",
                        "--gradient-accumulation", "1", "--max-length", "256",
                        "--out", out)  # fmt: skip
        assert again.exit_code == 0 and "6/6" not in again.stderr, again.output
        assert figures(out) == numbers
    if kind == "rm":
        check_scoring(out, runs, tmp_path)
    else:  # the trained model answers through Charter
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


def test_killed_training_resumes_where_it_stopped(runs: dict[str, Path], tmp_path: Path) -> None:
    """SIGKILL after the first checkpoint, rerun: it resumes there and ends as an unkilled run."""
    args = ["train", "sft", "--model", f"hf/{runs['tiny']}", "--data", str(runs["revise"]),
            "--max-steps", "30", "--save-steps", "5", "--learning-rate", "5e-3",
            "--batch-size", "2", "--gradient-accumulation", "1"]  # fmt: skip
    reference = tmp_path / "reference"
    assert charter(*args, "--out", reference).exit_code == 0

    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "charter", *args, "--out", str(out)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "checkpoints" / "checkpoint-5" / "trainer_state.json"
    deadline = time.monotonic() + 120
    while process.poll() is None and not first.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL, process.stderr and process.stderr.read()
    assert not (out / "model").exists()  # it really was cut short
    # A checkpoint torn by the kill (no trainer state yet) is skipped and removed.
    torn = out / "checkpoints" / "checkpoint-999"
    torn.mkdir(parents=True, exist_ok=True)

    result = charter(*args, "--out", out)
    assert result.exit_code == 0, result.output
    numbers, expected = figures(out), figures(reference)
    resumed = numbers["resumed_from_step"]
    assert isinstance(resumed, int) and 5 <= resumed < 30 and not torn.exists()
    assert numbers["steps"] == expected["steps"] == 30
    losses = [json.loads(line) for line in (out / "loss.jsonl").read_text().splitlines()]
    assert [e["step"] for e in losses] == list(range(1, 31))  # the history carries over
    assert numbers["last_loss"] == pytest.approx(expected["last_loss"], rel=1e-3)


def check_scoring(reward_model: Path, runs: dict[str, Path], tmp_path: Path) -> None:
    """`charter train score` on pairs and on answers, and its refusals."""
    result = charter("train", "score", "--reward-model", reward_model, "--data", runs["label"],
                     "--out", tmp_path / "pairs.jsonl")  # fmt: skip
    assert result.exit_code == 0, result.output
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    prefs = (runs["label"] / "prefs.jsonl").read_text().splitlines()
    assert [p["id"] for p in pairs] == [json.loads(line)["id"] for line in prefs]
    for p in pairs:
        assert p["p_model"] == pytest.approx(
            1 / (1 + math.exp(p["rejected_score"] - p["chosen_score"]))
        )
    agreement = sum(p["p_model"] > 0.5 for p in pairs) / len(pairs)  # the labels are all p = 1
    assert f"higher on {agreement:.1%}" in result.output

    sft = runs["revise"] / "sft.jsonl"
    answers = charter("train", "score", "--reward-model", reward_model, "--data", sft,
                      "--out", tmp_path / "answers.jsonl")  # fmt: skip
    assert answers.exit_code == 0, answers.output
    scored = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert len(scored) == len(sft.read_text().splitlines())

    not_rm = charter("train", "score", "--reward-model", f"hf/{runs['tiny']}", "--data",
                     runs["label"], "--out", tmp_path / "x.jsonl")  # fmt: skip
    assert not_rm.exit_code == 2 and "is not a reward model" in not_rm.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    wrong = charter("train", "score", "--reward-model", reward_model, "--data", bad,
                    "--out", tmp_path / "y.jsonl")  # fmt: skip
    assert wrong.exit_code == 2 and "bad.jsonl:1: 'prompt'" in wrong.stderr
    assert not (tmp_path / "x.jsonl").exists() and not (tmp_path / "y.jsonl").exists()


def test_missing_train_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [m for m in sys.modules if m.startswith(("trl", "charter.stages.train."))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "trl", None)  # import trl now raises ImportError
    result = charter("train", "sft", "--data", tmp_path, "--out", tmp_path / "R")
    assert result.exit_code == 2
    assert "training needs the train extra (trl is missing)" in result.stderr


@pytest.mark.parametrize("kind", ["sft", pytest.param("dpo", marks=pytest.mark.slow)])
def test_two_processes_train_in_parallel(kind: str, runs: dict[str, Path], tmp_path: Path) -> None:
    """Two CPU processes (torchrun; accelerate launch does the same on GPUs), LoRA, merged."""
    out = tmp_path / kind
    with socket.socket() as s:  # a free port for the processes to meet on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = runs["revise" if kind == "sft" else "label"]
    launch = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_addr", "127.0.0.1", "--master_port", str(port),
         "-m", "charter", "train", kind, "--model", f"hf/{runs['tiny']}", "--data", str(data),
         "--max-steps", "3", "--batch-size", "2", "--gradient-accumulation", "1",
         "--max-length", "128", "--out", str(out)],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["sessions"] == 1  # one writer
    assert manifest["figures"]["steps"] == 3
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "model" / "config.json").is_file()  # merged on the main process
    answer = charter("revise", "--model", f"hf/{out / 'model'}", "--prompts", runs["prompts"],
                     "--limit", "1", "--rounds", "0", "--max-tokens", "4",
                     "--out", tmp_path / "use")  # fmt: skip
    assert answer.exit_code == 0, answer.output


def test_shipped_accelerate_configs_load() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).resolve().parent.parent / "examples" / "accelerate"
    kinds = {path.stem: str(load_config_from_file(str(path)).distributed_type)
             for path in folder.glob("*.yaml")}  # fmt: skip
    assert kinds == {
        "multi_gpu": "DistributedType.MULTI_GPU", "fsdp": "DistributedType.FSDP",
        "deepspeed_zero2": "DistributedType.DEEPSPEED",
        "deepspeed_zero3": "DistributedType.DEEPSPEED",
    }  # fmt: skip
