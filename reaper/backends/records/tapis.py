"""Tapis Jobs v3 job records → Job (tapipy/resources/openapi_v3-jobs.yml, `Job`), read as plain
dicts. SDK-free, shared by reaper.backends.tapis and `reaper test` (reaper.backends.records)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from reaper.backends.records.times import iso_time
from reaper.jobs import Job, RecordError, phase_of

TYPE = "tapis"
# The fields the parser reads, and those naming a person: what `reaper test --record` keeps of a
# record (the rest may hold secrets or personal data). Keep FIELDS in step with the parser.
FIELDS = ("uuid", "name", "status", "created", "remoteStarted", "execSystemLogicalQueue", "tags")
OWNER_FIELDS: tuple[str, ...] = ("owner",)


def job_from_record(backend: str, record: Mapping[str, Any]) -> Job:
    """The normalised Job of one Tapis job record (a plain dict). Raises RecordError (a
    ValueError), naming the job and the field, when a required field is missing or
    unreadable."""
    if type(record) is not dict and not isinstance(record, Mapping):  # dict: no ABC check
        raise RecordError("record", record, "not an object")
    uuid, status = record.get("uuid"), record.get("status")
    if not isinstance(uuid, str) or not uuid:
        raise RecordError("uuid", uuid, "uuid and status must be strings")
    if not isinstance(status, str):
        raise RecordError("status", status, f"job {uuid}: uuid and status must be strings")
    created = parse_time(record.get("created"), uuid, "created")
    if created is None:
        raise RecordError("created", None, f"job {uuid}: no `created` time")
    owner = record.get("owner")
    return Job(
        backend=backend,
        type=TYPE,
        id=uuid,
        name=str(record.get("name") or ""),
        queue=str(record.get("execSystemLogicalQueue") or ""),
        status=status,
        phase=phase_of(TYPE, status),
        created_at=created,
        started_at=parse_time(record.get("remoteStarted"), uuid, "remoteStarted"),
        tags=parse_tags(record.get("tags"), uuid),
        owner=owner if isinstance(owner, str) and owner else None,
        raw=dict(record),
        detailed=True,
    )


def parse_tags(tags: Any, uuid: str = "?") -> dict[str, str]:
    """Tapis tags are a list of strings: `k=v` → {k: v}, `k` → {k: ""}."""
    if tags is None:
        return {}
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RecordError("tags", tags, f"job {uuid}: tags must be a list of strings")
    parsed: dict[str, str] = {}
    for tag in tags:
        key, _, value = tag.partition("=")
        parsed[key] = value
    return parsed


def parse_time(value: Any, uuid: str = "?", field: str = "time") -> datetime | None:
    """An ISO 8601 time as aware UTC (naive means UTC); None for a missing value. Raises
    RecordError naming the field."""
    try:
        return iso_time(value, field)
    except RecordError as exc:
        shown = repr(value)[:40]
        raise RecordError(
            field, value, f"job {uuid}: {field} {shown} is {_article(exc.problem)}"
        ) from None


def _article(problem: str) -> str:
    return problem if problem.startswith(("not", "out")) else f"a {problem}"
