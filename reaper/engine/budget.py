"""The daemon's per-period cancel budget (docs/config.md, `limits.max_cancels_per_sweep`).

`reaper run --once` sweeps every backend in one sweep, so `max_cancels_per_sweep` caps them all
together. The daemon sweeps each backend on its own, in its own thread; without a shared budget
each backend's sweep would get the whole cap, and three backends could cancel three times the
limit in one period. A `CancelBudget` is shared by those sweeps: each takes what is left of the
cap when it decides, and what it decides to cancel is spent at once, under one lock, so two
backends deciding at the same moment cannot both take the last cancels.

A period is a window that opens at the first sweep after the previous one closed and lasts half
a schedule period: the sweeps of one round (all backends are due together, spread by at most the
jitter) fall in it, and the next round, a whole period later, opens a new one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

T = TypeVar("T")


class CancelBudget:
    """At most `cap` cancels (dry-run ones included, as in one sweep) per schedule period, over
    every backend's sweep. Thread-safe."""

    def __init__(self, cap: int, period: timedelta) -> None:
        self._lock = threading.Lock()
        self._cap, self._period = cap, period
        self._opened: datetime | None = None
        self._spent = 0

    def configure(self, cap: int, period: timedelta) -> None:
        """A reload changed the cap or the schedule; the current window keeps what it spent."""
        with self._lock:
            self._cap, self._period = cap, period

    def decide_within(self, now: datetime, decide: Callable[[int], tuple[T, int]]) -> T:
        """Run `decide(remaining)`, which returns its plan and how many cancels it decided, with
        the budget locked; spend that many. `now` opens a new window when the last one is over."""
        with self._lock:
            if self._opened is None or now - self._opened >= self._period / 2:
                self._opened, self._spent = now, 0
            plan, spent = decide(max(0, self._cap - self._spent))
            self._spent += spent
            return plan
