"""Where benchmark rows go: under their table in docs/benchmarks.md, above a marker line.

Each table ends with ``<!-- bench/NAME --record adds its rows above this line -->``; a script
run with ``--record`` inserts its rows there, so every table keeps its history in order.
"""

from __future__ import annotations

from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def marker(name: str) -> str:
    return f"<!-- bench/{name} --record adds its rows above this line -->"


def record(name: str, rows: list[str]) -> None:
    """Insert table ``rows`` (without newlines) above ``name``'s marker, or append them."""
    text = DOCS.read_text(encoding="utf-8")
    at = text.find(marker(name))
    if at < 0:
        text += "\n"
        at = len(text)
    block = "".join(row.rstrip("\n") + "\n" for row in rows)
    DOCS.write_text(text[:at] + block + text[at:], encoding="utf-8")
    print(f"recorded {len(rows)} row(s) in {DOCS}")
