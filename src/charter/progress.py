"""Progress bars for the long steps (tqdm), readable on a terminal and in a log file alike.

On a terminal a bar redraws in place with its rate and ETA. Written to a pipe or a file
(``charter run … 2> run.log``, CI), a redrawn bar is one endless line of carriage returns,
so there it becomes a plain line at most once a minute, and one when it ends. No colour is
used anywhere, so ``NO_COLOR`` has nothing to turn off.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 60.0  # a bar's lines in a log file: at most one a minute


class _Lines:
    """A file for tqdm off a terminal: each redraw becomes its own line."""

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            sys.stderr.write(line + "\n")

    def flush(self) -> None:
        sys.stderr.flush()


def progress_bar(**options: Any) -> Any:
    """A tqdm bar with ``options`` (desc, total, unit, disable …), suited to where it is shown."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        options.setdefault("dynamic_ncols", True)
    else:
        options.setdefault("file", _Lines())
        options.setdefault("mininterval", LOG_INTERVAL_S)
        options.setdefault("ncols", 100)
    return tqdm(**options)
