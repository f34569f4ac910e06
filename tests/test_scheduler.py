"""reaper.service.scheduler with real APScheduler threads and short intervals.

No timing assertions: each test waits on an Event with a generous bound and asserts counts
and orderings, never durations."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from reaper.service.scheduler import (
    Schedule,
    SweepScheduler,
    build_trigger,
    crontab_day_of_week,
)

TICK = timedelta(milliseconds=50)
BOUND_S = 20  # generous: only reached when something is broken


class Recorder:
    """A `run_backend` that counts runs, tracks overlap, and can block or fail per backend."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[str] = Counter()
        self.running: Counter[str] = Counter()
        self.max_running: Counter[str] = Counter()
        self.gates: dict[str, threading.Event] = {}
        self.failing: set[str] = set()
        self.waiters: list[tuple[Callable[[], bool], threading.Event]] = []
        self.order: list[str] = []

    def __call__(self, name: str) -> None:
        with self.lock:
            self.running[name] += 1
            self.max_running[name] = max(self.max_running[name], self.running[name])
            self._notify()
        try:
            gate = self.gates.get(name)
            if gate is not None:
                assert gate.wait(BOUND_S)
            if name in self.failing:
                raise RuntimeError(f"sweep bug in {name}")
        finally:
            with self.lock:
                self.running[name] -= 1
                self.runs[name] += 1
                self.order.append(f"{name} done")
                self._notify()

    def _notify(self) -> None:
        for condition, event in self.waiters:
            if condition():
                event.set()

    def wait_for(self, condition: Callable[[], bool]) -> None:
        event = threading.Event()
        with self.lock:
            self.waiters.append((condition, event))
            self._notify()
        assert event.wait(BOUND_S), f"condition not reached; runs so far: {dict(self.runs)}"

    def count(self, name: str) -> int:
        with self.lock:
            return self.runs[name]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def make_scheduler(recorder: Recorder) -> Iterator[Callable[..., SweepScheduler]]:
    made: list[SweepScheduler] = []

    def make(names=("a", "b"), **kwargs) -> SweepScheduler:
        kwargs.setdefault("every", TICK)
        scheduler = SweepScheduler(recorder, names, **kwargs)
        made.append(scheduler)
        return scheduler

    yield make
    for gate in recorder.gates.values():
        gate.set()
    for scheduler in made:
        scheduler.stop(wait=True)


def test_every_backend_runs_repeatedly(recorder, make_scheduler):
    make_scheduler().start()
    recorder.wait_for(lambda: recorder.runs["a"] >= 3 and recorder.runs["b"] >= 3)


def test_a_slow_backend_does_not_delay_another_and_never_overlaps(recorder, make_scheduler):
    recorder.gates["a"] = threading.Event()
    make_scheduler().start(run_now=True)
    recorder.wait_for(lambda: recorder.runs["b"] >= 5)  # many of a's ticks have passed
    assert recorder.count("a") == 0  # a's first run is still blocked, and nothing piled up
    assert recorder.max_running["a"] == 1
    recorder.gates["a"].set()
    recorder.wait_for(lambda: recorder.runs["a"] >= 2)  # after the block, a carries on
    assert recorder.max_running["a"] == 1


def test_an_overrunning_sweep_is_logged_as_skipped(recorder, make_scheduler, caplog):
    recorder.gates["a"] = threading.Event()
    with caplog.at_level(logging.WARNING, logger="reaper.service.scheduler"):
        make_scheduler().start(run_now=True)
        recorder.wait_for(lambda: recorder.runs["b"] >= 5)
    skipped = [r for r in caplog.records if "still running" in r.getMessage()]
    assert skipped and all(r.backend == "a" for r in skipped)


def test_an_exception_is_logged_and_the_backend_runs_again(recorder, make_scheduler, caplog):
    recorder.failing.add("a")
    with caplog.at_level(logging.ERROR, logger="reaper.service.scheduler"):
        scheduler = make_scheduler()
        scheduler.start()
        recorder.wait_for(lambda: recorder.runs["a"] >= 3 and recorder.runs["b"] >= 3)
        assert scheduler.running
    errors = [r for r in caplog.records if r.name == "reaper.service.scheduler"]
    assert errors and "RuntimeError: sweep bug in a" in errors[0].getMessage()


def test_stop_waits_for_the_run_in_flight_and_starts_no_more(recorder, make_scheduler):
    recorder.gates["a"] = threading.Event()
    scheduler = make_scheduler(names=("a",))
    scheduler.start(run_now=True)
    recorder.wait_for(lambda: recorder.running["a"] == 1)

    def stop() -> None:
        scheduler.stop(wait=True)
        with recorder.lock:
            recorder.order.append("stopped")

    stopper = threading.Thread(target=stop)
    stopper.start()
    recorder.gates["a"].set()
    stopper.join(BOUND_S)
    assert recorder.order == ["a done", "stopped"]
    assert not scheduler.running
    scheduler.stop(wait=True)  # a second stop is harmless


