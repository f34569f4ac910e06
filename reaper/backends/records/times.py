"""Reading the times of raw job records, shared by the record parsers: every way a time can be
wrong (a string that is no ISO 8601 time, NaN, an infinity, a number past year 9999, a bool)
is a `RecordError` naming the field, never a stray OverflowError or OSError."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from reaper.jobs import RecordError


def iso_time(value: Any, field: str) -> datetime | None:
    """An ISO 8601 time as aware UTC (naive means UTC); None for null or "". Raises
    RecordError for anything else."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(field, value, "not an ISO 8601 time string")
    try:
        parsed = datetime.fromisoformat(value)  # Python 3.11 reads a trailing "Z"
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise RecordError(field, value, "not an ISO 8601 time") from None


def epoch_time(value: Any, field: str, per_second: int = 1) -> datetime | None:
    """A time given as a number of seconds (`per_second` 1) or milliseconds (1000) since the
    epoch, as aware UTC; None for null. Raises RecordError for a non-number, NaN, an infinity,
    or a time datetime cannot hold."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(field, value, "not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordError(field, value, "not a finite number")
    try:
        return datetime.fromtimestamp(value / per_second, tz=UTC)
    except (OverflowError, OSError, ValueError):
        raise RecordError(field, value, "out of range") from None
