"""How far back a Sutro listing must read (reaper.backends.sutro; docs/backends.md, Sutro).

`list-jobs` answers every job the account ever ran, "newest first" (docs.sutro.sh); there is no
status filter. A daemon that read the whole history every sweep would cost more each day. But a
job that had ended (SUCCEEDED, FAILED, CANCELLED) never runs again, and no job is created in the
past: so once a complete listing has shown every job created before some moment to be over, a
later listing may stop when it reaches jobs created before that moment, the *horizon* — the
creation time of the oldest job that was still open (any other status, CANCELLING and unknown
ones included), or of the newest job when none was.

That rests on the order, which Sutro's own older example answer does not follow (docs.sutro.sh
"List-jobs": 10:30, 11:00, 09:45). So nothing is skipped until a whole listing was seen in
order, every record's `datetime_created` no later than the one before it; any listing out of
order turns skipping off for good (logged). A record that cannot be read (a bad record: its
time may be the unreadable part) makes the next listing read everything, and so does the hour
that has passed since the last full listing (`FULL_LISTING_EVERY`), which bounds what a wrong
premise could hide. Pure: the backend feeds records in and asks when to stop."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# Statuses that never change again. CANCELLING is not one: it may still become CANCELLED (or,
# for all reaper can tell, fail to); an unknown status is not one either.
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
FULL_LISTING_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class History:
    """What the last complete listing showed. `horizon` None: read everything next time."""

    horizon: datetime | None = None
    full_at: datetime | None = None  # when the last full listing began
    ordered: bool = True  # False once any listing came out of order: never skip again

    def stop_before(self, now: datetime) -> datetime | None:
        """The creation time below which a listing begun `now` may stop, or None to read all."""
        if not self.ordered or self.horizon is None or self.full_at is None:
            return None
        if now - self.full_at >= FULL_LISTING_EVERY:
            return None
        return self.horizon


class Listing:
    """One listing in progress, fed every record in the order Sutro answered. `done()` says
    when it may stop (after a page); `history()` what it showed, once it ended."""

    def __init__(self, previous: History, now: datetime) -> None:
        self._previous, self._now = previous, now
        self._stop_before = previous.stop_before(now)
        self._last: datetime | None = None  # the creation time of the record before
        self._newest: datetime | None = None
        self._oldest_open: datetime | None = None
        self._in_order = True
        self._unreadable = False

    @property
    def full(self) -> bool:
        """Whether this listing reads the whole history."""
        return self._stop_before is None

    @property
    def in_order(self) -> bool:
        return self._in_order

    def record(self, created: datetime, status: str) -> None:
        if self._last is not None and created > self._last:
            self._in_order = False
        self._last = created
        self._newest = _latest(self._newest, created)
        if status.upper() not in FINAL_STATUSES:
            self._oldest_open = _earliest(self._oldest_open, created)

    def unreadable(self) -> None:
        """A record whose creation time or status could not be read."""
        self._unreadable = True

    def done(self) -> bool:
        """True once every job created at or after the horizon has been read (the last record
        was created before it) and the records so far came in order."""
        if self._stop_before is None or not self._in_order or self._unreadable:
            return False
        return self._last is not None and self._last < self._stop_before

    def history(self) -> History:
        """What the next listing may rely on, from this complete one."""
        ordered = self._previous.ordered and self._in_order
        full_at = self._now if self.full else self._previous.full_at
        if not ordered or self._unreadable:
            return History(None, full_at, ordered)
        horizon = self._oldest_open if self._oldest_open is not None else self._newest
        return History(horizon, full_at, ordered)


def _latest(known: datetime | None, created: datetime) -> datetime:
    return created if known is None else max(known, created)


def _earliest(known: datetime | None, created: datetime) -> datetime:
    return created if known is None else min(known, created)
