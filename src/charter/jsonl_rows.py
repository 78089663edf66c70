"""Reading JSONL files people hand to Charter: numbered rows, gzip, limits, one reason per bad row.

Shared by every reader of user files (prompts, pairs, evaluation data): a line over
:data:`MAX_LINE_BYTES` is skipped, not held; a BOM, bad UTF-8, bad JSON or a number too long to
read gives a :class:`BadRow` that says why, on one line, with its line number.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from charter.errors import CharterError

MAX_LINE_BYTES = 8 * 1024 * 1024
READ_ERRORS = (OSError, EOFError, zlib.error)


class BadRow(Exception):
    """A row that cannot become a prompt; ``str()`` says why, on one line."""

    def __init__(self, message: str) -> None:
        # A reason can quote the row (its keys), which may hold newlines.
        super().__init__(" ".join(message.split()))


def open_binary(path: Path) -> IO[bytes]:
    try:
        if path.suffix.lower() == ".gz":
            return gzip.open(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as err:
        raise CharterError(f"{path}: cannot read ({err.strerror})") from None


def read_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Numbered JSON values of a JSONL file (``.gz`` too); a :class:`BadRow` where one fails."""
    with open_binary(path) as f:
        for number, raw in read_lines(f, path):
            if raw is None:
                yield number, BadRow(f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            if not raw.strip():
                continue  # blank lines carry nothing; not worth an error
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)  # Windows editors start files with one
            try:
                text = raw.decode("utf-8")
                row = json.loads(text)
            except UnicodeDecodeError:
                yield number, BadRow("not UTF-8 text")
                continue
            except json.JSONDecodeError as err:
                yield number, BadRow(f"invalid JSON ({err.msg})")
                continue
            except RecursionError:
                yield number, BadRow("invalid JSON (nested too deeply)")
                continue
            except ValueError:  # an integer over Python's 4,300-digit limit
                yield number, BadRow("invalid JSON (a number too long to read)")
                continue
            yield number, row


def read_lines(f: IO[bytes], path: Path) -> Iterator[tuple[int, bytes | None]]:
    """Numbered lines; ``None`` for a line too long to hold (its rest is skipped)."""
    number = 0
    try:
        while True:
            raw = f.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    pass
                yield number, None
                continue
            yield number, raw
    except READ_ERRORS as err:
        raise CharterError(f"{path}:{number + 1}: cannot read ({err})") from None
