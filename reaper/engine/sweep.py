"""One sweep: list → match → decide → re-check → cancel → audit (docs/architecture.md).

The only module with side effects on jobs. Every backend is scanned independently and
concurrently; a backend that fails is reported and the others go on. Dry run is one branch in
one place (`_cancel_or_pretend`): everything else runs identically."""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import monotonic
from typing import Any, NamedTuple, Protocol, runtime_checkable

from reaper.audit.reader import LogTail, RecentRecords, held_for_confirmation
from reaper.audit.writer import (
    AuditLog,
    AuditWriteError,
    open_warnings,
    recently_cancelled,
)
from reaper.backends.base import Backend, CancelOutcome, CancelResult
from reaper.engine.breaker import Breaker
from reaper.engine.budget import CancelBudget
from reaper.engine.confirm import FollowUp, follow_up, lookback
from reaper.engine.decide import (
    RECANCEL_WINDOW,
    Action,
    Clearance,
    Decision,
    Guards,
    JobKey,
    OpenWarning,
    Plan,
    decide,
    is_protected,
)
from reaper.engine.guardlog import log_guards, log_summary
from reaper.engine.notices import (
    NoticeEvent,
    NoticeItem,
    Routing,
    cleared_item,
    match_item,
    route,
)
from reaper.engine.scan import DEFAULT_MAX_CLOCK_SKEW, Progress, Scan, scan_backend
from reaper.engine.sender import NoticeSender
from reaper.errors import BackendError, ExitCode
from reaper.jobs import KEEP_UNTIL_TAG, BadRecord, Job, SkipCause, parse_instant
from reaper.policy.model import Match, PolicySet, evaluate

log = logging.getLogger(__name__)

DEFAULT_CONFIRM_WITHIN = timedelta(minutes=30)  # limits.confirm_within (docs/config.md)
# Cancel calls in flight per backend (docs/architecture.md, sweep step 5); as many re-check reads
# run beside them.
DEFAULT_CONCURRENCY = 8
# Workers per cancel slot: besides the jobs in a cancel call, others are being re-read or wait
# on the audit log (one file, one record at a time), and the cancel lane must not run dry.
WORKERS_PER_SLOT = 3
# How far back a sweep looks for open warnings: the longest grace period, plus the longest a
# window keeps a due cancel waiting, plus this margin (sweeps are minutes apart; a required
# notice may fail for longer). A warning older than that is forgotten and the job is warned
# again, with a new due time: the safe side, since forgetting can only delay a cancel, never
# bring one forward.
WARNING_MARGIN = timedelta(hours=6)


@dataclass(frozen=True)
class SweepEnv:
    """Everything a sweep touches, injected."""

    policies: PolicySet
    backends: Mapping[str, Backend]
    audit: AuditLog | None  # None for `plan`, which writes nothing
    audit_path: Path  # read for the re-cancel window
    guards: Guards
    clock: Callable[[], datetime]
    pause_file: Path | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    # Set on SIGTERM (the daemon) or SIGINT/SIGTERM (`plan`, `run --once`): listings still
    # running are abandoned, cancels already in flight finish and are recorded, no new one
    # starts (docs/systemd.md). Jobs left alone are evaluated afresh by the next sweep.
    stop: threading.Event | None = None
    # The whole sweep's budget in seconds (`plan` and `run --deadline`): a listing still
    # running then is abandoned (the backend has failed this sweep), and no cancel starts after
    # it. None: no deadline (the daemon, whose watchdog covers a sweep that overruns).
    deadline_s: float | None = None
    # Configured backends that could not even be built (missing credentials, say): reported in
    # the audit and the exit code like a failed listing, so the gap is never silent.
    unreachable: Mapping[str, str] = field(default_factory=dict)
    # limits.max_clock_skew: no cancels on a backend whose clock differs more from the host's.
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW
    # The host's clock, which the servers' clocks are compared with; `clock` may be another
    # moment (`plan --now`), the time the sweep evaluates at.
    host_clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    progress: Progress | None = None  # told of each listed page (a terminal's progress line)
    # Notices (docs/config.md, "Notifiers"): who hears of what, and the thread that sends.
    # Without a sender nothing is sent; warnings and grace still work, audited only.
    routing: Routing | None = None
    sender: NoticeSender | None = None
    # How long a cancelled job may stay active before it is `stuck` (docs/audit.md).
    confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN
    # The daemon's shared per-period cap over every backend's sweep (reaper/engine/budget.py);
    # None in `run --once`, whose one sweep covers every backend.
    budget: CancelBudget | None = None


