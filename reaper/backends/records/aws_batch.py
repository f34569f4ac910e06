"""AWS Batch records → Job: a ListJobs JobSummary or a DescribeJobs JobDetail
(https://docs.aws.amazon.com/batch/latest/APIReference/API_JobDetail.html). SDK-free, shared by
reaper.backends.aws_batch and `reaper test` (reaper.backends.records)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from reaper.jobs import Job, phase_of

TYPE = "aws_batch"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("jobId", "jobName", "status", "createdAt", "startedAt", "tags")
OWNER_FIELDS: tuple[str, ...] = ()


def job_from_record(backend: str, queue: str, record: Mapping[str, Any], *, detailed: bool) -> Job:
    """A Job from a ListJobs JobSummary (`detailed=False`) or a DescribeJobs JobDetail.
    Raises ValueError on a record without id, status or creation time: a job whose age is
    unknown must never look old enough to match a policy."""
    if not isinstance(record, Mapping):
        raise ValueError("a job record is not an object")
    job_id, status = record.get("jobId"), record.get("status")
    if not isinstance(job_id, str) or not isinstance(status, str):
        raise ValueError("a job record has no jobId or status")
    created_at = ms_to_utc(record.get("createdAt"))
    if created_at is None:
        raise ValueError(f"job {job_id} has no createdAt")
    tags = record.get("tags") or {}
    if not isinstance(tags, Mapping):
        raise ValueError(f"job {job_id} has tags that are not an object")
    return Job(
        backend=backend,
        type=TYPE,
        id=job_id,
        name=str(record.get("jobName", "")),
        queue=queue,
        status=status,
        phase=phase_of(TYPE, status),
        created_at=created_at,
        started_at=ms_to_utc(record.get("startedAt")),
        tags={str(k): str(v) for k, v in tags.items()} if detailed else {},
        raw=record,
        detailed=detailed,
    )


def ms_to_utc(value: Any) -> datetime | None:
    """AWS Batch times are milliseconds since the epoch; None when absent."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"a time is not a number: {value!r}")
    try:
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    except (OverflowError, OSError):
        raise ValueError(f"a time is out of range: {value!r}") from None
