"""Sweeps keep their period when the wall clock steps, and the watchdog's condition holds only
while sweeps really start (issue 10, case 9; reaper.service.scheduler). Real APScheduler
threads with a wall clock that the test steps (tests/clock_step_support.py); every wait is
bounded generously and the assertions count runs, never time them."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from reaper.service.scheduler import SweepScheduler
from tests.clock_step_support import stepped_wall_clock

BOUND_S = 20.0


class Runs:
    def __init__(self) -> None:
        self.count = 0
        self.changed = threading.Condition()

    def __call__(self, name: str) -> None:
        with self.changed:
            self.count += 1
            self.changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.count >= count, BOUND_S), self.count


def test_a_wall_clock_stepped_back_an_hour_is_detected_and_sweeps_go_on() -> None:
    runs = Runs()
    with stepped_wall_clock() as clock:
        scheduler = SweepScheduler(runs, ["a"], every=timedelta(milliseconds=200),
                                   wall=clock.time)  # fmt: skip
        scheduler.start(run_now=True)
        try:
            runs.wait_for(3)
            clock.offset_s = -3600.0  # NTP steps a fast clock back by an hour
            time.sleep(3.0)  # APScheduler's next run is now an hour away on the wall clock
            stalled = runs.count
            assert not scheduler.is_healthy(timedelta(minutes=10))  # no sweep for 2 periods
            step = scheduler.check_clock()  # what the daemon's loop does every tick
            assert step is not None and -3700 < step < -3500
            runs.wait_for(stalled + 3)
            assert scheduler.is_healthy(timedelta(minutes=10))
            assert scheduler.check_clock() is None  # no second step
        finally:
            scheduler.stop(wait=True)


def test_a_wall_clock_stepped_forward_keeps_the_period() -> None:
    runs = Runs()
    with stepped_wall_clock() as clock:
        scheduler = SweepScheduler(runs, ["a"], every=timedelta(milliseconds=200),
                                   wall=clock.time)  # fmt: skip
        scheduler.start(run_now=True)
        try:
            runs.wait_for(2)
            clock.offset_s = 3600.0
            assert scheduler.check_clock() is not None
            before = runs.count
            runs.wait_for(before + 3)
        finally:
            scheduler.stop(wait=True)


def test_no_sweep_for_two_periods_means_not_healthy() -> None:
    ticks = [1000.0]
    scheduler = SweepScheduler(lambda name: None, ["a", "b"], every=timedelta(hours=1),
                               monotonic=lambda: ticks[0])  # fmt: skip
    scheduler.start()  # the first sweep is an hour away
    try:
        assert scheduler.is_healthy(timedelta(minutes=10))
        ticks[0] += 2 * 3600  # two periods: still within the grace
        assert scheduler.is_healthy(timedelta(minutes=10))
        ticks[0] += 301  # past two periods and the 5-minute grace, and no sweep started
        assert not scheduler.is_healthy(timedelta(minutes=10))
        assert set(scheduler.overdue()) == {"a", "b"}
    finally:
        scheduler.stop(wait=True)