@dataclass
class BackendReport:
    """Counts of one backend in one sweep (feeds metrics, `sweep_end` and the CLI)."""

    backend: str
    active: int = 0
    matched: Counter[str] = field(default_factory=Counter)  # policy → jobs it decided
    outcomes: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    ladder: Counter[str] = field(default_factory=Counter)  # warned, cleared
    followups: Counter[str] = field(default_factory=Counter)  # confirmed / stuck earlier cancels
    error: str | None = None
    duration_s: float = 0.0
    clock_skew_s: float | None = None  # the server's clock minus the host's, when known


@dataclass
class SweepReport:
    sweep_id: str
    plan: Plan[Match]
    backends: dict[str, BackendReport]
    audit_error: str | None = None
    paused: bool = False  # the pause file existed when the sweep decided

    @property
    def failed(self) -> bool:
        return self.audit_error is not None or any(
            r.error or r.outcomes[CancelOutcome.FAILED] for r in self.backends.values()
        )

    @property
    def exit_code(self) -> ExitCode:
        """1 when a backend, a cancel or the audit failed; else 3 when a guard refused; else 0."""
        if self.failed:
            return ExitCode.FAILED
        return ExitCode.REFUSED if self.plan.refused else ExitCode.OK


def new_sweep_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class _Limits:
    """When a sweep must stop starting work: on `stop`, or at `ends_at` (monotonic seconds)."""

    stop: threading.Event | None
    ends_at: float | None
    deadline_s: float | None

    @classmethod
    def of(cls, env: SweepEnv) -> _Limits:
        ends_at = None if env.deadline_s is None else monotonic() + env.deadline_s
        return cls(env.stop, ends_at, env.deadline_s)

    def why_stop(self) -> str | None:
        """Why no new work may start now, or None."""
        if self.stop is not None and self.stop.is_set():
            return "stopped (signal)"
        if self.ends_at is not None and monotonic() >= self.ends_at:
            return f"sweep deadline of {self.deadline_s:g} s reached"
        return None


# How often a waiting sweep looks at its stop event and deadline.
_POLL_S = 0.1


def scan_all(env: SweepEnv, names: Sequence[str], now: datetime) -> list[Scan]:
    """Scan the named backends concurrently; never raises for a backend failure. Returns when
    every listing has ended, or at once when the sweep is stopped or past its deadline: the
    listings still running are then abandoned (their daemon threads end with their call's
    timeout) and reported as failed, so that nothing waits on a backend that never answers."""
    return _scan_until(env, names, now, _Limits.of(env))


def _scan_until(env: SweepEnv, names: Sequence[str], now: datetime, limits: _Limits) -> list[Scan]:
    results: dict[str, Scan] = {}
    lock, done = threading.Lock(), threading.Event()

    def scan(name: str) -> None:
        result = _scan_one(env, name, now)
        with lock:
            results[name] = result
            if len(results) == len(names):
                done.set()

    for name in names:
        threading.Thread(target=scan, args=(name,), name=f"scan-{name}", daemon=True).start()
    why: str | None = None
    while names and not done.wait(_POLL_S):
        if (why := limits.why_stop()) is not None:
            break
    with lock:
        finished = dict(results)
    return [finished[name] if name in finished else _abandoned(name, why) for name in names]


def _scan_one(env: SweepEnv, name: str, now: datetime) -> Scan:
    started = monotonic()
    backend, policies = env.backends[name], env.policies.for_backend(name)
    try:
        result = scan_backend(
            backend, policies, now, env.progress,
            max_clock_skew=env.max_clock_skew, host_clock=env.host_clock,
        )  # fmt: skip
    except Exception as exc:  # a listing thread must always report: the sweep waits for it
        log.exception("listing %s raised", name)
        return Scan(name, complete=False, error=f"listing raised {type(exc).__name__}")
    if result.error and result.blocked_by is SkipCause.CLOCK_SKEW:
        log.error("not acting on %s: %s", name, result.error)
    elif result.error:
        log.error("listing %s failed: %s", name, result.error)
    log.debug("scanned %s in %.2fs", name, monotonic() - started)
    return result


def _abandoned(name: str, why: str | None) -> Scan:
    error = f"listing abandoned: {why or 'stopped'}"
    log.error("listing %s did not finish: %s", name, error)
    return Scan(name, complete=False, error=error)


def plan_sweep(env: SweepEnv, names: Sequence[str] | None = None) -> tuple[list[Scan], Plan[Match]]:
    """List and decide without acting or writing: what `reaper plan` shows. Makes no mutating
    call and writes no audit record."""
    now = env.clock()
    scans = scan_all(env, _names(env, names), now)
    return scans, _decide(env, scans, now, _audit_state_for_plan(env, now), _paused(env))


