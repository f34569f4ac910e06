"""AWS Batch backend on boto3: ListJobs per queue and non-terminal status, DescribeJobs for tags,
TerminateJob(s) to cancel (docs/backends.md, docs/architecture.md, sweep step 5).

Retries and timeouts are botocore's alone (standard retry mode, explicit connect/read timeouts):
no second retry layer is stacked on top. This module is imported only when an `aws_batch`
backend is configured (reaper.backends.REGISTRY); client construction and message redaction live
in reaper.backends.aws_client."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reaper.backends.aws_client import client_config, describe_error, make_client, redact
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
from reaper.backends.records.aws_batch import TYPE, job_from_record, ms_to_utc
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase, active_statuses, phase_of

LIST_PAGE_SIZE = 1000  # ListJobs maximum with jobStatus (API_ListJobs.html, maxResults)
QUEUE_PAGE_SIZE = 100  # DescribeJobQueues maximum
DESCRIBE_CHUNK = 100  # DescribeJobs takes "a list of up to 100 job IDs"
TERMINATE_CHUNK = 50  # TerminateJobs takes "an array of up to 50 Batch job IDs"
# DescribeJobs calls in flight when enriching many jobs (docs/architecture.md)
DESCRIBE_CONCURRENCY = 8
# Codes a service answers with when it does not know an operation (moto answers a bare 404).
_UNKNOWN_OPERATION = frozenset({"UnknownOperationException", "UnknownOperation", "404"})
# Per-job TerminateJobs errors worth one more try through TerminateJob and botocore's retries.
_TRANSIENT_JOB_ERRORS = frozenset({"ThrottlingException", "ServerException"})
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


class AwsBatchBackend:
    """Lists and terminates AWS Batch jobs through a ready boto3 `batch` client."""

    type = TYPE

    def __init__(
        self,
        name: str,
        client: Any,
        queues: Sequence[str] | None = None,
        max_pages: int = DEFAULT_MAX_PAGES,
    ) -> None:
        self.name = name
        self._client = client
        self._queues = list(queues) if queues else None
        self._max_pages = max_pages
        self.server_clock = ServerClock()
        # Older botocore releases lack TerminateJobs: then there is no bulk call to make.
        self._bulk = "TerminateJobs" in client.meta.service_model.operation_names

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
        queues). Credentials come from the SDK's own chain, never from the section.
        Raises BackendError when no client can be built (unknown profile, no region)."""
        try:
            client = make_client(section, config or client_config(*call_timeouts(section)))
        except BotoCoreError as exc:
            raise BackendError(name, f"cannot build an AWS client: {describe_error(exc)}") from None
        return cls(name, client, section.get("queues"), max_pages_of(name, section))

    # -- listing --------------------------------------------------------------------------------
    def list_active(self) -> Iterator[Page]:
        """Yield each ListJobs page of every queue and non-terminal status, as undetailed Jobs.
        Statuses are walked in lifecycle order, so a job that moves on between two calls is
        listed again rather than missed; the sweep keeps its last record (reaper.engine.scan).
        Raises BackendError, also when the paging does not end (`ListingGuard`)."""
        # ListJobs may answer an empty page with a nextToken: only max_pages ends such paging.
        guard = ListingGuard(self.name, self._max_pages, empty_pages=True)
        for queue in self._queue_names():
            for status in active_statuses(TYPE):
                guard.new_stream()
                for summaries in self._list_pages(queue, status, guard):
                    jobs = [self._job_or_bad(queue, record, False) for record in summaries]
                    guard.page(page_ids(jobs), f"ListJobs {queue} {status}")
                    yield [self._resolved(job) for job in jobs]

    def _queue_names(self) -> list[str]:
        if self._queues is not None:
            return self._queues
        params: dict[str, Any] = {"maxResults": QUEUE_PAGE_SIZE}
        names: list[str] = []
        for page in self._pages("DescribeJobQueues", "jobQueues", params):
            names.extend(
                str(queue["jobQueueName"])
                for queue in page
                if isinstance(queue, Mapping) and "jobQueueName" in queue
            )
        return names

    def _list_pages(self, queue: str, status: str, guard: ListingGuard) -> Iterator[list[Any]]:
        params = {"jobQueue": queue, "jobStatus": status, "maxResults": LIST_PAGE_SIZE}
        return self._pages("ListJobs", "jobSummaryList", params, guard)

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
        out, an unreadable JobDetail is a BadRecord. One DescribeJobs call per 100 jobs. Raises
        BackendError."""
        records = self._describe([job.id for job in jobs])
        return [
            self._resolved(self._job_or_bad(job.queue, records[job.id], True))
            for job in jobs
            if job.id in records
        ]

    def refresh(self, job: Job) -> Job | None:
        """The job's current detailed state, or None if DescribeJobs no longer knows it."""
        record = self._describe([job.id]).get(job.id)
        return None if record is None else self._detailed(job, record)

    def read_job(self, job_id: str) -> Job | None:
        """One job by id, detailed, or None if DescribeJobs does not know it (`reaper explain`).
        Its queue is named as a listing names it: the configured `queues` entry when that is
        the job queue's ARN, else the name in the ARN (JobDetail.jobQueue is an ARN,
        https://docs.aws.amazon.com/batch/latest/APIReference/API_JobDetail.html).
        Raises BackendError."""
        record = self._describe([job_id]).get(job_id)
        if record is None:
            return None
        arn = str(record.get("jobQueue") or "")
        queue = arn if self._queues and arn in self._queues else arn.rsplit("/", 1)[-1]
        (job,) = self._parse("DescribeJobs", queue, [record], detailed=True)
        return job

    def why_unlisted(self, job: Job) -> str | None:
        """With `queues:` configured, only those queues are listed."""
        if self._queues is None or job.queue in self._queues:
            return None
        return f"queue {job.queue} is not in this backend's queues ({', '.join(self._queues)})"

    def _describe(self, ids: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """Records by job id, 100 ids per DescribeJobs, up to DESCRIBE_CONCURRENCY calls in
        flight (the calls are independent; botocore clients are thread-safe). Raises
        BackendError if any call fails."""
        unique = list(dict.fromkeys(ids))
        chunks = [unique[i : i + DESCRIBE_CHUNK] for i in range(0, len(unique), DESCRIBE_CHUNK)]
        if len(chunks) <= 1:
            pages = [self._describe_chunk(chunk) for chunk in chunks]
        else:
            workers = min(DESCRIBE_CONCURRENCY, len(chunks))
            with ThreadPoolExecutor(workers, thread_name_prefix=f"{self.name}-describe") as pool:
                pages = list(pool.map(self._describe_chunk, chunks))
        return {job_id: record for page in pages for job_id, record in page.items()}

    def _describe_chunk(self, ids: list[str]) -> dict[str, Mapping[str, Any]]:
        response = self._call("DescribeJobs", jobs=ids)
        return {
            record["jobId"]: record
            for record in self._require_list("DescribeJobs", response, "jobs")
            if isinstance(record, Mapping) and isinstance(record.get("jobId"), str)
        }

    def _detailed(self, job: Job, record: Mapping[str, Any]) -> Job:
        # JobDetail.jobQueue is an ARN; keep the queue name the job was listed under.
        (detailed,) = self._parse("DescribeJobs", job.queue, [record], detailed=True)
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
        `already_terminal` and `not_found`. Never raises for a per-job problem."""
        try:
            outcome = self._precheck(self._describe([job.id]).get(job.id))
        except BackendError as exc:
            return CancelResult(CancelOutcome.FAILED, str(exc))
        return outcome or self._terminate(job.id, truncate_reason(reason))

    def cancel_many(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        """Cancel several jobs with one reason: one DescribeJobs per 100, one TerminateJobs per
        50 (TerminateJob one by one where the service lacks TerminateJobs). Results are in the
        order of `jobs`; never raises for a per-job problem."""
        try:
            records = self._describe([job.id for job in jobs])
        except BackendError as exc:
            return [CancelResult(CancelOutcome.FAILED, str(exc)) for _ in jobs]
        decided = {job.id: self._precheck(records.get(job.id)) for job in jobs}
        return self._terminate_undecided(jobs, decided, reason)

    # -- the sweep's bulk path (reaper.engine.sweep.BulkBackend) ------------------------------
    @property
    def refresh_batch(self) -> int:
        """The most jobs one `refresh_many` call reads (DescribeJobs takes 100 ids)."""
        return DESCRIBE_CHUNK

    @property
    def cancel_batch(self) -> int:
        """The most jobs one `cancel_checked` call carries in one API call: TerminateJobs takes
        50 ids, or 1 once the service turned out to lack TerminateJobs."""
        return TERMINATE_CHUNK if self._bulk else 1

    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]:
        """The current detailed state of each job, in order (None for a job DescribeJobs no
        longer knows): one DescribeJobs per 100 jobs. Raises BackendError."""
        records = self._describe([job.id for job in jobs])
        return [self._detailed(job, records[job.id]) if job.id in records else None for job in jobs]

    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        """Terminate jobs whose state the caller has just read (`refresh`/`refresh_many`, the
        sweep's re-check): a job read as terminal is ALREADY_TERMINAL without a call, the others
        go out in TerminateJobs calls of up to 50 ids, without the DescribeJobs that `cancel`
        makes first. Results are in the order of `jobs`; never raises for a per-job problem."""
        decided = {
            job.id: CancelResult(CancelOutcome.ALREADY_TERMINAL) if job.phase == Phase.TERMINAL
            else None
            for job in jobs
        }  # fmt: skip
        return self._terminate_undecided(jobs, decided, reason)

    def _terminate_undecided(
        self, jobs: Sequence[Job], decided: Mapping[str, CancelResult | None], reason: str
    ) -> list[CancelResult]:
        reason = truncate_reason(reason)
        results = {job_id: result for job_id, result in decided.items() if result is not None}
        pending = list(dict.fromkeys(job.id for job in jobs if job.id not in results))
        for start in range(0, len(pending), TERMINATE_CHUNK):
            results.update(self._terminate_chunk(pending[start : start + TERMINATE_CHUNK], reason))
        return [results[job.id] for job in jobs]

    def _precheck(self, record: Mapping[str, Any] | None) -> CancelResult | None:
        """The outcome decided without a cancel call, or None when the job is still active."""
        if record is None:
            return CancelResult(CancelOutcome.NOT_FOUND)
        if phase_of(TYPE, str(record.get("status", ""))) == Phase.TERMINAL:
            return CancelResult(CancelOutcome.ALREADY_TERMINAL)
        return None

    def _terminate(self, job_id: str, reason: str) -> CancelResult:
        try:
            self._call("TerminateJob", jobId=job_id, reason=reason)
        except AwsCallError as exc:
            if exc.code == "ClientException" and _NOT_FOUND_MESSAGE.search(str(exc)):
                return CancelResult(CancelOutcome.NOT_FOUND, str(exc))
            if exc.answer_lost:
                return self._after_lost_answers([job_id], str(exc))[job_id]
            return CancelResult(CancelOutcome.FAILED, str(exc))
        return CancelResult(CancelOutcome.CANCELLED)

    def _after_lost_answers(self, ids: list[str], lost: str) -> dict[str, CancelResult]:
        """Terminate calls whose answer was lost after botocore's retries (which repeat the
        call: TerminateJob answers 200 for a finished job, so a retry never reports "already
        terminal"). One DescribeJobs tells what is known: terminal now is `cancelled`, gone is
        `not_found`; a job still active is `failed`, and the next sweep terminates it again
        (TerminateJob is idempotent). A job terminated in RUNNABLE may stay RUNNABLE until it
        reaches the head of its queue, so `failed` can be pessimistic there, never
        optimistic."""
        try:
            records = self._describe(ids)
        except BackendError as exc:
            error = f"{lost}; the job could not be re-read to tell: {exc}"
            return {job_id: CancelResult(CancelOutcome.FAILED, error) for job_id in ids}
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
                results[job_id] = CancelResult(CancelOutcome.FAILED, f"{lost}; still {status}")
        return results

    def _terminate_chunk(self, ids: list[str], reason: str) -> dict[str, CancelResult]:
        if not self._bulk:
            return {job_id: self._terminate(job_id, reason) for job_id in ids}
        try:
            response = self._call("TerminateJobs", jobs=ids, reason=reason)
        except AwsCallError as exc:
            if exc.code in _UNKNOWN_OPERATION or exc.http_status == 404:
                self._bulk = False  # the endpoint predates TerminateJobs: one by one from now on
                return self._terminate_chunk(ids, reason)
            if exc.answer_lost:
                return self._after_lost_answers(ids, str(exc))
            return {job_id: CancelResult(CancelOutcome.FAILED, str(exc)) for job_id in ids}
        return self._bulk_outcomes(ids, response, reason)

    def _bulk_outcomes(
        self, ids: list[str], response: Mapping[str, Any], reason: str
    ) -> dict[str, CancelResult]:
        """Per-job outcomes of a TerminateJobs answer: `successful` ids were accepted, `errors`
        failed (throttled or 5xx ones get one more try through TerminateJob)."""
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
                results[job_id] = self._terminate(job_id, reason)
            else:
                message = f"TerminateJobs: {code}: {redact(str(error.get('message')))}"
                results[job_id] = CancelResult(CancelOutcome.FAILED, message)
        unreported = CancelResult(CancelOutcome.FAILED, "TerminateJobs did not report this job")
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

    def _job_or_bad(self, queue: str, record: Any, detailed: bool) -> Job | BadRecord:
        """One bad record is one skipped job: it never ends the listing."""
        return read_record(TYPE, self.name, record, queue=queue, detailed=detailed)

    def _parse(
        self, operation: str, queue: str, records: Sequence[Any], *, detailed: bool
    ) -> list[Job]:
        try:
            return [job_from_record(self.name, queue, r, detailed=detailed) for r in records]
        except (ValueError, TypeError, KeyError) as exc:
            raise AwsCallError(self.name, operation, f"malformed response: {exc}") from None


# Child statuses whose jobs have started or may have: a SUCCEEDED or FAILED child counts only
# with a start time (a child can fail before it starts).
_STARTED_CHILD_STATUSES = ("STARTING", "RUNNING", "SUCCEEDED", "FAILED")


def parent_key(record: Mapping[str, Any]) -> str | None:
    """The ListJobs parameter that lists a parent's children: `arrayJobId` for an array parent
    (`arrayProperties.size`, no `index`), `multiNodeJobId` for a multi-node parallel job's
    parent (`nodeProperties.numNodes`, no node index, an id without `#`); else None."""
    array = record.get("arrayProperties")
    if (
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
