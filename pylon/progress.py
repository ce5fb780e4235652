"""Progress of long work, in a terminal and in log files alike.

In a terminal a rich bar is drawn; otherwise (sbatch, nohup, CI, output to a file) plain lines
``desc: n/total (pct%) rate/s, ETA m:ss`` are printed at a steady interval (every
``PYLON_PROGRESS_INTERVAL`` seconds, default 30, or every 5 % of the total, whichever comes first).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO, TypeVar

T = TypeVar("T")

INTERVAL_S = 30.0
FRACTION = 0.05
ENV_VAR = "PYLON_PROGRESS"  # "auto" (default), "bar", "lines" or "off"
INTERVAL_VAR = "PYLON_PROGRESS_INTERVAL"  # seconds between plain lines (default INTERVAL_S)


def progress_mode(stream: TextIO, enabled: bool = True) -> str:
    """How progress is shown on ``stream``.

    Args:
        stream: where progress goes.
        enabled: ``False`` means no progress at all.

    Returns:
        ``"off"`` when disabled; else ``PYLON_PROGRESS`` when it is ``bar``, ``lines`` or
        ``off``; else ``"bar"`` when ``stream.isatty()`` and ``"lines"`` otherwise.
    """
    if not enabled:
        return "off"
    choice = os.environ.get(ENV_VAR, "auto").lower()
    if choice in ("bar", "lines", "off"):
        return choice
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def interval_s() -> float:
    """Seconds between plain lines: ``PYLON_PROGRESS_INTERVAL`` if set, else ``INTERVAL_S``.

    Returns:
        The interval; ``ValueError`` when the variable is not a number of seconds.
    """
    value = os.environ.get(INTERVAL_VAR, "").strip()
    try:
        return float(value) if value else INTERVAL_S
    except ValueError:
        raise ValueError(f"{INTERVAL_VAR}={value!r}: expected seconds, e.g. 30") from None


def format_duration(seconds: float) -> str:
    """``75.2`` -> ``"1:15"``; ``3725`` -> ``"1:02:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Reports ``n`` of ``total`` units done; use as a context manager and call :meth:`advance`.

    Args:
        description: what is being done, e.g. ``"caching nih14 train"``.
        total: the number of units (``None`` when unknown: no percentage or ETA).
        unit: the unit's name in the rate (``"img"``).
        enabled: ``False`` prints nothing at all.
        interval: seconds between plain lines (default :func:`interval_s`).
        fraction: also one line every ``fraction`` of ``total`` (``None``: by time only).
        stream: where plain lines go (default ``sys.stderr``).
    """

    def __init__(
        self,
        description: str,
        total: int | None = None,
        *,
        unit: str = "img",
        enabled: bool = True,
        interval: float | None = None,
        fraction: float | None = FRACTION,
        stream: TextIO | None = None,
    ):
        self.description = description
        self.total = total
        self.unit = unit
        self.interval = interval_s() if interval is None else interval
        self.fraction = fraction
        self.stream = stream or sys.stderr
        self.mode = progress_mode(self.stream, enabled)
        self.n = 0
        self._bar = None
        self._task = None
        self._start = 0.0
        self._last_time = 0.0
        self._last_n = 0

    def __enter__(self) -> Progress:
        self._start = self._last_time = time.monotonic()
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units done."""
        self.n += n
        if self.mode == "bar":
            self._bar.update(self._task, advance=n)
        elif self.mode == "lines" and not (self.total and self.n >= self.total):
            # the final count is printed once, by finish()
            now = time.monotonic()
            step = max(1, int(self.total * self.fraction)) if self.total and self.fraction else None
            due = now - self._last_time >= self.interval
            if due or (step is not None and self.n - self._last_n >= step):
                self._line(now)

    def line(self) -> str:
        """The plain progress line for the current count."""
        elapsed = time.monotonic() - self._start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        text = f"{self.description}: {self.n}"
        if self.total:
            text += f"/{self.total} ({100 * self.n / self.total:.0f}%)"
        text += f", {rate:.1f} {self.unit}/s, elapsed {format_duration(elapsed)}"
        if self.total and rate > 0 and self.n < self.total:
            text += f", ETA {format_duration((self.total - self.n) / rate)}"
        return text

    def _line(self, now: float, note: str = "") -> None:
        print(self.line() + (f", {note}" if note else ""), file=self.stream, flush=True)
        self._last_time, self._last_n = now, self.n

    def finish(self, note: str = "") -> None:
        """Close the bar, or print the final count (plain lines) with ``note`` appended.

        Args:
            note: e.g. ``"train_loss 0.4123"``; with one, the final line is always printed.
        """
        if self.mode == "bar":
            self._bar.stop()
        elif self.mode == "lines" and (note or self.n != self._last_n or self.n == 0):
            self._line(time.monotonic(), note)

    def __exit__(self, *exc) -> None:
        self.finish()


def track(
    iterable: Iterable[T],
    total: int | None = None,
    description: str = "working",
    **options,
) -> Iterator[T]:
    """Yield from ``iterable`` while reporting progress (one unit per item).

    Args:
        iterable: the items.
        total: their number (default ``len(iterable)`` where it has one).
        description: what is being done.
        **options: passed to :class:`Progress` (``unit``, ``enabled``, ``interval``, ``stream``).

    Returns:
        An iterator over the same items.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    with Progress(description, total, **options) as progress:
        for item in iterable:
            yield item
            progress.advance()
