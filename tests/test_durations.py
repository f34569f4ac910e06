from datetime import timedelta

import pytest

from reaper.policy.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("12h", 43200), ("2d", 172800), ("1w", 604800), ("1h30m", 5400)],
)
def test_parse_duration_accepts_units(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["90", "", "1.5h", "h", "30m1h", "1h1h", "0s", "-5m", "5 m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (245, "4m05s"), (300, "5m"), (46920, "13h02m"), (187200, "2d04h")],
)
def test_format_duration(seconds: int, text: str) -> None:
    assert format_duration(timedelta(seconds=seconds)) == text
