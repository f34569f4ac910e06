"""When sweeps run: one APScheduler 3.x job per backend.

Each backend gets its own job and its own one-thread executor, so a slow or hung backend never
delays another, and a backend's sweeps can never overlap (`max_instances=1` on a single worker).
`coalesce=True` turns a backlog of missed runs (after a suspend, or a sweep that overran several
periods) into one run, never a burst. `misfire_grace_time` is half a period, at least 1 s and
at most 5 min (60 s for cron schedules): a run that could not start within that is dropped and
logged, because the next regular run is nearer than the late one would be useful — a sweep that
starts very late only bunches up against the next.

APScheduler 3.x keeps its run times on the wall clock: stepped back an hour (NTP correcting a
fast clock), it would wait an hour for the next sweep; stepped forward, it would drop runs as
missed. `check_clock`, called from the daemon's loop, compares the wall clock with the monotonic
one and, on a step, schedules every backend afresh from the current time, so sweeps keep their
period whichever way the clock jumps. `is_healthy` (the watchdog's condition) holds only while
every backend's sweeps really start: none for two periods and the pings stop.

This module imports APScheduler at the top; the daemon imports this module lazily, so
`reaper validate` and `reaper run --once` never pay for it."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

JOB_PREFIX = "sweep:"
# APScheduler 3.x takes misfire_grace_time as whole seconds.
MIN_GRACE_S = 1
MAX_GRACE_S = 300
CRON_GRACE_S = 60
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # crontab(5) numbering, 0 = Sunday
# A change of (wall clock - monotonic clock) larger than this is a step of the wall clock, not
# the drift NTP slews away (at most 0.5 ms per second, ntpd(8)).
CLOCK_STEP_S = 2.0
# Sweeps of a backend may not start for this many periods before the watchdog pings stop.
OVERDUE_PERIODS = 2


@dataclass(frozen=True)
class Schedule:
    """`schedule:` from reaper.yaml: exactly one of `every` and `cron`, plus `jitter`."""

    every: timedelta | None = None
    cron: str | None = None
    jitter: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if (self.every is None) == (self.cron is None):
            raise ValueError("schedule: give exactly one of `every` and `cron`")
        if self.every is not None and self.every <= timedelta(0):
            raise ValueError("schedule.every must be positive")
        if self.jitter < timedelta(0):
            raise ValueError("schedule.jitter must not be negative")

    def period_s(self, timezone: tzinfo = UTC) -> float:
        """The time between two sweeps at most: `longest_interval` plus the jitter."""
        gap = longest_interval(self, datetime.now(timezone))
        return (gap + self.jitter).total_seconds() or 86_400.0

    @property
    def misfire_grace_s(self) -> int:
        """How late a run may start, in whole seconds, before it is dropped (see the module
        docstring)."""
        if self.every is None:
            return CRON_GRACE_S
        return min(MAX_GRACE_S, max(MIN_GRACE_S, int(self.every.total_seconds() // 2)))


def crontab_day_of_week(field: str) -> str:
    """Rewrite a crontab day-of-week field in day names, which APScheduler reads unambiguously.

    APScheduler 3.x numbers weekdays from Monday = 0, while crontab(5) uses Sunday = 0 (and 7);
    `CronTrigger.from_crontab("0 2 * * 0")` would run on Mondays (its own docs admit the
    mismatch, issue agronholm/apscheduler#286). Numbers, names, ranges, lists and steps are
    expanded to a list of names. Raises ValueError for anything else."""
    if field == "*":
        return field
    days: set[int] = set()
    for item in field.lower().split(","):
        days |= expand_day_item(item)
    return ",".join(DAY_NAMES[day] for day in sorted(days))


def expand_day_item(item: str) -> set[int]:
    """One comma-separated element of a day-of-week field → crontab day numbers (0-6)."""
    span, _, step_text = item.partition("/")
    step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
    if step_text and step is None:
        raise ValueError(f"day of week {item!r}: bad step")
    if span == "*":
        first, last = 0, 6
    else:
        start, dash, end = span.partition("-")
        first = parse_day(start)
        last = parse_day(end) if dash else (6 if step else first)
    if last == 0 and first > 0:
        last = 7  # "5-7" and "fri-sun" end on Sunday
    if first > last:
        raise ValueError(f"day of week {item!r}: range runs backwards")
    return {day % 7 for day in range(first, last + 1, step or 1)}


def parse_day(text: str) -> int:
    """A crontab day: 0-7 (0 and 7 are Sunday) or a three-letter English name."""
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in DAY_NAMES:
        return DAY_NAMES.index(text)
    raise ValueError(f"day of week {text!r}: expected 0-7 or sun..sat")


def build_trigger(schedule: Schedule, timezone: tzinfo = UTC) -> BaseTrigger:
    """The APScheduler trigger for `schedule`. Raises ValueError for a bad cron expression.

    Cron expressions are read as crontab(5) (five fields, Sunday = 0) in `timezone`: UTC, as
    the config schema documents for `schedule.cron`, so a host's time zone (or its DST
    changes) never moves a sweep."""
    jitter = schedule.jitter.total_seconds() or None
    if schedule.every is not None:
        return IntervalTrigger(seconds=schedule.every.total_seconds(), jitter=jitter)
    assert schedule.cron is not None
    fields = schedule.cron.split()
    if len(fields) != 5:
        raise ValueError(f"schedule.cron {schedule.cron!r}: expected 5 fields, got {len(fields)}")
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                       day_of_week=crontab_day_of_week(day_of_week), timezone=timezone,
                       jitter=jitter)  # fmt: skip


def longest_interval(schedule: Schedule, now: datetime, fires: int = 24) -> timedelta:
    """The longest gap between two sweeps `schedule` starts (jitter aside): `every` itself, or
    for cron the largest of the next `fires` gaps from `now` (a weekday-only cron has a
    weekend gap). Raises ValueError for a bad cron expression."""
    if schedule.every is not None:
        return schedule.every
    trigger = build_trigger(replace(schedule, jitter=timedelta(0)))
    times: list[datetime] = []
    previous: datetime | None = None
    moment = now
    for _ in range(fires + 1):
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        times.append(fire)
        previous, moment = fire, fire + timedelta(microseconds=1)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    return max(gaps, default=timedelta(0))


class SweepScheduler:
    """Runs `run_backend(name)` for each backend on `schedule`, in background threads.

    `run_backend` should handle its own errors (a failed backend is data in the sweep report);
    an exception that escapes it is logged by the error listener and the next run happens as
    scheduled. `monotonic` is injectable for `is_healthy`."""

    def __init__(
        self,
        run_backend: Callable[[str], None],
        backend_names: Iterable[str],
        every: timedelta | None = None,
        cron: str | None = None,
        jitter: timedelta = timedelta(0),
        *,
        timezone: tzinfo = UTC,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._run_backend = run_backend
        self._schedule = Schedule(every, cron, jitter)
        self._period_s = self._schedule.period_s(timezone)
        self._timezone = timezone
        self._monotonic = monotonic
        self._wall = wall
        self._clock_offset = wall() - monotonic()
        self._lock = threading.Lock()
        self._started_at: dict[str, float] = {}  # backend → monotonic start of its current run
        # backend → monotonic start of its last run, or of the schedule (start, reschedule)
        self._last_start: dict[str, float] = {}
        self._scheduler = BackgroundScheduler(timezone=timezone)
        self._scheduler.add_listener(
            self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        self._names: list[str] = []
        self._executors: set[str] = set()
        self._add_jobs(dict.fromkeys(backend_names))

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    @property
    def backend_names(self) -> list[str]:
        return list(self._names)

    @property
    def period(self) -> timedelta:
        """How far apart the sweeps of one backend are due: `every`, or for a cron schedule
        the gap between its next two fire times (a cron with uneven gaps gets its next one)."""
        if self._schedule.every is not None:
            return self._schedule.every
        trigger = build_trigger(Schedule(cron=self._schedule.cron), self._timezone)
        now = datetime.now(self._timezone)
        first = trigger.get_next_fire_time(None, now)
        second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
        if first is None or second is None:
            return timedelta(minutes=5)
        return second - first  # type: ignore[no-any-return]

    def start(self, run_now: bool = False) -> None:
        """Start the scheduler thread; with `run_now`, every backend sweeps at once (no jitter)
        instead of one period from now."""
        if run_now:
            now = datetime.now(self._scheduler.timezone)
            for name in self._names:
                self._scheduler.modify_job(JOB_PREFIX + name, next_run_time=now)
        started = self._monotonic()
        with self._lock:
            self._last_start = dict.fromkeys(self._names, started)
        self._clock_offset = self._wall() - self._monotonic()
        self._scheduler.start()

    def reschedule(
        self,
        backend_names: Iterable[str],
        every: timedelta | None = None,
        cron: str | None = None,
        jitter: timedelta = timedelta(0),
    ) -> None:
        """Apply a reloaded config: add and remove backends, change the schedule.

        A backend whose schedule did not change keeps its next run time, so frequent reloads
        never postpone sweeps forever. A removed backend's run in flight finishes; it is not
        started again. Raises ValueError for an invalid schedule (nothing is changed then)."""
        schedule = Schedule(every, cron, jitter)
        build_trigger(schedule, self._timezone)  # validate before changing anything
        wanted = list(dict.fromkeys(backend_names))
        for name in [n for n in self._names if n not in wanted]:
            self._scheduler.remove_job(JOB_PREFIX + name)
            self._names.remove(name)
        if schedule != self._schedule:
            self._schedule = schedule
            self._period_s = schedule.period_s(self._timezone)
            for name in self._names:
                self._retime_job(name)
        added = [n for n in wanted if n not in self._names]
        self._add_jobs(added)
        now = self._monotonic()
        with self._lock:
            self._last_start = {n: self._last_start.get(n, now) for n in self._names}

    def stop(self, wait: bool = True) -> None:
        """Start no new runs; with `wait`, return only when the runs in flight have finished
        (SIGTERM). Safe to call twice or before `start`."""
        with contextlib.suppress(SchedulerNotRunningError):
            self._scheduler.shutdown(wait=wait)

    def next_run_times(self) -> dict[str, datetime | None]:
        """Backend → when its next sweep is due (for status lines); None before `start`."""
        jobs = {name: self._scheduler.get_job(JOB_PREFIX + name) for name in self._names}
        return {name: getattr(job, "next_run_time", None) for name, job in jobs.items()}

    def longest_interval(self, now: datetime) -> timedelta:
        """The longest gap between two sweeps of a backend under the current schedule."""
        return longest_interval(self._schedule, now)

    def in_flight(self) -> dict[str, float]:
        """Backend → seconds its current run has been going, for the runs in flight."""
        now = self._monotonic()
        with self._lock:
            return {name: now - started for name, started in self._started_at.items()}

    def is_healthy(self, max_run: timedelta) -> bool:
        """True while the scheduler runs, no sweep has been in flight longer than `max_run`, and
        every backend not in flight has started a sweep within OVERDUE_PERIODS periods (plus
        the misfire grace): the condition under which the daemon sends WATCHDOG=1."""
        limit = max_run.total_seconds()
        in_flight = self.in_flight()
        if not self.running or any(age > limit for age in in_flight.values()):
            return False
        return not self.overdue()

    def overdue(self) -> dict[str, float]:
        """Backend → seconds since its last sweep started, for the backends not in flight whose
        sweeps have stopped starting (none for OVERDUE_PERIODS periods plus the grace)."""
        now = self._monotonic()
        allowed = OVERDUE_PERIODS * self._period_s + self._schedule.misfire_grace_s
        with self._lock:
            return {
                name: now - started
                for name, started in self._last_start.items()
                if name not in self._started_at and now - started > allowed
            }

    def check_clock(self) -> float | None:
        """If the wall clock has stepped (its offset to the monotonic clock changed by more than
        CLOCK_STEP_S) since the last check, schedule every backend afresh from now and return
        the step in seconds; else None. Called from the daemon's loop."""
        offset = self._wall() - self._monotonic()
        step = offset - self._clock_offset
        self._clock_offset = offset
        if abs(step) <= CLOCK_STEP_S:
            return None
        log.warning("the wall clock stepped %s by %.0f s; sweeps are scheduled afresh from now",
                    "forward" if step > 0 else "back", abs(step))  # fmt: skip
        if self.running:
            for name in self._names:
                self._retime_job(name)
        return step

    def _trigger(self) -> BaseTrigger:
        # A trigger per job: APScheduler keeps the instance on the job.
        return build_trigger(self._schedule, self._timezone)

    def _add_jobs(self, names: Iterable[str]) -> None:
        for name in names:
            self._ensure_executor(name)
            self._scheduler.add_job(
                self._run, trigger=self._trigger(), args=[name], id=JOB_PREFIX + name,
                name=f"sweep {name}", executor=name, max_instances=1, coalesce=True,
                misfire_grace_time=self._schedule.misfire_grace_s, replace_existing=True,
            )  # fmt: skip
            self._names.append(name)

    def _retime_job(self, name: str) -> None:
        job_id = JOB_PREFIX + name
        self._scheduler.modify_job(job_id, misfire_grace_time=self._schedule.misfire_grace_s)
        self._scheduler.reschedule_job(job_id, trigger=self._trigger())

    def _ensure_executor(self, name: str) -> None:
        # One worker per backend, kept for the scheduler's lifetime even if the backend is
        # removed: a backend re-added by a later reload reuses it, so its old run in flight
        # still counts against max_instances and the two can never overlap.
        if name not in self._executors:
            self._scheduler.add_executor(ThreadPoolExecutor(max_workers=1), alias=name)
            self._executors.add(name)

    def _run(self, name: str) -> None:
        with self._lock:
            self._started_at[name] = self._last_start[name] = self._monotonic()
        try:
            self._run_backend(name)
        finally:
            with self._lock:
                self._started_at.pop(name, None)

    def _on_event(self, event: JobEvent) -> None:
        """Log what went wrong; never raises (APScheduler would only log it again)."""
        name = str(event.job_id).removeprefix(JOB_PREFIX)
        if event.code == EVENT_JOB_ERROR:
            exc = getattr(event, "exception", None)
            log.error("sweep of backend %s raised %s: %s", name, type(exc).__name__, exc,
                      extra={"backend": name})  # fmt: skip
        elif event.code == EVENT_JOB_MAX_INSTANCES:
            log.warning("sweep of backend %s is still running; this run is skipped", name,
                        extra={"backend": name})  # fmt: skip
        elif event.code == EVENT_JOB_MISSED:
            log.warning("sweep of backend %s missed its start by more than %d s; skipped",
                        name, self._schedule.misfire_grace_s, extra={"backend": name})  # fmt: skip
