"""Prompt sets: read prompts from JSONL, CSV or hh-rlhf transcripts, streaming.

Accepted rows:

- JSONL ``{"prompt": "..."}`` — one user turn;
- JSONL ``{"messages": [{"role": ..., "content": ...}, ...]}`` (OpenAI/TRL chat format),
  ending with a user turn; earlier turns are context;
- JSONL ``{"chosen": "\\n\\nHuman: … \\n\\nAssistant: …"}`` (Anthropic hh-rlhf): **every human
  turn becomes one prompt**, with the turns before it as context;
- CSV with a prompt column (``prompt`` unless ``prompt_column`` names another).

A bad row is reported with its file and line; ``on_bad_row="skip"`` logs and skips it.
Bundled sets are addressable by name: ``demo-redteam``, ``demo-helpful``, ``demo-hh``.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from charter import bundled, jsonl_rows
from charter.errors import CharterError
from charter.jsonl_rows import BadRow, open_binary, read_json_rows
from charter.records import Instruction, Message, Prompt, Role

log = logging.getLogger(__name__)

Format = Literal["auto", "jsonl", "csv", "hh"]
OnBadRow = Literal["error", "skip"]

ROLES = ("system", "user", "assistant")
# hh-rlhf turn markers. Split only on these, never on a bare ": " inside a turn.
_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")
# What reading a damaged file raises (gzip: BadGzipFile is an OSError, EOFError when cut short,
# zlib.error for a damaged deflate stream).


@dataclass
class ReadStats:
    """What reading a prompt set saw: rows, prompts made, and rows skipped (with reasons)."""

    rows: int = 0
    prompts: int = 0
    skipped: list[str] = field(default_factory=list)


@dataclass
class PromptSet:
    """Prompt files as one re-readable stream (stages read it twice: count, then run)."""

    sources: list[str]
    fmt: Format = "auto"
    prompt_column: str | None = None
    on_bad_row: OnBadRow = "error"
    limit: int | None = None
    stats: ReadStats = field(default_factory=ReadStats)

    def __post_init__(self) -> None:
        self.paths = [resolve_prompts(s) for s in self.sources]

    def __call__(self) -> Iterator[Prompt]:
        """A fresh pass over the prompts; ``stats`` describes the latest pass."""
        self.stats = ReadStats()
        count = 0
        for path in self.paths:
            for prompt in load_prompts(path, fmt=self.fmt, prompt_column=self.prompt_column,
                                       on_bad_row=self.on_bad_row, stats=self.stats,
                                       hints=True):  # fmt: skip
                if self.limit is not None and count >= self.limit:
                    return
                count += 1
                yield prompt

    def inputs(self) -> list[dict[str, str]]:
        """Name and sha256 of every file, for the manifest."""
        from charter.runs import file_sha256

        return [{"name": p.name, "sha256": file_sha256(p), "format": self.fmt} for p in self.paths]


def bundled_prompt_sets() -> list[str]:
    return bundled.bundled_names("data", ".jsonl")


def resolve_prompts(source: str | Path) -> Path:
    """A prompt-set path: an existing file, or the file of a bundled set's name."""
    return bundled.resolve_bundled(source, "data", ".jsonl", ("prompt", "prompt set"))


def load_prompts(
    source: str | Path,
    *,
    fmt: Format = "auto",
    prompt_column: str | None = None,
    on_bad_row: OnBadRow = "error",
    stats: ReadStats | None = None,
    hints: bool = False,
) -> Iterator[Prompt]:
    """Stream the prompts of one file (see the module docstring for the formats).

    ``hints``: errors name the options that fix them (--on-bad-row, --prompt-column), for
    the commands that have those options (revise, label); other readers (evaluate, run)
    do not suggest options they lack. A file with no prompt at all is an error.
    """
    path = resolve_prompts(source)
    stats = stats if stats is not None else ReadStats()
    kind = _detect(path) if fmt == "auto" else fmt
    if kind == "csv":
        rows = _csv_rows(path, prompt_column or "prompt", hint=hints and prompt_column is None)
    elif prompt_column is not None:
        raise CharterError(f"--prompt-column only applies to CSV files, and {path} is not one")
    else:
        rows = _jsonl_rows(path, hh=kind == "hh")
    fix = "fix the row or pass --on-bad-row skip" if hints else "fix or remove the row"
    before, skipped = stats.prompts, len(stats.skipped)
    for result in good_rows(rows, path, on_bad_row, stats, fix=fix):
        for prompt in result:
            stats.prompts += 1
            yield prompt
    if stats.prompts == before:
        bad = len(stats.skipped) - skipped
        why = ("it has no rows" if not bad else "its only row was bad and skipped" if bad == 1
               else f"all {bad} of its rows were bad and skipped")  # fmt: skip
        raise CharterError(f"no prompts in {path}: {why}; give a file with at least one prompt")