def run_sweep(env: SweepEnv, names: Sequence[str] | None = None) -> SweepReport:
    """One sweep over the named backends (default: all). Never raises for a backend or a job;
    raises AuditWriteError only if even `sweep_start` cannot be written (nothing was done)."""
    if env.audit is None:
        raise ValueError("run_sweep needs an audit log; plan_sweep is the read-only path")
    audit = env.audit
    now = env.clock()
    sweep_id = new_sweep_id(now)
    names = _names(env, names)
    paused = _paused(env)  # looked at once: the audit, the decision and the logs agree
    audit.append(
        "sweep_start", sweep_id=sweep_id, backends=names, policies=len(env.policies.policies),
        dry_run=env.guards.dry_run, paused=paused, unreachable=dict(env.unreachable),
    )  # fmt: skip
    started, limits = monotonic(), _Limits.of(env)
    followed = _follow_up(env, audit, sweep_id, names, now, paused)
    scans = _scan_until(env, names, now, limits)
    state = read_audit_state(audit.recent, now, env.policies, env.confirm_within)
    plan = _decide(env, scans, now, state, paused)
    log_guards(plan, env.pause_file, paused)
    report = SweepReport(sweep_id, plan, {s.backend: _backend_report(s) for s in scans}, None,
                         paused)  # fmt: skip
    for name, error in env.unreachable.items():
        report.backends[name] = BackendReport(name, error=f"not reachable: {error}")
    act = _Actor(env, audit, sweep_id, report, limits)
    _count_follow_ups(report, followed, act)
    for scan in scans:
        act.record_bad_records(scan.bad_records)
    act.record_skips(plan)
    act.record_ladder(plan)
    _send_notices(env, sweep_id, _ladder_items(env, plan))
    act.run(plan)
    _send_notices(env, sweep_id, act.outcome_items)
    for backend_report in report.backends.values():
        backend_report.duration_s = monotonic() - started
        log_summary(sweep_id, backend_report)
    _write_sweep_end(audit, report)
    _write_head(audit)
    return report


NoticeDraft = tuple[NoticeItem, bool]  # an item, and whether it is about a dry run


def _ladder_items(env: SweepEnv, plan: Plan[Match]) -> list[NoticeDraft]:
    """The `warned` notices of this sweep (a first warning, or again while `require_notice`
    waits for a delivery), the `cleared` ones, and the `refused` ones (a guard held a cancel)."""
    if env.routing is None:
        return []
    drafts: list[NoticeDraft] = []
    for d in plan.decisions:
        event = _ladder_event(d)
        if event is not None:
            item = match_item(
                event, env.routing, d.match, d.reason, due=d.due, cause=str(d.cause or "")
            )
            drafts.extend([(item, d.dry_run)] if item else [])
    for clearance in plan.cleared:
        policy = env.policies.by_name(clearance.warning.policy)
        item = cleared_item(env.routing, policy, clearance)
        drafts.extend([(item, clearance.warning.dry_run)] if item else [])
    return drafts


def _ladder_event(decision: Decision[Match]) -> NoticeEvent | None:
    if decision.action is Action.WARN or decision.cause is SkipCause.NOTICE_PENDING:
        return NoticeEvent.WARNED
    if decision.cause in (SkipCause.FRACTION_GUARD, SkipCause.LIMIT):
        return NoticeEvent.REFUSED
    return None


def _send_notices(env: SweepEnv, sweep_id: str, drafts: Sequence[NoticeDraft]) -> None:
    """Hand this batch to the sender and return at once. Dry-run items are logged, not sent."""
    if env.routing is None or not drafts:
        return
    dry = [item for item, dry_run in drafts if dry_run]
    if dry:
        log.info("dry run: %d notice line(s) not sent (%s)", len(dry),
                 ", ".join(sorted({str(item.event) for item in dry})))  # fmt: skip
    notices = route([item for item, dry_run in drafts if not dry_run], env.routing, sweep_id)
    if env.sender is None:
        for notice in notices:
            log.info("no notifier thread: %s notice to %s about %d job(s) not sent",
                     notice.event, notice.notifier.name, len(notice.jobs))  # fmt: skip
        return
    env.sender.submit(notices)


def _names(env: SweepEnv, names: Sequence[str] | None) -> list[str]:
    return list(env.backends) if names is None else list(names)


def _paused(env: SweepEnv) -> bool:
    return env.pause_file is not None and env.pause_file.exists()


@dataclass
class _Followed:
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    audit_error: str | None = None


