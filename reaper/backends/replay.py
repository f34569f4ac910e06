"""A backend that lists recorded raw records instead of calling a service, for `reaper test`
(docs/testing.md): each record goes through its type's parser (reaper.backends.records) the way
the live backend's listing does, so a test sees the Job a sweep would see. No network, no SDK.

AWS Batch lists undetailed jobs (ListJobs has no tags) and details them with DescribeJobs: here
the listing parses each record as a summary and `enrich` parses it again as a JobDetail, so the
sweep's enrich-before-evaluating path runs as it does live. A record the parser refuses is left
out of the listing and kept in `rejected` with the parser's message."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reaper.backends.base import CancelOutcome, CancelResult
from reaper.backends.records import aws_batch, parse_record, record_id
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record as the API returned it; `queue` is the AWS queue it was listed under."""

    record: Mapping[str, Any]
    queue: str = ""


class ReplayBackend:
    """Lists `records` as one listing of backend `name` of type `type_name`. Never cancels."""

    def __init__(self, name: str, type_name: str, records: Sequence[RawRecord]) -> None:
        self.name = name
        self.type = type_name
        self._records = list(records)
        self._summary = type_name == aws_batch.TYPE  # the listing is not detailed
        self.listed: list[Job | None] = []  # per record: the listed Job, None when refused
        self.rejected: dict[int, str] = {}  # record index → the parser's message
        self._detailed: dict[str, Job] = {}
        for index, raw in enumerate(self._records):
            try:
                detailed = self._parse(raw, detailed=True)
                listed = self._parse(raw, detailed=False) if self._summary else detailed
            except Exception as exc:  # one bad record is one skipped job, never an abort
                self.listed.append(None)
                self.rejected[index] = str(exc)
                continue
            self.listed.append(listed)
            self._detailed[detailed.id] = detailed

    def _parse(self, raw: RawRecord, *, detailed: bool) -> Job:
        return parse_record(self.type, self.name, raw.record, queue=raw.queue, detailed=detailed)

    def list_active(self) -> Iterator[list[Job | BadRecord]]:
        """One page: every record the parser accepted (the scan drops terminal jobs), and a
        BadRecord for each it refused, as the live backends list them (counted as active)."""
        page: list[Job | BadRecord] = []
        for index, job in enumerate(self.listed):
            if job is not None:
                page.append(job)
            else:
                job_id = record_id(self.type, self._records[index].record)
                page.append(BadRecord.of(self.name, job_id, "record", None, self.rejected[index]))
        yield page

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """Detailed copies: AWS records parsed again as DescribeJobs would give them."""
        return [self._detailed[job.id] for job in jobs if job.id in self._detailed]

    def refresh(self, job: Job) -> Job | None:
        return self._detailed.get(job.id)

    def cancel(self, job: Job, reason: str) -> CancelResult:
        """A replayed listing is never acted on."""
        return CancelResult(CancelOutcome.FAILED, str(BackendError(self.name, "replay only")))

    def close(self) -> None:
        """Nothing to release."""
