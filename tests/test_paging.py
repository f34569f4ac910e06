"""Pages fetched ahead (reaper/backends/paging.py): Tapis offset pages several at a time, in
order, ending at the first short page; Sutro's cursor chain with the next page on its way while
the current one is read. Against the emulators, through the real clients."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from reaper.backends.paging import chained_pages, offset_pages
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.sutro import SutroEmulator
from reaper.emulators.tapis import TapisEmulator
from reaper.errors import BackendError
from reaper.jobs import Job
from tests.harness_sutro import make_backend as make_sutro
from tests.harness_tapis import make_backend as make_tapis

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp()
WAIT_S = 15.0


def wait_until(probe: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WAIT_S
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def ids_listed(pages: Iterator[Sequence[Any]]) -> list[str]:
    return [item.id for page in pages for item in page if isinstance(item, Job)]


def overlap(calls: Sequence[Any], operation: str) -> int:
    """The most calls of `operation` the emulator was serving at one moment."""
    edges = [(c.started, 1) for c in calls if c.operation == operation]
    edges += [(c.ended, -1) for c in calls if c.operation == operation]
    most = now = 0
    for _, step in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        now += step
        most = max(most, now)
    return most


# -- the generators on their own --------------------------------------------------------------
def test_offset_pages_come_in_order_and_end_at_the_first_short_page() -> None:
    table = list(range(95))
    asked: list[int] = []
    lock = threading.Lock()

    def fetch(offset: int) -> list[int]:
        with lock:
            asked.append(offset)
        return table[offset : offset + 10]

    pages = list(offset_pages(fetch, limit=10, in_flight=4))
    assert [offset for offset, _ in pages] == list(range(0, 100, 10))
    assert [r for _, records in pages for r in records] == table
    # Never more than the window past the short page at 90, and never an offset twice.
    assert len(asked) == len(set(asked)) and max(asked) <= 90 + 4 * 10


def test_a_service_that_serves_fewer_than_asked_is_read_without_gaps() -> None:
    table = list(range(23))
    pages = list(offset_pages(lambda offset: table[offset : offset + 5], limit=100, in_flight=8))
    assert [r for _, records in pages for r in records] == table


def test_a_failed_page_raises_after_the_pages_before_it() -> None:
    def fetch(offset: int) -> list[int]:
        if offset == 30:
            raise BackendError("b", "page 4 failed")
        return list(range(offset, offset + 10))

    got: list[int] = []
    with pytest.raises(BackendError, match="page 4"):
        for offset, _ in offset_pages(fetch, limit=10):
            got.append(offset)
    assert got == [0, 10, 20]


def test_the_next_cursor_is_fetched_while_the_consumer_holds_a_page() -> None:
    asked: list[int | None] = []
    second_asked = threading.Event()

    def fetch(cursor: int | None) -> tuple[str, int | None]:
        asked.append(cursor)
        if cursor == 1:
            second_asked.set()
        page = 0 if cursor is None else cursor
        return f"page {page}", (page + 1 if page < 2 else None)

    pages = chained_pages(fetch)
    assert next(pages) == "page 0"
    # The consumer is still holding page 0: the fetch of page 1 has started anyway.
    assert second_asked.wait(WAIT_S)
    assert list(pages) == ["page 1", "page 2"]
    assert asked == [None, 1, 2]


# -- Tapis, through tapipy --------------------------------------------------------------------
def seed_tapis(emulator: TapisEmulator, count: int) -> list[str]:
    return [
        emulator.add_job(JobSpec(f"sim-{i}", "RUNNING", T0 + i, T0 + i + 60, queue="skx"))
        for i in range(count)
    ]


def test_tapis_pages_are_fetched_several_at_a_time_and_every_job_listed_once() -> None:
    knobs = Knobs(page_size=10, latency_s=0.05)
    with TapisEmulator(knobs) as emulator:
        assert isinstance(emulator, TapisEmulator)
        seeded = seed_tapis(emulator, 95)
        emulator.record_calls()
        backend = make_tapis(emulator, "tacc")
        try:
            listed = ids_listed(backend.list_active())
        finally:
            backend.close()
        assert emulator.call_log is not None
        calls = list(emulator.call_log)
    assert sorted(listed) == sorted(seeded) and len(listed) == len(set(listed))
    searches = [c for c in calls if c.operation == "searchJobs"]
    # 10 pages (the last one short), and at most the window's 8 fetches in flight at once.
    assert 10 <= len(searches) <= 10 + 7
    assert 2 <= overlap(calls, "searchJobs") <= 8


class GrowingTapis(TapisEmulator):
    """Adds jobs (created after every listed one) while a listing is on its way, and ends one
    job of the first page."""

    added: list[str]

    def dispatch(self, request: Any) -> Any:
        if request.query.get("skip") == ["10"] and not getattr(self, "added", None):
            self.added = seed_tapis_late(self, 15)
        return super().dispatch(request)


def seed_tapis_late(emulator: TapisEmulator, count: int) -> list[str]:
    return [
        emulator.add_job(JobSpec(f"late-{i}", "QUEUED", T0 + 10_000 + i, None, queue="skx"))
        for i in range(count)
    ]


def test_a_table_growing_during_the_listing_loses_and_repeats_no_job() -> None:
    with GrowingTapis(Knobs(page_size=10)) as emulator:
        assert isinstance(emulator, GrowingTapis)
        seeded = seed_tapis(emulator, 40)
        backend = make_tapis(emulator, "tacc")
        try:
            listed = ids_listed(backend.list_active())
        finally:
            backend.close()
    assert len(listed) == len(set(listed))
    # Every job active for the whole listing is listed; the late ones may or may not be.
    assert set(seeded) <= set(listed) <= set(seeded) | set(emulator.added)


# -- Sutro, through requests ------------------------------------------------------------------
def test_sutro_pages_stream_and_every_job_is_listed_once() -> None:
    with SutroEmulator(Knobs(page_size=10)) as emulator:
        assert isinstance(emulator, SutroEmulator)
        seeded = [
            emulator.add_job(JobSpec(f"eval-{i}", "RUNNING", T0 + i, T0 + i + 60))
            for i in range(45)
        ]
        backend = make_sutro(emulator, "inference")
        try:
            pages = backend.list_active()
            first = next(pages)
            # While this test holds the first page, the second is asked for.
            assert wait_until(lambda: emulator.calls["ListJobs"] >= 2)
            listed = [job.id for job in first if isinstance(job, Job)]
            listed += ids_listed(pages)
        finally:
            backend.close()
    assert len(first) == 10
    assert sorted(listed) == sorted(seeded) and len(listed) == len(set(listed))
