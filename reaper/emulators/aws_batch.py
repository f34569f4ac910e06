"""Loopback emulator of the AWS Batch job API, speaking the REST-JSON protocol botocore uses
(botocore/data/batch/2016-08-10/service-2.json): POST /v1/listjobs, /v1/describejobs,
/v1/terminatejob, /v1/terminatejobs, /v1/canceljob, /v1/describejobqueues, and for service jobs
(SageMaker Training through Batch) /v1/listservicejobs, /v1/describeservicejob,
/v1/terminateservicejob, /v1/terminateservicejobs.

Requests must carry a valid SigV4 `Authorization` header for a known access key. Errors are
JSON `{"__type", "message"}` with the `x-amzn-ErrorType` header, as botocore's rest-json parser
reads them. Behaviour copied from the real service, with sources:
- TerminateJob/CancelJob on an unknown job id answer 200 `{}`
  (https://github.com/aws/aws-cli/issues/2551); DescribeJobs leaves unknown ids out.
- CancelJob succeeds on a STARTING/RUNNING job and does nothing to it
  (https://docs.aws.amazon.com/batch/latest/APIReference/API_CancelJob.html).
- TerminateJobs treats unknown ids as successful and reports per-job errors in `errors`
  (service-2.json, TerminateJobs documentation).
- ListJobs without `jobStatus` lists RUNNING jobs only; pages hold at most 1000 summaries.
- Queues have a `jobQueueType` (JobQueueDetail); jobs on a SAGEMAKER_TRAINING queue are service
  jobs, listed by ListServiceJobs (at most 100 per page, RUNNING without `jobStatus`) and read
  one at a time by DescribeServiceJob. TerminateServiceJobs treats unknown ids as successful
  (its documentation: "Service jobs that can't be found are treated as successfully
  processed").
Assumptions where the documentation is silent, chosen so that a client's mistake shows:
ListJobs on a SAGEMAKER_TRAINING queue and ListServiceJobs on a container queue answer a
ClientException; DescribeServiceJob of an unknown id answers a ClientException "... not
found"; the container calls do not know service job ids, nor the service calls container ones.
`list_requests` records (operation, queue) of every list call, for tests of which call a
client made for which queue."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reaper.emulators.base import (
    EmulatorServer,
    JobSpec,
    Knobs,
    Request,
    Response,
    Route,
    TableJob,
    apply_extra,
)
from reaper.emulators.sigv4 import AuthError, check_sigv4
from reaper.jobs import Phase, phase_of

if TYPE_CHECKING:
    from reaper.emulators.base import JobTable

ACCESS_KEY_ID = "AKIAEMULATOR00000000"
SECRET_ACCESS_KEY = "emulator-secret-access-key-not-a-real-one"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"

MAX_PAGE = 1000  # ListJobs returns at most 1000 summaries per page
MAX_SERVICE_PAGE = 100  # ListServiceJobs: maxResults "between 1 and 100"
MAX_DESCRIBE_IDS = 100
MAX_BULK_IDS = 50
MAX_REASON = 1024
MUTATING_OPERATIONS = (
    "TerminateJob", "CancelJob", "TerminateJobs", "TerminateServiceJob", "TerminateServiceJobs",
)  # fmt: skip
CONTAINER_QUEUE = "ECS"
SERVICE_QUEUE = "SAGEMAKER_TRAINING"

_ROUTES = {
    "/v1/listjobs": "ListJobs",
    "/v1/describejobs": "DescribeJobs",
    "/v1/terminatejob": "TerminateJob",
    "/v1/terminatejobs": "TerminateJobs",
    "/v1/canceljob": "CancelJob",
    "/v1/describejobqueues": "DescribeJobQueues",
    "/v1/listservicejobs": "ListServiceJobs",
    "/v1/describeservicejob": "DescribeServiceJob",
    "/v1/terminateservicejob": "TerminateServiceJob",
    "/v1/terminateservicejobs": "TerminateServiceJobs",
}
_SUMMARY_FIELDS = (
    "jobArn",
    "jobId",
    "jobName",
    "createdAt",
    "status",
    "statusReason",
    "startedAt",
    "stoppedAt",
    "jobDefinition",
    "isCancelled",
    "isTerminated",
    "container",
    "arrayProperties",
    "nodeProperties",
    "shareIdentifier",
)
# ServiceJobSummary members (botocore's batch model) the emulator's records hold.
_SERVICE_SUMMARY_FIELDS = (
    "latestAttempt",
    "createdAt",
    "jobArn",
    "jobId",
    "jobName",
    "scheduledAt",
    "serviceJobType",
    "shareIdentifier",
    "status",
    "statusReason",
    "startedAt",
    "stoppedAt",
    "isTerminated",
)


class ApiError(Exception):
    """An error the API answers with: HTTP status, `__type` code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> Response:
    """An AWS REST-JSON error as botocore parses it (code from the header and `__type`)."""
    return Response(status, {"__type": code, "message": message}, {"x-amzn-ErrorType": code})


