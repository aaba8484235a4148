"""A text progress bar for the command-line jobs (the library itself never prints)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    """``bar.update(done, **counts)`` redraws one line on a terminal (at most 5
    times a second), or logs a line per tenth of the work elsewhere (files, CI
    logs), so output stays readable."""

    def __init__(self, total: int, label: str, stream=None, width: int = 30):
        self.total, self.label, self.width = max(total, 0), label, width
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_time = -1.0
        self._last_tenth = -1

    def update(self, done: int, **counts) -> None:
        fraction = done / self.total if self.total else 1.0
        finished = done >= self.total
        now = time.monotonic()
        if self.tty and not finished and now - self._last_time < 0.2:
            return
        if not self.tty and not finished and int(fraction * 10) == self._last_tenth:
            return
        self._last_time, self._last_tenth = now, int(fraction * 10)
        filled = int(self.width * fraction)
        extra = "  ".join(f"{k} {v}" for k, v in counts.items())
        elapsed = time.monotonic() - self.start
        bar = "#" * filled + "." * (self.width - filled)
        line = f"{self.label} [{bar}] {done}/{self.total}  {extra}  {elapsed:.0f}s"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if finished else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
