"""A wall clock that can be stepped, for the clock-step tests (issue 10, case 9): the host's
wall clock as APScheduler and reaper's scheduler read it, offset by a settable amount, while
the monotonic clock runs on untouched, as when NTP steps a host's clock.

In-process: `stepped_wall_clock()` (a context manager). In a child process:
`python -m tests.clock_step_support OFFSET_FILE reaper-args...` runs `reaper.cli.main` with
the offset read from OFFSET_FILE (seconds, re-read every 50 ms)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime as real_datetime
from datetime import tzinfo
from pathlib import Path
from typing import Any

# The modules that read the wall clock through `datetime.now`.
MODULES = (
    "apscheduler.schedulers.base",
    "apscheduler.triggers.interval",
    "apscheduler.executors.base",
    "reaper.service.scheduler",
)


class WallClock:
    def __init__(self) -> None:
        self.offset_s = 0.0
        self._real_time = time.time

    def time(self) -> float:
        return self._real_time() + self.offset_s

    def datetime_class(self) -> type[real_datetime]:
        clock = self

        class _Meta(type):
            def __instancecheck__(cls, obj: object) -> bool:
                return isinstance(obj, real_datetime)

        class SteppedDatetime(real_datetime, metaclass=_Meta):  # type: ignore[misc]
            @classmethod
            def now(cls, tz: tzinfo | None = None) -> Any:
                return real_datetime.fromtimestamp(clock.time(), tz)

        return SteppedDatetime


def install(clock: WallClock) -> Callable[[], None]:
    """Patch the modules (importing them); returns the undo."""
    import importlib

    fake = clock.datetime_class()
    undo: list[Callable[[], None]] = []
    for name in MODULES:
        module = importlib.import_module(name)
        original = module.datetime
        module.datetime = fake
        undo.append(lambda m=module, o=original: setattr(m, "datetime", o))
    return lambda: [u() for u in undo] and None


@contextlib.contextmanager
def stepped_wall_clock() -> Iterator[WallClock]:
    clock = WallClock()
    undo = install(clock)
    try:
        yield clock
    finally:
        undo()


def _follow(path: Path, clock: WallClock) -> None:
    while True:
        with contextlib.suppress(OSError, ValueError):
            clock.offset_s = float(path.read_text(encoding="utf-8") or 0)
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    path, args = Path(argv[0]), argv[1:]
    clock = WallClock()
    time.time = clock.time  # before reaper is imported: its scheduler's wall clock
    threading.Thread(target=_follow, args=(path, clock), daemon=True).start()
    install(clock)
    from reaper.cli import main as reaper_main

    return reaper_main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
