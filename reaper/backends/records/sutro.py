"""Sutro job records → Job (docs.sutro.sh, list-jobs and fetch-job; the fields are listed in
reaper.backends.sutro). SDK-free, shared by reaper.backends.sutro and `reaper test`
(reaper.backends.records)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from reaper.jobs import Job, phase_of

TYPE = "sutro"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("job_id", "name", "status", "datetime_created", "created_at", "datetime_started")
OWNER_FIELDS: tuple[str, ...] = ()


def parse_job(backend: str, record: Any) -> Job:
    """A Sutro job record as a Job; the status is upper-cased (older deployments answer in lower
    case) and the record kept as `raw`. Raises ValueError when a needed field is missing."""
    if not isinstance(record, dict):
        raise ValueError("job record is not an object")
    job_id, status = record.get("job_id"), record.get("status")
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("no job_id")
    if not isinstance(status, str):
        raise ValueError("no status")
    created = parse_time(record.get("datetime_created", record.get("created_at")))
    if created is None:
        raise ValueError("no datetime_created")
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
        started_at=parse_time(record.get("datetime_started")),
        raw=record,
        detailed=True,
    )


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string (or epoch seconds) as an aware UTC datetime; naive times are taken as
    UTC. None for null. Raises ValueError for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    parsed = datetime.fromisoformat(value)  # Python 3.11 reads a trailing "Z"
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
