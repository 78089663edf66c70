"""Long-form constitutions as people write them: Markdown or plain text, read into clauses.

A published constitution is prose under headings, with numbered and bulleted lists. This
module reads such a file into :class:`Clause` records, each with the section it sits in and
the lines it spans, so that everything compiled from it (:mod:`charter.stages.compile`) can
point back to its source.

What the reader understands:

- headings: Markdown ``#`` … ``######``, setext (a line underlined with ``===`` or ``---``),
  and plain-text headings (a short line without final punctuation, alone between blank lines);
- clauses: every paragraph and every list item (``-``, ``*``, ``+``, ``1.``, ``1)``, ``(a)``),
  continuation lines joined; a paragraph ending in ``:`` introduces the list after it, and
  each item of that list carries it as a prefix ("The assistant never: …");
- a section whose heading names hard constraints (or bright lines) holds hard constraints:
  its list items, and its paragraphs that forbid ("never", "must not", …);
- a section whose heading names a priority order gives the priorities, from its numbered
  list, in order (the words of each item before its first ``.``, ``:`` or dash);
- fenced code blocks and HTML comments are skipped.

A file that is not UTF-8 text, has a fence never closed, or holds no clause stops with the
line and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from charter.errors import CharterError

_ATX = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_SETEXT = re.compile(r"^(=+|-+)\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d{1,3}[.)]|\([a-zA-Z0-9]{1,3}\))\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")
HARD = re.compile(r"hard[- ]constraint|bright[- ]line", re.IGNORECASE)
PRIORITY = re.compile(r"priorit", re.IGNORECASE)
_PROHIBITION = re.compile(r"\b(never|must not|may not|do not|does not)\b", re.IGNORECASE)
MAX_PLAIN_HEADING = 80


@dataclass(frozen=True)
class Clause:
    """One paragraph or list item of a long-form constitution, and where it stands."""

    id: str  # the section's slug and the clause's number in it: "honesty-2"
    section: str  # the heading path: "Safety > Weapons"
    line: int  # 1-based, first line
    end: int  # last line
    text: str  # whitespace joined; an introducing "…:" paragraph first, for list items
    kind: Literal["clause", "hard", "priority"]


@dataclass(frozen=True)
class Spec:
    """A long-form constitution: its title, clauses in order, priorities, hard constraints."""

    path: Path
    title: str
    clauses: tuple[Clause, ...]
    priorities: tuple[str, ...]

    @property
    def hard_constraints(self) -> tuple[Clause, ...]:
        return tuple(c for c in self.clauses if c.kind == "hard")


def read_spec(path: Path) -> Spec:
    """Read a Markdown or plain-text constitution; a bad file stops with its line."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CharterError(f"{path}: cannot read ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise CharterError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise CharterError(f"{path}:{line}: a NUL byte; this is not a text file")
    return parse_spec(text, path)


def parse_spec(text: str, path: Path = Path("<text>")) -> Spec:
    """The clauses of ``text`` (see the module docstring); ``path`` names it in errors."""
    lines = _visible_lines(text.splitlines(), path)
    headings: list[tuple[int, str]] = []  # (level, title) of the sections we are in
    title = ""
    clauses: list[Clause] = []
    counts: dict[str, int] = {}
    priorities: list[str] = []
    intro = ""  # a "…:" paragraph that introduces the list after it
    i = 0

    def open_section(level: int, name: str) -> None:
        nonlocal title, intro
        while headings and headings[-1][0] >= level:
            headings.pop()
        headings.append((level, name))
        title = title or name
        intro = ""

    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if (atx := _ATX.match(line)) is not None:
            open_section(len(atx.group(1)), _inline(atx.group(2)))
            i += 1
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if _SETEXT.match(following) and not _ITEM.match(line):
            open_section(1 if following.strip().startswith("=") else 2, _inline(line))
            i += 2
            continue
        if _plain_heading(lines, i):
            open_section(3 if headings else 1, _inline(line))
            i += 1
            continue
        start = i
        item = _ITEM.match(line)
        body = [item.group(2) if item else line.strip()]
        i += 1
        while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
            body.append(lines[i].strip())
            i += 1
        joined = _inline(" ".join(body))
        if not item:
            intro = joined if joined.endswith(":") else ""
            if intro:
                continue  # it prefixes the list items that follow
        section = " > ".join(name for _, name in headings) or "(untitled)"
        current = headings[-1][1] if headings else ""
        kind: Literal["clause", "hard", "priority"] = "clause"
        if HARD.search(current) and (item or _PROHIBITION.search(joined)):
            kind = "hard"
        elif PRIORITY.search(current) and item:
            kind = "priority"
            priorities.append(_priority_name(joined))
        slug = _slug(current or "preamble")
        counts[slug] = counts.get(slug, 0) + 1
        text_ = f"{intro} {joined}" if item and intro else joined
        clauses.append(Clause(f"{slug}-{counts[slug]}", section, start + 1, i, text_, kind))
    if not clauses:
        raise CharterError(f"{path}: no clauses found; write the constitution as paragraphs or "
                           "list items under headings (Markdown or plain text)")  # fmt: skip
    return Spec(path, title or path.stem, tuple(clauses), tuple(priorities))


def _visible_lines(lines: list[str], path: Path) -> list[str]:
    """``lines`` with fenced code and HTML comments blanked (line numbers kept)."""
    out = list(lines)
    fence_at: int | None = None
    comment_at: int | None = None
    for n, line in enumerate(lines):
        if comment_at is None and _FENCE.match(line):
            fence_at = None if fence_at is not None else n
            out[n] = ""
        elif fence_at is not None:
            out[n] = ""
        elif comment_at is not None or "<!--" in line:
            if comment_at is None:
                comment_at = n
            if "-->" in line:
                comment_at = None
            out[n] = ""
    if fence_at is not None:
        raise CharterError(f"{path}:{fence_at + 1}: a code fence opened here is never closed; "
                           "close it with ``` on a line of its own")  # fmt: skip
    if comment_at is not None:
        raise CharterError(f"{path}:{comment_at + 1}: an HTML comment opened here is never "
                           "closed; end it with -->")  # fmt: skip
    return out


def _plain_heading(lines: list[str], i: int) -> bool:
    """A short line alone between blank lines, without final punctuation, not a list item."""
    line = lines[i].strip()
    before = lines[i - 1].strip() if i > 0 else ""
    after = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return (
        not before and not after and 0 < len(line) <= MAX_PLAIN_HEADING
        and line[-1] not in ".:;,!?" and not _ITEM.match(lines[i])
        and i + 1 < len(lines)
    )  # fmt: skip


def _starts_block(lines: list[str], i: int) -> bool:
    line = lines[i]
    following = lines[i + 1] if i + 1 < len(lines) else ""
    return bool(_ATX.match(line) or _ITEM.match(line) or _SETEXT.match(following))


def _inline(text: str) -> str:
    """Markdown emphasis, code marks and links reduced to their words."""
    text = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"(\*\*|__|\*|_|`)(\S(?:.*?\S)?)\1", r"\2", text)
    return " ".join(text.split())


def _priority_name(text: str) -> str:
    name = re.split(r"[.:;]|\s[-–—]\s", text, maxsplit=1)[0]
    return name.strip() or text


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:40].rstrip("-") or "section"
