"""``charter export``: a run's training data as a dataset other tools load as it is.

A ``charter run`` directory (or the output folder of ``charter revise`` / ``charter label``)
holds the SFT rows (``sft.jsonl``: TRL's conversational ``messages``) and the preference rows
(``prefs.jsonl``: ``prompt`` / ``chosen`` / ``rejected`` with the soft label ``p_chosen``). This
module writes them, with a dataset card, in one of three shapes::

    charter export runs/effect --format hf --out exports/effect    # datasets.load_from_disk
    charter export runs/effect --format parquet --out exports/p    # one .parquet per split
    charter export runs/effect --format jsonl --out exports/j      # the rows as Charter wrote them

Every column has one fixed type (:mod:`charter.dataset_features`), so the splits load the same
way whatever their rows hold, and TRL's ``SFTTrainer`` and ``DPOTrainer`` take them directly.
The card (``README.md``) lists the splits, their schema, the constitution and models that made
the rows, and where the prompts came from with each source's license.

Only complete stages are exported, and the output appears whole or not at all (it is written
beside ``--out`` and moved into place at the end).
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from charter.errors import CharterError

Format = Literal["hf", "parquet", "jsonl"]
FORMATS: tuple[Format, ...] = ("hf", "parquet", "jsonl")
FILES = {"sft": "sft.jsonl", "preferences": "prefs.jsonl"}
STAGE_OF = {"sft": "revise", "preferences": "label"}  # where a charter run keeps each split
# Licenses of the prompt sources Charter knows, by file name (../shared/data/README.md for
# the public sets; the bundled prompt files are Charter's own, under its license).
LICENSES = {
    "harmful_behaviors.csv": "MIT (AdvBench, Zou et al. 2023)",
    "harmbench_behaviors_text_val.csv": "MIT (HarmBench)",
    "harmless-base-test.jsonl.gz": "MIT (Anthropic hh-rlhf)",
    "xstest_prompts.csv": "CC-BY-4.0 (XSTest)",
    "input_data.jsonl": "Apache-2.0 (IFEval)",
    "question.jsonl": "Apache-2.0 (MT-Bench)",
}
BUNDLED_LICENSE = "Apache-2.0 (written for Charter)"
DONOTANSWER_LICENSE = "Apache-2.0 (Do-Not-Answer)"
DONOTANSWER = {f"{area}.jsonl" for area in (
    "malicious_uses", "discrimination_exclusion_toxicity_hateful_offensive", "human_chatbox",
    "information_hazard", "misinformation_harms",
)}  # fmt: skip


def find_data(run_dir: Path) -> dict[str, Path]:
    """The complete SFT and preference files of ``run_dir``, by split name.

    ``run_dir`` is a ``charter run`` root (its stages are read from ``run.json``) or one
    output folder (``charter revise``, ``charter label``, or a stage folder).

    Raises:
        CharterError: Nothing to export, or a stage that holds it is not complete.
    """
    from charter.report import PLAN, stage_folders

    if (run_dir / PLAN).is_file():
        stages = stage_folders(run_dir)
        folders = {split: stages.get(stage) for split, stage in STAGE_OF.items()}
    else:
        folders = {split: run_dir for split in FILES}
    found = {split: folder / FILES[split] for split, folder in folders.items()
             if folder is not None and (folder / FILES[split]).is_file()}  # fmt: skip
    if not found:
        raise CharterError(
            f"{run_dir}: no sft.jsonl or prefs.jsonl to export; pass a charter run directory "
            "or the --out folder of charter revise or charter label"
        )
    from charter.runner import recorded_complete

    for path in found.values():
        # The same test charter run uses: a stage is done when every part of it is.
        if not recorded_complete(path.parent):
            raise CharterError(
                f"{path.parent} is not complete (its stage.json or manifest.json does not say "
                "so); finish it (rerun the same command, which resumes) before exporting"
            )
    return found


def export_dataset(run_dir: Path, out: Path, fmt: Format) -> dict[str, int]:
    """Write ``run_dir``'s training data to ``out`` as ``fmt``; returns rows per split.

    Raises:
        CharterError: Nothing to export, an incomplete stage, ``out`` already holds files, or
            a row does not fit Charter's column types.
    """
    from charter.dataset_features import load_rows

    if fmt not in FORMATS:
        raise CharterError(f"unknown format '{fmt}': use one of {', '.join(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CharterError(f"{out} already exists and is not empty: pass a new --out")
    found = find_data(run_dir)
    splits = {split: load_rows(path) for split, path in found.items()}
    out = out.absolute()  # "." has no name to put the partial folder beside
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        if fmt == "hf":
            from datasets import DatasetDict  # type: ignore[import-untyped]

            DatasetDict(splits).save_to_disk(str(partial))
        else:
            partial.mkdir(parents=True)
            for split, data in splits.items():
                if fmt == "parquet":
                    data.to_parquet(str(partial / f"{split}.parquet"))
                else:
                    shutil.copyfile(found[split], partial / f"{split}.jsonl")
        card = dataset_card(run_dir, splits, found, fmt)
        (partial / "README.md").write_text(card, encoding="utf-8")
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return {split: len(data) for split, data in splits.items()}


def _source_file(source: Any) -> str:
    """The file name of a row's ``source`` (``file.csv#12``, ``path/file.jsonl:3``)."""
    text = str(source or "unknown")
    text = text.split("#", 1)[0]
    head, _, tail = text.rpartition(":")
    name = head if tail.isdigit() and head else text
    return Path(name).name or "unknown"


