"""A loopback emulator of Sutro's job API: list-jobs (with optional `limit`/`cursor` paging),
jobs/{id}, job-status/{id} and job-cancel/{id}, behind `Authorization: Key <key>`.

It follows Sutro's current API reference (docs.sutro.sh/reference/api) and the official SDK
(`sutro` on PyPI, `sutro/sdk.py`), which tests/test_sutro_reference.py runs against it: every
path under the deployment's `/v1` prefix (a path without it is a 404, as on a deployment);
job-cancel by GET; a cancel of an existing job that is already terminal answers `cancelled: true`
("the endpoint ... does not reject jobs that are already terminal") and an unknown job 404 with
`detail`. Knobs bring back what older deployments did (POST, `cancelled: false` refusals, paths
without `/v1`). job-status answers `{"job_status": {job_id: status}}`, the shape the SDK reads
(`["job_status"][job_id]`). See reaper/backends/sutro.py for what is documented and assumed."""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

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

if TYPE_CHECKING:
    from reaper.emulators.base import JobTable

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"})
STARTED = frozenset({"RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"})
MAX_LIMIT = 100  # documented maximum of list-jobs `limit`


@dataclass
class _Job(TableJob):
    """`record` is the wire record, status in canonical upper case; `due` is when a CANCELLING
    job becomes CANCELLED."""

    created: float  # epoch seconds, the sort key

    @property
    def key(self) -> tuple[float, str]:
        # Newest first (docs: "reverse chronological order"), ties broken by id. A cursor names
        # the last job served, so jobs added or removed mid-listing do not shift later pages.
        return -self.created, str(self.record["job_id"])


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def encode_cursor(key: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def decode_cursor(cursor: str) -> tuple[float, str] | None:
    """The sort key a cursor points after, or None for a cursor this emulator did not issue."""
    try:
        created, job_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return float(created), str(job_id)
    except (ValueError, TypeError, binascii.Error):
        return None


_EXTRA = "past-end-"  # cursors of the pages the listing knobs add past the end


def _extra_cursor(offset: int) -> str:
    return f"{_EXTRA}{offset}"


class SutroEmulator(EmulatorServer):
    """Sutro's job API in memory. Knobs beyond the base, changeable while it runs:
    `lowercase_status` answers statuses in lower case like older Sutro documents;
    `not_found_status` is the HTTP status of job-cancel for an unknown job (404 with `detail` as
    documented now, or 200 with `cancelled: false` as older documents said); `cancel_methods`
    the methods job-cancel takes (others answer 405); `refuse_terminal` answers a cancel of a
    terminal job `cancelled: false` like older deployments; `legacy_paths` also serves paths
    without `/v1`; `paging=False` ignores `limit` like a deployment without paging;
    `retry_after` adds a Retry-After header (seconds) to throttling answers."""

    mutating_operations = ("CancelJob",)
    cancel_operations = ("CancelJob",)
    table: JobTable[_Job]

    def __init__(
        self,
        knobs: Knobs | None = None,
        clock: Callable[[], float] = time.time,
        *,
        api_key: str | None = None,
        lowercase_status: bool = False,
        not_found_status: int = 404,
        cancel_methods: tuple[str, ...] = ("GET",),
        refuse_terminal: bool = False,
        legacy_paths: bool = False,
        paging: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(knobs, clock)
        self.api_key = api_key or "sk_emu_" + secrets.token_urlsafe(16)
        self.callers: dict[str, str] = {}  # further accepted API key → caller name
        self.lowercase_status = lowercase_status
        self.not_found_status = not_found_status
        self.cancel_methods = cancel_methods
        self.refuse_terminal = refuse_terminal
        self.legacy_paths = legacy_paths
        self.error_status = 500  # what the fault knobs (fail_first, error_rate) answer with
        self.paging = paging
        self.retry_after = retry_after
        self._ids = itertools.count(1)

    # -- routing --------------------------------------------------------------------------------
    def route(self, request: Request) -> Route:
        parts = self._api_path(request.path)
        method = request.method
        if parts == ["list-jobs"] and method == "GET":
            return "ListJobs", self._authorised(request, lambda: self._list(request))
        if len(parts) == 2 and parts[0] == "jobs" and method == "GET":
            return "FetchJob", self._authorised(request, lambda: self._fetch(parts[1]))
        if len(parts) == 2 and parts[0] == "job-status" and method == "GET":
            return "JobStatus", self._authorised(request, lambda: self._status(parts[1]))
        if len(parts) == 2 and parts[0] == "job-cancel":
            if method in self.cancel_methods:
                return "CancelJob", self._authorised(request, lambda: self._cancel(parts[1]))
            return "CancelJob", lambda: Response(405, {"detail": "Method Not Allowed"})
        return "NotFound", lambda: Response(404, {"detail": "Not Found"})

    def _api_path(self, path: str) -> list[str]:
        """The path's segments below `/v1`; none (a 404) for a path outside it, unless the
        emulator plays an older deployment (`legacy_paths`)."""
        parts = [unquote(p) for p in path.split("/") if p]
        if parts[:1] == ["v1"]:
            return parts[1:]
        return parts if self.legacy_paths else []

    def _authorised(
        self, request: Request, handler: Callable[[], Response]
    ) -> Callable[[], Response]:
        given = request.headers.get("authorization", "")
        keys = [self.api_key, *self.callers]
        if any(secrets.compare_digest(given.encode(), f"Key {key}".encode()) for key in keys):
            return handler
        return lambda: Response(401, {"detail": "Invalid or missing API key"})

    def add_caller(self, name: str, api_key: str) -> None:
        """Accept `api_key` too, and name its requests `name` in `call_log`: one key per
        reaper instance shows which instance made each call."""
        self.callers[api_key] = name

    def caller_of(self, request: Request) -> str:
        key = request.headers.get("authorization", "").removeprefix("Key ")
        return self.callers.get(key, "")

    def list_page_number(self, request: Request) -> int:
        cursor = request.arg("cursor")
        if not cursor or request.arg("limit") is None or not self.paging:
            return 1
        key = decode_cursor(cursor)
        if key is None:
            return 1
        with self.lock:
            served = sum(1 for job in self.table.values() if job.key <= key)
        return served // self._page_limit(request) + 1

    def throttle_response(self) -> Response:
        headers = {} if self.retry_after is None else {"Retry-After": f"{self.retry_after:g}"}
        return Response(429, {"detail": "Too Many Requests"}, headers)

    def error_response(self) -> Response:
        # `error_status` 524: Cloudflare's "a timeout occurred" in front of a deployment
        return Response(self.error_status, {"detail": "Internal Server Error"})

    def is_list_operation(self, operation: str) -> bool:
        return operation == "ListJobs"

    # -- operations -----------------------------------------------------------------------------
    def _list(self, request: Request) -> Response:
        jobs, keys = self._ordered()
        if request.arg("limit") is None or not self.paging:  # documented: no limit, every job
            records = [self._wire(job) for job in jobs]
            return Response(200, {"message": "Jobs retrieved successfully.", "jobs": records})
        start, limit = 0, self._page_limit(request)
        if cursor := request.arg("cursor"):
            start = self._cursor_offset(cursor, keys, limit)
            if start < 0:
                return Response(400, {"detail": "Invalid cursor"})
        page, more = self.page_at(jobs, start, limit)
        past_end = start + len(page) >= len(jobs)
        next_cursor = None
        if more:  # past the end (repeat_pages, endless_pages), cursors count pages
            next_cursor = _extra_cursor(start + limit) if past_end else encode_cursor(page[-1].key)
        body = {"jobs": [self._wire(job) for job in page], "next_cursor": next_cursor}
        return Response(200, body)

    def _cursor_offset(self, cursor: str, keys: list[tuple[float, str]], limit: int) -> int:
        """Where a cursor points in the listing; -1 for a cursor this emulator did not issue."""
        if cursor.startswith(_EXTRA):
            return int(cursor.removeprefix(_EXTRA)) if cursor[len(_EXTRA) :].isdigit() else -1
        key = decode_cursor(cursor)
        return -1 if key is None else bisect.bisect_right(keys, key)

    def _fetch(self, job_id: str) -> Response:
        job = self.table.get(job_id)
        if job is None:
            return Response(404, {"message": f"Job {job_id} not found"})
        return Response(200, {"job": self._wire(job)})

    def _status(self, job_id: str) -> Response:
        job = self.table.get(job_id)
        if job is None:
            return Response(404, {"message": f"Job {job_id} not found"})
        status = self._wire(job)["status"]
        return Response(
            200, {"message": f"Job is {status}", "job_status": {job_id: status}, "metadata": {}}
        )

    def _cancel(self, job_id: str) -> Response:
        job = self.table.get(job_id)
        if job is None:
            if self.not_found_status == 404:
                return Response(404, {"detail": f"Job {job_id} not found"})
            body = {"cancelled": False, "message": f"Job {job_id} not found"}
            return Response(self.not_found_status, body)
        status = self._status_now(job)
        if status in TERMINAL and self.refuse_terminal:
            return Response(200, {"cancelled": False, "message": _refusal(job_id, status)})
        if status in TERMINAL:  # accepted, and nothing changes (docs: "does not reject")
            return Response(200, {"cancelled": True, "message": _accepted(job_id)})
        now = self.clock()
        if status == "RUNNING" and self.knobs.cancel_delay_s > 0:
            job.record["status"] = "CANCELLING"
            self.table.schedule(job, now + self.knobs.cancel_delay_s)
        else:
            self._finish(job, "CANCELLED", now)
        return Response(200, {"cancelled": True, "message": _accepted(job_id)})

    # -- job table ------------------------------------------------------------------------------
    def add_job(self, spec: JobSpec) -> str:
        job_id = spec.id or f"job-{next(self._ids):06d}"
        status = spec.status.upper()
        record: dict[str, Any] = {
            "job_id": job_id,
            "name": spec.name,
            "description": None,
            "status": status,
            "model": "llama-3.1-8b",
            "job_priority": 1,
            "datetime_created": _iso(spec.created_at),
            "datetime_started": _iso(spec.started_at),
            "datetime_completed": _iso(self.clock()) if status in TERMINAL else None,
            "job_cost": None,
            "cost_estimate": None,
            "num_rows": 0,
            "input_tokens": None,
            "output_tokens": None,
            "failure_reason": None,
            "dataset_id": None,
        }
        apply_extra(record, spec.extra)
        self.table.add(_Job(job_id, record, spec.created_at))
        return job_id

    def set_status(self, job_id: str, status: str) -> None:
        with self.lock:
            job = self.table[job_id]
            status = status.upper()
            now = self.clock()
            if status in STARTED and job.record.get("datetime_started") is None:
                job.record["datetime_started"] = _iso(now)
            if status in TERMINAL:
                self._finish(job, status, now)
            else:
                job.record["status"] = status
                self.table.unschedule(job)

    def complete_cancel(self, job: _Job, due: float) -> None:
        self._finish(job, "CANCELLED", due)

    # -- internals ------------------------------------------------------------------------------
    def _ordered(self) -> tuple[list[_Job], list[tuple[float, str]]]:
        """Every job in listing order (newest first), and their sort keys. The order holds
        every job whatever its status, so a status change leaves the cached listing valid."""

        def order() -> tuple[list[_Job], list[tuple[float, str]]]:
            jobs = sorted(self.table.values(), key=lambda job: job.key)
            return jobs, [job.key for job in jobs]

        return self.table.listing("list-jobs", order, settle=False)  # type: ignore[no-any-return]

    def _status_now(self, job: _Job) -> str:
        """Status now: a CANCELLING job becomes CANCELLED once its cancel delay has passed."""
        return str(self.table.settle(job).record["status"])

    def _finish(self, job: _Job, status: str, when: float) -> None:
        job.record["status"] = status
        self.table.unschedule(job)
        job.record["datetime_completed"] = _iso(when)

    def _wire(self, job: _Job) -> dict[str, Any]:
        status = self._status_now(job)
        return job.record | {"status": status.lower() if self.lowercase_status else status}

    def _page_limit(self, request: Request) -> int:
        try:
            asked = int(request.arg("limit") or MAX_LIMIT)
        except ValueError:
            asked = MAX_LIMIT
        return max(1, min(asked, MAX_LIMIT, self.knobs.page_size))


def _accepted(job_id: str) -> str:
    return f"Cancelling job with job_id: {job_id}. Check the job status endpoint for details."


def _refusal(job_id: str, status: str) -> str:
    """job-cancel's refusal for a job already over, worded like the documented example
    (docs.sutro.sh/batch-api-reference/cancel-job)."""
    why = {
        "SUCCEEDED": "it has already completed",
        "FAILED": "it has already failed",
        "CANCELLING": "it is already being cancelled",
        "CANCELLED": "it has already been cancelled",
    }[status]
    return f"Job {job_id} could not be cancelled because {why}"
