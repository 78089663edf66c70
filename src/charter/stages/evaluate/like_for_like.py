"""Before vs after, like for like: what else than the model differs between compared models.

An evaluation's differences mean something only when the models were asked and judged the
same way. :func:`comparison_warnings` names what breaks that:

- a judge that is one of the models it judges (it grades its own answers);
- answers generated with different decoding settings or seeds (answers carried over from
  another run, such as a pipeline's baseline stage, keep the settings they were made with);
  a ``MODEL+revise`` answer's ``revision`` settings are the loop's, the thing compared;
- models run at different precision: a GGUF file's type (``general.file_type`` in its
  header), else a quantisation tag in the model's file name (``Q4_K_M``, ``f16``).

``charter evaluate`` logs each warning, stores it as ``warnings`` in ``results.json`` and the
manifest, prints it under the results table, and the report shows it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from charter.errors import CharterError
from charter.records import Answer, canonical_json

# llama.cpp's LlamaFileType (gguf-py's constants), the types a GGUF file is usually made in.
GGUF_FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 32: "BF16",
}  # fmt: skip
_QUANT_TAG = re.compile(r"(?<![a-z0-9])(i?q\d+(?:_[a-z0-9]+)*|bf16|fp?16|fp?32)(?![a-z0-9])", re.I)
# GGUF value types: struct formats of the scalars; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q",
            12: "d"}  # fmt: skip
_MAX_KEYS = 4096  # a header with more keys than this is not one to trust


def comparison_warnings(
    models: Sequence[str], answers: Mapping[tuple[str, str], Answer], judges: Iterable[str]
) -> list[str]:
    """Every reason the models' scores in one evaluation are not like for like.

    Args:
        models: The models compared, as the evaluation names them.
        answers: Their answers by (model, question id).
        judges: The LLM judges the evaluation asked.
    """
    warnings = [
        f"the judge {judge} is also a model being judged: it grades its own answers"
        for judge in dict.fromkeys(judges)
        if judge in models
    ]
    if len(models) > 1:
        warnings += _decoding_warnings(models, answers)
        warnings += _precision_warnings(models)
    return warnings


def _decoding_warnings(
    models: Sequence[str], answers: Mapping[tuple[str, str], Answer]
) -> list[str]:
    settings: dict[str, set[str]] = {m: set() for m in models}
    unrecorded: set[str] = set()
    for (model, _question), answer in answers.items():
        if model not in settings or answer.logprobs:  # scored answers decode nothing
            continue
        if answer.decoding is None:
            unrecorded.add(model)
        else:  # how the model was asked; a loop's revision settings are the loop's own
            asked = {k: v for k, v in answer.decoding.items() if k != "revision"}
            settings[model].add(canonical_json(asked))
    warnings = [
        f"{model}'s answers carry no decoding settings (written by an older Charter): nothing "
        "shows they were generated like the other models'"
        for model in models
        if model in unrecorded
    ]
    if len(set().union(*settings.values())) > 1:
        shown = "; ".join(f"{m}: {' | '.join(sorted(s))}" for m, s in settings.items() if s)
        warnings.append(
            f"the models' answers were generated with different decoding settings or seeds "
            f"({shown}): their differences mix the model with the decoding"
        )
    return warnings


def _precision_warnings(models: Sequence[str]) -> list[str]:
    known = {m: p for m in models if (p := precision(m)) is not None}
    if len(set(known.values())) < 2:
        return []
    shown = ", ".join(f"{m} is {p}" for m, p in known.items())
    return [
        f"the models run at different precision ({shown}): part of any difference is the "
        "quantisation; compare exports of the same type"
    ]


def precision(model: str) -> str | None:
    """The precision a model runs at (``Q4_K_M``, ``F16``…), or None when it cannot be told."""
    provider, _, name = model.partition("/")
    path: Path | None = Path(name) if name.endswith(".gguf") else None
    if provider == "local":
        from charter.models import resolve_gguf

        try:
            path = resolve_gguf(name)
        except CharterError:
            path = None
    if path is not None and path.is_file():
        file_type = gguf_file_type(path)
        if file_type is not None:
            return GGUF_FILE_TYPES.get(file_type, f"GGUF file type {file_type}")
    tags = _QUANT_TAG.findall(Path(name).name)
    return tags[-1].upper().replace("FP", "F") if tags else None


def gguf_file_type(path: Path) -> int | None:
    """``general.file_type`` from a GGUF file's header (the keys before it only are read)."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                return None
            version, _tensors, keys = struct.unpack("<IQQ", f.read(20))
            if version < 2:  # version 1 counted in 32 bits; no current tool writes it
                return None
            for _ in range(min(keys, _MAX_KEYS)):
                key = f.read(_unpack(f, "Q")).decode("utf-8")
                kind = _unpack(f, "I")
                if key == "general.file_type" and kind in _SCALARS:
                    return int(_unpack(f, _SCALARS[kind]))
                _skip(f, kind)
    except (OSError, struct.error, UnicodeDecodeError, ValueError):
        return None
    return None


def _unpack(f: IO[bytes], fmt: str) -> Any:
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(size))[0]


def _skip(f: IO[bytes], kind: int) -> None:
    """Move past one value of GGUF type ``kind``."""
    if kind in _SCALARS:
        f.seek(struct.calcsize("<" + _SCALARS[kind]), 1)
    elif kind == 8:
        f.seek(_unpack(f, "Q"), 1)
    elif kind == 9:
        item, count = _unpack(f, "I"), _unpack(f, "Q")
        if item in _SCALARS:
            f.seek(count * struct.calcsize("<" + _SCALARS[item]), 1)
        else:
            for _ in range(count):
                _skip(f, item)
    else:
        raise ValueError(f"unknown GGUF value type {kind}")
