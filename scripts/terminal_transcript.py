"""Render a terminal recording (``script -q -c CMD FILE``) as the text the screen ends with.

A progress bar redraws in place, with carriage returns and cursor moves; a recording of a
command keeps every redraw. This replays the recording on a minimal screen (text, ``\\r``,
``\\n``, cursor up, erase line; colours and other control sequences dropped) and prints every
line the screen held, once, as a person scrolling back through the terminal would read it:

    script -q -c "charter demo --out runs/demo" /tmp/demo.typescript
    python scripts/terminal_transcript.py /tmp/demo.typescript > docs/demo-terminal.txt
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

CONTROL = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def render(text: str) -> list[str]:
    lines: list[list[str]] = [[]]
    row = col = 0
    at = 0
    for match in [*CONTROL.finditer(text), None]:
        end = match.start() if match else len(text)
        for char in text[at:end]:
            if char == "\n":
                row += 1
                col = 0
                while len(lines) <= row:
                    lines.append([])
            elif char == "\r":
                col = 0
            elif char >= " ":
                line = lines[row]
                line.extend(" " * (col - len(line) + 1) if col >= len(line) else "")
                line[col] = char
                col += 1
        if match is None:
            break
        at = match.end()
        argument, command = match.group(1) or "", match.group(2)
        if command == "A":  # cursor up
            row = max(0, row - int(argument or 1))
        elif command == "K":  # erase the line (rich: 2K)
            lines[row] = [] if argument in ("", "2") else lines[row][:col]
        elif command == "G":  # cursor to column
            col = int(argument or 1) - 1
    return ["".join(line).rstrip() for line in lines]


def main() -> None:
    text = Path(sys.argv[1]).read_bytes().decode("utf-8", errors="replace")  # keeps each \r
    shown = [line for line in render(text) if not line.startswith(("Script started on ",
                                                                 "Script done on "))]  # fmt: skip
    while shown and not shown[-1]:
        shown.pop()
    print("\n".join(shown))


if __name__ == "__main__":
    main()
