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
from pathlib import Path
from typing import Any

import botocore
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from reaper.backends.aws_client import client_config, describe_error, make_client, redact
from reaper.backends.base import CancelOutcome, CancelResult, call_timeouts, truncate_reason
from reaper.backends.records.aws_batch import TYPE, job_from_record
from reaper.errors import BackendError
from reaper.jobs import Job, Phase, active_statuses, phase_of

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


class AwsBatchBackend:
    """Lists and terminates AWS Batch jobs through a ready boto3 `batch` client."""

    type = TYPE

    def __init__(self, name: str, client: Any, queues: Sequence[str] | None = None) -> None:
        self.name = name
        self._client = client
        self._queues = list(queues) if queues else None
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
        return cls(name, client, section.get("queues"))

    # -- listing --------------------------------------------------------------------------------
    def list_active(self) -> Iterator[list[Job]]:
        """Yield each ListJobs page of every queue and non-terminal status, as undetailed Jobs.
        Statuses are walked in lifecycle order, so a job that moves on between two calls is
        listed again rather than missed; repeats are dropped. Raises BackendError."""
        seen: set[str] = set()
        for queue in self._queue_names():
            for status in active_statuses(TYPE):
                for summaries in self._list_pages(queue, status):
                    jobs = self._parse("ListJobs", queue, summaries, detailed=False)
                    fresh = [job for job in jobs if job.id not in seen]
                    seen.update(job.id for job in fresh)
                    yield fresh

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

    def _list_pages(self, queue: str, status: str) -> Iterator[list[Any]]:
        params = {"jobQueue": queue, "jobStatus": status, "maxResults": LIST_PAGE_SIZE}
        return self._pages("ListJobs", "jobSummaryList", params)

    def _pages(self, operation: str, key: str, params: dict[str, Any]) -> Iterator[list[Any]]:
        """Follow `nextToken` until the service stops returning one."""
        tokens: set[str] = set()
        while True:
            response = self._call(operation, **params)
            yield self._require_list(operation, response, key)
            token = response.get("nextToken")
            if not token:
                return
            if token in tokens:
                raise AwsCallError(self.name, operation, "the service repeated a nextToken")
            tokens.add(token)
            params = {**params, "nextToken": token}

    # -- details --------------------------------------------------------------------------------
    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """Detailed copies (tags, full record, current status) in order; vanished jobs are left
        out. One DescribeJobs call per 100 jobs. Raises BackendError."""
        records = self._describe([job.id for job in jobs])
        return [self._detailed(job, records[job.id]) for job in jobs if job.id in records]

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
        return detailed

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
            return CancelResult(CancelOutcome.FAILED, str(exc))
        return CancelResult(CancelOutcome.CANCELLED)

    def _terminate_chunk(self, ids: list[str], reason: str) -> dict[str, CancelResult]:
        if not self._bulk:
            return {job_id: self._terminate(job_id, reason) for job_id in ids}
        try:
            response = self._call("TerminateJobs", jobs=ids, reason=reason)
        except AwsCallError as exc:
            if exc.code in _UNKNOWN_OPERATION or exc.http_status == 404:
                self._bulk = False  # the endpoint predates TerminateJobs: one by one from now on
                return self._terminate_chunk(ids, reason)
            return {job_id: CancelResult(CancelOutcome.FAILED, str(exc)) for job_id in ids}
        return self._bulk_outcomes(ids, response, reason)

    def _bulk_outcomes(
        self, ids: list[str], response: Mapping[str, Any], reason: str
    ) -> dict[str, CancelResult]:
        """Per-job outcomes of a TerminateJobs answer: `successful` ids were accepted, `errors`
        failed (throttled or 5xx ones get one more try through TerminateJob)."""
        results = {
            job_id: CancelResult(CancelOutcome.CANCELLED)
            for job_id in response.get("successful") or []
            if job_id in ids
        }
        for error in response.get("errors") or []:
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
        return response

    def _require_list(self, operation: str, response: Mapping[str, Any], key: str) -> list[Any]:
        value = response.get(key)
        if not isinstance(value, list):
            raise AwsCallError(self.name, operation, f"malformed response: no '{key}' list")
        return value

    def _parse(
        self, operation: str, queue: str, records: Sequence[Any], *, detailed: bool
    ) -> list[Job]:
        try:
            return [job_from_record(self.name, queue, r, detailed=detailed) for r in records]
        except (ValueError, TypeError, KeyError) as exc:
            raise AwsCallError(self.name, operation, f"malformed response: {exc}") from None
