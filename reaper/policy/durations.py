"""Durations as operators write them (`90s`, `15m`, `1h30m`, `2d`, `1w`) and as reaper prints
them."""

from __future__ import annotations

import re
from datetime import timedelta

UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"(?:\d+[wdhms])+")


class DurationError(ValueError):
    """The text is not a duration with units."""


def parse_duration(text: str) -> timedelta:
    """Parse `1h30m`-style text. Units are required, largest first, each at most once; a bare
    number is an error because `90` could mean seconds or minutes."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text.strip()):
        raise DurationError(
            f"invalid duration {text!r}: use a number with a unit (s, m, h, d, w), e.g. 90s, 15m, "
            "1h30m, 2d"
        )
    parts = _PART.findall(text.strip())
    units = [unit for _, unit in parts]
    order = list(UNIT_SECONDS)
    if units != sorted(set(units), key=order.index):
        raise DurationError(f"invalid duration {text!r}: give each unit once, largest first")
    seconds = sum(int(n) * UNIT_SECONDS[u] for n, u in parts)
    if seconds == 0:
        raise DurationError(f"invalid duration {text!r}: must be longer than zero")
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # timedelta stops at 999,999,999 days
        raise DurationError(f"invalid duration {text!r}: too long") from None


def format_duration(value: timedelta | float) -> str:
    """Render a duration compactly for humans: `13h02m`, `2d04h`, `4m05s`, `45s`. Below an hour the
    seconds are kept; above it, the minutes are the last unit shown (the audit keeps seconds)."""
    total = int(value.total_seconds() if isinstance(value, timedelta) else value)
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        text = f"{days}d{hours:02d}h" + (f"{minutes:02d}m" if minutes else "")
    elif hours:
        text = f"{hours}h{minutes:02d}m"
    elif minutes:
        text = f"{minutes}m" + (f"{seconds:02d}s" if seconds else "")
    else:
        text = f"{seconds}s"
    return sign + text
