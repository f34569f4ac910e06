"""Sutro job records → Job (docs.sutro.sh, list-jobs and fetch-job; the fields are listed in
reaper.backends.sutro). SDK-free, shared by reaper.backends.sutro and `reaper test`
(reaper.backends.records)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reaper.backends.records.times import epoch_time, iso_time
from reaper.jobs import Job, RecordError, phase_of

TYPE = "sutro"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("job_id", "name", "status", "datetime_created", "created_at", "datetime_started")
OWNER_FIELDS: tuple[str, ...] = ()


def parse_job(backend: str, record: Any) -> Job:
    """A Sutro job record as a Job; the status is upper-cased (older deployments answer in lower
    case) and the record kept as `raw`. Raises RecordError (a ValueError) naming the field when
    a needed field is missing or unreadable."""
    if not isinstance(record, dict):
        raise RecordError("record", record, "job record is not an object")
    job_id, status = record.get("job_id"), record.get("status")
    if not isinstance(job_id, str) or not job_id:
        raise RecordError("job_id", job_id, "no job_id")
    if not isinstance(status, str):
        raise RecordError("status", status, "no status")
    field = "datetime_created" if "datetime_created" in record else "created_at"
    created = parse_time(record.get(field), field)
    if created is None:
        raise RecordError("datetime_created", None, "no datetime_created")
    status = status.upper()
    return Job(
        backend=backend,
        type=TYPE,
        id=job_id,
        name=str(record.get("name") or ""),
        queue="",
        status=status,
        phase=phase_of(TYPE, status),
        created_at=created,
        started_at=parse_time(record.get("datetime_started"), "datetime_started"),
        raw=record,
        detailed=True,
    )


def parse_time(value: Any, field: str = "time") -> datetime | None:
    """An ISO 8601 string (or epoch seconds) as an aware UTC datetime; naive times are taken as
    UTC. None for null. Raises RecordError for anything else (NaN, infinities, numbers past
    year 9999 included)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_time(value, field)
    return iso_time(value, field)