def _follow_up(  # noqa: PLR0917 (the sweep's parts it acts with)
    env: SweepEnv,
    audit: AuditLog,
    sweep_id: str,
    names: Sequence[str],
    now: datetime,
    paused: bool,
) -> _Followed:
    """Confirm (or flag `stuck`) the earlier cancels of this sweep's backends; `paused` is the
    sweep's one look at the pause file (no extra cancel call then). An unreadable log skips the
    follow-up (it is logged); a failed write stops every cancel of the sweep."""
    followed = _Followed()

    def write(event: str, fields: dict[str, Any]) -> bool:
        if followed.audit_error is not None:
            return False
        try:
            audit.append(event, sweep_id=sweep_id, **fields)
        except AuditWriteError as exc:
            log.critical("audit log write failed, cancelling nothing more: %s", exc)
            followed.audit_error = str(exc)
            return False
        return True

    try:
        records = audit.recent.records(now - lookback(env.confirm_within), now)
    except OSError as exc:
        log.error("cannot read the audit log to confirm earlier cancels: %s", exc)
        return followed
    backends = {name: env.backends[name] for name in names if name in env.backends}
    may_cancel = not env.guards.dry_run and not paused
    step = FollowUp(backends, now, env.confirm_within, may_cancel, write)
    followed.counts = follow_up(step, records)
    return followed


def _count_follow_ups(report: SweepReport, followed: _Followed, act: _Actor) -> None:
    for name, counts in followed.counts.items():
        if name in report.backends:
            report.backends[name].followups.update(counts)
    if followed.audit_error is not None:
        report.audit_error = followed.audit_error
        act.audit_broken.set()


@dataclass(frozen=True)
class AuditState:
    """What a sweep's decision needs from the audit log (docs/architecture.md, sweep step 3)."""

    recent_cancels: frozenset[JobKey] = frozenset()
    warnings: Mapping[JobKey, OpenWarning] = field(default_factory=dict)


def warning_lookback(policies: PolicySet) -> timedelta | None:
    """How far back open warnings are read (see WARNING_MARGIN); None when no policy warns
    first, so a sweep without a ladder reads only the re-cancel window."""
    ladder = [p for p in policies if p.warns_first]
    if not ladder:
        return None
    return WARNING_MARGIN + max(
        (p.grace or timedelta(0)) + (p.window.longest_wait() if p.window else timedelta(0))
        for p in ladder
    )


def read_audit_state(
    source: RecentRecords,
    now: datetime,
    policies: PolicySet,
    confirm_within: timedelta = DEFAULT_CONFIRM_WITHIN,
) -> AuditState:
    """The recent cancels (the 10-minute window, and cancels within `confirm_within` not yet
    confirmed: docs/audit.md, "Confirmation") and the open warnings, from the records of
    `source` as far back as they matter (bounded by the window, `confirm_within` and
    `warning_lookback`; a `LogTail` reads rotated files too, so that a rotation forgets
    nothing); nothing if the log does not exist yet. Raises OSError."""
    lookback = warning_lookback(policies)
    since = now - max(RECANCEL_WINDOW, confirm_within, lookback or timedelta(0))
    records = source.records(since, now)
    held = held_for_confirmation(records, now, confirm_within)
    recent = frozenset(recently_cancelled(records, now) | held)
    if lookback is None:
        return AuditState(recent)
    return AuditState(recent, _warnings_of(open_warnings(records)))


def _warnings_of(records: Mapping[JobKey, Mapping[str, Any]]) -> dict[JobKey, OpenWarning]:
    """The open `warned` records as decide() takes them. One without a readable `due` is left
    out, so its job is warned again with a new due time: never a cancel earlier than promised."""
    found = {}
    for key, record in records.items():
        due = parse_instant(str(record.get("due")))
        if due is None:
            log.warning("audit: warning of %s/%s has no readable due time", *key)
            continue
        found[key] = OpenWarning(
            backend=key[0], job_id=key[1], policy=str(record.get("policy")), due=due,
            dry_run=bool(record.get("dry_run")), delivered=bool(record.get("delivered")),
            job_name=str(record.get("job_name") or ""), owner=str(record.get("owner") or ""),
        )  # fmt: skip
    return found


def _audit_state_for_plan(env: SweepEnv, now: datetime) -> AuditState:
    """`plan` only previews: an audit log it may not read (the service's file, mode 0600, and an
    operator's shell) costs the re-cancel window and the open warnings in the preview, not the
    whole plan."""
    try:
        return read_audit_state(LogTail(env.audit_path), now, env.policies)
    except OSError as exc:
        log.warning("cannot read the audit log %s (%s): the plan does not show the jobs that "
                    "the re-cancel window would hold, nor earlier warnings",
                    env.audit_path, exc.strerror)  # fmt: skip
        return AuditState()


