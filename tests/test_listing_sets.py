"""A listing is a set (reaper.engine.scan, reaper.backends.base.ListingGuard), a bad record is
one skipped job, and a backend's server clock is kept from its answers' Date header."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from reaper.backends.base import ListingGuard, Page, ServerClock
from reaper.engine.scan import scan_backend
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase, SkipCause
from reaper.policy.model import PolicySource, compile_policy

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = PolicySource("policies/p.yaml", "0" * 64, None, 0)
POLICY = compile_policy({"name": "cap", "max_runtime": "2h"}, SOURCE, {"sutro"})


def job(job_id: str, status: str = "RUNNING", hours: float = 5) -> Job:
    phase = {"RUNNING": Phase.RUNNING, "QUEUED": Phase.PENDING}.get(status, Phase.TERMINAL)
    started = NOW - timedelta(hours=hours) if phase is Phase.RUNNING else None
    return Job("b", "sutro", job_id, job_id, "", status, phase, NOW - timedelta(days=1), started)


class Pages:
    """A backend whose listing yields the given pages as they are."""

    name, type = "b", "sutro"

    def __init__(self, *pages: Page) -> None:
        self.pages = pages

    def list_active(self) -> Iterator[Page]:
        yield from self.pages

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        return list(jobs)

    def refresh(self, job: Job) -> Job | None:
        return job

    def cancel(self, job: Job, reason: str) -> object:
        raise AssertionError("a scan never cancels")

    def close(self) -> None:
        pass


def test_duplicate_ids_count_once_and_the_last_record_wins() -> None:
    backend = Pages([job("a"), job("b", hours=1)], [job("a", hours=1), job("b"), job("c")])
    scan = scan_backend(backend, [POLICY], NOW)  # type: ignore[arg-type]
    assert scan.complete and scan.active == 3 and scan.duplicates == 2
    assert sorted(c.job.id for c in scan.candidates) == ["b", "c"]  # a: its last record is young


def test_a_duplicate_that_turned_terminal_is_no_longer_active() -> None:
    scan = scan_backend(Pages([job("a"), job("b")], [job("a", "SUCCEEDED")]), [POLICY], NOW)  # type: ignore[arg-type]
    assert scan.active == 1 and [c.job.id for c in scan.candidates] == ["b"]


def test_bad_records_are_reported_and_counted_as_active() -> None:
    bad = BadRecord.of("b", "x", "datetime_started", float("inf"), "not a time")
    anonymous = BadRecord.of("b", None, "job_id", None, "missing")
    scan = scan_backend(Pages([job("a"), bad, anonymous]), [POLICY], NOW)  # type: ignore[arg-type]
    assert scan.complete and scan.active == 3
    assert scan.bad_records == [bad, anonymous]
    assert [c.job.id for c in scan.candidates] == ["a"]


def test_a_bad_value_is_cut_short() -> None:
    bad = BadRecord.of("b", "x", "name", "n" * 500, "too long")
    assert len(bad.value) == 80 and bad.value.endswith("…")


def test_guard_fails_a_page_that_adds_no_id() -> None:
    guard = ListingGuard("b")
    guard.page(["a", "b"], "p1")
    guard.page(["b", "c"], "p2")  # one new id is progress
    with pytest.raises(BackendError, match="added no new job id"):
        guard.page(["a", "c"], "p3")


def test_guard_fails_past_max_pages_and_on_a_repeated_cursor() -> None:
    guard = ListingGuard("b", max_pages=2)
    guard.page(["a"], "p1")
    guard.cursor("t1", "p1")
    with pytest.raises(BackendError, match="repeated a cursor"):
        guard.cursor("t1", "p2")
    guard.page(["b"], "p2")
    with pytest.raises(BackendError, match="max_pages=2"):
        guard.page(["c"], "p3")


def test_guard_on_empty_pages() -> None:
    ListingGuard("b").page([], "last", last=True)  # the end of a listing
    ListingGuard("b", empty_pages=True).page([], "AWS may")
    with pytest.raises(BackendError, match="empty page"):
        ListingGuard("b").page([], "middle")


def test_guard_a_new_stream_forgets_ids_and_cursors() -> None:
    guard = ListingGuard("b")
    guard.page(["a"], "s1")
    guard.cursor("t", "s1")
    guard.new_stream()
    guard.page(["a"], "s2")  # the same job, moved on to the next status
    guard.cursor("t", "s2")


def test_server_clock_reads_the_date_header_and_moves_on_monotonically() -> None:
    ticks = [100.0]
    clock = ServerClock(monotonic=lambda: ticks[0])
    assert clock.now() is None
    clock.observe("Tue, 01 Dec 2026 08:00:00 GMT")
    ticks[0] += 90
    assert clock.now() == datetime(2026, 12, 1, 8, 1, 30, tzinfo=UTC)
    clock.observe("not a date")  # ignored
    clock.observe(None)
    assert clock.now() == datetime(2026, 12, 1, 8, 1, 30, tzinfo=UTC)


class Clocked(Pages):
    def __init__(self, offset: timedelta, *pages: Page) -> None:
        super().__init__(*pages)
        self.server_clock = ServerClock()
        self.server_clock.observe((NOW + offset).strftime("%a, %d %b %Y %H:%M:%S GMT"))


@pytest.mark.parametrize(
    ("offset", "blocked"),
    [(timedelta(seconds=30), False), (-timedelta(minutes=3), True), (timedelta(hours=13), True)],
)
def test_a_skewed_server_clock_blocks_the_backend(offset: timedelta, blocked: bool) -> None:
    scan = scan_backend(Clocked(offset, [job("a")]), [POLICY], NOW)  # type: ignore[arg-type]
    assert scan.complete is not blocked
    assert scan.clock_skew_s is not None and abs(scan.clock_skew_s - offset.total_seconds()) < 5
    if blocked:
        assert scan.blocked_by is SkipCause.CLOCK_SKEW
        assert "limits.max_clock_skew 2m" in (scan.error or "")
        assert scan.to_listing().blocked_by is SkipCause.CLOCK_SKEW