def test_reschedule_adds_and_removes_backends(recorder, make_scheduler):
    scheduler = make_scheduler(names=("a", "b"))
    scheduler.start()
    recorder.wait_for(lambda: recorder.runs["b"] >= 1)
    scheduler.reschedule(["a", "c"], every=TICK)
    assert scheduler.backend_names == ["a", "c"]
    b_after = recorder.count("b")
    recorder.wait_for(lambda: recorder.runs["c"] >= 3)
    assert recorder.count("b") <= b_after + 1  # at most a run already handed to its thread


def test_an_unchanged_schedule_keeps_next_run_times(make_scheduler):
    scheduler = make_scheduler(names=("a",), every=timedelta(hours=1))
    scheduler.start()
    before = scheduler.next_run_times()
    scheduler.reschedule(["a"], every=timedelta(hours=1))
    assert scheduler.next_run_times() == before
    scheduler.reschedule(["a"], every=timedelta(hours=2))
    assert scheduler.next_run_times()["a"] > before["a"]


def test_an_invalid_reschedule_changes_nothing(make_scheduler):
    scheduler = make_scheduler(names=("a",), every=timedelta(hours=1))
    scheduler.start()
    before = scheduler.next_run_times()
    with pytest.raises(ValueError, match="expected 5 fields"):
        scheduler.reschedule(["b"], cron="*/5 * *")
    assert scheduler.backend_names == ["a"]
    assert scheduler.next_run_times() == before


def test_is_healthy_turns_false_when_a_run_hangs(recorder):
    clock = [1000.0]
    recorder.gates["a"] = threading.Event()
    scheduler = SweepScheduler(recorder, ["a"], every=TICK, monotonic=lambda: clock[0])
    assert not scheduler.is_healthy(timedelta(minutes=10))  # not started yet
    try:
        scheduler.start(run_now=True)
        recorder.wait_for(lambda: recorder.running["a"] == 1)
        assert scheduler.is_healthy(timedelta(minutes=10))
        clock[0] += 601
        assert not scheduler.is_healthy(timedelta(minutes=10))
        assert scheduler.in_flight() == {"a": 601}
        recorder.gates["a"].set()
        # Runs of one backend are serial: once the second has finished, the hung first one
        # has left the in-flight table, and later runs started at the frozen clock's time.
        recorder.wait_for(lambda: recorder.runs["a"] >= 2)
        assert scheduler.is_healthy(timedelta(minutes=10))
    finally:
        recorder.gates["a"].set()
        scheduler.stop(wait=True)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("5-7", "sun,fri,sat"),
        ("sat,0", "sun,sat"),
        ("1/3", "mon,thu"),
    ],
)
def test_crontab_day_of_week_uses_sunday_zero(field, expected):
    assert crontab_day_of_week(field) == expected


@pytest.mark.parametrize("field", ["8", "5-1", "funday", "*/0", "1-", "mon/x"])
def test_bad_day_of_week_fields_are_refused(field):
    with pytest.raises(ValueError, match="day of week"):
        crontab_day_of_week(field)


def test_cron_day_zero_fires_on_sunday_not_monday():
    trigger = build_trigger(Schedule(cron="30 2 * * 0"), timezone=UTC)
    monday = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    fire = trigger.get_next_fire_time(None, monday)
    assert (fire.weekday(), fire.hour, fire.minute) == (6, 2, 30)  # Sunday 02:30


def test_interval_trigger_carries_jitter():
    trigger = build_trigger(Schedule(every=timedelta(minutes=5), jitter=timedelta(seconds=20)))
    assert trigger.jitter == 20
    assert trigger.interval == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"every": timedelta(minutes=5), "cron": "* * * * *"}, "exactly one"),
        ({"every": timedelta(0)}, "positive"),
        ({"every": timedelta(minutes=1), "jitter": timedelta(seconds=-1)}, "negative"),
    ],
)
def test_schedule_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schedule(**kwargs)


@pytest.mark.parametrize(
    ("every", "grace"),
    [(timedelta(milliseconds=50), 1), (timedelta(minutes=5), 150), (timedelta(hours=1), 300)],
)
def test_misfire_grace_is_half_a_period_within_bounds(every, grace):
    assert Schedule(every=every).misfire_grace_s == grace
    assert Schedule(cron="*/5 * * * *").misfire_grace_s == 60


def test_cron_is_read_in_utc_by_default():
    trigger = build_trigger(Schedule(cron="0 2 * * *"))
    fire = trigger.get_next_fire_time(None, datetime(2024, 7, 1, 3, 0, tzinfo=UTC))
    assert fire == datetime(2024, 7, 2, 2, 0, tzinfo=UTC)


def test_longest_interval_is_every_or_the_widest_cron_gap():
    from reaper.service.scheduler import Schedule, longest_interval

    friday = datetime(2026, 5, 1, 12, tzinfo=UTC)  # a Friday
    assert longest_interval(Schedule(every=timedelta(minutes=5)), friday) == timedelta(minutes=5)
    assert longest_interval(Schedule(cron="*/10 * * * *"), friday) == timedelta(minutes=10)
    # Weekdays at 02:00: Friday's sweep to Monday's is three days.
    assert longest_interval(Schedule(cron="0 2 * * 1-5"), friday) == timedelta(days=3)
