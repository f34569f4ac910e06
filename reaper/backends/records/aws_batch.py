"""AWS Batch records → Job: a ListJobs JobSummary or a DescribeJobs JobDetail
(https://docs.aws.amazon.com/batch/latest/APIReference/API_JobDetail.html) for container jobs,
a ListServiceJobs ServiceJobSummary or a DescribeServiceJob answer for service jobs
(API_ServiceJobSummary.html, API_DescribeServiceJob.html). SDK-free, shared by
reaper.backends.aws_batch and `reaper test` (reaper.backends.records)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reaper.backends.records.times import epoch_time
from reaper.jobs import ACTIVE_PHASES, Job, JobKind, RecordError, phase_of

TYPE = "aws_batch"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("jobId", "jobName", "status", "createdAt", "startedAt", "tags", "serviceJobType")
OWNER_FIELDS: tuple[str, ...] = ()
# Every service job record carries it ("Required: Yes" in ServiceJobSummary and
# DescribeServiceJob); no container job record has it.
SERVICE_TYPE_FIELD = "serviceJobType"

# The statuses of each kind in lifecycle order: botocore's batch model, enums JobStatus and
# ServiceJobStatus (tests/test_aws_service_shapes.py checks them against the installed model).
STATUSES: dict[JobKind, tuple[str, ...]] = {
    JobKind.CONTAINER: (
        "SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING", "SUCCEEDED", "FAILED",
    ),
    JobKind.SERVICE: (
        "SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "STARTING", "RUNNING", "SUCCEEDED",
        "FAILED",
    ),
}  # fmt: skip


def active_statuses_of(kind: JobKind) -> list[str]:
    """The statuses of `kind` that the listing asks for (pending and running ones), in order."""
    return [s for s in STATUSES[kind] if phase_of(TYPE, s) in ACTIVE_PHASES]


def kind_of_record(record: Mapping[str, Any]) -> JobKind:
    """SERVICE for a record that names its `serviceJobType`, else CONTAINER."""
    return JobKind.SERVICE if SERVICE_TYPE_FIELD in record else JobKind.CONTAINER


def job_from_record(
    backend: str,
    queue: str,
    record: Mapping[str, Any],
    *,
    detailed: bool,
    kind: JobKind | None = None,
) -> Job:
    """A Job from a ListJobs JobSummary (`detailed=False`) or a DescribeJobs JobDetail, or for
    `kind` SERVICE a ListServiceJobs ServiceJobSummary or a DescribeServiceJob answer (None:
    told by the record, `kind_of_record`). Raises RecordError (a ValueError) naming the field on
    a record without id, status or creation time, or with a field of the wrong type: a job
    whose age is unknown must never look old enough to match a policy."""
    if type(record) is not dict and not isinstance(record, Mapping):  # dict: no ABC check
        raise RecordError("record", record, "not an object")
    kind = kind or kind_of_record(record)
    job_id, status = record.get("jobId"), record.get("status")
    if not isinstance(job_id, str) or not job_id:
        raise RecordError("jobId", job_id, "missing or not a string")
    if not isinstance(status, str):
        raise RecordError("status", status, "missing or not a string")
    created_at = ms_to_utc(record.get("createdAt"), "createdAt")
    if created_at is None:
        raise RecordError("createdAt", None, f"job {job_id} has no createdAt")
    tags = record.get("tags") or {}
    if type(tags) is not dict and not isinstance(tags, Mapping):
        raise RecordError("tags", tags, f"job {job_id} has tags that are not an object")
    return Job(
        backend=backend,
        type=TYPE,
        id=job_id,
        name=str(record.get("jobName", "")),
        queue=queue,
        status=status,
        phase=phase_of(TYPE, status),
        created_at=created_at,
        started_at=_started_at(record, kind),
        tags={str(k): str(v) for k, v in tags.items()} if detailed else {},
        raw=record,
        detailed=detailed,
        kind=kind,
    )


def _started_at(record: Mapping[str, Any], kind: JobKind) -> datetime | None:
    """`startedAt`; for a service job, 0 is no start. botocore's model calls `startedAt` of
    DescribeServiceJob required, as of JobDetail, which the service leaves out until the job
    starts (https://github.com/brendanhay/amazonka/pull/561); should a service job carry a zero
    there instead, it must not read as a start in 1970, which would hide the job from
    `max_pending` (a start, however implausible, ends the pending time)."""
    value = record.get("startedAt")
    if kind is JobKind.SERVICE and value == 0 and not isinstance(value, bool):
        return None
    return ms_to_utc(value, "startedAt")


def ms_to_utc(value: Any, field: str = "time") -> datetime | None:
    """AWS Batch times are milliseconds since the epoch; None when absent. Raises RecordError
    for anything that is no such time. (Seconds given instead land in January 1970: readable,
    and then implausible, reaper.jobs time facts.)"""
    return epoch_time(value, field, per_second=1000)
