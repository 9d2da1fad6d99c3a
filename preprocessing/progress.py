"""A terminal progress bar with rate and ETA for long jobs (no dependencies).

On a terminal it redraws one line; in a log (not a tty) it prints a line at most every
`interval` seconds and at the end, so CI logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class Progress:
    """Counts units of work done out of a total; `done` already finished ones are not timed."""

    def __init__(self, total: int, label: str, unit: str = "videos", done: int = 0,
                 stream: TextIO | None = None, interval: float = 5.0) -> None:
        self.total, self.label, self.unit = total, label, unit
        self.done = self.start_done = done
        self.stream = stream or sys.stderr
        self.interval = interval
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = self.last_print = time.monotonic()
        self._print(force=True)

    def advance(self, count: int = 1) -> None:
        self.done += count
        self._print(force=self.done >= self.total)

    def line(self) -> str:
        elapsed = time.monotonic() - self.started
        timed = self.done - self.start_done
        rate = timed / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else float("nan")
        width = 24
        filled = width * self.done // self.total if self.total else width
        bar = "#" * filled + "." * (width - filled)
        eta_text = format_seconds(eta) if eta == eta else "?"
        return (f"{self.label} [{bar}] {self.done}/{self.total} {self.unit}  "
                f"{rate:.2f} {self.unit}/s  elapsed {format_seconds(elapsed)}  ETA {eta_text}")

    def _print(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line())
            if self.done >= self.total:
                self.stream.write("\n")
        elif force or now - self.last_print >= self.interval:
            self.stream.write(self.line() + "\n")
        else:
            return
        self.last_print = now
        self.stream.flush()