def _decide(
    env: SweepEnv, scans: list[Scan], now: datetime, state: AuditState, paused: bool
) -> Plan[Match]:
    listings = [s.to_listing() for s in scans]

    def with_guards(guards: Guards) -> Plan[Match]:
        return decide(
            listings, guards, paused=paused, recently_cancelled=state.recent_cancels,
            now=now, warnings=state.warnings,
        )  # fmt: skip

    if env.budget is None:
        return with_guards(env.guards)

    def within(remaining: int) -> tuple[Plan[Match], int]:
        cap = env.guards.max_cancels_per_sweep
        left = remaining if cap is None else min(remaining, cap)
        plan = with_guards(replace(env.guards, max_cancels_per_sweep=left))
        return plan, len(plan.cancels())

    return env.budget.decide_within(now, within)


def _backend_report(scan: Scan) -> BackendReport:
    return BackendReport(
        scan.backend, active=scan.active, error=scan.error, clock_skew_s=scan.clock_skew_s
    )


def _write_sweep_end(audit: AuditLog, report: SweepReport) -> None:
    totals = {
        name: {"active": r.active, "outcomes": dict(r.outcomes), "skipped": dict(r.skipped),
               "error": r.error, "clock_skew_s": _seconds(r.clock_skew_s)}
            | ({"ladder": dict(r.ladder)} if r.ladder else {})
            | ({"followups": dict(r.followups)} if r.followups else {})
        for name, r in report.backends.items()
    }  # fmt: skip
    try:
        audit.append(
            "sweep_end",
            sweep_id=report.sweep_id,
            backends=totals,
            refused=report.plan.refused,
            audit_error=report.audit_error,
        )
    except AuditWriteError as exc:
        report.audit_error = report.audit_error or str(exc)
        log.error("could not write sweep_end: %s", exc)


def _write_head(audit: AuditLog) -> None:
    """The head file names the newest record after every sweep (docs/audit.md); failing to
    replace it is logged: the records themselves are written."""
    try:
        audit.write_head()
    except AuditWriteError as exc:
        log.error("could not write the audit head file: %s", exc)


def job_fields(decision: Decision[Match]) -> dict[str, Any]:
    """The audit fields that explain a decision: which policy (file, sha256, commit), which job,
    which numbers, which reason."""
    job, match, source = decision.job, decision.match, decision.match.policy.source
    fields: dict[str, Any] = {
        "policy": decision.policy.name, "policy_file": source.file,
        "policy_sha256": source.sha256, "policy_commit": source.commit,
        "backend": job.backend, "type": job.type, "kind": job.kind, "job_id": job.id,
        "job_name": job.name, "queue": job.queue, "status": job.status,
        "runtime_s": _seconds(match.runtime_s),
        "pending_s": _seconds(match.pending_s), "facts": [f.text for f in match.facts],
        "also_matched": list(decision.also_matched), "reason": decision.reason,
        "dry_run": decision.dry_run,
    }  # fmt: skip
    if decision.due is not None:
        fields["due"] = decision.due
    if KEEP_UNTIL_TAG in job.tags:  # an override is part of the explanation (docs/policies.md)
        fields["override"] = f"{KEEP_UNTIL_TAG}={job.tags[KEEP_UNTIL_TAG]}"
    return fields


def clearance_fields(clearance: Clearance) -> dict[str, Any]:
    """The audit fields of a `cleared` record: which warning, and why it is closed."""
    warning = clearance.warning
    return {
        "backend": warning.backend, "job_id": warning.job_id, "job_name": warning.job_name,
        "policy": warning.policy, "due": warning.due, "cause": str(clearance.cause),
        "dry_run": warning.dry_run,
    }  # fmt: skip


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


@runtime_checkable
class BulkBackend(Protocol):
    """What a backend may add to re-check and cancel many jobs per API call (AWS Batch:
    DescribeJobs reads 100 ids, TerminateJobs ends 50 with one reason). The sweep uses it when
    a backend has it, and `Backend.refresh`/`cancel` otherwise."""

    @property
    def refresh_batch(self) -> int: ...  # the most jobs one refresh_many call reads
    @property
    def cancel_batch(self) -> int: ...  # the most jobs one cancel_checked call should carry
    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]: ...
    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]: ...


Checked = tuple[Decision[Match], Job]  # a decision and its job as the re-check just read it