@dataclass
class _Job(TableJob):
    """`record` holds the JobDetail fields, as DescribeJobs returns them; `due` is when a
    terminated STARTING/RUNNING job turns FAILED."""

    queue: str
    parent: str | None = None  # the array (or multi-node) job this child (node) belongs to
    service: bool = False  # a service job (on a SAGEMAKER_TRAINING queue)

    def reason(self) -> str | None:
        return self.record.get("statusReason")


@dataclass
class _Page:
    offset: int
    number: int  # 1-based

    def token(self) -> str:
        raw = json.dumps({"o": self.offset, "p": self.number}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def parse(cls, token: str | None) -> _Page:
        if not token:
            return cls(0, 1)
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return cls(int(data["o"]), int(data["p"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise ApiError(400, "ClientException", "Invalid nextToken") from None


class AwsBatchEmulator(EmulatorServer):
    """AWS Batch job API on 127.0.0.1. `credentials` maps access key id → secret key.
    `bulk_terminate = False` makes /v1/terminatejobs unknown (a service without TerminateJobs);
    `job_errors` maps a job id → (code, message) that TerminateJobs reports for it;
    `raw_terminate_errors` are added to every TerminateJobs `errors` list as they are.
    `add_queue(name, SERVICE_QUEUE)` declares a queue of service jobs (before its jobs)."""

    mutating_operations = MUTATING_OPERATIONS
    cancel_operations = MUTATING_OPERATIONS
    table: JobTable[_Job]

    def __init__(
        self,
        knobs: Knobs | None = None,
        clock: Callable[[], float] = time.time,
        *,
        credentials: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(knobs or Knobs(page_size=MAX_PAGE), clock)
        self.credentials = dict(credentials or {ACCESS_KEY_ID: SECRET_ACCESS_KEY})
        self.region = REGION
        self.account_id = ACCOUNT_ID
        self.bulk_terminate = True
        self.job_errors: dict[str, tuple[str, str]] = {}
        # Entries appended verbatim to every TerminateJobs `errors` list (a careless service:
        # strings where {job, code, message} objects belong).
        self.raw_terminate_errors: list[Any] = []
        self._queues: dict[str, str] = {}  # queue name → jobQueueType, in insertion order
        self.list_requests: list[tuple[str, str]] = []  # (ListJobs | ListServiceJobs, queue)

    # -- protocol hooks -------------------------------------------------------------------------
    def route(self, request: Request) -> Route:
        operation = _ROUTES.get(request.path) if request.method == "POST" else None
        if operation == "TerminateJobs" and not self.bulk_terminate:
            operation = None
        if operation is None:
            return "Unknown", lambda: error_response(
                404, "UnknownOperationException", f"Unknown operation {request.path}"
            )
        try:
            check_sigv4(request, self.credentials, self.region, "batch")
        except AuthError as exc:
            failure = error_response(403, exc.code, exc.message)
            return operation, lambda: failure
        handler = getattr(self, f"_op_{operation}")
        return operation, lambda: self._answer(handler, request)

    def throttle_response(self) -> Response:
        return error_response(429, "TooManyRequestsException", "Too Many Requests")

    def error_response(self) -> Response:
        return error_response(500, "ServerException", "Internal server error")

    def is_list_operation(self, operation: str) -> bool:
        return operation in ("ListJobs", "ListServiceJobs")

    def list_page_number(self, request: Request) -> int:
        try:
            return _Page.parse(request.json().get("nextToken")).number
        except (ApiError, ValueError, AttributeError):
            return 1

    def _answer(self, handler: Callable[[dict[str, Any]], Any], request: Request) -> Response:
        try:
            body = request.json()
            if not isinstance(body, dict):
                raise ApiError(400, "SerializationException", "request body is not an object")
            return Response(200, handler(body))
        except json.JSONDecodeError:
            return error_response(400, "SerializationException", "request body is not JSON")
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message)

    # -- operations -----------------------------------------------------------------------------
    def _op_ListJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("jobStatus") or "RUNNING"
        limit = min(int(body.get("maxResults") or MAX_PAGE), MAX_PAGE, self.knobs.page_size)
        page = _Page.parse(body.get("nextToken"))
        parent = body.get("arrayJobId") or body.get("multiNodeJobId")
        if isinstance(parent, str) and parent:
            matching = self._children(parent, status)
        else:
            queue = self._listed_queue(body, "ListJobs", service=False)
            matching = self._listing(queue, status, service=False)
        chunk, more = self.page_at(matching, page.offset, limit)
        result: dict[str, Any] = {"jobSummaryList": [_summary(job.record) for job in chunk]}
        if more:
            result["nextToken"] = _Page(page.offset + limit, page.number + 1).token()
        return result

    def _op_ListServiceJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        status = body.get("jobStatus") or "RUNNING"
        limit = min(int(body.get("maxResults") or MAX_SERVICE_PAGE), MAX_SERVICE_PAGE,
                    self.knobs.page_size)  # fmt: skip
        page = _Page.parse(body.get("nextToken"))
        queue = self._listed_queue(body, "ListServiceJobs", service=True)
        chunk, more = self.page_at(self._listing(queue, status, service=True), page.offset, limit)
        result: dict[str, Any] = {"jobSummaryList": [_service_summary(job.record) for job in chunk]}
        if more:
            result["nextToken"] = _Page(page.offset + limit, page.number + 1).token()
        return result

    def _listed_queue(self, body: Mapping[str, Any], operation: str, *, service: bool) -> str:
        """The queue a list call names, recorded in `list_requests`; a queue of the other kind
        is a ClientException."""
        queue = self._queue_name(_require_str(body, "jobQueue"))
        self.list_requests.append((operation, queue))
        if queue in self._queues and (self._queues[queue] == SERVICE_QUEUE) != service:
            raise ApiError(400, "ClientException",
                           f"{operation} does not list the jobs of {self._queues[queue]} queue "
                           f"{queue}")  # fmt: skip
        return queue

    def _op_DescribeJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        ids = _require_ids(body, MAX_DESCRIBE_IDS)
        found = [self.table.settle(self.table[i]) for i in ids if self._is(i, service=False)]
        return {"jobs": [self._detail(job) for job in found]}

    def _op_DescribeServiceJob(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id = _require_str(body, "jobId")
        if not self._is(job_id, service=True):
            raise ApiError(400, "ClientException", f"Service job {job_id} not found")
        return dict(self.table.settle(self.table[job_id]).record)

    def _op_TerminateServiceJob(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id, reason = _require_str(body, "jobId"), _require_reason(body)
        if self._is(job_id, service=True):
            self._terminate(self.table[job_id], reason)
        return {}

    def _op_TerminateServiceJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._terminate_many(body, service=True)

    def _is(self, job_id: str, *, service: bool) -> bool:
        """A job of that kind: the container calls do not know service jobs, and back."""
        job = self.table.get(job_id)
        return job is not None and job.service == service

    def _detail(self, job: _Job) -> dict[str, Any]:
        """A JobDetail; an array parent's `arrayProperties` gains its children's
        `statusSummary` (API_ArrayPropertiesDetail: "A summary of the number of array job
        children in each available job status")."""
        record = dict(job.record)
        array = record.get("arrayProperties")
        if isinstance(array, dict) and "size" in array:
            summary = dict.fromkeys(("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING",
                                     "SUCCEEDED", "FAILED"), 0)  # fmt: skip
            for child in self._children(job.id, None):
                status = str(child.record["status"])
                summary[status] = summary.get(status, 0) + 1
            record["arrayProperties"] = {**array, "statusSummary": summary}
        return record

    def _op_TerminateJob(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id, reason = _require_str(body, "jobId"), _require_reason(body)
        if self._is(job_id, service=False):
            self._terminate(self.table[job_id], reason)
        return {}

    def _op_CancelJob(self, body: dict[str, Any]) -> dict[str, Any]:
        job_id, reason = _require_str(body, "jobId"), _require_reason(body)
        job = self.table.get(job_id) if self._is(job_id, service=False) else None
        if job is not None and phase_of("aws_batch", self._status(job)) == Phase.PENDING:
            self._terminate(job, reason)  # STARTING/RUNNING: success, and nothing happens
        return {}

    def _op_TerminateJobs(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._terminate_many(body, service=False)

    def _terminate_many(self, body: dict[str, Any], *, service: bool) -> dict[str, Any]:
        """TerminateJobs / TerminateServiceJobs: per-job errors from `job_errors`, unknown ids
        successful."""
        ids, reason = _require_ids(body, MAX_BULK_IDS), _require_reason(body)
        successful, errors = [], []
        for job_id in ids:
            if job_id in self.job_errors:
                code, message = self.job_errors[job_id]
                errors.append({"job": job_id, "code": code, "message": message})
                continue
            if self._is(job_id, service=service):
                self._terminate(self.table[job_id], reason)
            successful.append(job_id)  # unknown ids count as processed, as documented
        return {"successful": successful, "errors": [*errors, *self.raw_terminate_errors]}

    def _op_DescribeJobQueues(self, body: dict[str, Any]) -> dict[str, Any]:
        wanted = body.get("jobQueues") or list(self._queues)
        names = [self._queue_name(q) for q in wanted if self._queue_name(q) in self._queues]
        limit = min(int(body.get("maxResults") or 100), 100, self.knobs.page_size)
        page = _Page.parse(body.get("nextToken"))
        result: dict[str, Any] = {
            "jobQueues": [self._queue_detail(n) for n in names[page.offset : page.offset + limit]]
        }
        if page.offset + limit < len(names):
            result["nextToken"] = _Page(page.offset + limit, page.number + 1).token()
        return result

    def _listing(self, queue: str, status: str, *, service: bool) -> list[_Job]:
        """The jobs (service jobs) of one queue and status, in table order."""

        def select() -> list[_Job]:
            # Array children and multi-node nodes are listed through their parent's id only.
            return [
                job
                for job in self.table.values()
                if job.queue == queue and job.record["status"] == status and job.parent is None
                and job.service == service
            ]  # fmt: skip

        key = ("ListServiceJobs" if service else "ListJobs", queue, status)
        return self.table.listing(key, select)  # type: ignore[no-any-return]

    def _children(self, parent: str, status: str | None) -> list[_Job]:
        """The children (nodes) of `parent` in `status` (None: any), in table order."""

        def select() -> list[_Job]:
            return [
                job
                for job in self.table.values()
                if job.parent == parent and status in (None, job.record["status"])
            ]

        return self.table.listing(("children", parent, status), select)  # type: ignore[no-any-return]

    # -- state transitions ----------------------------------------------------------------------
    def _terminate(self, job: _Job, reason: str) -> None:
        """Pending jobs fail at once; STARTING/RUNNING jobs fail after `cancel_delay_s`."""
        phase = phase_of("aws_batch", self._status(job))
        if phase == Phase.TERMINAL or job.due is not None:
            return
        now = self.clock()
        job.record["statusReason"] = reason
        if phase == Phase.PENDING:
            job.record.update(status="FAILED", isCancelled=True, stoppedAt=_ms(now))
            self.table.invalidate()
            return
        job.record["isTerminated"] = True
        self.table.schedule(job, now + self.knobs.cancel_delay_s)
        self.table.settle(job)

    def complete_cancel(self, job: _Job, due: float) -> None:
        job.record.update(status="FAILED", stoppedAt=_ms(due))
        self.table.invalidate()

    def _status(self, job: _Job) -> str:
        return str(self.table.settle(job).record["status"])

    def _queue_name(self, queue: str) -> str:
        return queue.rsplit("job-queue/", 1)[-1]

    def _queue_arn(self, name: str) -> str:
        return f"arn:aws:batch:{self.region}:{self.account_id}:job-queue/{name}"

    def _queue_detail(self, name: str) -> dict[str, Any]:
        queue_type = self._queues[name]
        detail: dict[str, Any] = {
            "jobQueueName": name,
            "jobQueueArn": self._queue_arn(name),
            "state": "ENABLED",
            "status": "VALID",
            "priority": 1,
            "computeEnvironmentOrder": [],  # required, also of a service queue
            "jobQueueType": queue_type,
        }
        if queue_type == SERVICE_QUEUE:
            detail["serviceEnvironmentOrder"] = [
                {"order": 1, "serviceEnvironment": f"arn:aws:batch:{self.region}:"
                 f"{self.account_id}:service-environment/{name}"}
            ]  # fmt: skip
        return detail

    # -- job table ------------------------------------------------------------------------------
    def add_queue(self, name: str, queue_type: str = CONTAINER_QUEUE) -> None:
        """Declare a queue of `queue_type` (a JobQueueType; SERVICE_QUEUE holds service jobs).
        Queues of seeded jobs are declared automatically, as container queues."""
        with self.lock:
            self._queues[name] = queue_type

    def add_job(self, spec: JobSpec) -> str:
        """A container job, or a service job when its queue was declared SERVICE_QUEUE."""
        queue = spec.queue or "default"
        with self.lock:
            service = self._queues.get(queue) == SERVICE_QUEUE
        if service:
            return self._add_service_job(spec, queue)
        job_id = spec.id or str(uuid.uuid4())
        record: dict[str, Any] = {
            "jobArn": f"arn:aws:batch:{self.region}:{self.account_id}:job/{job_id}",
            "jobId": job_id,
            "jobName": spec.name,
            "jobQueue": self._queue_arn(queue),
            "status": spec.status.upper(),
            "createdAt": _ms(spec.created_at),
            "jobDefinition": f"arn:aws:batch:{self.region}:{self.account_id}:job-definition/d:1",
            "tags": dict(spec.tags),
            "attempts": [],
            "dependsOn": [],
            "parameters": {},
        }
        if spec.started_at is not None:
            record["startedAt"] = _ms(spec.started_at)
        apply_extra(record, spec.extra)
        with self.lock:
            self._queues.setdefault(queue, CONTAINER_QUEUE)
            self.table.add(_Job(job_id, record, queue))
        return job_id

    def _add_service_job(self, spec: JobSpec, queue: str) -> str:
        """A DescribeServiceJob record. botocore's model calls `startedAt` required there, as in
        JobDetail, where the service leaves it out until the job starts
        (https://github.com/brendanhay/amazonka/pull/561): so does the emulator."""
        job_id = spec.id or str(uuid.uuid4())
        arn = f"arn:aws:batch:{self.region}:{self.account_id}"
        record: dict[str, Any] = {
            "jobArn": f"{arn}:service-job/{job_id}",
            "jobId": job_id,
            "jobName": spec.name,
            "jobQueue": self._queue_arn(queue),
            "serviceJobType": "SAGEMAKER_TRAINING",
            "status": spec.status.upper(),
            "createdAt": _ms(spec.created_at),
            "tags": dict(spec.tags),
            "attempts": [],
            "retryStrategy": {"attempts": 1},
            "serviceRequestPayload": json.dumps({"TrainingJobName": spec.name}),
        }
        if spec.started_at is not None:
            record["startedAt"] = _ms(spec.started_at)
        apply_extra(record, spec.extra)
        with self.lock:
            self.table.add(_Job(job_id, record, queue, service=True))
        return job_id

    def add_array(self, parent: JobSpec, children: Iterable[tuple[str, float | None]]) -> str:
        """An array job: `parent` (its status as AWS shows it: PENDING while children run) and
        one child per (status, started_at) pair, ids `parent:index`, in the parent's queue.
        Returns the parent's id."""
        kids = list(children)
        parent_id = parent.id or str(uuid.uuid4())
        extra = {"arrayProperties": {"size": len(kids)}, **parent.extra}
        self.add_job(dataclasses.replace(parent, id=parent_id, extra=extra))
        for index, (status, started) in enumerate(kids):
            spec = dataclasses.replace(
                parent, id=f"{parent_id}:{index}", status=status, started_at=started,
                extra={"arrayProperties": {"index": index}},
            )  # fmt: skip
            child_id = self.add_job(spec)
            with self.lock:
                self.table[child_id].parent = parent_id
                self.table.invalidate()
        return parent_id

    def seed_jobs(
        self,
        queue: str,
        status: str,
        count: int,
        *,
        age_s: float = 3600.0,
        tags: Mapping[str, str] | None = None,
        name_prefix: str = "job",
    ) -> list[str]:
        """Add `count` jobs in one queue and status, submitted `age_s` ago (running ones
        started a minute later). Returns their ids in listing order."""
        now = self.clock()
        started = now - age_s + 60 if phase_of("aws_batch", status) == Phase.RUNNING else None
        specs = (
            JobSpec(f"{name_prefix}-{i}", status, now - age_s, started, queue, dict(tags or {}))
            for i in range(count)
        )
        return self.add_jobs(specs)

    def add_jobs(self, specs: Iterable[JobSpec]) -> list[str]:
        return [self.add_job(spec) for spec in specs]

    def set_status(self, job_id: str, status: str) -> None:
        """Move a job to `status`, stamping startedAt/stoppedAt the way the service would."""
        with self.lock:
            job = self.table[job_id]
            self.table.unschedule(job)
            self.table.invalidate()
            job.record["status"] = status.upper()
            phase = phase_of("aws_batch", status)
            if phase in (Phase.RUNNING, Phase.TERMINAL) and "startedAt" not in job.record:
                job.record["startedAt"] = _ms(self.clock())
            if phase == Phase.TERMINAL:
                job.record["stoppedAt"] = _ms(self.clock())

    def record_of(self, job_id: str) -> dict[str, Any] | None:
        """A copy of the JobDetail record as DescribeJobs would return it now."""
        with self.lock:
            job = self.table.current(job_id)
            return None if job is None else dict(job.record)


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def _summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in _SUMMARY_FIELDS if k in record}


def _service_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in _SERVICE_SUMMARY_FIELDS if k in record}


def _require_str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise ApiError(400, "ClientException", f"'{key}' is a required field")
    return value


def _require_reason(body: Mapping[str, Any]) -> str:
    reason = _require_str(body, "reason")
    if len(reason) > MAX_REASON:
        raise ApiError(400, "ClientException", f"reason is longer than {MAX_REASON} characters")
    return reason


def _require_ids(body: Mapping[str, Any], limit: int) -> list[str]:
    ids = body.get("jobs")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise ApiError(400, "ClientException", "'jobs' must be a list of job ids")
    if len(ids) > limit:
        raise ApiError(400, "ClientException", f"at most {limit} job ids per request")
    return ids
