"""Progress bars for the long steps: rich on a terminal, plain lines in a log file.

On a terminal a stage's bar redraws in place: what it does, the bar, done of total in its
unit, the rate, the time left, and the step's own figures (the loss, labels kept). Bars that
are open at once (a training bar inside a stage's bar) share one rich display, and rich
keeps lines printed meanwhile above it; rich honours ``NO_COLOR`` and ``TERM=dumb``.
Written to a pipe or a file (``charter run … 2> run.log``, CI), a redrawn bar would be one
endless line of control codes, so there a bar is a plain line when it starts, at most once a
minute, and when it ends.

The interface is the part of tqdm's that Charter uses (``update``, ``n``, ``set_postfix``,
``close``, a context manager), so a stage does not know which of the two it writes to.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

LOG_INTERVAL_S = 60.0  # a bar's lines in a log file: at most one a minute
MAX_DESC = 40  # characters of a bar's description

_display: Any = None  # the rich Progress shared by the bars open on a terminal
_open = 0


class Bar:
    """One step's progress: ``total`` units of ``unit`` (None: not known), ``initial`` done."""

    def __init__(self, *, total: float | None = None, initial: float = 0, desc: str = "",
                 unit: str = "it", unit_scale: bool = False, disable: bool = False,
                 **_: Any) -> None:  # fmt: skip
        self.n, self.total, self.desc, self.unit = initial, total, _short(desc), unit
        self.unit_scale, self.postfix = unit_scale, ""
        self._began, self._initial, self._logged = time.monotonic(), initial, -math.inf
        self._task: Any = None
        self._closed = disable
        if disable:
            return
        if sys.stderr.isatty():
            self._task = _shared().add_task(self.desc, total=total, completed=initial, postfix="",
                                            unit=unit, scaled=unit_scale)  # fmt: skip
        else:
            self._line()

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._closed:
            return
        if self._task is not None:
            _display.update(self._task, completed=self.n)
        elif time.monotonic() - self._logged >= LOG_INTERVAL_S:
            self._line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        """Figures shown after the bar, e.g. ``loss=0.693``."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self._task is not None and not self._closed:
            _display.update(self._task, postfix=self.postfix, refresh=refresh)

    def close(self) -> None:
        global _display, _open
        if self._closed:
            return
        self._closed = True
        if self._task is None:
            self._line()
            return
        _open -= 1
        if _open:  # a bar inside another's step (training inside a stage) leaves no line
            _display.remove_task(self._task)
            return
        _display.update(self._task, completed=self.n, refresh=True)
        _display.stop()  # the last state stays on the screen
        _display = None

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _line(self) -> None:
        """The bar as one plain line on stderr."""
        self._logged = time.monotonic()
        elapsed = self._logged - self._began
        rate = (self.n - self._initial) / elapsed if elapsed > 0 else 0.0
        done = _amount(self.n, self.unit_scale)
        if self.total:
            share = f"{100 * self.n / self.total:3.0f}% "
            done += f"/{_amount(self.total, self.unit_scale)}"
            left = (self.total - self.n) / rate if rate > 0 else math.nan
        else:
            share, left = "", math.nan
        unit = self.unit if self.unit_scale else f" {self.unit}"
        timing = f"{_clock(elapsed)}<{_clock(left)}, {_rate(rate, self.unit, self.unit_scale)}"
        extra = f", {self.postfix}" if self.postfix else ""
        sys.stderr.write(f"{self.desc}: {share}{done}{unit} [{timing}{extra}]\n")
        sys.stderr.flush()


def progress_bar(**options: Any) -> Bar:
    """A bar with ``options`` (desc, total, initial, unit, unit_scale, disable)."""
    return Bar(**options)


def _shared() -> Any:
    """The rich display the open bars share, started with the first of them."""
    global _display, _open
    if _display is None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
        from rich.table import Column

        _display = Progress(  # the figures never wrap; the bar takes what width is left
            TextColumn("{task.description}", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=None), *_columns(), TimeRemainingColumn(),
            TextColumn("{task.fields[postfix]}", table_column=Column(no_wrap=True)),
            console=Console(stderr=True),
        )  # fmt: skip
        _display.start()
    _open += 1
    return _display


def _short(desc: str) -> str:
    """A description fit for one line: a long one keeps its first word (what the step does)
    and the end of the rest (a model's path: its folder and file)."""
    if len(desc) <= MAX_DESC:
        return desc
    verb = desc.split(" ", 1)[0][: MAX_DESC // 2]
    return f"{verb} …{desc[-(MAX_DESC - len(verb) - 2) :]}"


def _amount(value: float, scaled: bool) -> str:
    """A count; with ``scaled``, in k, M, G (bytes of a model file)."""
    if not scaled:
        return f"{value:.2f}" if 0 < value < 10 and value != int(value) else f"{value:.0f}"
    for prefix in ("", "k", "M", "G"):
        if abs(value) < 1000 or prefix == "G":
            return f"{value:.1f}{prefix}"
        value /= 1000
    raise AssertionError("unreachable")


def _rate(per_second: float | None, unit: str, scaled: bool) -> str:
    """Units per second, or seconds per unit when a unit takes longer (a training step)."""
    if not per_second:
        return f"?{'' if scaled else ' '}{unit}/s"
    if per_second < 1 and not scaled:
        return f"{1 / per_second:.1f} s/{unit}"
    return f"{_amount(per_second, scaled)}{'' if scaled else ' '}{unit}/s"


def _clock(seconds: float) -> str:
    if math.isnan(seconds) or math.isinf(seconds):
        return "?"
    minutes, s = divmod(int(seconds), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes:02d}:{s:02d}"
    )


def _columns() -> list[Any]:
    """Done of total and the rate, each in the task's own unit (rich's are for bytes)."""
    from rich.progress import ProgressColumn
    from rich.table import Column
    from rich.text import Text

    class Done(ProgressColumn):
        def render(self, task: Any) -> Text:
            scaled, unit = task.fields["scaled"], task.fields["unit"]
            total = "?" if task.total is None else _amount(task.total, scaled)
            return Text(f"{_amount(task.completed, scaled)}/{total}{'' if scaled else ' '}{unit}")

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(_rate(speed, task.fields["unit"], task.fields["scaled"]))

    return [Done(table_column=Column(no_wrap=True)), Rate(table_column=Column(no_wrap=True))]
