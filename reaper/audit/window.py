"""The audit log's recent records, kept between reads (docs/audit.md, "What a sweep reads back").

Every sweep reads the log's tail back twice: the follow-up (cancels awaiting confirmation) and
the decision (the re-cancel window, open warnings). A daemon sweeping often over a busy log
would parse the same thousands of records again each time, and its memory would swell with
every read. An `AuditWindow` reads the tail once, then only the lines appended since (from a
`FileMark`: the same file, grown), and keeps only the records those readers look at, no older
than the longest look-back it was asked for (plus `PRUNE_SLACK`), without the chain's own
fields.

It reads the file, never trusts memory alone: a record another process wrote (a `run --once`
between the daemon's sweeps) is seen like the daemon's own, and a log rotated, replaced or
truncated is read afresh, with its rotated files (`read_recent`)."""

from __future__ import annotations

import os
import sys
import threading
from collections import deque
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path

from reaper.audit.reader import (
    FileMark,
    Record,
    complete_end,
    decode_line,
    parse_record_time,
    read_recent_from,
)

# The events the sweep's readers use (reader.py: recently_cancelled, awaiting_confirmation,
# held_for_confirmation, open_warnings; engine/confirm.py). Others (sweep_start, skipped, …)
# are never kept: the window's size follows the cancels and warnings, not the sweeps.
KEPT_EVENTS = frozenset({"intent", "result", "confirmed", "stuck", "warned", "cleared", "notified"})

# The chain's own fields: no reader of the window looks at them (verify reads the file itself).
DROPPED_FIELDS = ("prev", "mac", "host", "version")

INTERN_MAX = 200  # longer strings (an error's text) are rarely shared
# Kept beyond the longest look-back: the daemon's backends sweep concurrently, so a sweep that
# began a little earlier may ask after another has pruned; within this slack it is served from
# memory, beyond it the window reads the file afresh (correct, only slower).
PRUNE_SLACK = timedelta(minutes=5)

Entry = tuple[datetime, Record]


class AuditWindow:
    """Recent records of the log at `path`, in file order, refreshed from the file on each
    `records` call. Thread-safe: the daemon's backends sweep concurrently."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: deque[Entry] = deque()  # in file order, so (nearly) in time order
        self._mark: FileMark | None = None
        self._loaded_since: datetime | None = None  # records at or after this are all here
        self._span = timedelta(0)  # the longest look-back asked for

    def records(self, since: datetime, now: datetime) -> list[Record]:
        """The kept-event records with `ts` >= `since`, as the file holds them now. Raises
        OSError (the log cannot be read; what was kept stays for the next call)."""
        with self._lock:
            self._span = max(self._span, now - since)
            horizon = now - self._span - PRUNE_SLACK
            if self._loaded_since is None or since < self._loaded_since or not self._advance():
                self._load(horizon)  # the whole span: every reader is served
            self._prune(horizon)
            return [record for when, record in self._entries if when >= since]

    def held(self) -> int:
        """How many records are kept (for tests and the soak benchmark)."""
        with self._lock:
            return len(self._entries)

    def _load(self, since: datetime) -> None:
        found, mark = read_recent_from(self.path, since)
        self._entries = deque(_entries(found))
        self._mark, self._loaded_since = mark, since

    def _advance(self) -> bool:
        """Read the lines appended since the mark; False when the file is not the one marked
        (or is gone, or shrank): the caller reads it afresh."""
        if self._mark is None:
            return False
        try:
            file = self.path.open("rb")
        except FileNotFoundError:
            return False
        with file:
            stat = os.fstat(file.fileno())
            mark = self._mark
            same = (stat.st_dev, stat.st_ino) == (mark.device, mark.inode)
            if not same or stat.st_size < mark.offset:
                return False
            end = complete_end(file, stat.st_size)
            if end <= mark.offset:
                return True
            file.seek(mark.offset)
            data = file.read(end - mark.offset)
        self._entries.extend(_entries(filter(None, map(decode_line, data.split(b"\n")))))
        self._mark = FileMark(mark.device, mark.inode, mark.offset + len(data))
        return True

    def _prune(self, horizon: datetime) -> None:
        """Drop the oldest entries, from the front: no copy of the rest on every call. An entry
        stamped out of order (a clock stepped back) goes when it reaches the front; `records`
        filters by time anyway."""
        while self._entries and self._entries[0][0] < horizon:
            self._entries.popleft()
        if self._loaded_since is not None and self._loaded_since < horizon:
            self._loaded_since = horizon


def _entries(records: Iterable[Record]) -> Iterable[Entry]:
    for record in records:
        if record.get("event") not in KEPT_EVENTS:
            continue
        when = parse_record_time(record)
        if when is not None:
            yield when, slim(record)


def slim(record: Record) -> Record:
    """The record as the window keeps it: without `DROPPED_FIELDS`, and its short strings
    interned (event, backend, policy, status, reason, … repeat across records: one copy each)."""
    return {
        key: sys.intern(value) if isinstance(value, str) and len(value) <= INTERN_MAX else value
        for key, value in record.items()
        if key not in DROPPED_FIELDS
    }
