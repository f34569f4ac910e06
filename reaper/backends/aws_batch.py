"""AWS Batch backend on boto3: ListJobs per queue and non-terminal status, DescribeJobs for tags,
TerminateJob(s) to cancel; service jobs on SAGEMAKER_TRAINING queues through ListServiceJobs,
DescribeServiceJob and TerminateServiceJob(s) (reaper.backends.aws_kinds; docs/backends.md,
docs/architecture.md, sweep step 5).

Retries and timeouts are botocore's alone (standard retry mode, explicit connect/read timeouts):
no second retry layer is stacked on top. This module is imported only when an `aws_batch`
backend is configured (reaper.backends.REGISTRY); client construction and message redaction live
in reaper.backends.aws_client."""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reaper.backends.aws_client import client_config, describe_error, make_client, redact
from reaper.backends.aws_kinds import API, job_kind, queue_kind
from reaper.backends.base import (
    DEFAULT_MAX_PAGES,
    CancelOutcome,
    CancelResult,
    ListingGuard,
    Page,
    ServerClock,
    call_timeouts,
    max_pages_of,
    page_ids,
    truncate_reason,
)
from reaper.backends.records import read_record
from reaper.backends.records.aws_batch import TYPE, active_statuses_of, job_from_record, ms_to_utc
from reaper.errors import BackendError
from reaper.jobs import JOB_KINDS, BadRecord, Job, JobKind, Phase, phase_of

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = API[JobKind.CONTAINER].page_size  # ListJobs maximum with jobStatus
QUEUE_PAGE_SIZE = 100  # DescribeJobQueues maximum, also of the queues one call names
DESCRIBE_CHUNK = 100  # DescribeJobs takes "a list of up to 100 job IDs"
TERMINATE_CHUNK = 50  # TerminateJobs takes "an array of up to 50 Batch job IDs"
# DescribeJobs (DescribeServiceJob, one job each) calls in flight when enriching many jobs
# (docs/architecture.md)
DESCRIBE_CONCURRENCY = 8
# Codes a service answers with when it does not know an operation (moto answers a bare 404).
_UNKNOWN_OPERATION = frozenset({"UnknownOperationException", "UnknownOperation", "404"})
# Per-job TerminateJobs errors worth one more try through TerminateJob and botocore's retries.
_TRANSIENT_JOB_ERRORS = frozenset({"ThrottlingException", "ServerException"})
_THROTTLED = frozenset({"ThrottlingException", "TooManyRequestsException"})
_NOT_FOUND_MESSAGE = re.compile(r"not found|does not exist", re.IGNORECASE)


