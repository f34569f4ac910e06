"""`reaper daemon`: scheduled sweeps until SIGTERM, reload on SIGHUP, systemd readiness,
status and watchdog, metrics (docs/commands.md, docs/systemd.md).

Threads. The main thread runs `Daemon.run`: it sleeps on a self-pipe (`reaper.service.signals`)
and does everything the signals ask for — reload, stop — plus the watchdog pings and status
lines. The scheduler runs each backend's sweep in that backend's own worker thread
(`reaper.service.scheduler`);
a sweep takes the policy set current when it starts (`Loaded`, swapped whole by a reload),
reports to metrics, and pokes the main loop.

Watchdog. `WATCHDOG=1` goes out from the main loop only while the scheduler runs and no sweep
has been in flight longer than `max_sweep`: a wedged main loop or a hung sweep (a backend that
accepts the connection and never answers) stops the pings, and systemd restarts the daemon.

Imports APScheduler (through `reaper.service.scheduler`) at the top: only the daemon command imports
this module, lazily."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

from reaper.audit.writer import AuditLog, AuditWriteError
from reaper.engine.budget import CancelBudget
from reaper.engine.decide import Plan
from reaper.engine.pool import BackendPool
from reaper.engine.runtime import routing_from, sweep_env, utc_now
from reaper.engine.sender import NoticeSender
from reaper.engine.sweep import BackendReport, run_sweep
from reaper.errors import BackendError, ConfigError, Diagnostic, ExitCode
from reaper.policy.config import Config, load_all
from reaper.policy.durations import format_duration
from reaper.policy.model import Match, PolicySet
from reaper.policy.shard import Shard
from reaper.redact import redact
from reaper.service.coordination import CoordinationError, Coordinator
from reaper.service.metrics import Metrics, write_textfile
from reaper.service.reload import (
    Loaded,
    ReloadPlan,
    plan_reload,
    refusal_diagnostics,
    reload_failed_fields,
    reload_fields,
)
from reaper.service.scheduler import SweepScheduler
from reaper.service.signals import SignalFlags, Wakeup
from reaper.service.systemd import Notifier

log = logging.getLogger(__name__)

# A sweep in flight longer than this stops the watchdog pings. Ten minutes, the same cap as
# TimeoutStartSec= of reaper-once.service: a listing of 100k jobs plus the cancels takes a
# fraction of that, and each call is bounded by its own timeout (60 s at most, with retries).
DEFAULT_MAX_SWEEP = timedelta(minutes=10)
# Time SIGTERM leaves the cancels in flight, below the unit's TimeoutStopSec=2min so that the
# daemon exits on its own (and says which sweeps it abandoned) before systemd's SIGKILL.
DEFAULT_STOP_GRACE = timedelta(seconds=100)
IDLE_TICK = timedelta(seconds=5)  # how often the loop looks around when no watchdog is asked
MAX_STATUS_ERROR_CHARS = 80

Loader = Callable[[Path], tuple[Config, PolicySet]]


@dataclass(frozen=True)
class DaemonOptions:
    max_sweep: timedelta = DEFAULT_MAX_SWEEP
    stop_grace: timedelta = DEFAULT_STOP_GRACE
    shard: Shard | None = None  # `--shard`: overrides the config's `shard:`, also after reloads


@dataclass(frozen=True)
class SweepOutcome:
    """One backend's finished sweep, as the main loop shows it. `guards` names what the
    guards refused or held back (`REFUSED policy P (6 of 9 active > 50%)`)."""

    report: BackendReport
    audit_error: str | None
    finished_at: datetime
    guards: tuple[str, ...] = ()
    paused: bool = False


@dataclass(frozen=True)
class Services:
    """What the daemon works with, opened and closed by its caller."""

    audit: AuditLog
    pool: BackendPool
    metrics: Metrics
    notifier: Notifier
    wakeup: Wakeup
    flags: SignalFlags
    # Sends notices off the sweep threads (docs/config.md, "Notifiers"); None: none are sent.
    sender: NoticeSender | None = None


class Daemon:
    """The running daemon: a main loop (`run`) and the sweep threads' entry (`sweep_backend`).
    `load` (reads a config and its policies), `clock` and `monotonic` are injectable."""

    def __init__(
        self,
        loaded: Loaded,
        services: Services,
        options: DaemonOptions | None = None,
        *,
        load: Loader = load_all,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        coordinator: Coordinator | None = None,
    ) -> None:
        self._loaded = loaded
        self._coordinator = coordinator
        self._audit, self._pool, self._metrics = services.audit, services.pool, services.metrics
        self._notifier, self._wakeup = services.notifier, services.wakeup
        self._flags = services.flags
        self._sender = services.sender
        self._options = options or DaemonOptions()
        self._load, self._clock, self._monotonic = load, clock, monotonic
        self._stopping = threading.Event()
        self._finished: queue.SimpleQueue[SweepOutcome] = queue.SimpleQueue()
        self._last: dict[str, SweepOutcome] = {}
        self._elsewhere: set[str] = set()  # coordination: swept by another member last turn
        self.abandoned: list[str] = []  # backends whose sweep outlived the stop grace
        self._watchdog_held = False
        self._status_sent: str | None = None
        self._reload_failure: str | None = None  # STATUS shows it until a reload succeeds
        schedule = loaded.config.schedule
        self._scheduler = SweepScheduler(
            self.sweep_backend, loaded.backend_names, schedule.every, schedule.cron,
            schedule.jitter, monotonic=monotonic,
        )  # fmt: skip
        # max_cancels_per_sweep over every backend's sweep of one period (engine/budget.py).
        self._budget = CancelBudget(loaded.config.max_cancels_per_sweep, self._scheduler.period)
        self._publish_interval()

    @property
    def loaded(self) -> Loaded:
        """The active config and policy set."""
        return self._loaded

    @property
    def scheduler(self) -> SweepScheduler:
        return self._scheduler

    # -- main thread ----------------------------------------------------------------------------
    def run(self) -> ExitCode:
        """Sweep on schedule until SIGTERM/SIGINT; returns the exit code. Every backend sweeps
        once at start-up; READY=1 follows as soon as the scheduler runs."""
        self._scheduler.start(run_now=True)
        self._notifier.ready(self._status_now())
        log.info("reaper daemon ready: %d policies, backends %s", len(self._loaded.policies),
                 ", ".join(self._loaded.backend_names) or "none")  # fmt: skip
        while not self._flags.stop:
            self._wakeup.wait(self._tick_s())
            if not self._flags.stop:
                self.step()
        return self.shutdown()

    def step(self) -> None:
        """One pass of the main loop: reload if asked, publish finished sweeps, ping the
        watchdog while healthy, close backends a reload retired."""
        if self._flags.take_reload():
            self.reload()
        self._drain_finished()
        self.publish_status()
        self._scheduler.check_clock()
        self.ping_watchdog()
        self._pool.close_retired(busy=self._scheduler.in_flight())

    def publish_status(self) -> bool:
        """STATUS= when the line changed (a sweep finished, the pause file came or went, a
        sweep went past max_sweep); True if sent."""
        line = self.status_line()
        if line == self._status_sent:
            return False
        return self._notifier.status(self._status_now())

    def _status_now(self) -> str:
        """The status line, remembered as the one systemd has."""
        self._status_sent = self.status_line()
        return self._status_sent

    def ping_watchdog(self) -> bool:
        """WATCHDOG=1 if the watchdog is on and the scheduler is healthy; True if sent."""
        if self._notifier.watchdog_interval() is None:
            return False
        healthy = self._scheduler.is_healthy(self._options.max_sweep)
        if healthy == self._watchdog_held:  # log the changes, not every tick
            self._watchdog_held = not healthy
            if healthy:
                log.info("watchdog pings resume")
            else:
                overdue = {n: round(s) for n, s in self._scheduler.in_flight().items()}
                late = {n: round(s) for n, s in self._scheduler.overdue().items()}
                log.error("watchdog pings held: scheduler running %s, sweeps in flight (s) %s, "
                          "limit %s, no sweep started for (s) %s", self._scheduler.running,
                          overdue, self._options.max_sweep, late)  # fmt: skip
        return healthy and self._notifier.watchdog()

    def reload(self) -> bool:
        """SIGHUP: reopen the audit log, validate the config and every policy file, swap the
        set whole or keep the old one; audit either way; READY=1 at the end. True if the new
        set is active."""
        self._notifier.reloading("reloading config and policies")
        self._reopen_audit()
        path = self._loaded.config.path
        problems = self._try_reload(path)
        if problems:
            self._reject(path, problems)
        self._notifier.ready(self._status_now())
        return not problems

    def _try_reload(self, path: Path) -> list[Diagnostic]:
        """Load, validate and apply; returns what stopped it (nothing: the new set is active)."""
        try:
            new = Loaded(*self._load(path)).with_shard(self._options.shard)
            plan = plan_reload(self._loaded, new)
            if plan.refused:
                return refusal_diagnostics(path, plan)
            self._apply(plan)
        except ConfigError as exc:
            return exc.diagnostics
        except ValueError as exc:  # the scheduler refused the schedule; nothing was changed
            return [Diagnostic(str(path), 1, 1, f"schedule: {exc}")]
        except Exception as exc:  # main loop: a reload bug keeps the old set
            log.exception("reload failed unexpectedly")
            return [Diagnostic(str(path), 1, 1, f"internal error: {redact(repr(exc))}")]
        return []

    def shutdown(self) -> ExitCode:
        """STOPPING=1; start no new sweep or cancel; wait (up to the stop grace) for the
        cancels in flight to finish and be recorded. OK, or FAILED when a sweep is abandoned."""
        busy = sorted(self._scheduler.in_flight())
        self._notifier.stopping(f"stopping; waiting for {len(busy)} sweep(s) in flight")
        log.info("stopping: waiting for sweeps in flight: %s", ", ".join(busy) or "none")
        self._stopping.set()
        self._scheduler.stop(wait=False)
        deadline = self._monotonic() + self._options.stop_grace.total_seconds()
        while (busy := sorted(self._scheduler.in_flight())) and self._monotonic() < deadline:
            self._wakeup.wait(min(1.0, deadline - self._monotonic()))
        self._drain_finished()
        self._flush_notices(deadline)
        if busy:
            self.abandoned = busy
            log.error("sweeps of %s still running after %s; exiting without them (their open "
                      "intents are reconciled at the next start)", ", ".join(busy),
                      self._options.stop_grace)  # fmt: skip
            return ExitCode.FAILED
        log.info("stopped")
        return ExitCode.OK

    # -- sweep threads --------------------------------------------------------------------------
    def sweep_backend(self, name: str) -> None:
        """One scheduled sweep of one backend with the policy set current now. A failing
        backend is recorded (metrics, status), never raised. With coordination, only when the
        partitioner gives the backend to this member and its lock is free (docs/scale.md)."""
        if self._stopping.is_set():
            return
        loaded = self._loaded  # one snapshot for the whole sweep
        if self._coordinator is None:
            self._sweep(name, loaded)
            return
        try:
            if not self._coordinator.owns(name):
                log.debug("%s belongs to another member", name, extra={"backend": name})
                self._elsewhere.add(name)
                return
            with self._coordinator.holding(name) as taken:
                if not taken:
                    log.info("%s is being swept by another member; skipped", name,
                             extra={"backend": name})  # fmt: skip
                    self._elsewhere.add(name)
                    return
                self._elsewhere.discard(name)
                self._sweep(name, loaded)
        except CoordinationError as exc:  # nobody may be sweeping it: fail loudly
            log.error("%s", exc, extra={"backend": name})
            self._record(loaded, BackendReport(name, error=str(exc)), None)

    def _sweep(self, name: str, loaded: Loaded) -> None:
        try:
            backend = self._pool.get(name, loaded.config)
        except BackendError as exc:
            log.error("%s", exc)
            self._record(loaded, BackendReport(name, error=str(exc)), None)
            return
        routing = routing_from(loaded.config, os.environ) if self._sender is not None else None
        env = sweep_env(loaded.config, loaded.policies, {name: backend}, self._audit,
                        clock=self._clock, routing=routing, sender=self._sender)  # fmt: skip
        try:
            result = run_sweep(replace(env, stop=self._stopping, budget=self._budget), [name])
        except AuditWriteError as exc:  # not even sweep_start: nothing was done
            log.critical("audit log not writable, sweep of %s not started: %s", name, exc)
            self._record(loaded, BackendReport(name), str(exc))
            return
        self._record(loaded, result.backends[name], result.audit_error, guard_notes(result.plan),
                     result.paused)  # fmt: skip

    def _record(
        self,
        loaded: Loaded,
        report: BackendReport,
        audit_error: str | None,
        guards: tuple[str, ...] = (),
        paused: bool = False,
    ) -> None:
        self._metrics.record_backend_sweep(report)
        textfile = loaded.config.metrics_textfile
        if textfile is not None:
            try:
                write_textfile(self._metrics.registry, textfile)
            except OSError as exc:
                log.error("cannot write metrics textfile %s: %s", textfile, exc.strerror or exc)
        self._finished.put(SweepOutcome(report, audit_error, self._clock(), guards, paused))
        self._wakeup.poke()

    def _flush_notices(self, deadline: float) -> None:
        """Give queued notices the rest of the stop grace; those left are logged, not sent."""
        if self._sender is None:
            return
        if not self._sender.flush(max(0.0, deadline - self._monotonic())):
            log.error("stopping with notices unsent (the stop grace is over)")
        self._sender.close(timeout_s=1.0)

    # -- helpers --------------------------------------------------------------------------------
    def _tick_s(self) -> float:
        """Ping at least four times per watchdog interval (sd_watchdog_enabled(3) asks for
        twice; the margin absorbs a slow reload)."""
        interval = self._notifier.watchdog_interval()
        tick = IDLE_TICK if interval is None else min(IDLE_TICK, interval / 4)
        return tick.total_seconds()

    def _drain_finished(self) -> int:
        count = 0
        while True:
            try:
                outcome = self._finished.get_nowait()
            except queue.Empty:
                return count
            self._last[outcome.report.backend] = outcome
            count += 1

    def _reopen_audit(self) -> None:
        try:
            self._audit.reopen()
        except AuditWriteError as exc:
            log.error("cannot reopen the audit log, still writing the old file: %s", exc)

    def _apply(self, plan: ReloadPlan) -> None:
        """Swap in a validated set. The scheduler goes first: it validates the schedule before
        changing anything (ValueError), so a refusal leaves everything as it was."""
        config = plan.new.config
        if plan.schedule_changed or plan.backends_changed:
            schedule = config.schedule
            self._scheduler.reschedule(plan.new.backend_names, schedule.every, schedule.cron,
                                       schedule.jitter)  # fmt: skip
        self._pool.renew(config)
        self._budget.configure(config.max_cancels_per_sweep, self._scheduler.period)
        self._loaded = plan.new
        self._reload_failure = None
        for setting in plan.restart_only:
            log.warning("%s changed; it takes effect at the next restart", setting)
        self._metrics.declare_backends(plan.new.backend_names)
        self._publish_interval()
        self._metrics.record_reload(True, len(plan.new.policies))
        self._write_audit("reload", reload_fields(plan.new))
        log.info("reloaded %s: %d policies active", config.path, len(plan.new.policies))

    def _publish_interval(self) -> None:
        interval = self._scheduler.longest_interval(self._clock())
        self._metrics.set_schedule_interval(interval.total_seconds())

    def _reject(self, path: Path, diagnostics: list[Diagnostic]) -> None:
        kept = self._loaded
        more = f" (+{len(diagnostics) - 1} more)" if len(diagnostics) > 1 else ""
        first = "invalid"
        if diagnostics:  # the location whole, the message cut
            d = diagnostics[0]
            first = f"{d.file}:{d.line}:{d.column}: {d.message[:MAX_STATUS_ERROR_CHARS]}"
        self._reload_failure = (
            f"RELOAD FAILED at {self._clock():%H:%M:%SZ}: {first}{more}; "
            f"the {len(kept.policies)} policies loaded before stay active"
        )
        for diagnostic in diagnostics:
            log.error("reload refused: %s", diagnostic)
        log.error("reload refused; the %d policies loaded before stay active", len(kept.policies))
        self._metrics.record_reload(False, len(kept.policies))
        self._write_audit("reload_failed", reload_failed_fields(path, diagnostics, kept))

    def _write_audit(self, event: str, fields: Mapping[str, object]) -> None:
        try:
            self._audit.append(event, **fields)
        except AuditWriteError as exc:
            log.error("cannot write the %s audit record: %s", event, exc)

    def status_line(self) -> str:
        """One line for `systemctl status`: PAUSED and a failed reload first, the policies, then
        each backend's last sweep, with its refusals and caps, or STUCK while its sweep has been
        in flight longer than max_sweep."""
        parts = ["PAUSED: the pause file exists, nothing is cancelled"] if self._paused() else []
        parts += [self._reload_failure] if self._reload_failure else []
        parts.append(f"{len(self._loaded.policies)} policies")
        stuck = self._stuck()
        for name in self._loaded.backend_names:
            outcome = self._last.get(name)
            if name in self._elsewhere:
                parts.append(f"{name}: another member's")
                continue
            text = "waiting" if outcome is None else describe(outcome)
            if name in stuck:
                limit = format_duration(self._options.max_sweep)
                text = f"STUCK: sweep in flight longer than max_sweep {limit}; last: {text}"
            parts.append(f"{name}: {text}")
        return "; ".join(parts)

    def _paused(self) -> bool:
        pause_file = self._loaded.config.pause_file
        return pause_file is not None and pause_file.exists()

    def _stuck(self) -> set[str]:
        limit = self._options.max_sweep.total_seconds()
        return {name for name, age in self._scheduler.in_flight().items() if age > limit}


def describe(outcome: SweepOutcome) -> str:
    """`12 active, 2 cancelled, 1 skipped at 12:00:05Z`, or the error."""
    report = outcome.report
    when = f"{outcome.finished_at:%H:%M:%SZ}"
    error = report.error or (f"audit: {outcome.audit_error}" if outcome.audit_error else None)
    if error:
        return f"FAILED at {when}: {error[:MAX_STATUS_ERROR_CHARS]}"
    counts = [f"{report.active} active"]
    counts += [f"{n} {outcome_name}" for outcome_name, n in sorted(report.outcomes.items()) if n]
    skipped = sum(report.skipped.values())
    if skipped:
        counts.append(f"{skipped} skipped")
    return f"{', '.join([*counts, *outcome.guards])} at {when}"


def guard_notes(plan: Plan[Match]) -> tuple[str, ...]:
    """What the guards refused or held back, as STATUS shows it."""
    refused = [f"REFUSED policy {r.policy} ({r.matched} of {r.active} active > "
               f"{r.max_fraction:.0%})" for r in plan.fraction_refusals]  # fmt: skip
    held = [f"LIMIT {hit.describe()}: {hit.skipped} held back" for hit in plan.limit_hits]
    return (*refused, *held)
