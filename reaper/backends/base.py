"""The one small interface every backend implements."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from reaper.jobs import Job, Phase

# AWS Batch caps TerminateJob/CancelJob `reason` at 1024 characters
# (https://docs.aws.amazon.com/batch/latest/APIReference/API_TerminateJob.html).
MAX_REASON_CHARS = 1024

# Every call to a backend runs under both (docs/config.md, `timeout`): a backend that accepts
# the connection and never answers fails the call after the read timeout instead of hanging it.
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 30.0
# Connections each backend's HTTP client keeps open: a sweep has up to 8 re-check reads and 8
# cancel calls in flight per backend (reaper.engine.sweep). requests' and botocore's default
# pools hold 10: past that, each extra call opens a connection and throws it away afterwards.
HTTP_POOL_SIZE = 20


class CancelOutcome(StrEnum):
    CANCELLED = "cancelled"
    ALREADY_TERMINAL = "already_terminal"
    NOT_FOUND = "not_found"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CancelResult:
    """What one cancel call did. "Already terminal" is an outcome, not an exception."""

    outcome: CancelOutcome
    error: str | None = None


@runtime_checkable
class Backend(Protocol):
    """A job API reaper can list and cancel on. Implementations raise `BackendError` (never an
    SDK exception, never a message containing a credential) from list/enrich/refresh; `cancel`
    returns FAILED with the error instead of raising."""

    name: str  # the config name, e.g. "batch-prod"
    type: str  # "aws_batch" | "tapis" | "sutro"

    def list_active(self) -> Iterator[list[Job]]:
        """Yield non-terminal jobs page by page as the API returns them."""
        ...

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """Return detailed copies (tags, full raw record) of `jobs`, in order; jobs that have
        vanished are left out. Cheap no-op for backends whose listing is already detailed."""
        ...

    def refresh(self, job: Job) -> Job | None:
        """Current detailed state of one job right before acting, or None if it is gone."""
        ...

    def cancel(self, job: Job, reason: str) -> CancelResult:
        """Cancel (or terminate) one job, recording `reason` where the API allows."""
        ...

    def close(self) -> None: ...


def call_timeouts(section: Mapping[str, Any]) -> tuple[float, float]:
    """(connect, read) seconds for a backend section: `connect_timeout` / `read_timeout`, else
    `timeout` for both, else the defaults. The config loader has turned the durations into
    seconds. Raises BackendError-free ValueError only for a section that skipped the loader."""
    both = section.get("timeout")
    connect = section.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT_S if both is None else both)
    read = section.get("read_timeout", DEFAULT_READ_TIMEOUT_S if both is None else both)
    return float(connect), float(read)


@runtime_checkable
class JobReader(Protocol):
    """What a backend may add when `refresh` needs more of a job than its id (AWS Batch: the
    queue name a listing gives it)."""

    def read_job(self, job_id: str) -> Job | None: ...


@runtime_checkable
class PartialListing(Protocol):
    """What a backend may add when its listing covers only part of the jobs it can read (AWS
    Batch with `queues:`)."""

    def why_unlisted(self, job: Job) -> str | None: ...


def why_unlisted(backend: Backend, job: Job) -> str | None:
    """Why `list_active` never yields `job` whatever its state, or None if it can: a sweep
    never sees a job outside its backend's listing, so nothing would cancel it."""
    return backend.why_unlisted(job) if isinstance(backend, PartialListing) else None


def read_job(backend: Backend, job_id: str) -> Job | None:
    """One job by id, detailed, in whatever state it is, or None if the backend does not know
    it (`reaper explain`). Read-only: the backend's `read_job` where it has one, else `refresh`
    of a placeholder that carries only the id (all that Tapis and Sutro read of it).
    Raises BackendError."""
    if isinstance(backend, JobReader):
        return backend.read_job(job_id)
    placeholder = Job(backend=backend.name, type=backend.type, id=job_id, name="", queue="",
                      status="", phase=Phase.UNKNOWN, created_at=datetime.min.replace(tzinfo=UTC),
                      detailed=False)  # fmt: skip
    return backend.refresh(placeholder)


def truncate_reason(reason: str, limit: int = MAX_REASON_CHARS) -> str:
    """Cut a reason to `limit` characters, ending in an ellipsis when cut."""
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"