@dataclass(frozen=True)
class _Target:
    """One backend as the actor calls it: through its bulk calls when it has them (looked up
    once: a Protocol isinstance check is slow), else one job per call."""

    backend: Backend
    bulk: BulkBackend | None

    @classmethod
    def of(cls, backend: Backend) -> _Target:
        return cls(backend, backend if isinstance(backend, BulkBackend) else None)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def cancel_batch(self) -> int:
        return 1 if self.bulk is None else max(1, self.bulk.cancel_batch)

    def read(self, jobs: list[Job]) -> list[Job | None]:
        """The jobs' current state, in order (None: gone). Raises BackendError."""
        if self.bulk is not None:
            return self.bulk.refresh_many(jobs)
        return [self.backend.refresh(job) for job in jobs]

    def cancel(self, jobs: list[Job], reason: str) -> list[CancelResult]:
        """Cancel jobs just re-read, in one call where the backend has a bulk cancel."""
        if self.bulk is not None:
            return self.bulk.cancel_checked(jobs, reason)
        return [self.backend.cancel(job, reason) for job in jobs]


@dataclass(frozen=True)
class _Lanes:
    """Per backend: at most `concurrency` re-check reads and at most `concurrency` cancel calls
    in flight. Two lanes, so that the next jobs are re-read while others are being cancelled,
    instead of every cancel slot also waiting out a read."""

    reads: threading.Semaphore
    cancels: threading.Semaphore


