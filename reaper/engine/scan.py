"""Step 2 of the sweep for one backend: list active jobs page by page, enrich only the jobs a
tag/where selector (or the protect tag) needs, and evaluate the backend's policies.

A listing is a set: a job id listed twice counts once, and its last record wins (a job that
moved on between two pages is listed again in its newer state); the duplicate is logged. A
record the backend could not read (`BadRecord`) is left alone, reported, and still counts as
active. Only candidates (jobs some policy matched) are kept; the rest are counted and dropped,
so a sweep's memory grows with the matches (and one id per active job), not with the records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from reaper.backends.base import Backend, ClockedBackend
from reaper.engine.decide import Candidate, Listing
from reaper.errors import BackendError
from reaper.jobs import ACTIVE_PHASES, BadRecord, Job, Phase, SkipCause
from reaper.policy.durations import format_duration
from reaper.policy.index import PolicyIndex
from reaper.policy.model import Match, Policy
from reaper.policy.reasons import render_reason

log = logging.getLogger(__name__)

# The host's and a server's clocks may differ by this much before reaper refuses to act on the
# backend (limits.max_clock_skew; docs/backends.md, "The servers' clock").
DEFAULT_MAX_CLOCK_SKEW = timedelta(minutes=2)
# Duplicate ids logged one by one per listing; past that, only their count at the end.
DUPLICATES_LOGGED = 5


@dataclass
class Scan:
    """What one backend's listing produced. `complete` is False when the listing failed part-way
    (or the backend's clock cannot be trusted, `blocked_by` CLOCK_SKEW): acting on half a
    picture would break the fraction guard and the dedupe, so nothing may be cancelled on this
    backend (decide's `listing_incomplete`)."""

    backend: str
    active_ids: set[str] = field(default_factory=set)
    unknown_status: int = 0
    by_id: dict[str, Candidate[Match]] = field(default_factory=dict)
    bad_by_id: dict[str, BadRecord] = field(default_factory=dict)
    anonymous_bad: list[BadRecord] = field(default_factory=list)  # no readable id: no dedupe
    duplicates: int = 0
    implausible: int = 0  # active jobs with an implausible time (reported, not matched on it)
    complete: bool = True
    error: str | None = None
    blocked_by: SkipCause = SkipCause.LISTING_INCOMPLETE
    clock_skew_s: float | None = None  # server minus host, when the backend reports its clock

    @property
    def active(self) -> int:
        """Pending, running or finishing jobs listed, and unreadable records: the fraction
        guard's denominator."""
        return len(self.active_ids) + len(self.anonymous_bad)

    @property
    def bad_records(self) -> list[BadRecord]:
        return [*self.bad_by_id.values(), *self.anonymous_bad]

    @property
    def candidates(self) -> list[Candidate[Match]]:
        return list(self.by_id.values())

    def to_listing(self) -> Listing[Match]:
        return Listing(
            self.backend, self.active, self.complete, tuple(self.by_id.values()), self.blocked_by
        )

    def fail(self, error: str, cause: SkipCause = SkipCause.LISTING_INCOMPLETE) -> None:
        if self.complete:
            self.complete, self.error, self.blocked_by = False, error, cause


# Told after each page of a listing: (backend, pages so far, jobs so far). For a person
# watching a long listing (reaper.commands.progress); it must not raise.
Progress = Callable[[str, int, int], None]


def scan_backend(
    backend: Backend,
    policies: Sequence[Policy],
    now: datetime,
    progress: Progress | None = None,
    *,
    max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
    host_clock: Callable[[], datetime] | None = None,
) -> Scan:
    """List, enrich where needed and evaluate at `now`. Never raises BackendError: a failure
    is recorded in the Scan (`complete=False`, `error`). The backend's server clock is compared
    with `host_clock()` (default: `now`, the usual case of a sweep evaluating at the host's
    time)."""
    scan = Scan(backend.name)
    index = PolicyIndex(policies, now)
    undetailed: dict[str, Job] = {}
    pages = listed = 0
    try:
        for page in backend.list_active():
            for item in page:
                _consider(item, index, scan, undetailed)
            pages, listed = pages + 1, listed + len(page)
            if progress is not None:
                progress(backend.name, pages, listed)
        _evaluate_enriched(backend, index, list(undetailed.values()), scan)
    except BackendError as exc:
        scan.fail(str(exc))
    if scan.duplicates > DUPLICATES_LOGGED:
        log.warning("%d duplicate job ids in the listing of %s counted once each",
                    scan.duplicates, backend.name)  # fmt: skip
    check_clock(backend, scan, now if host_clock is None else host_clock(), max_clock_skew)
    return scan


def check_clock(backend: Backend, scan: Scan, now: datetime, max_skew: timedelta) -> None:
    """Refuse to act on a backend whose clock (its answers' Date header) differs from the
    host's by more than `max_skew`: every runtime would be measured by a clock one of the two
    sides disagrees with (docs/backends.md, "The servers' clock")."""
    if not isinstance(backend, ClockedBackend):
        return
    server_now = backend.server_clock.now()
    if server_now is None:
        return
    skew = server_now - now
    scan.clock_skew_s = skew.total_seconds()
    if abs(skew) <= max_skew:
        return
    ahead = "behind" if skew < timedelta(0) else "ahead of"
    error = (
        f"the server's clock (Date header {server_now:%Y-%m-%dT%H:%M:%SZ}) is "
        f"{format_duration(abs(skew))} {ahead} the host's ({now:%Y-%m-%dT%H:%M:%SZ}), more than "
        f"limits.max_clock_skew {format_duration(max_skew)}: not acting on this backend"
    )
    scan.fail(error, SkipCause.CLOCK_SKEW)


def _consider(
    item: Job | BadRecord, index: PolicyIndex, scan: Scan, undetailed: dict[str, Job]
) -> None:
    key = item.id if isinstance(item, Job) else item.job_id
    if key is not None and _forget(key, scan, undetailed):
        scan.duplicates += 1
        if scan.duplicates <= DUPLICATES_LOGGED:
            log.warning("job %s listed twice by %s: its last record counts", key, scan.backend)
    if isinstance(item, BadRecord):
        _add_bad(item, scan)
        return
    _consider_job(item, index, scan, undetailed)


def _forget(job_id: str, scan: Scan, undetailed: dict[str, Job]) -> bool:
    """Drop what an earlier record of `job_id` left; True if there was one."""
    if job_id not in scan.active_ids:  # bad records' ids are in it too
        return False
    scan.active_ids.discard(job_id)
    scan.by_id.pop(job_id, None)
    scan.bad_by_id.pop(job_id, None)
    undetailed.pop(job_id, None)
    return True


def _add_bad(bad: BadRecord, scan: Scan) -> None:
    log.warning("skipping an unreadable record of job %s on %s: %s %s: %s", bad.job_id or "?",
                bad.backend, bad.field, bad.value, bad.problem)  # fmt: skip
    if bad.job_id is None:
        scan.anonymous_bad.append(bad)
    else:
        scan.bad_by_id[bad.job_id] = bad
        scan.active_ids.add(bad.job_id)


def _consider_job(job: Job, index: PolicyIndex, scan: Scan, undetailed: dict[str, Job]) -> None:
    if job.phase is Phase.UNKNOWN:
        scan.unknown_status += 1
        log.warning("skipping job %s on %s: unknown status %r", job.id, job.backend, job.status)
        return
    if job.phase not in ACTIVE_PHASES:
        return
    scan.active_ids.add(job.id)
    if (problem := job.time_problem(index.now)) is not None:
        scan.implausible += 1
        log.warning("job %s on %s: %s; no time limit applies to it", job.id, job.backend, problem)
    if job.detailed:
        _add_candidate(job, index, scan)
    elif index.may_match(job):
        # Enrich before deciding: a detail selector may match, and a cheap match still needs
        # the job's tags to honour the protect tag. (`prefilter` of a policy that needs no
        # detail is its `evaluate`: tests/test_policy_property.py.)
        undetailed[job.id] = job


def _evaluate_enriched(backend: Backend, index: PolicyIndex, jobs: list[Job], scan: Scan) -> None:
    if not jobs:
        return
    for job in backend.enrich(jobs):
        if isinstance(job, BadRecord):
            _add_bad(job, scan)
        elif job.phase in ACTIVE_PHASES:
            _add_candidate(job, index, scan)


def _add_candidate(job: Job, index: PolicyIndex, scan: Scan) -> None:
    if matches := index.evaluate_all(job):
        reason = render_reason(matches[0], index.now)
        scan.by_id[job.id] = Candidate(job, tuple(matches), reason)