def license_of(file_name: str) -> str:
    """The license of a prompt source Charter knows, by its file name."""
    from importlib import resources

    if file_name in LICENSES:
        return LICENSES[file_name]
    if file_name in DONOTANSWER:
        return DONOTANSWER_LICENSE
    if (resources.files("charter") / "data" / file_name).is_file():
        return BUNDLED_LICENSE
    return "unknown: check the source's license before sharing"


def _input_files(folder: Path) -> list[str]:
    """The prompt files a stage read, from its manifest (a label run: its revise run's too)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return []
    names = [str(i.get("name")) for i in manifest.get("inputs") or [] if isinstance(i, dict)]
    revise = (manifest.get("revise_run") or {}).get("path")
    if revise and Path(revise).resolve() != folder.resolve():
        names += _input_files(Path(revise))
    return names


def dataset_card(run_dir: Path, splits: dict[str, Any], files: dict[str, Path], fmt: str) -> str:
    """The README.md that travels with the exported data (Hugging Face dataset card)."""
    from charter import __version__

    lines = [
        "---",
        "tags: [constitutional-ai, charter, preference-data]",
        "license: other  # per prompt source, see the table below",
        "---",
        "",
        f"# {run_dir.resolve().name}: training data from a Charter run",
        "",
        f"Exported by Charter {__version__} with `charter export {run_dir} --format {fmt}`.",
        "",
        "| split | rows | from | load with |",
        "|---|---|---|---|",
    ]
    how = {"hf": "datasets.load_from_disk(DIR)[SPLIT]",
           "parquet": "datasets.load_dataset('parquet', data_files=DIR/SPLIT.parquet)",
           "jsonl": "datasets.load_dataset('json', data_files=DIR/SPLIT.jsonl)"}[fmt]  # fmt: skip
    for split, data in splits.items():
        lines.append(f"| {split} | {len(data)} | `{files[split].parent.name}/{files[split].name}`"
                     f" | `{how}` |")  # fmt: skip
    lines += ["", "`sft` rows are TRL conversational `messages`; `preferences` rows are TRL "
              "`prompt` / `chosen` / `rejected` with the soft label `p_chosen` (the probability "
              "that `chosen` is better). Both go to TRL's `SFTTrainer` / `DPOTrainer` as they are.",
              "", "## Schema", ""]  # fmt: skip
    for split, data in splits.items():
        lines += [f"### {split}", "", "| column | type |", "|---|---|"]
        lines += [f"| `{name}` | `{feature}` |" for name, feature in data.features.items()]
        lines.append("")
    lines += ["## Provenance", ""]
    for column, title in (("constitution_sha256", "constitution (sha256)"),
                          ("model", "models that wrote the rows"),
                          ("labeller", "labellers")):  # fmt: skip
        values = sorted({str(v) for d in splits.values() if column in d.column_names
                         for v in d[column] if v})  # fmt: skip
        if values:
            lines.append(f"- {title}: {', '.join(f'`{v}`' for v in values)}")
    sources: Counter[str] = Counter()
    for data in splits.values():
        if "source" in data.column_names:
            sources.update(_source_file(s) for s in data["source"])
    inputs = {name for path in files.values() for name in _input_files(path.parent)}
    if sources or inputs:
        lines += ["", "## Prompt sources and licenses", "", "| source file | rows | license |",
                  "|---|---|---|"]  # fmt: skip
        lines += [f"| `{name}` | {sources.get(name, 'not recorded per row')} "
                  f"| {license_of(name)} |" for name in sorted(set(sources) | inputs)]  # fmt: skip
    lines += [
        "",
        "Rows may contain harmful requests by design (red-team prompts with the "
        "declining answers trained on them); do not show them to users by default.",
        "",
    ]
    return "\n".join(lines)