class _Actor:
    """Writes skipped records, then re-checks and cancels, per backend concurrently. For every
    job, in this order: re-check (skip it if it no longer matches), `intent` written and fsynced,
    the cancel call, `result`. Once an audit write fails, no further cancel call is made anywhere
    (docs/audit.md: if the record cannot be written, nothing is cancelled)."""

    def __init__(
        self, env: SweepEnv, audit: AuditLog, sweep_id: str, report: SweepReport, limits: _Limits
    ) -> None:
        self.env, self.audit, self.sweep_id, self.report = env, audit, sweep_id, report
        self.limits = limits
        self.breaker = Breaker()
        self.audit_broken = threading.Event()
        self.lock = threading.Lock()
        self.outcome_items: list[NoticeDraft] = []  # `cancelled` / `failed` notice lines

    def record_bad_records(self, bad_records: Sequence[BadRecord]) -> None:
        """One `skipped` record (cause `bad_record`) per record a listing could not read: the
        job is left alone, and the record names the field and its value (cut short)."""
        for bad in bad_records:
            self.count(bad.backend, "skipped", SkipCause.BAD_RECORD)
            self.write("skipped", {
                "cause": str(SkipCause.BAD_RECORD), "backend": bad.backend,
                "job_id": bad.job_id, "field": bad.field, "value": bad.value,
                "problem": bad.problem, "policy": None, "dry_run": self.env.guards.dry_run,
            })  # fmt: skip

    def record_skips(self, plan: Plan[Match]) -> None:
        for decision in plan.decisions:
            self.count(decision.job.backend, "matched", decision.policy.name)
            if decision.action is Action.SKIP:
                assert decision.cause is not None
                self.skip(decision, decision.cause)

    def record_ladder(self, plan: Plan[Match]) -> None:
        """`warned` for each job warned this sweep, `cleared` for each warning closed (written
        before any notice about them is sent, like an intent before its cancel)."""
        for decision in plan.warnings():
            self.count(decision.job.backend, "ladder", "warned")
            self.write("warned", job_fields(decision) | {"owner": decision.job.owner})
        for clearance in plan.cleared:
            self.count(clearance.warning.backend, "ladder", "cleared")
            self.write("cleared", clearance_fields(clearance))

    def run(self, plan: Plan[Match]) -> None:
        by_backend: dict[str, list[Decision[Match]]] = {}
        for decision in plan.cancels():
            by_backend.setdefault(decision.job.backend, []).append(decision)
        with ThreadPoolExecutor(max_workers=max(1, len(by_backend))) as pool:
            list(pool.map(self.run_backend, by_backend.values()))

    def run_backend(self, decisions: list[Decision[Match]]) -> None:
        """Act on one backend's decisions in units (one job, or one bulk re-check). A worker holds
        a unit from its re-check to its last result, and WORKERS_PER_SLOT workers per slot keep
        both lanes busy; between its re-check and its cancel call a job waits only for a free
        cancel slot and its intent. A slot is held from a batch's first intent to its last
        result. A bulk unit's cancel batches (one per reason) run side by side, each in its
        own slot: jobs whose reasons differ share no call, and must not wait on each other."""
        target = _Target.of(self.env.backends[decisions[0].job.backend])
        slots = max(1, self.env.concurrency)
        lanes = _Lanes(threading.Semaphore(slots), threading.Semaphore(slots))
        units = _units(target, decisions, slots)
        workers = WORKERS_PER_SLOT * slots
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="act") as pool,
            ThreadPoolExecutor(max_workers=slots, thread_name_prefix="cancel") as batches,
        ):
            list(pool.map(lambda unit: self.act_unit(target, unit, lanes, batches), units))

    def act_unit(
        self,
        target: _Target,
        unit: list[Decision[Match]],
        lanes: _Lanes,
        batches: ThreadPoolExecutor,
    ) -> None:
        """Re-check the unit, then cancel what still matches: one batch here, several side by
        side in `batches`. Never raises."""
        if self.audit_broken.is_set():
            return
        if self.stopping(unit) or self.given_up(target.name, unit):
            return
        with lanes.reads:
            checked = self.recheck(target, unit)
        cancels = _cancel_batches(checked, target.cancel_batch)
        pending = [batches.submit(self.cancel_batch, target, b, lanes.cancels) for b in cancels[1:]]
        if cancels:
            self.cancel_batch(target, cancels[0], lanes.cancels)
        for future in pending:
            future.result()

    def stopping(self, decisions: Sequence[Decision[Match]]) -> bool:
        """True once asked to stop or past the deadline: announced cancels finish, no new one
        starts. Past the deadline the backend has failed this sweep (exit 1): work was left."""
        why = self.limits.why_stop()
        if why is None:
            return False
        for decision in decisions:
            log.info("%s: not cancelling %s/%s", why, decision.job.backend, decision.job.id)
        signalled = self.limits.stop is not None and self.limits.stop.is_set()
        if decisions and not signalled:
            self.fail_backend(decisions[0].job.backend, f"{why} before every cancel was made")
        return True

    def given_up(self, backend: str, decisions: Sequence[Decision[Match]]) -> bool:
        """True once `backend` stopped answering this sweep (reaper.engine.breaker): the
        decisions are recorded as skipped (`backend_failing`) instead of acted on."""
        why = self.breaker.tripped(backend)
        if why is None:
            return False
        for decision in decisions:
            self.skip(decision, SkipCause.BACKEND_FAILING)
        return True

    def note_call(self, backend: str, call: str, error: str | None = None) -> None:
        """Count one `call` ("re-check", "cancel") on `backend`: answered, or (with `error`)
        not."""
        if error is None:
            self.breaker.answered(backend, call)
        elif self.breaker.unanswered(backend, call, error):
            why = f"backend {backend}: {self.breaker.tripped(backend)}"
            log.error("%s; no further call on it this sweep", why)
            self.fail_backend(backend, why)

    def recheck(self, target: _Target, unit: list[Decision[Match]]) -> list[Checked]:
        """The unit's jobs that still match, as just read; the others are recorded as skipped:
        gone, no longer matching, protected since, or unreadable (docs/architecture.md, sweep step
        4)."""
        try:
            fresh = target.read([decision.job for decision in unit])
        except BackendError as exc:
            # A backend failing at the re-check has failed this sweep (exit 1), as much as one
            # failing its listing: nothing was cancelled, and it must not look like success.
            log.error("re-check of %d job(s) on %s failed: %s", len(unit), target.name, exc)
            self.fail_backend(target.name, str(exc))
            for decision in unit:
                self.skip(decision, SkipCause.RECHECK_FAILED)
            self.note_call(target.name, "re-check", str(exc))
            return []
        self.note_call(target.name, "re-check")
        checked: list[Checked] = []
        for decision, job in zip(unit, fresh, strict=True):
            cause = self.skip_cause(decision, job)
            if job is None or cause is not None:
                self.skip(decision, cause or SkipCause.CHANGED)
            else:
                checked.append((decision, job))
        return checked

    def skip_cause(self, decision: Decision[Match], fresh: Job | None) -> SkipCause | None:
        now = self.env.clock()
        if fresh is None or evaluate(decision.match.policy, fresh, now) is None:
            return SkipCause.CHANGED
        if is_protected(fresh, self.env.guards.protect_tag, now):
            return SkipCause.PROTECTED
        return None

    def cancel_batch(
        self, target: _Target, batch: list[Checked], slot: threading.Semaphore
    ) -> None:
        """In a cancel slot: announce every job of the batch (its `intent` records written by one
        write and fsynced), make the one cancel call (or pretend), record each `result` (again
        one write). Holding the slot from the first intent to the last result keeps the open
        intents to the calls in flight: a crash leaves at most `concurrency` calls' worth to
        reconcile. No call if an announcement failed, the
        audit log broke, or the daemon is stopping. Never raises."""
        decisions = [decision for decision, _ in batch]
        with slot:
            if self.audit_broken.is_set() or self.stopping(decisions):
                return
            if self.given_up(target.name, decisions):
                return
            announced = [job_fields(decision) | {"status": job.status} for decision, job in batch]
            if not self.write_many([("intent", fields) for fields in announced]):
                return
            results = _cancel_or_pretend(target, batch)
            for result in results:  # counted before the slot is given back to another call
                self.note_call(target.name, "cancel", result.error if result.unanswered else None)
            self.write_many([
                ("result", fields | {"outcome": result.outcome, "error": result.error})
                for fields, result in zip(announced, results, strict=True)
            ])  # fmt: skip
            for decision, result in zip(decisions, results, strict=True):
                self.count(decision.job.backend, "outcomes", result.outcome)
                self.note_outcome(decision, result.outcome)

    def note_outcome(self, decision: Decision[Match], outcome: str) -> None:
        """Queue the `cancelled` or `failed` notice line of a cancel just recorded."""
        routing = self.env.routing
        event = {"cancelled": NoticeEvent.CANCELLED, "failed": NoticeEvent.FAILED}.get(outcome)
        if routing is None or event is None:
            return
        item = match_item(event, routing, decision.match, decision.reason, due=decision.due)
        if item is not None:
            with self.lock:
                self.outcome_items.append((item, decision.dry_run))

    def skip(self, decision: Decision[Match], cause: str) -> None:
        self.count(decision.job.backend, "skipped", str(cause))
        self.write("skipped", job_fields(decision) | {"cause": str(cause)})

    def fail_backend(self, backend: str, error: str) -> None:
        """Record the backend's first error of this sweep."""
        with self.lock:
            report = self.report.backends[backend]
            report.error = report.error or error

    def count(self, backend: str, kind: str, key: str) -> None:
        with self.lock:
            getattr(self.report.backends[backend], kind)[key] += 1

    def write(self, event: str, fields: dict[str, Any]) -> bool:
        return self.write_many([(event, fields)])

    def write_many(self, entries: Sequence[tuple[str, dict[str, Any]]]) -> bool:
        """Write the records with one write and one fsync (AuditLog.append_many); False (and
        no further cancel anywhere) if that fails."""
        try:
            self.audit.append_many(
                [(event, fields | {"sweep_id": self.sweep_id}) for event, fields in entries]
            )
            return True
        except AuditWriteError as exc:
            if not self.audit_broken.is_set():
                log.critical("audit log write failed, cancelling nothing more: %s", exc)
            self.audit_broken.set()
            self.report.audit_error = str(exc)
            return False


