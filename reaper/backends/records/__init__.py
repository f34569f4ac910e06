"""Each backend's raw record → `Job` parser, free of any SDK or HTTP client, so that the live
backends (reaper.backends.aws_batch, .tapis, .sutro) and `reaper test`, which replays recorded
raw records without network or credentials, run the very same code (docs/testing.md).

One parser per backend type: a backend module imports its parser from here and never keeps a
copy. Importing this package imports no boto3, botocore, tapipy or requests
(tests/test_importtime.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reaper.backends.records import aws_batch, sutro, tapis
from reaper.jobs import BadRecord, Job, JobKind

# The field that holds a record's job id, per backend type.
ID_FIELDS = {aws_batch.TYPE: "jobId", tapis.TYPE: "uuid", sutro.TYPE: "job_id"}

_MODULES = {module.TYPE: module for module in (aws_batch, tapis, sutro)}


def record_fields(backend_type: str) -> tuple[str, ...]:
    """The top-level fields of a record that the type's parser reads."""
    return tuple(_MODULES[backend_type].FIELDS)


def owner_fields(backend_type: str) -> tuple[str, ...]:
    """The top-level fields of a record that name a person (Tapis `owner`)."""
    return tuple(_MODULES[backend_type].OWNER_FIELDS)


def parse_record(
    backend_type: str,
    backend: str,
    record: Mapping[str, Any],
    *,
    queue: str = "",
    detailed: bool = True,
    kind: JobKind | None = None,
) -> Job:
    """The Job a live backend of `backend_type` makes of `record`: for AWS Batch a JobSummary
    (`detailed=False`, as ListJobs answers) or a JobDetail (as DescribeJobs answers), or their
    service-job twins (ListServiceJobs, DescribeServiceJob) for `kind` SERVICE (None: told by
    the record), listed under `queue`; for Tapis a job record of the search; for Sutro a
    list-jobs record. Raises ValueError for a record the backend would refuse, KeyError for an
    unknown type."""
    if backend_type == aws_batch.TYPE:
        return aws_batch.job_from_record(backend, queue, record, detailed=detailed, kind=kind)
    if backend_type == tapis.TYPE:
        return tapis.job_from_record(backend, record)
    if backend_type == sutro.TYPE:
        return sutro.parse_job(backend, record)
    raise KeyError(backend_type)


def record_id(backend_type: str, record: object) -> str | None:
    """The job id of a raw record, if it has a readable one."""
    value = record.get(ID_FIELDS[backend_type]) if isinstance(record, Mapping) else None
    return value if isinstance(value, str) and value else None


def read_record(
    backend_type: str,
    backend: str,
    record: Any,
    *,
    queue: str = "",
    detailed: bool = True,
    kind: JobKind | None = None,
) -> Job | BadRecord:
    """`parse_record` that never raises past the record: a record the parser refuses (a
    RecordError names the field) or trips on is a BadRecord, one skipped job (docs/backends.md,
    "Bad records"). Raises KeyError for an unknown type only."""
    ID_FIELDS[backend_type]  # an unknown type is a programming error, not a bad record
    try:
        return parse_record(
            backend_type, backend, record, queue=queue, detailed=detailed, kind=kind
        )
    except Exception as exc:  # whatever a parser lets through stops at the record
        return BadRecord.from_error(backend, record_id(backend_type, record), exc)