class AwsCallError(BackendError):
    """One AWS call failed after botocore's retries. `code` and `http_status` are the service's
    answer when there was one; the message names the operation and never holds a credential."""

    def __init__(
        self,
        backend: str,
        operation: str,
        message: str,
        code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(backend, f"{operation} failed: {message}")
        self.operation, self.code, self.http_status = operation, code, http_status

    @property
    def answer_lost(self) -> bool:
        """No answer (a timeout, a reset) or a 5xx: a mutating call may have been applied."""
        return self.http_status is None or self.http_status >= 500

    @property
    def unanswered(self) -> bool:
        """No usable answer after botocore's retries: lost, or still throttled (a fault of the
        service, not a refusal of the job; CancelResult.unanswered)."""
        return self.answer_lost or self.http_status == 429 or self.code in _THROTTLED


def _unanswered(error: BackendError) -> bool:
    """A failed call without a usable answer (AwsCallError.unanswered)."""
    return not isinstance(error, AwsCallError) or error.unanswered


class AwsBatchBackend:
    """Lists and terminates AWS Batch jobs through a ready boto3 `batch` client: the container
    jobs and the service jobs of its queues, or only the `job_kinds` given."""

    type = TYPE

    def __init__(
        self,
        name: str,
        client: Any,
        queues: Sequence[str] | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
        job_kinds: Collection[JobKind] = JOB_KINDS,
    ) -> None:
        self.name = name
        self._client = client
        self._queues = list(queues) if queues else None
        self._max_pages = max_pages
        self._kinds = frozenset(job_kinds)
        self.server_clock = ServerClock()
        # Older botocore releases lack TerminateJobs (TerminateServiceJobs): then there is no
        # bulk call to make for that kind.
        operations = client.meta.service_model.operation_names
        self._bulk = {kind: api.terminate_many in operations for kind, api in API.items()}

    @property
    def client(self) -> Any:
        """The boto3 `batch` client this backend calls through."""
        return self._client

    @classmethod
    def from_config(
        cls,
        name: str,
        section: Mapping[str, Any],
        base_dir: Path,
        *,
        config: Config | None = None,
    ) -> AwsBatchBackend:
        """Build from a `reaper.yaml` backend section (region, profile, role_arn, endpoint_url,
        queues, job_kinds). Credentials come from the SDK's own chain, never from the section.
        Raises BackendError when no client can be built (unknown profile, no region)."""
        try:
            client = make_client(section, config or client_config(*call_timeouts(section)))
        except BotoCoreError as exc:
            raise BackendError(name, f"cannot build an AWS client: {describe_error(exc)}") from None
        kinds = tuple(JobKind(kind) for kind in section.get("job_kinds") or JOB_KINDS)
        return cls(name, client, section.get("queues"), max_pages_of(name, section), kinds)

    # -- listing --------------------------------------------------------------------------------
    def list_active(self) -> Iterator[Page]:
        """Yield each list page of every queue and non-terminal status, as undetailed Jobs: a
        container queue's through ListJobs, a SAGEMAKER_TRAINING queue's through
        ListServiceJobs only, each kind only if `job_kinds` has it. Statuses are walked in
        lifecycle order, so a job that moves on between two calls is listed again rather than
        missed; the sweep keeps its last record (reaper.engine.scan). Raises BackendError, also
        when the paging does not end (`ListingGuard`)."""
        # ListJobs may answer an empty page with a nextToken: only max_pages ends such paging.
        guard = ListingGuard(self.name, self._max_pages, empty_pages=True)
        for queue, kind in self._queue_kinds():
            if kind not in self._kinds:
                continue
            for status in active_statuses_of(kind):
                guard.new_stream()
                for summaries in self._list_pages(kind, queue, status, guard):
                    jobs = [self._job_or_bad(queue, record, False, kind) for record in summaries]
                    guard.page(page_ids(jobs), f"{API[kind].list_op} {queue} {status}")
                    yield [self._resolved(job) for job in jobs]

    def _queue_kinds(self) -> list[tuple[str, JobKind]]:
        """Each queue to list with the kind of job it holds (`aws_kinds.queue_kind`). Configured
        `queues` are described as well, keeping their spelling (a name or an ARN); one that
        DescribeJobQueues leaves out is a container queue, listed as before queue types
        existed (ListJobs then says whether it exists). A queue of a type reaper does not know
        is left out, with a warning."""
        if self._queues is None:
            details = self._queue_details(None)
            named = [(str(d["jobQueueName"]), d) for d in details]
        else:
            known: dict[str, Mapping[str, Any]] = {}
            for start in range(0, len(self._queues), QUEUE_PAGE_SIZE):
                for detail in self._queue_details(self._queues[start : start + QUEUE_PAGE_SIZE]):
                    # A configured entry is a queue's name or its ARN.
                    known.update(
                        (str(detail.get(k)), detail) for k in ("jobQueueName", "jobQueueArn")
                    )
            named = [(queue, known.get(queue, {})) for queue in self._queues]
        plan = []
        for queue, detail in named:
            kind = queue_kind(detail)
            if kind is None:
                log.warning("%s: queue %s has jobQueueType %r, which reaper does not know; it is "
                            "not listed", self.name, queue, detail.get("jobQueueType"))  # fmt: skip
            else:
                plan.append((queue, kind))
        return plan

    def _queue_details(self, names: list[str] | None) -> list[Mapping[str, Any]]:
        """The JobQueueDetails DescribeJobQueues returns (of `names`, or of every queue)."""
        params: dict[str, Any] = {"maxResults": QUEUE_PAGE_SIZE}
        if names is not None:
            params = {"jobQueues": names}  # "a list of up to 100 queue names or ... ARN entries"
        return [
            queue
            for page in self._pages("DescribeJobQueues", "jobQueues", params)
            for queue in page
            if isinstance(queue, Mapping) and "jobQueueName" in queue
        ]

    def _list_pages(
        self, kind: JobKind, queue: str, status: str, guard: ListingGuard
    ) -> Iterator[list[Any]]:
        api = API[kind]
        params = {"jobQueue": queue, "jobStatus": status, "maxResults": api.page_size}
        return self._pages(api.list_op, "jobSummaryList", params, guard)

    def _pages(
        self,
        operation: str,
        key: str,
        params: dict[str, Any],
        guard: ListingGuard | None = None,
    ) -> Iterator[list[Any]]:
        """Follow `nextToken` until the service stops returning one; a token seen before, or
        more pages than `max_pages`, raises BackendError."""
        counted_here = guard is None  # ListJobs pages are counted by list_active
        guard = guard or ListingGuard(self.name, self._max_pages, empty_pages=True)
        while True:
            response = self._call(operation, **params)
            if counted_here:
                guard.page((), operation)
            yield self._require_list(operation, response, key)
            token = response.get("nextToken")
            if not token:
                return
            guard.cursor(str(token), operation)
            params = {**params, "nextToken": token}

    # -- details --------------------------------------------------------------------------------
    def enrich(self, jobs: Sequence[Job]) -> list[Job | BadRecord]:
        """Detailed copies (tags, full record, current status) in order; vanished jobs are left
        out, an unreadable JobDetail is a BadRecord. One DescribeJobs call per 100 container
        jobs, one DescribeServiceJob per service job. Raises BackendError."""
        records = self._records(jobs)
        return [
            self._resolved(
                self._job_or_bad(job.queue, records[_key(job)], True, job_kind(job.kind))
            )
            for job in jobs
            if _key(job) in records
        ]

    def refresh(self, job: Job) -> Job | None:
        """The job's current detailed state, or None if DescribeJobs (DescribeServiceJob for a
        service job) no longer knows it."""
        record = self._records([job]).get(_key(job))
        return None if record is None else self._detailed(job, record)

    def read_job(self, job_id: str) -> Job | None:
        """One job by id, detailed, or None if neither DescribeJobs nor DescribeServiceJob
        knows it (`reaper explain`; a kind `job_kinds` leaves out is read too, so that
        `why_unlisted` can say so). Its queue is named as a listing names it: the configured
        `queues` entry when that is the job queue's ARN, else the name in the ARN
        (JobDetail.jobQueue is an ARN,
        https://docs.aws.amazon.com/batch/latest/APIReference/API_JobDetail.html).
        Raises BackendError."""
        for kind in (JobKind.CONTAINER, JobKind.SERVICE):
            record = self._describe(kind, [job_id]).get(job_id)
            if record is not None:
                arn = str(record.get("jobQueue") or "")
                queue = arn if self._queues and arn in self._queues else arn.rsplit("/", 1)[-1]
                (job,) = self._parse(API[kind].describe_op, queue, [record], True, kind)
                return job
        return None

    def why_unlisted(self, job: Job) -> str | None:
        """With `queues:` configured, only those queues are listed; with `job_kinds:`, only
        those kinds of job."""
        kind = job_kind(job.kind)
        if kind not in self._kinds:
            return f"this backend's job_kinds leaves out {kind} jobs"
        if self._queues is None or job.queue in self._queues:
            return None
        return f"queue {job.queue} is not in this backend's queues ({', '.join(self._queues)})"

    def _records(self, jobs: Sequence[Job]) -> dict[tuple[JobKind, str], Mapping[str, Any]]:
        """Current records by (kind, job id), each kind read through its own describe call."""
        found: dict[tuple[JobKind, str], Mapping[str, Any]] = {}
        for kind in JobKind:
            ids = [job.id for job in jobs if job_kind(job.kind) is kind]
            if ids:
                found.update(((kind, i), r) for i, r in self._describe(kind, ids).items())
        return found

    def _describe(self, kind: JobKind, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Records by job id: 100 ids per DescribeJobs, or one DescribeServiceJob per service
        job, up to DESCRIBE_CONCURRENCY calls in flight (the calls are independent; botocore
        clients are thread-safe). Raises BackendError if any call fails."""
        unique = list(dict.fromkeys(ids))
        if kind is JobKind.SERVICE:
            chunks = [[job_id] for job_id in unique]
            read = self._describe_service_job
        else:
            chunks = [unique[i : i + DESCRIBE_CHUNK] for i in range(0, len(unique), DESCRIBE_CHUNK)]
            read = self._describe_chunk
        if len(chunks) <= 1:
            pages = [read(chunk) for chunk in chunks]
        else:
            workers = min(DESCRIBE_CONCURRENCY, len(chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"{self.name}-describe") as pool:
                pages = list(pool.map(read, chunks))
        return {job_id: record for page in pages for job_id, record in page.items()}

    def _describe_chunk(self, ids: list[str]) -> dict[str, Mapping[str, Any]]:
        response = self._call("DescribeJobs", jobs=ids)
        return {
            record["jobId"]: record
            for record in self._require_list("DescribeJobs", response, "jobs")
            if isinstance(record, Mapping) and isinstance(record.get("jobId"), str)
        }

    def _describe_service_job(self, ids: list[str]) -> dict[str, Mapping[str, Any]]:
        """{id: record} of one service job, {} when the service does not know it (a
        ClientException saying so: DescribeServiceJob takes one id and has no list to leave it
        out of). Raises BackendError for an answer that names no job."""
        (job_id,) = ids
        try:
            response = self._call("DescribeServiceJob", jobId=job_id)
        except AwsCallError as exc:
            if exc.code == "ClientException" and _NOT_FOUND_MESSAGE.search(str(exc)):
                return {}
            raise
        record = {key: value for key, value in response.items() if key != "ResponseMetadata"}
        found = record.get("jobId")
        if not isinstance(found, str):
            # An answer without the job (botocore reads a garbled body as {}) says nothing: a
            # job read as gone would be "not found", and a cancel "confirmed".
            raise AwsCallError(self.name, "DescribeServiceJob", "malformed response: no 'jobId'")
        return {found: record}

    def _detailed(self, job: Job, record: Mapping[str, Any]) -> Job:
        # JobDetail.jobQueue is an ARN; keep the queue name the job was listed under.
        kind = job_kind(job.kind)
        (detailed,) = self._parse(API[kind].describe_op, job.queue, [record], True, kind)
        return self._with_children(detailed)

    # -- array and multi-node parents ----------------------------------------------------------
    def _resolved(self, item: Job | BadRecord) -> Job | BadRecord:
        return item if isinstance(item, BadRecord) else self._with_children(item)

    def _with_children(self, job: Job) -> Job:
        """An array or multi-node parent with the phase and start its children give it.

        AWS keeps a parent PENDING "while child jobs are running" (botocore's ListJobs
        documentation, `jobStatus`), and a parent records no start of its own: as listed, a
        parent whose children have run for days looks pending since its submission. So a
        parent in an active phase without a start of its own is `running` once any child
        (node) is STARTING or RUNNING or has a start time, its start the earliest start among
        them; otherwise it is left as listed. Children are listed by ListJobs with
        `arrayJobId` (`multiNodeJobId`) per started status. Raises BackendError."""
        if job.phase not in (Phase.PENDING, Phase.RUNNING):
            return job
        key = parent_key(job.raw)
        if key is None or job.started_at is not None:
            return job
        started, first = False, None
        for status in _STARTED_CHILD_STATUSES:
            params = {key: job.id, "jobStatus": status, "maxResults": LIST_PAGE_SIZE}
            for page in self._pages("ListJobs", "jobSummaryList", params):
                for child in page:
                    child_start = _child_start(child)
                    started = started or status in ("STARTING", "RUNNING") or bool(child_start)
                    if child_start is not None and (first is None or child_start < first):
                        first = child_start
        if not started:
            return job
        return replace(job, phase=Phase.RUNNING, started_at=first)

    # -- cancelling -----------------------------------------------------------------------------
    def cancel(self, job: Job, reason: str) -> CancelResult:
        """TerminateJob, whatever the state: it cancels jobs that have not started and stops
        STARTING/RUNNING ones, whereas CancelJob answers success for those and does nothing
        (https://docs.aws.amazon.com/batch/latest/APIReference/API_CancelJob.html).
        TerminateJob also succeeds on finished and unknown jobs
        (https://github.com/aws/aws-cli/issues/2551), so a DescribeJobs right before decides
        `already_terminal` and `not_found`. A service job goes the same way through
        DescribeServiceJob and TerminateServiceJob. Never raises for a per-job problem."""
        try:
            outcome = self._precheck(self._records([job]).get(_key(job)))
        except BackendError as exc:
            return CancelResult(CancelOutcome.FAILED, str(exc), unanswered=_unanswered(exc))
        return outcome or self._terminate(job_kind(job.kind), job.id, truncate_reason(reason))

    def cancel_many(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        """Cancel several jobs with one reason: one DescribeJobs per 100, one TerminateJobs per
        50 (TerminateJob one by one where the service lacks TerminateJobs); service jobs
        through DescribeServiceJob and TerminateServiceJobs. Results are in the order of
        `jobs`; never raises for a per-job problem."""
        try:
            records = self._records(jobs)
        except BackendError as exc:
            failed = CancelResult(CancelOutcome.FAILED, str(exc), unanswered=_unanswered(exc))
            return [failed for _ in jobs]
        decided = {_key(job): self._precheck(records.get(_key(job))) for job in jobs}
        return self._terminate_undecided(jobs, decided, reason)

    # -- the sweep's bulk path (reaper.engine.sweep.BulkBackend) ------------------------------
    @property
    def refresh_batch(self) -> int:
        """The most jobs one `refresh_many` call reads (DescribeJobs takes 100 ids)."""
        return DESCRIBE_CHUNK

    @property
    def cancel_batch(self) -> int:
        """The most jobs one `cancel_checked` call carries in one API call: TerminateJobs (and
        TerminateServiceJobs) take 50 ids, or 1 once the service turned out to lack both."""
        return TERMINATE_CHUNK if any(self._bulk.values()) else 1

    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]:
        """The current detailed state of each job, in order (None for a job the service no
        longer knows): one DescribeJobs per 100 container jobs, one DescribeServiceJob per
        service job. Raises BackendError."""
        records = self._records(jobs)
        return [
            self._detailed(job, records[_key(job)]) if _key(job) in records else None
            for job in jobs
        ]

    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        """Terminate jobs whose state the caller has just read (`refresh`/`refresh_many`, the
        sweep's re-check): a job read as terminal is ALREADY_TERMINAL without a call, the others
        go out in TerminateJobs calls of up to 50 ids, without the DescribeJobs that `cancel`
        makes first. Results are in the order of `jobs`; never raises for a per-job problem."""
        decided = {
            _key(job): CancelResult(CancelOutcome.ALREADY_TERMINAL)
            if job.phase == Phase.TERMINAL else None
            for job in jobs
        }  # fmt: skip
        return self._terminate_undecided(jobs, decided, reason)

    def _terminate_undecided(
        self,
        jobs: Sequence[Job],
        decided: Mapping[tuple[JobKind, str], CancelResult | None],
        reason: str,
    ) -> list[CancelResult]:
        reason = truncate_reason(reason)
        results = {key: result for key, result in decided.items() if result is not None}
        for kind in JobKind:
            pending = list(dict.fromkeys(
                job.id for job in jobs if job_kind(job.kind) is kind and _key(job) not in results
            ))  # fmt: skip
            for start in range(0, len(pending), TERMINATE_CHUNK):
                chunk = pending[start : start + TERMINATE_CHUNK]
                done = self._terminate_chunk(kind, chunk, reason)
                results.update(((kind, job_id), result) for job_id, result in done.items())
        return [results[_key(job)] for job in jobs]

    def _precheck(self, record: Mapping[str, Any] | None) -> CancelResult | None:
        """The outcome decided without a cancel call, or None when the job is still active."""
        if record is None:
            return CancelResult(CancelOutcome.NOT_FOUND)
        if phase_of(TYPE, str(record.get("status", ""))) == Phase.TERMINAL:
            return CancelResult(CancelOutcome.ALREADY_TERMINAL)
        return None

    def _terminate(self, kind: JobKind, job_id: str, reason: str) -> CancelResult:
        try:
            self._call(API[kind].terminate_one, jobId=job_id, reason=reason)
        except AwsCallError as exc:
            if exc.code == "ClientException" and _NOT_FOUND_MESSAGE.search(str(exc)):
                return CancelResult(CancelOutcome.NOT_FOUND, str(exc))
            if exc.answer_lost:
                return self._after_lost_answers(kind, [job_id], str(exc))[job_id]
            return CancelResult(CancelOutcome.FAILED, str(exc), unanswered=exc.unanswered)
        return CancelResult(CancelOutcome.CANCELLED)

    def _after_lost_answers(
        self, kind: JobKind, ids: list[str], lost: str
    ) -> dict[str, CancelResult]:
        """Terminate calls whose answer was lost after botocore's retries (which repeat the
        call: TerminateJob answers 200 for a finished job, so a retry never reports "already
        terminal"). One DescribeJobs tells what is known: terminal now is `cancelled`, gone is
        `not_found`; a job still active is `failed`, and the next sweep terminates it again
        (TerminateJob is idempotent). A job terminated in RUNNABLE may stay RUNNABLE until it
        reaches the head of its queue, so `failed` can be pessimistic there, never
        optimistic. Service jobs are re-read the same way, through DescribeServiceJob."""
        try:
            records = self._describe(kind, ids)
        except BackendError as exc:
            error = f"{lost}; the job could not be re-read to tell: {exc}"
            failed = CancelResult(CancelOutcome.FAILED, error, unanswered=True)
            return dict.fromkeys(ids, failed)
        results = {}
        for job_id in ids:
            record = records.get(job_id)
            status = str(record.get("status", "")) if record is not None else ""
            if record is None:
                results[job_id] = CancelResult(
                    CancelOutcome.NOT_FOUND, f"{lost}; the job is gone since the call"
                )
            elif phase_of(TYPE, status) == Phase.TERMINAL:
                results[job_id] = CancelResult(
                    CancelOutcome.CANCELLED, f"{lost}; the job has ended since the call ({status})"
                )
            else:
                results[job_id] = CancelResult(
                    CancelOutcome.FAILED, f"{lost}; still {status}", unanswered=True
                )
        return results

    def _terminate_chunk(
        self, kind: JobKind, ids: list[str], reason: str
    ) -> dict[str, CancelResult]:
        if not self._bulk[kind]:
            return {job_id: self._terminate(kind, job_id, reason) for job_id in ids}
        operation = API[kind].terminate_many
        try:
            response = self._call(operation, jobs=ids, reason=reason)
        except AwsCallError as exc:
            if exc.code in _UNKNOWN_OPERATION or exc.http_status == 404:
                # The endpoint predates the bulk call: one by one from now on.
                self._bulk[kind] = False
                return self._terminate_chunk(kind, ids, reason)
            if exc.answer_lost:
                return self._after_lost_answers(kind, ids, str(exc))
            failed = CancelResult(CancelOutcome.FAILED, str(exc), unanswered=exc.unanswered)
            return dict.fromkeys(ids, failed)
        return self._bulk_outcomes(kind, ids, response, reason)

    def _bulk_outcomes(
        self, kind: JobKind, ids: list[str], response: Mapping[str, Any], reason: str
    ) -> dict[str, CancelResult]:
        """Per-job outcomes of a TerminateJobs (TerminateServiceJobs) answer: `successful` ids
        were accepted, `errors` failed (throttled or 5xx ones get one more try through
        TerminateJob, TerminateServiceJob)."""
        operation = API[kind].terminate_many
        results = {
            job_id: CancelResult(CancelOutcome.CANCELLED)
            for job_id in _list_of(response.get("successful"))
            if isinstance(job_id, str) and job_id in ids
        }
        for error in _list_of(response.get("errors")):
            if not isinstance(error, Mapping):
                # Not the documented {job, code, message}: it names no job, so every job not
                # otherwise reported stays FAILED ("did not report"), never cancelled.
                continue
            job_id, code = str(error.get("job")), str(error.get("code"))
            if job_id not in ids:
                continue
            if code in _TRANSIENT_JOB_ERRORS:
                results[job_id] = self._terminate(kind, job_id, reason)
            else:
                message = f"{operation}: {code}: {redact(str(error.get('message')))}"
                results[job_id] = CancelResult(CancelOutcome.FAILED, message)
        unreported = CancelResult(CancelOutcome.FAILED, f"{operation} did not report this job")
        return {job_id: results.get(job_id, unreported) for job_id in ids}

    def close(self) -> None:
        self._client.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        """One API call (with botocore's retries); every SDK failure becomes AwsCallError."""
        method = getattr(self._client, botocore.xform_name(operation))
        try:
            response: dict[str, Any] = method(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = str(error.get("Code") or "Unknown")
            message = f"{code} (HTTP {status}): {redact(str(error.get('Message') or ''))}"
            raise AwsCallError(self.name, operation, message, code, status) from None
        except BotoCoreError as exc:
            raise AwsCallError(self.name, operation, describe_error(exc)) from None
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            # botocore's parser meeting an answer of the wrong shape (a string where an object
            # belongs) fails with a plain Python error: the call's outcome is unknown.
            what = f"the answer could not be read ({type(exc).__name__})"
            raise AwsCallError(self.name, operation, what) from None
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        self.server_clock.observe(headers.get("date"))
        return response

    def _require_list(self, operation: str, response: Mapping[str, Any], key: str) -> list[Any]:
        value = response.get(key)
        if not isinstance(value, list):
            raise AwsCallError(self.name, operation, f"malformed response: no '{key}' list")
        return value

    def _job_or_bad(
        self, queue: str, record: Any, detailed: bool, kind: JobKind
    ) -> Job | BadRecord:
        """One bad record is one skipped job: it never ends the listing."""
        return read_record(TYPE, self.name, record, queue=queue, detailed=detailed, kind=kind)

    def _parse(
        self, operation: str, queue: str, records: Sequence[Any], detailed: bool, kind: JobKind
    ) -> list[Job]:
        try:
            return [
                job_from_record(self.name, queue, r, detailed=detailed, kind=kind) for r in records
            ]
        except (ValueError, TypeError, KeyError) as exc:
            raise AwsCallError(self.name, operation, f"malformed response: {exc}") from None


def _key(job: Job) -> tuple[JobKind, str]:
    """A job's key among the records read: its kind and id (each kind has its own ids)."""
    return job_kind(job.kind), job.id


# Child statuses whose jobs have started or may have: a SUCCEEDED or FAILED child counts only
# with a start time (a child can fail before it starts).
_STARTED_CHILD_STATUSES = ("STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def parent_key(record: Mapping[str, Any]) -> str | None:
    """The ListJobs parameter that lists a parent's children: `arrayJobId` for an array parent
    (`arrayProperties.size`, no `index`), `multiNodeJobId` for a multi-node parallel job's
    parent (`nodeProperties.numNodes`, no node index, an id without `#`); else None."""
    array = record.get("arrayProperties")
    if (  # `is not None` first: most records have none, and isinstance(.., Mapping) is slow
        array is not None and isinstance(array, Mapping)
        and "size" in array and "index" not in array
    ):  # fmt: skip
        return "arrayJobId"
    nodes = record.get("nodeProperties")
    if nodes is None:  # most jobs: neither kind of parent
        return None
    job_id = record.get("jobId")
    if (
        isinstance(nodes, Mapping) and "numNodes" in nodes and "nodeIndex" not in nodes
        and isinstance(job_id, str) and "#" not in job_id
    ):  # fmt: skip
        return "multiNodeJobId"
    return None


def _child_start(child: Any) -> datetime | None:
    if not isinstance(child, Mapping):
        return None
    try:
        return ms_to_utc(child.get("startedAt"))
    except ValueError:
        return None  # an unreadable child start proves nothing


def _list_of(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