R = TypeVar("R")


def good_rows(
    rows: Iterable[tuple[int, R | BadRow]],
    path: Path,
    on_bad_row: OnBadRow,
    stats: ReadStats,
    fix: str = "fix the row or pass --on-bad-row skip",
) -> Iterator[R]:
    """The rows that parsed; a bad one stops with its line and ``fix`` (or, with "skip", is
    counted)."""
    for line, result in rows:
        stats.rows += 1
        if isinstance(result, BadRow):
            if on_bad_row == "error":
                raise CharterError(f"{path}:{line}: {result}; {fix}")
            stats.skipped.append(f"{path}:{line}: {result}")
            log.warning("skipped %s:%d: %s", path, line, result)
            continue
        yield result


def _detect(path: Path) -> Format:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] in (".csv", ".tsv"):
        return "csv"
    return "jsonl"


Row = tuple[int, "list[Prompt] | BadRow"]


def _jsonl_rows(path: Path, *, hh: bool) -> Iterator[Row]:
    for number, row in read_json_rows(path):
        if isinstance(row, BadRow):
            yield number, row
            continue
        try:
            yield number, _prompts_from_row(row, f"{path}:{number}", hh=hh)
        except BadRow as bad:
            yield number, bad
        except UnicodeEncodeError:  # hashing the id met a JSON escape such as "\ud800"
            yield number, BadRow("text with a lone surrogate escape (\\ud800-\\udfff)")


def _prompts_from_row(row: Any, source: str, *, hh: bool) -> list[Prompt]:
    if not isinstance(row, dict):
        raise BadRow(f"expected a JSON object, got {type(row).__name__}")
    prompts = _prompts_of_row(row, source, hh=hh)
    if "instruction_id_list" in row or "kwargs" in row:
        checks = _instructions(row.get("instruction_id_list"), row.get("kwargs"))
        return [p.model_copy(update={"instructions": checks}) for p in prompts]
    return prompts


def _instructions(ids: Any, kwargs: Any) -> tuple[Instruction, ...]:
    """IFEval's columns as :class:`Instruction` records; a malformed pair is a bad row."""
    from charter.stages.evaluate.ifeval import CHECKS

    if not (isinstance(ids, list) and isinstance(kwargs, list) and len(ids) == len(kwargs)):
        raise BadRow("'instruction_id_list' and 'kwargs' must be lists of the same length")
    out = []
    for i, (name, arguments) in enumerate(zip(ids, kwargs, strict=True)):
        if name not in CHECKS:
            raise BadRow(f"instruction_id_list[{i}] {name!r} is not an instruction Charter "
                         f"checks; use one of {', '.join(sorted(CHECKS))}")  # fmt: skip
        if arguments is not None and not isinstance(arguments, dict):
            raise BadRow(f"kwargs[{i}] must be an object of the instruction's arguments")
        clean = {k: v for k, v in (arguments or {}).items() if v is not None}
        out.append(Instruction(id=name, kwargs=clean))
    return tuple(out)


def _prompts_of_row(row: dict[str, Any], source: str, *, hh: bool) -> list[Prompt]:
    if hh or ("messages" not in row and "prompt" not in row and "chosen" in row):
        transcript = row.get("chosen", row.get("prompt", row.get("transcript")))
        if not isinstance(transcript, str):
            raise BadRow("hh-rlhf rows need a 'chosen' transcript string")
        return prompts_from_transcript(transcript, source)
    if "messages" in row:
        return [Prompt.from_messages(parse_messages(row["messages"], "messages"), source)]
    if "prompt" in row:
        prompt = row["prompt"]
        if isinstance(prompt, list):  # TRL conversational prompt
            return [Prompt.from_messages(parse_messages(prompt, "prompt"), source)]
        if not isinstance(prompt, str):
            raise BadRow(
                f"'prompt' must be a string or a list of messages, got {type(prompt).__name__}"
            )
        if prompt.startswith(("\n\nHuman:", "Human:")):
            return prompts_from_transcript(prompt, source)
        if not prompt.strip():
            raise BadRow("'prompt' is empty")
        return [Prompt.from_messages([Message(role="user", content=prompt)], source)]
    if "turns" in row:  # MT-Bench: the first turn (later turns follow up on the answer)
        turns = row["turns"]
        first = turns[0] if isinstance(turns, list) and turns else None
        if not isinstance(first, str) or not first.strip():
            raise BadRow("'turns' must be a non-empty list of strings")
        return [Prompt.from_messages([Message(role="user", content=first)], source)]
    raise BadRow(
        "no 'prompt', 'messages', 'chosen' or 'turns' field "
        f"(found: {', '.join(sorted(row)) or 'none'})"
    )


