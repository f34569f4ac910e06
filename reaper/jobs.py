"""The normalised Job record every backend yields, and the phase tables (docs/backends.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class Phase(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    TERMINAL = "terminal"
    UNKNOWN = "unknown"  # e.g. Sutro's UNKNOWN: skipped and logged, never acted on


BACKEND_TYPES = ("aws_batch", "tapis", "sutro")
# The phases reaper considers: every other job is left alone, whatever a policy says.
ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.RUNNING})

_P, _R, _T = Phase.PENDING, Phase.RUNNING, Phase.TERMINAL

# Native status → phase, keyed by upper-case status. Sources: AWS Batch JobSummary.status,
# Tapis Jobs v3 JobStatusEnum (tapipy/resources/openapi_v3-jobs.yml), Sutro's job statuses.
PHASES: Mapping[str, Mapping[str, Phase]] = MappingProxyType(
    {
        "aws_batch": {
            "SUBMITTED": _P, "PENDING": _P, "RUNNABLE": _P,
            "STARTING": _R, "RUNNING": _R,
            "SUCCEEDED": _T, "FAILED": _T,
        },
        "tapis": {
            "PENDING": _P, "PROCESSING_INPUTS": _P, "STAGING_INPUTS": _P, "STAGING_JOB": _P,
            "SUBMITTING_JOB": _P, "QUEUED": _P, "BLOCKED": _P, "PAUSED": _P,
            "RUNNING": _R, "ARCHIVING": _R,
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


def phase_of(backend_type: str, status: str) -> Phase:
    """Phase of a native status; case-insensitive (older Sutro documents use lower case).
    A status the table does not know is UNKNOWN, so it is never acted on."""
    return PHASES[backend_type].get(status.upper(), Phase.UNKNOWN)


def active_statuses(backend_type: str) -> list[str]:
    """The native statuses of jobs that are neither terminal nor unknown, in table order."""
    return [s for s, p in PHASES[backend_type].items() if p in (Phase.PENDING, Phase.RUNNING)]


def statuses_in_group(backend_type: str, group: str) -> list[str]:
    """Native statuses of the `pending` or `running` group."""
    return [s for s, p in PHASES[backend_type].items() if p == group]


@dataclass(frozen=True, slots=True)
class Job:
    """One job as every backend reports it. Times are timezone-aware UTC.

    `detailed` is False when the listing did not carry everything (AWS ListJobs has no tags);
    the backend's `enrich` returns detailed copies."""

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

    def runtime(self, now: datetime) -> timedelta | None:
        """Time since start, or None for a job that never started."""
        return None if self.started_at is None else max(now - self.started_at, timedelta(0))

    def pending(self, now: datetime) -> timedelta | None:
        """Time waiting since submission, or None for a job that has started."""
        if self.started_at is not None:
            return None
        return max(now - self.created_at, timedelta(0))

    def age(self, now: datetime) -> timedelta:
        """Time since submission, whatever the state."""
        return max(now - self.created_at, timedelta(0))


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
    GRACE = "grace"  # warned, and its `due` time has not come yet
    OUTSIDE_WINDOW = "outside_window"  # due, but the policy's time window is closed
    NOTICE_PENDING = "notice_pending"  # `require_notice`: no `warned` notice delivered yet
