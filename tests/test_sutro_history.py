"""A Sutro listing stops before the end of the history once past every job the last complete
listing left open (reaper/backends/sutro_history.py), and reads everything whenever that premise
is in doubt: a listing out of order, an unreadable record, an hour since the last full one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.backends.http import HttpClient
from reaper.backends.retry import RetryPolicy
from reaper.backends.sutro import SutroBackend
from reaper.backends.sutro_history import FULL_LISTING_EVERY, History, Listing
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.sutro import SutroEmulator
from reaper.jobs import Job

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def feed(listing: Listing, records: list[tuple[float, str]]) -> Listing:
    for minutes, status in records:
        listing.record(at(minutes), status)
    return listing


# -- the pure part --------------------------------------------------------------------------------
def test_a_first_listing_reads_everything_and_remembers_the_oldest_open_job() -> None:
    listing = feed(Listing(History(), T0), [(50, "SUCCEEDED"), (40, "RUNNING"), (30, "QUEUED"),
                                            (20, "FAILED"), (10, "CANCELLED")])  # fmt: skip
    assert listing.full and not listing.done()
    assert listing.history() == History(at(30), T0, True)


def test_a_later_listing_stops_only_once_past_the_oldest_open_job() -> None:
    history = History(at(30), T0, True)
    listing = Listing(history, T0 + timedelta(minutes=5))
    assert not listing.full
    feed(listing, [(60, "RUNNING"), (45, "SUCCEEDED"), (30, "QUEUED")])
    assert not listing.done()  # the horizon's own job was just read: not past it yet
    feed(listing, [(29, "SUCCEEDED")])
    assert listing.done()
    assert listing.history() == History(at(30), T0, True)  # the full listing's time is kept


def test_without_an_open_job_the_horizon_is_the_newest_job() -> None:
    listing = feed(Listing(History(), T0), [(50, "SUCCEEDED"), (40, "FAILED")])
    assert listing.history().horizon == at(50)


@pytest.mark.parametrize("status", ["CANCELLING", "UNKNOWN", "pending", "running"])
def test_cancelling_unknown_and_lower_case_statuses_hold_the_horizon(status: str) -> None:
    listing = feed(Listing(History(), T0), [(50, "SUCCEEDED"), (40, status), (30, "FAILED")])
    assert listing.history().horizon == at(40)


def test_a_listing_out_of_order_turns_skipping_off_for_good() -> None:
    listing = feed(Listing(History(), T0), [(10, "SUCCEEDED"), (30, "RUNNING"), (5, "FAILED")])
    history = listing.history()
    assert not listing.in_order and not history.ordered and history.horizon is None
    later = feed(Listing(history, T0), [(40, "RUNNING"), (1, "SUCCEEDED")])
    assert later.full and not later.done()
    assert not later.history().ordered  # an ordered listing does not bring it back


def test_an_out_of_order_page_stops_nothing_even_past_the_horizon() -> None:
    listing = feed(Listing(History(at(30), T0, True), T0), [(40, "RUNNING"), (20, "SUCCEEDED")])
    assert listing.done()
    listing = feed(Listing(History(at(30), T0, True), T0),
                   [(40, "RUNNING"), (20, "SUCCEEDED"), (25, "SUCCEEDED")])  # fmt: skip
    assert not listing.done()


def test_an_unreadable_record_makes_the_next_listing_read_everything() -> None:
    listing = feed(Listing(History(at(30), T0, True), T0), [(40, "RUNNING")])
    listing.unreadable()
    feed(listing, [(20, "SUCCEEDED")])
    assert not listing.done()
    history = listing.history()
    assert history.horizon is None and history.ordered
    assert Listing(history, T0).full


def test_a_full_listing_comes_at_least_once_an_hour() -> None:
    history = History(at(30), T0, True)
    assert not Listing(history, T0 + FULL_LISTING_EVERY - timedelta(seconds=1)).full
    full = Listing(history, T0 + FULL_LISTING_EVERY)
    assert full.full
    assert full.history().full_at == T0 + FULL_LISTING_EVERY


# -- against the emulator -------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def emulator() -> Iterator[SutroEmulator]:
    emu = SutroEmulator(Knobs(page_size=10)).start()
    try:
        yield emu  # type: ignore[misc]
    finally:
        emu.stop()


def backend_of(emulator: SutroEmulator, clock: Clock) -> SutroBackend:
    return SutroBackend("sutro", HttpClient(emulator.url), emulator.url, emulator.api_key,
                        retry=RetryPolicy(sleep=lambda _: None), clock=clock)  # fmt: skip


def seed(emulator: SutroEmulator, name: str, status: str, hours_ago: float) -> str:
    created = time.time() - hours_ago * 3600
    started = created + 60 if status != "QUEUED" else None
    return emulator.add_job(JobSpec(name, status, created, started))


def active_ids(backend: SutroBackend) -> set[str]:
    return {job.id for page in backend.list_active() for job in page if isinstance(job, Job)}


def test_a_daemon_reads_only_back_to_its_oldest_open_job(emulator: SutroEmulator) -> None:
    history = [seed(emulator, f"old-{i}", "SUCCEEDED", 100 - i * 0.1) for i in range(200)]
    oldest = seed(emulator, "oldest-running", "RUNNING", 50)
    recent = [seed(emulator, f"recent-{i}", "QUEUED", 2 - i * 0.1) for i in range(5)]
    assert len(history) == 200
    clock = Clock()
    backend = backend_of(emulator, clock)
    assert active_ids(backend) == {oldest, *recent}
    full_pages = emulator.calls["ListJobs"]
    assert full_pages == 21  # 206 jobs, 10 a page

    emulator.calls.clear()
    newcomer = seed(emulator, "newcomer", "QUEUED", 0)
    assert active_ids(backend) == {oldest, newcomer, *recent}
    # Down to the page holding the oldest running job (and one page fetched ahead), not 21.
    assert emulator.calls["ListJobs"] <= 3

    emulator.set_status(oldest, "SUCCEEDED")  # the horizon moves up to the recent jobs
    active_ids(backend)
    emulator.calls.clear()
    assert active_ids(backend) == {newcomer, *recent}
    # One or two pages, plus the page the previous listing fetched ahead, which may be counted
    # after the count was cleared.
    assert emulator.calls["ListJobs"] <= 3

    clock.now += FULL_LISTING_EVERY  # an hour on: everything once more
    emulator.calls.clear()
    assert active_ids(backend) == {newcomer, *recent}
    assert emulator.calls["ListJobs"] >= 21  # (one more if the last page ahead came late)


def test_a_job_the_premise_would_hide_is_found_by_the_hourly_full_listing(
    emulator: SutroEmulator,
) -> None:
    """A job that ran again after it had ended (which Sutro does not do) is missed only until
    the next full listing: what a wrong premise can cost is bounded."""
    revived = seed(emulator, "revived", "SUCCEEDED", 50)
    for i in range(15):  # two pages of ended jobs between it and the open ones
        seed(emulator, f"ended-{i}", "FAILED", 40 - i * 0.01)
    for i in range(30):
        seed(emulator, f"recent-{i}", "QUEUED", 2 - i * 0.01)
    clock = Clock()
    backend = backend_of(emulator, clock)
    active_ids(backend)
    emulator.set_status(revived, "RUNNING")
    assert revived not in active_ids(backend)
    clock.now += FULL_LISTING_EVERY
    assert revived in active_ids(backend)


def test_plan_and_run_once_read_everything(emulator: SutroEmulator) -> None:
    """A backend built for one command has no history: its one listing is a full one."""
    for i in range(25):
        seed(emulator, f"old-{i}", "FAILED", 10 - i * 0.1)
    seed(emulator, "running", "RUNNING", 1)
    active_ids(backend_of(emulator, Clock()))
    assert emulator.calls["ListJobs"] == 3


# -- the premise held: skipping never hides an open job -------------------------------------------
OPEN_STATUSES = ("QUEUED", "STARTING", "RUNNING", "CANCELLING", "UNKNOWN")
FINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@st.composite
def histories(draw: st.DrawFn) -> list[list[tuple[str, float]]]:
    """Steps of a job table under Sutro's premises: each step adds jobs created after every
    earlier one and moves some open jobs on (to another open status or an end), never back."""
    steps: list[list[tuple[str, float]]] = []
    jobs: list[tuple[str, float]] = []  # (status, created minutes), oldest first
    clock = 0.0
    for _ in range(draw(st.integers(1, 6))):
        moved = []
        for was, created in jobs:
            moves = was not in FINAL and draw(st.booleans())
            moved.append((draw(st.sampled_from(OPEN_STATUSES + FINAL)) if moves else was, created))
        for _ in range(draw(st.integers(0, 8))):
            clock += draw(st.sampled_from([0.0, 0.5, 3.0]))  # equal creation times happen
            moved.append((draw(st.sampled_from(OPEN_STATUSES + FINAL)), clock))
        jobs = moved
        steps.append(list(jobs))
    return steps


@settings(max_examples=300, deadline=None)
@given(steps=histories(), page_size=st.integers(1, 5))
def test_listings_that_stop_early_find_every_open_job(
    steps: list[list[tuple[str, float]]], page_size: int
) -> None:
    history = History()
    for i, jobs in enumerate(steps):
        newest_first = sorted(enumerate(jobs), key=lambda item: -item[1][1])
        listing = Listing(history, T0 + timedelta(minutes=i))
        seen: set[int] = set()
        for start in range(0, len(newest_first), page_size):
            for number, (status, created) in newest_first[start : start + page_size]:
                listing.record(at(created), status)
                seen.add(number)
            if listing.done():
                break
        history = listing.history()
        open_jobs = {n for n, (status, _) in enumerate(jobs) if status not in FINAL}
        assert open_jobs <= seen, (i, jobs)