def parse_messages(value: Any, name: str, *, last: Role = "user") -> list[Message]:
    """Validate a list of chat messages whose final turn is from ``last``."""
    if not isinstance(value, list) or not value:
        raise BadRow(f"'{name}' must be a non-empty list of {{role, content}} objects")
    messages = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise BadRow(f"{name}[{i}] must be an object with 'role' and 'content'")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES:
            raise BadRow(f"{name}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise BadRow(f"{name}[{i}].content must be a string")
        messages.append(Message.model_validate({"role": role, "content": content}))
    if messages[-1].role != last:
        what = "a user turn (the prompt to answer)" if last == "user" else f"an {last} turn"
        raise BadRow(f"the last of '{name}' must be {what}")
    if last == "user" and not messages[-1].content.strip():
        raise BadRow(f"the last of '{name}' is an empty user turn")
    return messages


def parse_transcript(text: str) -> list[Message]:
    """Turns of an hh-rlhf transcript (``\\n\\nHuman: … \\n\\nAssistant: …``)."""
    if text.startswith(("Human:", "Assistant:")):
        text = "\n\n" + text
    parts = _TURN.split(text)
    if parts[0].strip():
        raise BadRow("transcript must start with '\\n\\nHuman: '")
    turns = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=True):
        role: Role = "user" if speaker == "Human" else "assistant"
        turns.append(Message(role=role, content=content.strip()))
    if not turns or turns[0].role != "user":
        raise BadRow("transcript has no 'Human:' turn at its start")
    return turns


def prompts_from_transcript(text: str, source: str) -> list[Prompt]:
    """One prompt per human turn, each with every earlier turn as context."""
    turns = parse_transcript(text)
    prompts: list[Prompt] = []
    for i, turn in enumerate(turns):
        if turn.role != "user":
            continue
        if not turn.content:
            raise BadRow(f"human turn {len(prompts) + 1} is empty")
        prompts.append(Prompt.from_messages(turns[: i + 1], f"{source}#turn{len(prompts) + 1}"))
    return prompts


def _csv_rows(path: Path, column: str, *, hint: bool) -> Iterator[Row]:
    csv.field_size_limit(jsonl_rows.MAX_LINE_BYTES)
    with open_binary(path) as raw:
        # utf-8-sig: a byte order mark (Excel writes one) is not part of the first column's name
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
        reader = csv.reader(text, delimiter="\t" if ".tsv" in path.suffixes else ",")
        try:
            header = next(reader, None)
        except (UnicodeDecodeError, csv.Error, *jsonl_rows.READ_ERRORS) as err:
            raise CharterError(f"{path}:1: cannot read the CSV header ({err})") from None
        if header is None:
            return
        if column not in header:
            fix = "; name the prompt column with --prompt-column" if hint else ""
            raise CharterError(
                f"{path}:1: no column '{column}' (columns: {', '.join(header)}){fix}"
            )
        index = header.index(column)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                yield line, BadRow("not UTF-8 text")
                return  # the decoder cannot resynchronise; stop at the first bad byte
            except csv.Error as err:
                yield line, BadRow(f"malformed CSV ({err})")
                continue
            except jsonl_rows.READ_ERRORS as err:
                raise CharterError(f"{path}:{line}: cannot read ({err})") from None
            yield line, _csv_prompt(cells, index, column, f"{path}:{line}")


def _csv_prompt(cells: list[str], index: int, column: str, source: str) -> list[Prompt] | BadRow:
    if not cells:
        return []
    if index >= len(cells) or not cells[index].strip():
        return BadRow(f"column '{column}' is empty")
    return [Prompt.from_messages([Message(role="user", content=cells[index])], source)]