def _units(
    target: _Target, decisions: list[Decision[Match]], slots: int
) -> list[list[Decision[Match]]]:
    """Re-check units: one job each, or for a bulk backend runs of jobs sharing a reason (so that
    they can share cancel calls), cut small enough to keep every worker busy."""
    if target.bulk is None:
        return [[decision] for decision in decisions]
    ordered = sorted(decisions, key=_batch_key)  # stable: plan order within a reason
    spread = -(-len(ordered) // (2 * slots))
    size = max(1, min(target.bulk.refresh_batch, max(target.cancel_batch, spread)))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _batch_key(decision: Decision[Match]) -> tuple[str, bool]:
    return decision.reason, decision.dry_run


def _cancel_batches(checked: list[Checked], size: int) -> list[list[Checked]]:
    """Jobs that may share one cancel call: same reason, same dry-run flag, at most `size`."""
    groups: dict[tuple[str, bool], list[Checked]] = {}
    for item in checked:
        groups.setdefault(_batch_key(item[0]), []).append(item)
    return [g[i : i + size] for g in groups.values() for i in range(0, len(g), size)]


class _Outcome(NamedTuple):
    outcome: str  # a CancelOutcome, or "dry_run"
    error: str | None = None
    unanswered: bool = False  # CancelResult.unanswered


def _cancel_or_pretend(target: _Target, batch: list[Checked]) -> list[_Outcome]:
    """The one place where dry run differs from a real run. The batch shares one reason and one
    dry-run flag (`_cancel_batches`)."""
    first = batch[0][0]
    if first.dry_run:
        for decision, job in batch:
            log.info("dry run: would cancel %s/%s (%s)", job.backend, job.id, decision.policy.name)
        return [_Outcome("dry_run")] * len(batch)
    results = target.cancel([job for _, job in batch], first.reason)
    for (decision, job), result in zip(batch, results, strict=True):
        log.info(
            "cancel %s/%s by %s: %s", job.backend, job.id, decision.policy.name, result.outcome
        )
    return [_Outcome(str(r.outcome), r.error, r.unanswered) for r in results]
