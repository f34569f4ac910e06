"""Giving up on a backend that stops answering part-way through a sweep's cancels.

A listing that fails ends the backend's sweep at once (no cancels, `listing_incomplete`). A
service that goes quiet *after* its listing did not: every remaining job would still be re-read
and cancelled, each call waiting out its read timeout and its retries, and the sweep (and the
next one, for every backend) would wait with it; 1,000 matched jobs at 30 s a call, 8 at a time,
keep a sweep busy for hours. So the sweep counts, per backend and per kind of call, the calls in
a row that got no usable answer (re-checks that could not read; cancels FAILED with
`unanswered`); after `FAILING_AFTER` of one kind it starts no new call on that backend: the jobs
left are recorded as skipped (`backend_failing`), the backend has failed the sweep (exit 1), and
the next sweep tries again. An answered call of the same kind (a cancel that landed, a refusal of
one job; a re-check that read) resets the count; an answered read does not vouch for the cancel
endpoint, nor the other way round. A backend given up on stays so until the sweep ends.

Only the service's silence counts: a cancel refused for one job (a 4xx) is about that job, and
a run of such jobs must not shut out the rest. Giving up is always the safe direction: it only
ever leaves jobs running."""

from __future__ import annotations

import threading
from collections import Counter

FAILING_AFTER = 5  # unanswered calls in a row on one backend before its sweep gives up


class Breaker:
    """Per backend and kind of call ("re-check", "cancel"), the unanswered calls in a row;
    thread-safe (the sweep's lanes share one)."""

    def __init__(self, limit: int = FAILING_AFTER) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._streak: Counter[tuple[str, str]] = Counter()
        self._tripped: dict[str, str] = {}

    def answered(self, backend: str, call: str) -> None:
        """A `call` on `backend` got an answer."""
        with self._lock:
            self._streak[backend, call] = 0

    def unanswered(self, backend: str, call: str, error: str) -> bool:
        """A `call` on `backend` got none; True when this one makes the backend give up."""
        with self._lock:
            self._streak[backend, call] += 1
            if backend in self._tripped or self._streak[backend, call] < self.limit:
                return False
            self._tripped[backend] = (
                f"gave up after {self.limit} {call}s in a row without an answer; the last: {error}"
            )
            return True

    def tripped(self, backend: str) -> str | None:
        """Why `backend` was given up on this sweep, or None."""
        with self._lock:
            return self._tripped.get(backend)
