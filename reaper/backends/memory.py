"""An in-memory backend: a fake we ship for tests, property tests and benchmarks. It implements
the `Backend` Protocol over a list of `Job`s, with paging, fault knobs and call counters, and needs
no network, emulator or SDK.

A cancel takes `cancel_delay` of the injected clock's time to land: until then the job keeps its
status and stays listed, as Tapis and Sutro jobs do after an asynchronous cancel and AWS Batch
jobs do while terminating. Time (not a number of calls) because what reacts to it — the sweep's
10-minute re-cancel window — is itself measured in time; a test moves a fake clock forward.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from reaper.backends.base import CancelOutcome, CancelResult
from reaper.errors import BackendError
from reaper.jobs import ACTIVE_PHASES, PHASES, Job, Phase, phase_of, utc_now

# The terminal status a cancelled job ends in: AWS TerminateJob/CancelJob leave a job FAILED
# (https://docs.aws.amazon.com/batch/latest/APIReference/API_TerminateJob.html); Tapis and
# Sutro have a CANCELLED status.
CANCELLED_STATUS = {"aws_batch": "FAILED", "tapis": "CANCELLED", "sutro": "CANCELLED"}


class MemoryBackend:
    """A `Backend` over in-memory jobs. Knobs are plain attributes, changeable between calls:

    - `page_size`: jobs per `list_active` page (an empty listing still yields one empty page,
      as a real API answers one empty response);
    - `fail_list_on_page`: 1-based page whose fetch raises BackendError (earlier pages are
      yielded first: a listing that fails part-way);
    - `fail_cancel_ids`: job ids whose cancel returns FAILED;
    - `fail_refresh`, `fail_enrich`: those calls raise BackendError;
    - `listing_detailed`: False makes listed jobs carry no tags and `detailed=False`, like AWS
      ListJobs, so that only `enrich` reveals tags;
    - `cancel_delay` with `clock`: how long a cancelled job keeps its status.

    `calls` counts calls per operation (`list_active`, `list_page`, `enrich`, `refresh`,
    `cancel`, `close`); `mutating_calls` counts cancel calls, whatever their outcome.

    Thread-safe: a sweep re-checks and cancels up to 8 jobs of one backend at once."""

    def __init__(
        self,
        name: str,
        type: str,
        jobs: Iterable[Job] = (),
        *,
        page_size: int = 100,
        cancel_delay: timedelta = timedelta(0),
        clock: Callable[[], datetime] = utc_now,
        listing_detailed: bool = True,
    ) -> None:
        if type not in PHASES:
            raise ValueError(f"unknown backend type {type!r}; known: {sorted(PHASES)}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self.name = name
        self.type = type
        self.page_size = page_size
        self.cancel_delay = cancel_delay
        self.clock = clock
        self.listing_detailed = listing_detailed
        self.fail_list_on_page: int | None = None
        self.fail_cancel_ids: set[str] = set()
        self.fail_refresh = False
        self.fail_enrich = False
        self.calls: Counter[str] = Counter()
        self.closed = False
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._cancel_due: dict[str, datetime] = {}  # job id → when its cancel lands
        self._reasons: dict[str, str] = {}
        for job in jobs:
            self.add(job)

    @property
    def mutating_calls(self) -> int:
        return self.calls["cancel"]

    # --- test helpers -------------------------------------------------------------------

    def add(self, job: Job) -> None:
        """Add (or replace) a job. It is re-labelled with this backend's name and type, and its
        phase is recomputed from its status with this type's phase table."""
        phase = phase_of(self.type, job.status)
        with self._lock:
            self._jobs[job.id] = replace(
                job, backend=self.name, type=self.type, phase=phase, detailed=True
            )

    def remove(self, job_id: str) -> None:
        """Make a job vanish (purged, or never visible to this identity)."""
        with self._lock:
            self._jobs.pop(job_id, None)
            self._cancel_due.pop(job_id, None)

    def set_status(self, job_id: str, status: str) -> None:
        """Change a job's native status (and so its phase), as the backend itself would."""
        with self._lock:
            job = self._jobs[job_id]
            self._jobs[job_id] = replace(job, status=status, phase=phase_of(self.type, status))

    def job(self, job_id: str) -> Job | None:
        """The stored state of a job, after any cancel that has landed."""
        with self._lock:
            self._settle()
            return self._jobs.get(job_id)

    def reason_of(self, job_id: str) -> str | None:
        """The reason of the last accepted cancel of a job."""
        return self._reasons.get(job_id)

    # --- the Backend protocol -----------------------------------------------------------

    def list_active(self) -> Iterator[list[Job]]:
        """Yield the non-terminal jobs present when listing starts, `page_size` at a time.
        Raises BackendError at page `fail_list_on_page`."""
        with self._lock:
            self.calls["list_active"] += 1
            self._settle()
            active = [self._listed(j) for j in self._jobs.values() if _is_active(j)]
        pages = [active[i : i + self.page_size] for i in range(0, len(active), self.page_size)]
        for number, page in enumerate(pages or [[]], start=1):
            with self._lock:
                self.calls["list_page"] += 1
            if number == self.fail_list_on_page:
                raise BackendError(self.name, f"injected failure listing page {number}")
            yield page

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """Detailed copies of `jobs`, in order; vanished jobs are left out."""
        with self._lock:
            self.calls["enrich"] += 1
            self._raise_if(self.fail_enrich, "enrich")
            self._settle()
            return [self._jobs[j.id] for j in jobs if j.id in self._jobs]

    def refresh(self, job: Job) -> Job | None:
        """The current detailed state of `job` (terminal included), or None if it is gone."""
        with self._lock:
            self.calls["refresh"] += 1
            self._raise_if(self.fail_refresh, "refresh")
            self._settle()
            return self._jobs.get(job.id)

    def cancel(self, job: Job, reason: str) -> CancelResult:
        """Cancel `job`: CANCELLED (again, while a cancel is still landing, as the real APIs
        accept a repeated cancel), ALREADY_TERMINAL, NOT_FOUND, or FAILED for `fail_cancel_ids`."""
        with self._lock:
            return self._cancel(job, reason)

    def _cancel(self, job: Job, reason: str) -> CancelResult:
        self.calls["cancel"] += 1
        self._settle()
        if job.id in self.fail_cancel_ids:
            return CancelResult(CancelOutcome.FAILED, f"injected cancel failure for {job.id}")
        current = self._jobs.get(job.id)
        if current is None:
            return CancelResult(CancelOutcome.NOT_FOUND)
        if current.phase is Phase.TERMINAL:
            return CancelResult(CancelOutcome.ALREADY_TERMINAL)
        self._reasons[job.id] = reason
        self._cancel_due.setdefault(job.id, self.clock() + self.cancel_delay)
        self._settle()
        return CancelResult(CancelOutcome.CANCELLED)

    def close(self) -> None:
        with self._lock:
            self.calls["close"] += 1
            self.closed = True

    # --- internals ----------------------------------------------------------------------

    def _settle(self) -> None:
        """Land every cancel whose delay has passed: the job moves to its cancelled status."""
        now = self.clock()
        for job_id, due in list(self._cancel_due.items()):
            if now >= due:
                del self._cancel_due[job_id]
                self.set_status(job_id, CANCELLED_STATUS[self.type])

    def _listed(self, job: Job) -> Job:
        return job if self.listing_detailed else replace(job, tags={}, detailed=False)

    def _raise_if(self, fail: bool, operation: str) -> None:
        if fail:
            raise BackendError(self.name, f"injected failure in {operation}")


def _is_active(job: Job) -> bool:
    return job.phase in ACTIVE_PHASES
