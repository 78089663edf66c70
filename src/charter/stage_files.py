"""Reading a finished stage's JSON files (what the report reads, a round's reward.json) so that a
damaged or foreign file stops the command with one line naming it, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from charter.errors import CharterError


class EstimateShape(BaseModel):
    """An estimate as stage files store it (``Estimate.as_dict``): value, 95% interval, n, and
    for a paired difference of yes/no outcomes the exact McNemar p-value."""

    value: float
    low: float
    high: float
    n: int
    p_value: float | None = None


def read_stage_json(folder: Path | None, name: str, shape: type[BaseModel] | None = None) -> Any:
    """A stage's JSON object (None when it has no such file), with ``shape``'s defaults filled
    in; a damaged file, or one without the fields ``shape`` needs, stops the command with one
    line that names it (the report, the rounds table)."""
    if folder is None or not (folder / name).is_file():
        return None
    path = folder / name
    try:
        data = json.loads(read_stage_text(path))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        if shape is not None:
            data |= shape.model_validate(data).model_dump()
    except ValidationError as err:
        from charter.yamlfile import first_error

        problem = first_error(err)[1]
    except ValueError as err:  # JSONDecodeError too
        problem = str(err)
    else:
        return data
    raise CharterError(f"{path}: not a file charter wrote ({problem}); rerun the stage that "
                       "writes it, or move the file away")  # fmt: skip


def read_stage_text(path: Path) -> str:
    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CharterError(f"{path}: cannot be read as UTF-8 text ({err}); rerun the stage "
                           "that writes it, or move the file away") from None  # fmt: skip
