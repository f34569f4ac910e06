"""AWS Batch records → Job: a ListJobs JobSummary or a DescribeJobs JobDetail
(https://docs.aws.amazon.com/batch/latest/APIReference/API_JobDetail.html). SDK-free, shared by
reaper.backends.aws_batch and `reaper test` (reaper.backends.records)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reaper.backends.records.times import epoch_time
from reaper.jobs import Job, RecordError, phase_of

TYPE = "aws_batch"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("jobId", "jobName", "status", "createdAt", "startedAt", "tags")
OWNER_FIELDS: tuple[str, ...] = ()


def job_from_record(backend: str, queue: str, record: Mapping[str, Any], *, detailed: bool) -> Job:
    """A Job from a ListJobs JobSummary (`detailed=False`) or a DescribeJobs JobDetail.
    Raises RecordError (a ValueError) naming the field on a record without id, status or
    creation time, or with a field of the wrong type: a job whose age is unknown must never
    look old enough to match a policy."""
    if type(record) is not dict and not isinstance(record, Mapping):  # dict: no ABC check
        raise RecordError("record", record, "not an object")
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
        started_at=ms_to_utc(record.get("startedAt"), "startedAt"),
        tags={str(k): str(v) for k, v in tags.items()} if detailed else {},
        raw=record,
        detailed=detailed,
    )


def ms_to_utc(value: Any, field: str = "time") -> datetime | None:
    """AWS Batch times are milliseconds since the epoch; None when absent. Raises RecordError
    for anything that is no such time. (Seconds given instead land in January 1970: readable,
    and then implausible, reaper.jobs time facts.)"""
    return epoch_time(value, field, per_second=1000)
