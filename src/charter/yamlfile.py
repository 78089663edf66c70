"""Safe YAML loading that remembers where every value came from.

PyYAML's safe loader accepts anchors and aliases (the "billion laughs" bomb) and silently
keeps the last of duplicated keys. Charter's files need neither, so both are errors here,
and every value keeps its line so validation errors can point at it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from charter.errors import CharterError, plain_words

Location = tuple[str | int, ...]

MAX_BYTES = 4 * 1024 * 1024  # a constitution is a few KB; anything this big is a mistake
# Charter's files nest 4 levels deep. Deeper files are refused before they are composed:
# libyaml's composer recurses in C (a segfault at 30,000 levels: `- ` × 30,000, a 60 KB file)
# and its scanner slows quadratically with flow depth (`[` × 40,000 takes 11 s).
MAX_DEPTH = 64


# libyaml's parser when PyYAML has it (every PyPI wheel does): ~20× faster than the pure-Python
# one, which costs ~45 ms on the default constitution at the start of every command.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ALIASES = "YAML anchors and aliases (&name, *name) are not allowed"


class _Problem(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_yaml(path: Path, text: str | None = None) -> tuple[Any, dict[Location, int]]:
    """Parse a YAML file; return the data and a map from location to 1-based line."""
    if text is None:
        try:
            raw = path.read_bytes()
        except OSError as err:
            raise CharterError(f"{path}: cannot read ({err.strerror})") from None
        if len(raw) > MAX_BYTES:
            raise CharterError(f"{path}: file is {len(raw)} bytes, over the {MAX_BYTES} limit")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise CharterError(f"{path}:{line}: not UTF-8 text; save the file as UTF-8") from None
    loader = _Loader(text)
    try:
        _check_depth(text)
        node = loader.get_single_node()
        lines: dict[Location, int] = {}
        data = _construct(loader, node, (), lines, set()) if node is not None else None
    except _Problem as problem:
        raise CharterError(f"{path}:{problem.line}: {problem.message}") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = err.problem or err.context or "invalid YAML"
        raise CharterError(f"{path}:{line}: invalid YAML: {reason}") from None
    except yaml.YAMLError as err:
        raise CharterError(f"{path}: invalid YAML: {err}") from None
    finally:
        loader.dispose()
    return data, lines


def _check_depth(text: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH, reading parser events (flat, and stops early)."""
    loader = _Loader(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    line = event.start_mark.line + 1 if event.start_mark else 1
                    raise _Problem(line, f"nested more than {MAX_DEPTH} levels deep")
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _construct(
    loader: Any, node: Any, loc: Location, lines: dict[Location, int], seen: set[int]
) -> Any:
    # The composer turns an alias into the anchored node itself, so a node met twice is an
    # alias: refused at once, before a "billion laughs" document can expand.
    if id(node) in seen:
        raise _Problem(node.start_mark.line + 1, f"{ALIASES} (the value here is reused)")
    seen.add(id(node))
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Problem(key_node.start_mark.line + 1, "mapping keys must be plain strings")
            key = str(_scalar(loader, key_node))
            if key in result:
                raise _Problem(key_node.start_mark.line + 1, f"duplicate key '{key}'")
            result[key] = _construct(loader, value_node, (*loc, key), lines, seen)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(loader, item, (*loc, i), lines, seen) for i, item in enumerate(node.value)
        ]
    return _scalar(loader, node)


def _scalar(loader: Any, node: Any) -> Any:
    try:
        return loader.construct_object(node)
    except (ValueError, TypeError, AttributeError, OverflowError):
        # PyYAML's scalar constructors raise plain errors for values their pattern admits:
        # 2001-02-30 (ValueError), a 5,000-digit int, `!!int abc`, `!!timestamp x` (AttributeError).
        kind = str(node.tag).rsplit(":", 1)[-1]
        value = node.value if len(node.value) <= 40 else node.value[:40] + "…"
        problem = f"{value!r} is not a valid {kind}; quote it to keep it as text"
        raise _Problem(node.start_mark.line + 1, problem) from None


def line_of(lines: dict[Location, int], loc: Location) -> int:
    """The line of ``loc`` or of its nearest enclosing value that exists in the file."""
    while loc not in lines and loc:
        loc = loc[:-1]
    return lines.get(loc, 1)


def first_error(err: ValidationError) -> tuple[Location, str]:
    """A config's first validation error: its location, and "field.path: message"."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "config"
    return loc, f"{where}: {plain_words(first)}"
