"""The normalised Job record every backend yields, and the phase tables (docs/backends.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any


def utc_now() -> datetime:
    """The current instant in UTC: the default clock of the audit log, the sweep and the
    backends (each takes a `clock` so that tests can move time)."""
    return datetime.now(UTC)


class Phase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    # Active, but its work is done and its outputs are being saved (Tapis ARCHIVING): in neither
    # the pending nor the running group, so only a policy that names the status itself can
    # match it; cancelling it would lose finished results (docs/backends.md, "Phase tables").
    FINISHING = "finishing"
    TERMINAL = "terminal"
    UNKNOWN = "unknown"  # e.g. Sutro's UNKNOWN: skipped and logged, never acted on


# The phases reaper considers (listed, counted): every other job is left alone, whatever a
# policy says. A FINISHING job only by a policy naming its status (reaper.policy.model).
ACTIVE_PHASES = frozenset((Phase.PENDING, Phase.RUNNING, Phase.FINISHING))
# Phases in which a job has started: the only ones with a runtime.
STARTED_PHASES = frozenset((Phase.RUNNING, Phase.FINISHING))


BACKEND_TYPES = ("aws_batch", "tapis", "sutro")


class JobKind(StrEnum):
    """The kinds of AWS Batch job (docs/backends.md, "Service jobs"): container jobs on
    EC2/ECS/Fargate/EKS queues (ListJobs), and service jobs, SageMaker Training through Batch, on
    SAGEMAKER_TRAINING queues (ListServiceJobs). Other backends have one kind of job: None."""

    CONTAINER = "container"
    SERVICE = "service"


JOB_KINDS = tuple(JobKind)

_P, _R, _F, _T = Phase.PENDING, Phase.RUNNING, Phase.FINISHING, Phase.TERMINAL

# Native status → phase, keyed by upper-case status. Sources: AWS Batch JobSummary.status and
# ServiceJobSummary.status (botocore's batch service model, JobStatus and ServiceJobStatus: service
# jobs add SCHEDULED, "scheduled for execution", before STARTING), Tapis Jobs v3 JobStatusEnum
# (tapipy/resources/openapi_v3-jobs.yml), Sutro's job statuses.
PHASES: Mapping[str, Mapping[str, Phase]] = MappingProxyType(
    {
        "aws_batch": {
            "SUBMITTED": _P, "PENDING": _P, "RUNNABLE": _P, "SCHEDULED": _P,
            "STARTING": _R, "RUNNING": _R,
            "SUCCEEDED": _T, "FAILED": _T,
        },
        "tapis": {
            "PENDING": _P, "PROCESSING_INPUTS": _P, "STAGING_INPUTS": _P, "STAGING_JOB": _P,
            "SUBMITTING_JOB": _P, "QUEUED": _P, "BLOCKED": _P, "PAUSED": _P,
            "RUNNING": _R, "ARCHIVING": _F,
            "FINISHED": _T, "CANCELLED": _T, "FAILED": _T,
        },
        "sutro": {
            "QUEUED": _P, "STARTING": _P,
            "RUNNING": _R,
            "SUCCEEDED": _T, "FAILED": _T, "CANCELLING": _T, "CANCELLED": _T,
            "UNKNOWN": Phase.UNKNOWN,
        },
    }
)  # fmt: skip


# Terminal-phase statuses that are not the end yet: reaper never acts on such a job, but a
# cancel is confirmed only once it has left them (Sutro's CANCELLING becomes CANCELLED).
ENDING: Mapping[str, frozenset[str]] = MappingProxyType({"sutro": frozenset({"CANCELLING"})})


def has_ended(job: Job) -> bool:
    """The job is terminal and not still on its way there (`ENDING`)."""
    return job.phase is Phase.TERMINAL and job.status.upper() not in ENDING.get(job.type, ())


def phase_of(backend_type: str, status: str) -> Phase:
    """Phase of a native status; case-insensitive (older Sutro documents use lower case).
    A status the table does not know is UNKNOWN, so it is never acted on."""
    return PHASES[backend_type].get(status.upper(), Phase.UNKNOWN)


def active_statuses(backend_type: str) -> list[str]:
    """The native statuses of jobs that are neither terminal nor unknown, in table order."""
    return [s for s, p in PHASES[backend_type].items() if p in ACTIVE_PHASES]


def statuses_in_group(backend_type: str, group: str) -> list[str]:
    """Native statuses of the `pending` or `running` group."""
    return [s for s, p in PHASES[backend_type].items() if p == group]


# Time facts (docs/policies.md, "Time facts"). A time before this is a unit mix-up (AWS gives
# milliseconds: seconds read as milliseconds land in January 1970) or a zero: no batch job
# reaper sees was submitted before 2000.
EARLIEST_PLAUSIBLE = datetime(2000, 1, 1, tzinfo=UTC)
# How far a time may lie after the sweep's `now`, or a start before its job's creation, before
# it is implausible: clocks of a scheduler's parts differ by seconds, and reaper refuses to act
# on a backend whose clock differs from the host's by more than limits.max_clock_skew (2m).
TIME_TOLERANCE = timedelta(minutes=5)


def time_is_plausible(value: datetime, now: datetime) -> bool:
    """Not before 2000-01-01 and not after `now` plus TIME_TOLERANCE."""
    return EARLIEST_PLAUSIBLE <= value <= now + TIME_TOLERANCE


@dataclass(frozen=True, slots=True)
class Job:
    """One job as every backend reports it. Times are timezone-aware UTC.

    `detailed` is False when the listing did not carry everything (AWS ListJobs has no tags);
    the backend's `enrich` returns detailed copies. `kind` says which AWS Batch kind of job it
    is (`JobKind`); None on backends with one kind."""

    backend: str
    type: str
    id: str
    name: str
    queue: str
    status: str
    phase: Phase
    created_at: datetime
    started_at: datetime | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    owner: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    detailed: bool = True
    kind: JobKind | None = None

    # Every time selector reads its time through these, so that a fact the record cannot
    # support (a RUNNING job without a start, a start in 1970) never holds, on any backend.
    def created_if_plausible(self, now: datetime) -> datetime | None:
        """`created_at`, or None when it is implausible (`time_is_plausible`)."""
        return self.created_at if time_is_plausible(self.created_at, now) else None

    def started_if_plausible(self, now: datetime) -> datetime | None:
        """`started_at` of a job in a started phase, or None: not started, not in a started
        phase, an implausible time, a creation time that is implausible, or a start before
        the creation beyond TIME_TOLERANCE."""
        started = self.started_at
        if started is None or self.phase not in STARTED_PHASES:
            return None
        created = self.created_if_plausible(now)
        if created is None or not time_is_plausible(started, now):
            return None
        return started if started >= created - TIME_TOLERANCE else None

    def pending_since(self, now: datetime) -> datetime | None:
        """`created_at` of a job in a pending phase that records no start, or None."""
        if self.phase is not Phase.PENDING or self.started_at is not None:
            return None
        return self.created_if_plausible(now)

    def runtime(self, now: datetime) -> timedelta | None:
        """Time since start, or None when the job has no plausible start
        (`started_if_plausible`)."""
        started = self.started_if_plausible(now)
        return None if started is None else max(now - started, timedelta(0))

    def pending(self, now: datetime) -> timedelta | None:
        """Time waiting since submission, or None unless the job is in a pending phase, records
        no start, and has a plausible creation time."""
        since = self.pending_since(now)
        return None if since is None else max(now - since, timedelta(0))

    def age(self, now: datetime) -> timedelta | None:
        """Time since submission, whatever the state; None for an implausible creation time."""
        created = self.created_if_plausible(now)
        return None if created is None else max(now - created, timedelta(0))

    def time_problem(self, now: datetime) -> str | None:
        """Why a time of the record is implausible (to report it), or None. A start that is
        merely missing is not a problem: AWS STARTING jobs have none yet."""
        if not time_is_plausible(self.created_at, now):
            return f"created_at {self.created_at.isoformat()} is implausible"
        started = self.started_at
        if started is None:
            return None
        if not time_is_plausible(started, now):
            return f"started_at {started.isoformat()} is implausible"
        if started < self.created_at - TIME_TOLERANCE:
            return f"started_at {started.isoformat()} is before created_at"
        return None


# Per-job override tags (docs/policies.md, "Overrides"), read beside the protect tag. The prefix is
# fixed, whatever `protect_tag` says: one spelling owners can learn, documented once.
OVERRIDE_PREFIX = "reaper:"
KEEP_UNTIL_TAG = OVERRIDE_PREFIX + "keep-until"  # ISO 8601 instant: protected until then
MAX_RUNTIME_TAG = OVERRIDE_PREFIX + "max-runtime"  # a duration: raises the runtime limit


def parse_instant(text: str) -> datetime | None:
    """An ISO 8601 date-time as an aware datetime (no offset: UTC), or None if it is not one."""
    try:
        value = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def kept_until(tags: Mapping[str, str], now: datetime) -> bool:
    """True while `reaper:keep-until` protects the job: its time is still ahead, or it is not a
    time at all. An unreadable value protects, like the protect tag with any value: the owner
    meant to mark the job, and a typo must not get it killed."""
    if KEEP_UNTIL_TAG not in tags:
        return False
    until = parse_instant(tags[KEEP_UNTIL_TAG])
    return until is None or until > now


class SkipCause(StrEnum):
    """Why a matched job was not cancelled: the `cause` of an audit `skipped` record. Shared by
    the decider (reaper.engine) and the audit (reaper.audit), so it lives below both."""

    PROTECTED = "protected"
    LIMIT = "limit"
    FRACTION_GUARD = "fraction_guard"
    RECENTLY_CANCELLED = "recently_cancelled"
    PAUSED = "paused"
    LISTING_INCOMPLETE = "listing_incomplete"
    CHANGED = "changed"  # set later by the sweep's re-check, never by decide()
    RECHECK_FAILED = "recheck_failed"  # the re-check could not read the job (sweep only)
    # The backend stopped answering part-way through the sweep's calls (reaper.engine.breaker):
    # no further call on it this sweep (sweep only).
    BACKEND_FAILING = "backend_failing"
    # The backend's record of the job could not be read (a field missing, of the wrong type,
    # out of range): the job is left alone and still counts as active (reaper.jobs.BadRecord).
    BAD_RECORD = "bad_record"
    # The backend's clock (its answers' Date header) and the host's differ by more than
    # limits.max_clock_skew: no time fact can be trusted there (docs/backends.md).
    CLOCK_SKEW = "clock_skew"
    GRACE = "grace"  # warned, and its `due` time has not come yet
    OUTSIDE_WINDOW = "outside_window"  # due, but the policy's time window is closed
    NOTICE_PENDING = "notice_pending"  # `require_notice`: no `warned` notice delivered yet


class RecordError(ValueError):
    """A backend record that cannot be read as a Job, naming the field and its value: what the
    record parsers raise, and what becomes a `BadRecord`."""

    def __init__(self, field: str, value: object, problem: str) -> None:
        super().__init__(problem if field in problem else f"{field}: {problem}")
        self.field, self.value, self.problem = field, value, problem


# A value shown in a bad-record report is cut to this many characters.
BAD_VALUE_CHARS = 80


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record in a listing that could not be read as a Job: reported (audit `skipped`, cause
    `bad_record`), never acted on, and still counted as active for the fraction guard. `job_id`
    is None when even the id could not be read."""

    backend: str
    job_id: str | None
    field: str
    value: str  # repr of the offending value, cut to BAD_VALUE_CHARS
    problem: str

    @classmethod
    def from_error(cls, backend: str, job_id: object, exc: Exception) -> BadRecord:
        """The report of a parser's failure: a RecordError names its field; anything else a
        parser let through (a bug, but never a reason to stop the listing) names the record."""
        if isinstance(exc, RecordError):
            return cls.of(backend, job_id, exc.field, exc.value, exc.problem)
        return cls.of(backend, job_id, "record", None, f"{type(exc).__name__}: {exc}"[:200])

    @classmethod
    def of(cls, backend: str, job_id: object, field: str, value: object, problem: str) -> BadRecord:
        shown = repr(value)
        if len(shown) > BAD_VALUE_CHARS:
            shown = shown[: BAD_VALUE_CHARS - 1] + "…"
        return cls(
            backend, job_id if isinstance(job_id, str) and job_id else None, field, shown, problem
        )
