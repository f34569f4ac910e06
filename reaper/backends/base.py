"""The one small interface every backend implements."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase

# What a listing page holds: jobs, and the records that could not be read as jobs.
Page = Sequence[Job | BadRecord]

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
    """What one cancel call did. "Already terminal" is an outcome, not an exception.
    `unanswered`: a FAILED cancel that no attempt got a usable answer to (timeouts, resets, 5xx,
    throttling after every retry): a fault of the service rather than of the job, which the
    sweep counts towards giving up on the backend (reaper.engine.breaker)."""

    outcome: CancelOutcome
    error: str | None = None
    unanswered: bool = False


@runtime_checkable
class Backend(Protocol):
    """A job API reaper can list and cancel on. Implementations raise `BackendError` (never an
    SDK exception, never a message containing a credential) from list/enrich/refresh; `cancel`
    returns FAILED with the error instead of raising."""

    name: str  # the config name, e.g. "batch-prod"
    type: str  # "aws_batch" | "tapis" | "sutro"

    def list_active(self) -> Iterator[Page]:
        """Yield non-terminal jobs page by page as the API returns them; a record that cannot
        be read is a `BadRecord` in its page, never an exception. Raises BackendError when the
        listing itself fails (`ListingGuard`)."""
        ...

    def enrich(self, jobs: Sequence[Job]) -> Sequence[Job | BadRecord]:
        """Return detailed copies (tags, full raw record) of `jobs`, in order; jobs that have
        vanished are left out, a detail that cannot be read is a BadRecord. Cheap no-op for
        backends whose listing is already detailed."""
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


# -- listings -------------------------------------------------------------------------------
# A listing reads at most this many pages by default: 1,000,000 jobs at 50 a page (AWS Batch
# pages hold up to 1000 jobs, Sutro's 100, Tapis' as configured), so that only a server that
# never stops paging reaches it. `max_pages` in a backend's section changes it.
LISTED_JOBS_CAP = 1_000_000
DEFAULT_MAX_PAGES = LISTED_JOBS_CAP // 50


def max_pages_of(name: str, section: Mapping[str, Any]) -> int:
    """`max_pages` of a backend section (the schema checks it is a positive integer)."""
    value = section.get("max_pages", DEFAULT_MAX_PAGES)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackendError(name, f"max_pages must be a positive integer, got {value!r}")
    return value


class ListingGuard:
    """The checks that make one listing end: a server that keeps paging (a fresh cursor every
    time, the same page again, a job table shifting under an offset) must not be followed
    forever, nor be believed. Raises BackendError, which fails the backend's listing for the
    sweep (no cancels there, docs/backends.md "Listings"), when:

    - more than `max_pages` pages were read over the whole listing;
    - a cursor or token comes back that its stream has seen before;
    - a page that is not empty adds no job id not already seen in its stream, or a page that
      is empty is not the last (unless the API has such pages).

    A stream is one paged sequence (AWS Batch pages each queue and status separately; an id
    seen in another stream is a job that moved on between two calls, not a loop)."""

    def __init__(
        self, backend: str, max_pages: int = DEFAULT_MAX_PAGES, *, empty_pages: bool = False
    ) -> None:
        """`empty_pages`: the API may answer an empty page that is not the last (AWS list
        calls may); otherwise such a page is no progress either."""
        self.backend, self.max_pages, self.empty_pages = backend, max_pages, empty_pages
        self.pages = 0
        self._cursors: set[str] = set()
        self._ids: set[str] = set()

    def new_stream(self) -> None:
        self._ids, self._cursors = set(), set()

    def page(self, ids: Iterable[str | None], where: str, *, last: bool = False) -> None:
        """Count one page and check it adds an id (`None`, a record whose id could not be read,
        adds none: a page of nothing but such records, again and again, is no progress). An
        empty page is progress only as the last page, or where the API has empty pages."""
        self.pages += 1
        if self.pages > self.max_pages:
            raise BackendError(
                self.backend, f"{where}: more than max_pages={self.max_pages} pages; "
                "the listing is treated as failed"
            )  # fmt: skip
        before, count = len(self._ids), 0
        for job_id in ids:
            count += 1
            if job_id is not None:
                self._ids.add(job_id)
        if not count and not last and not self.empty_pages:
            raise BackendError(
                self.backend, f"{where}: an empty page that is not the last; "
                "the listing cannot be trusted"
            )  # fmt: skip
        if count and len(self._ids) == before:
            raise BackendError(
                self.backend, f"{where}: a page of {count} job(s) added no new job id; "
                "the listing cannot be trusted"
            )  # fmt: skip

    def cursor(self, token: str, where: str) -> None:
        if token in self._cursors:
            raise BackendError(self.backend, f"{where}: the server repeated a cursor")
        self._cursors.add(token)


def page_ids(page: Page) -> list[str | None]:
    """The job ids of a page, None for a bad record without one."""
    return [item.id if isinstance(item, Job) else item.job_id for item in page]


# -- the servers' clock ---------------------------------------------------------------------
class ServerClock:
    """The server's time by the `Date` header of its latest answer (RFC 9110 section 6.6.1:
    an origin server with a clock sends it on every response), kept with the host's monotonic
    clock at receipt, so that `now()` reads the server's time later without trusting the host's
    wall clock. Thread-safe; a header that does not parse is ignored."""

    def __init__(self, monotonic: Any = time.monotonic) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._seen: tuple[datetime, float] | None = None

    def observe(self, date_header: object) -> None:
        if not isinstance(date_header, str) or not date_header:
            return
        # Here, not at the top: `reaper validate` and `reaper test` import this module and never
        # read a Date header (email.utils costs them about 10 ms of start-up).
        from email.utils import parsedate_to_datetime

        try:
            moment = parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError):
            return
        if moment.tzinfo is None:  # "-0000" per RFC 5322: UTC all the same for HTTP dates
            moment = moment.replace(tzinfo=UTC)
        with self._lock:
            self._seen = (moment, self._monotonic())

    def now(self) -> datetime | None:
        """The server's time now, by its last answer (to the second: the header's precision);
        None before any answer carried a Date."""
        with self._lock:
            seen = self._seen
        if seen is None:
            return None
        moment, at = seen
        return moment + timedelta(seconds=self._monotonic() - at)


@runtime_checkable
class ClockedBackend(Protocol):
    """A backend that keeps its server's clock (every HTTP backend does)."""

    @property
    def server_clock(self) -> ServerClock: ...
