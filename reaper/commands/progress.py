"""A progress line on stderr while a listing runs long, for a person at a terminal: `listing:
batch-prod 12 pages, 11873 jobs; tacc 3 pages, 300 jobs`. Silent when stderr is not a terminal
(a pipe, a log, the journal) and during the first seconds, so quick listings print nothing.

It redraws one line in place (carriage return, erase line) and clears it when done, so that
what follows (the plan table, the sweep summary) starts on a clean line."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from typing import TextIO

from reaper.untrusted import clean, clip

DELAY_S = 2.0  # a listing shorter than this shows nothing
INTERVAL_S = 0.5  # redraw at most this often
ERASE = "\r\x1b[K"  # back to column 1, erase to the end of the line


class ListingProgress:
    """Callable as `reaper.engine.scan.Progress`; thread-safe (backends list concurrently)."""

    def __init__(
        self,
        stream: TextIO,
        *,
        delay_s: float = DELAY_S,
        interval_s: float = INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.delay_s, self.interval_s, self.clock = delay_s, interval_s, clock
        self.started = clock()
        self.last_drawn: float | None = None
        self.counts: dict[str, tuple[int, int]] = {}
        self.lock = threading.Lock()

    def __call__(self, backend: str, pages: int, jobs: int) -> None:
        with self.lock:
            self.counts[backend] = (pages, jobs)
            now = self.clock()
            if now - self.started < self.delay_s:
                return
            if self.last_drawn is not None and now - self.last_drawn < self.interval_s:
                return
            self.last_drawn = now
            self._write(ERASE + clip(self.line(), _width() - 1))

    def line(self) -> str:
        parts = [
            f"{clean(name)} {pages} page{'s' if pages != 1 else ''}, {jobs} jobs"
            for name, (pages, jobs) in sorted(self.counts.items())
        ]
        return "listing: " + "; ".join(parts)

    def done(self) -> None:
        """Clear the line if one was drawn."""
        with self.lock:
            if self.last_drawn is not None:
                self._write(ERASE)
                self.last_drawn = None

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed terminal must not fail the listing
            pass


def _width() -> int:
    return max(shutil.get_terminal_size().columns, 20)


def listing_progress(stream: TextIO) -> ListingProgress | None:
    """A progress reporter on `stream` when it is a terminal, else None (silent)."""
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return ListingProgress(stream) if interactive else None
