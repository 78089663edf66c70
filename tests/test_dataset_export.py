"""`charter export`: a run's SFT and preference rows as a dataset with a card, loadable by
`datasets` and taken by TRL's trainers as they are; incomplete stages and a used --out are
refused with nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from charter.cli import cli

datasets = pytest.importorskip("datasets")


def charter(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `charter run`-shaped root holding a revise and a label stage made with the fake model."""
    work = tmp_path_factory.mktemp("export")
    revise, label = work / "revise-0123456789ab", work / "label-ba9876543210"
    assert charter("revise", "--model", "fake/echo", "--prompts", "demo-redteam", "--limit", "4",
                   "--rounds", "1", "--out", revise).exit_code == 0  # fmt: skip
    assert charter("label", "--from-revise", revise, "--preset", "simple",
                   "--out", label).exit_code == 0  # fmt: skip
    plan = {"stages": {"revise": {"path": f"elsewhere/{revise.name}"},
                       "label": {"path": f"elsewhere/{label.name}"}}}  # fmt: skip
    (work / "run.json").write_text(json.dumps(plan), encoding="utf-8")
    return work


def test_hf_export_loads_with_datasets_and_carries_a_card(run_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = charter("export", run_root, "--format", "hf", "--out", out)
    assert result.exit_code == 0, result.output
    loaded = datasets.load_from_disk(str(out))
    assert set(loaded) == {"sft", "preferences"}
    assert len(loaded["sft"]) == 4 and loaded["sft"][0]["messages"][-1]["role"] == "assistant"
    assert {"prompt", "chosen", "rejected", "p_chosen"} <= set(loaded["preferences"].column_names)
    card = (out / "README.md").read_text("utf-8")
    assert "| sft | 4 |" in card and "`p_chosen` | `Value('float64')`" in card
    assert "demo-redteam.jsonl" in card and "Apache-2.0 (written for Charter)" in card
    assert "constitution (sha256)" in card
    assert f"sft 4 rows, preferences {len(loaded['preferences'])} rows" in result.output


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_file_formats_load_as_the_same_rows(run_root: Path, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / fmt
    assert charter("export", run_root, "--format", fmt, "--out", out).exit_code == 0
    builder = "parquet" if fmt == "parquet" else "json"
    sft = datasets.load_dataset(builder, data_files=str(out / f"sft.{fmt}"), split="train")
    assert len(sft) == 4 and "messages" in sft.column_names


def test_a_stage_folder_exports_its_own_split(run_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "prefs"
    assert charter("export", run_root / "label-ba9876543210", "--out", out).exit_code == 0
    assert set(datasets.load_from_disk(str(out))) == {"preferences"}


def test_trl_takes_the_exported_splits_as_they_are(run_root: Path, tmp_path: Path) -> None:
    pytest.importorskip("trl")
    from hf_tiny import build_tiny_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    out = tmp_path / "data"
    assert charter("export", run_root, "--out", out).exit_code == 0
    loaded = datasets.load_from_disk(str(out))
    tiny = build_tiny_checkpoint(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    common = {"max_steps": 1, "per_device_train_batch_size": 2, "report_to": [],
              "use_cpu": True, "max_length": 128}  # fmt: skip
    sft = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny), processing_class=tokenizer,
                     args=SFTConfig(output_dir=str(tmp_path / "sft"), **common),
                     train_dataset=loaded["sft"])  # fmt: skip
    assert sft.train().global_step == 1
    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny), processing_class=tokenizer,
                     args=DPOConfig(output_dir=str(tmp_path / "dpo"), **common),
                     train_dataset=loaded["preferences"])  # fmt: skip
    assert dpo.train().global_step == 1


def test_incomplete_stages_and_a_used_out_are_refused(run_root: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_root, copy)
    manifest = copy / "label-ba9876543210" / "manifest.json"
    data = json.loads(manifest.read_text("utf-8"))
    manifest.write_text(json.dumps({**data, "status": "interrupted"}), encoding="utf-8")
    record = copy / "label-ba9876543210" / "stage.json"  # a single command's record, if any
    if record.exists():
        kept = json.loads(record.read_text("utf-8"))
        record.write_text(json.dumps({**kept, "complete": False}), encoding="utf-8")
    out = tmp_path / "out"
    result = charter("export", copy, "--out", out)
    assert result.exit_code == 2 and "label-ba9876543210 is not complete" in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
    # a charter run stage is judged by its stage record, as charter run judges it: a manifest
    # that says complete while another part of the stage is unfinished does not count
    manifest.write_text(json.dumps(data), encoding="utf-8")
    if record.exists():
        record.write_text(json.dumps(kept), encoding="utf-8")
    (copy / "revise-0123456789ab" / "stage.json").write_text(
        json.dumps({"stage": "revise", "key": "0123456789ab", "complete": False}), encoding="utf-8"
    )
    result = charter("export", copy, "--out", out)
    assert result.exit_code == 2 and "revise-0123456789ab is not complete" in result.stderr
    assert not out.exists()
    used = tmp_path / "used"
    used.mkdir()
    (used / "keep.txt").write_text("mine", encoding="utf-8")
    result = charter("export", run_root, "--out", used)
    assert result.exit_code == 2 and "already exists and is not empty" in result.stderr
    assert [p.name for p in used.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    result = charter("export", empty, "--out", tmp_path / "x")
    assert result.exit_code == 2 and "no sft.jsonl or prefs.jsonl" in result.stderr
