"""Time windows: when a policy may cancel (docs/policies.md, "Grace, notices and windows").

    window = compile_window({"days": ["mon", "fri"], "hours": "20:00-07:00",
                             "timezone": "Europe/Berlin"}, problems)
    window.contains(now)        # may a cancel happen at `now`?
    window.next_opening(at)     # the first moment at or after `at` inside the window

Semantics: `days` name the day an opening *starts* on, in the window's time zone, so
`days: [fri], hours: "20:00-07:00"` runs from Friday 20:00 to Saturday 07:00. `hours` is
`HH:MM-HH:MM`, start included, end excluded; an end at or before the start crosses midnight;
no `hours` means the whole day. Wall-clock times are turned into instants with `zoneinfo`, so an
opening on a daylight-saving day is an hour shorter or longer, as the clock on the wall says; a
wall time that does not exist (the skipped hour in spring) counts from the offset in force
before the change (PEP 495, `fold=0`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from reaper.policy.where import Problems

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # date.weekday() order
WINDOW_KEYS = ("days", "hours", "timezone")
_HOURS = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-4]):([0-5][0-9])$")
# How far `next_opening` looks: one week covers every weekly pattern, plus a day for an opening
# that started the day before.
_SEARCH_DAYS = 9


@dataclass(frozen=True, slots=True)
class Window:
    """When cancels may happen. `days` are weekday numbers (Monday 0); `start`/`end` are wall
    times in `zone` (`end` <= `start`: the opening ends the next day)."""

    days: frozenset[int]
    start: time
    end: time
    zone: ZoneInfo
    text: str  # as written, for facts and messages

    def contains(self, now: datetime) -> bool:
        """True if `now` (aware) lies inside an opening."""
        return any(start <= now < end for start, end in self._openings_around(now))

    def next_opening(self, at: datetime) -> datetime:
        """`at` itself if it lies inside the window, else the start of the next opening (UTC)."""
        for start, end in self._openings_around(at, days_ahead=_SEARCH_DAYS):
            if at < end:
                return max(at, start)
        raise ValueError(f"window {self.text} never opens")  # days is never empty

    def longest_wait(self) -> timedelta:
        """The longest a due time can wait for an opening: the longest closed stretch, from
        the end of an opening to the start of the next (measured over two weeks from a fixed
        Monday, so a daylight-saving hour may be off; a bound, not an exact figure)."""
        monday = datetime(2024, 1, 1, tzinfo=self.zone).astimezone(UTC)
        ends = [end for _, end in self._openings_around(monday, days_ahead=7)]
        return max(self.next_opening(end) - end for end in ends) + timedelta(hours=1)

    def _openings_around(
        self, moment: datetime, days_ahead: int = 0
    ) -> Iterator[tuple[datetime, datetime]]:
        """(start, end) in UTC of the openings that start on the day before `moment` (local)
        up to `days_ahead` days after it, in order."""
        if moment.tzinfo is None:
            raise ValueError("window times must be timezone-aware")
        today = moment.astimezone(self.zone).date()
        for offset in range(-1, days_ahead + 1):
            day = today + timedelta(days=offset)
            if day.weekday() in self.days:
                yield self._opening(day)

    def _opening(self, day: date) -> tuple[datetime, datetime]:
        start = datetime.combine(day, self.start, tzinfo=self.zone)
        end_day = day if self.end > self.start else day + timedelta(days=1)
        end = datetime.combine(end_day, self.end, tzinfo=self.zone)
        # Compare in UTC: aware datetimes sharing a tzinfo compare by wall time (datetime docs).
        return start.astimezone(UTC), end.astimezone(UTC)


def compile_window(raw: Any, problems: Problems) -> Window | None:
    """The `window:` mapping as a Window, or None (with problems appended) if it is invalid."""
    path = ("window",)
    if not isinstance(raw, Mapping):
        problems.append((path, "window must be a mapping with days, hours and timezone"))
        return None
    for key in raw:
        if key not in WINDOW_KEYS:
            message = f"unknown key {key!r}: use {', '.join(WINDOW_KEYS)}"
            problems.append(((*path, str(key)), message))
    days = _days(raw.get("days"), problems)
    hours = _hours(raw.get("hours"), problems)
    zone = _zone(raw.get("timezone"), problems)
    if days is None or hours is None or zone is None:
        return None
    text = f"{','.join(DAYS[d] for d in sorted(days))} {raw.get('hours') or 'all day'} {zone.key}"
    return Window(days, hours[0], hours[1], zone, text)


def _days(value: Any, problems: Problems) -> frozenset[int] | None:
    if value is None:
        return frozenset(range(7))
    if not isinstance(value, list) or not value or any(v not in DAYS for v in value):
        problems.append((("window", "days"), f"days must be a non-empty list of {', '.join(DAYS)}"))
        return None
    return frozenset(DAYS.index(v) for v in value)


def _hours(value: Any, problems: Problems) -> tuple[time, time] | None:
    if value is None:
        return time(0), time(0)
    found = _HOURS.match(value) if isinstance(value, str) else None
    if found is None:
        problems.append((("window", "hours"), f"hours must be HH:MM-HH:MM, got {value!r}"))
        return None
    start_h, start_m, end_h, end_m = (int(g) for g in found.groups())
    if end_h == 24 and end_m != 0:
        problems.append((("window", "hours"), f"hours: 24:{end_m:02d} is not a time"))
        return None
    end = time(0) if end_h == 24 else time(end_h, end_m)
    start = time(start_h, start_m)
    if start == end and end_h != 24 and value != "00:00-00:00":
        problems.append((("window", "hours"), f"hours {value!r} is empty: start equals end"))
        return None
    return start, end


def _zone(value: Any, problems: Problems) -> ZoneInfo | None:
    if value is None:
        return ZoneInfo("UTC")
    if not isinstance(value, str) or not value:
        message = "timezone must be an IANA name, e.g. Europe/Berlin"
        problems.append((("window", "timezone"), message))
        return None
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            (("window", "timezone"), f"unknown time zone {value!r}: use an IANA name, e.g. UTC")
        )
        return None
