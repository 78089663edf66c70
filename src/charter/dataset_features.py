"""Charter's JSONL outputs as Hugging Face ``datasets``, every column with a fixed type.

``datasets`` infers a column's type from the rows it sees: a shard whose ``principle_ids``
are all ``[]`` (or whose votes carry no reasoning) gets a ``null`` type, another shard a
``string`` one, and ``concatenate_datasets`` refuses to join them. Here every column that
Charter writes — ``sft.jsonl`` (revise and guided), ``prefs.jsonl`` (label and verdict
pairs), ``labels.jsonl``, ``samples.jsonl`` — has one type, whatever the rows hold::

    from datasets import concatenate_datasets
    from charter.dataset_features import load_rows

    prefs = concatenate_datasets([load_rows(d / "prefs.jsonl") for d in run_dirs])

Needs the ``datasets`` package (the train extra); it is imported when a function runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from charter.errors import CharterError


def column_types() -> dict[str, Any]:
    """Every column Charter writes, by name, as a ``datasets`` feature."""
    import datasets  # type: ignore[import-untyped]

    string, integer = datasets.Value("string"), datasets.Value("int64")
    real, flag = datasets.Value("float64"), datasets.Value("bool")
    messages = [{"role": string, "content": string}]
    vote = {
        "principle_ids": [string], "p_shown_first": real, "p_shown_second": real,
        "reasoning": [string], "unread": integer,
    }  # fmt: skip
    usage = {"calls": integer, "prompt_tokens": integer, "cached_tokens": integer,
             "completion_tokens": integer}  # fmt: skip
    return {
        # conversations (TRL's conversational format)
        "messages": messages, "prompt": messages, "chosen": messages, "rejected": messages,
        # provenance
        "id": string, "prompt_id": string, "kind": string, "source": string, "model": string,
        "labeller": string, "mode": string, "seed": integer, "constitution_sha256": string,
        "principle_ids": [string], "usage": usage,
        # sft.jsonl
        "round": integer, "revised": flag,
        # prefs.jsonl
        "p_chosen": real, "p_chosen_first": real, "p_chosen_second": real,
        "chosen_from": string, "desired": string,
        # labels.jsonl and samples.jsonl
        "responses": [string], "p_first": real, "votes": [vote], "answers": [string],
        "p_crosses": [real], "crossed": [flag],
    }  # fmt: skip


def features_for(columns: Iterable[str]) -> Any:
    """The ``datasets.Features`` of rows with ``columns`` (names Charter writes)."""
    import datasets

    types = column_types()
    columns = list(columns)
    unknown = [c for c in columns if c not in types]
    if unknown:
        raise CharterError(
            f"no fixed type for column {', '.join(map(repr, unknown))}: not a column Charter writes"
        )
    return datasets.Features({c: types[c] for c in columns})


def load_rows(path: Path) -> Any:
    """A Charter JSONL output as a ``datasets.Dataset`` with fixed column types.

    Raises:
        CharterError: The file is missing, a line is not a JSON object, or a column is not
            one Charter writes.
    """
    import datasets

    if not path.is_file():
        raise CharterError(f"no file '{path}'")
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise CharterError(f"{path}:{number}: not JSON ({err})") from None
            if not isinstance(row, dict):
                raise CharterError(f"{path}:{number}: expected a JSON object")
            rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    # Every row gets every column (None where it has none): the features decide the types.
    complete = [{c: row.get(c) for c in columns} for row in rows]
    return datasets.Dataset.from_list(complete, features=features_for(columns))
