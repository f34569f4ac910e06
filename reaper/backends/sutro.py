"""Sutro batch-inference backend, over Sutro's REST API (reaper.backends.http.HttpClient).

What Sutro documents (read 2025; docs.sutro.sh "Batch API reference" and the official SDK,
github.com/sutro-sh/sutro `sutro/sdk.py`):
- Every call carries `Authorization: Key <api key>`.
- `GET list-jobs` answers `{"message", "jobs": [...]}` with every job, newest first. With
  `limit` (1..100) it pages: `{"jobs", "next_cursor"}`, the cursor opaque and null on the last
  page (docs.sutro.sh/batch-api-reference/list-jobs). Older deployments ignore `limit`; then
  the one answer holds every job and there is no cursor to follow.
- A job record has `job_id`, `status`, `model`, `name`, `description`, `job_priority`,
  `datetime_created`, `datetime_started` (null before start), `datetime_completed`, `job_cost`,
  `num_rows`, `input_tokens`, `output_tokens`, `cost_estimate`, `failure_reason`, ISO 8601 times.
  Older documents name the times `created_at`/`completed_at`; both are read.
- Statuses (SDK `JobStatus`): QUEUED STARTING RUNNING SUCCEEDED FAILED CANCELLING CANCELLED
  UNKNOWN; the SDK counts CANCELLING as terminal. Older documents spell them in lower case and
  also list `pending`/`submitted`, which the phase table does not know: such jobs are skipped and
  logged like UNKNOWN, never acted on (reaper.jobs.phase_of).
- `GET jobs/{job_id}` answers `{"job": {...}}`, the full record, and 404 for an unknown job
  (docs.sutro.sh/batch-api-reference/fetch-job). `refresh` uses it rather than
  `GET job-status/{job_id}`, which carries only the status string: a re-check needs
  `datetime_started` and the `where` fields too.
- The API lives at the deployment's `/v1` prefix (`api_url` normalised as the SDK does:
  reaper.backends.sutro_url).
- `GET job-cancel/{job_id}` (the SDK's `cancel_job`, and docs.sutro.sh/reference/api/cancel-job;
  older documents said POST) answers `{"cancelled": bool, "message": str}` and moves the job to
  CANCELLING: the cancellation is asynchronous. The current docs say the endpoint "accepts any
  existing job and does not reject jobs that are already terminal", so `cancelled: true` does
  not prove the job was active: the sweep re-reads every job just before its cancel, and the
  audit's confirmation follows it to a terminal state. A missing job is a 404 with `detail`;
  older deployments answered `cancelled: false` with "Job X not found" or "... could not be
  cancelled because it has already completed", which are read too. The request takes no
  reason, so the reason reaches only the audit.

What is assumed: that a job that has ended never runs again and none is created in the past,
so that a daemon's listing may stop once past the oldest job the last complete one left open
(reaper.backends.sutro_history, which checks the order it relies on and lists everything at
least hourly); that a deployment which answers GET with 405 takes POST instead (the older
documents), tried once and then remembered for the backend; that 429, 5xx and Cloudflare's 524
(which the SDK retries) are transient (retried, honouring `Retry-After`); that the cursor, when
offered, never repeats (a repeat is an error: a listing that cannot finish must not be acted on,
docs/architecture.md)."""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from reaper.backends.base import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_PAGES,
    DEFAULT_READ_TIMEOUT_S,
    CancelOutcome,
    CancelResult,
    ListingGuard,
    Page,
    ServerClock,
    call_timeouts,
    max_pages_of,
)
from reaper.backends.credentials import read_secret
from reaper.backends.http import Answer, HttpClient, TransportError
from reaper.backends.paging import chained_pages
from reaper.backends.records import read_record
from reaper.backends.records.sutro import TYPE, parse_job
from reaper.backends.retry import (
    RETRYABLE_STATUS,
    LostAnswerError,
    RetryableError,
    RetryPolicy,
    call_with_retries,
    cancel_honestly,
)
from reaper.backends.sutro_history import History, Listing
from reaper.backends.sutro_url import SutroUrlError, normalize_api_url
from reaper.errors import BackendError
from reaper.jobs import ACTIVE_PHASES, BadRecord, Job, Phase, utc_now

logger = logging.getLogger(__name__)


# Cloudflare's "a timeout occurred" in front of a deployment: the SDK's do_request retries it.
CLOUDFLARE_TIMEOUT = 524
SUTRO_RETRYABLE = RETRYABLE_STATUS | {CLOUDFLARE_TIMEOUT}
FINISHED_ON_THEIR_OWN = frozenset({"SUCCEEDED", "FAILED"})  # terminal, and not by a cancel
CANCEL_METHODS = ("GET", "POST")  # the SDK's and current docs' first, then the older documents'
PAGE_LIMIT = 100  # the documented maximum of `limit` on list-jobs
RETRY_AFTER_CAP_S = 30.0  # honour a server's Retry-After, but never stall a sweep for longer
AUTH_FAILURE = frozenset({401, 403})

_NOT_FOUND = re.compile(r"not\s+found|does\s+not\s+exist|no\s+such\s+job", re.IGNORECASE)
_ALREADY_TERMINAL = re.compile(
    r"\balready\b"
    r"|\b(?:has|have|had|is|was|it)\s+(?:been\s+)?"
    r"(?:completed|finished|succeeded|failed|cancell?ed|canceled|done)\b(?!\s+to\b)"
    r"|\bterminal\s+state\b",
    re.IGNORECASE,
)


class SutroBackend:
    """Lists, re-reads and cancels Sutro jobs. Raises only `BackendError` from list/refresh;
    `cancel` never raises for a per-job problem. No message carries the API key."""

    type = TYPE

    def __init__(  # noqa: PLR0917 (the signature the backends share)
        self,
        name: str,
        http: HttpClient,
        api_url: str,
        api_key: str,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S),
        max_pages: int = DEFAULT_MAX_PAGES,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.name = name
        self._http = http
        self._base = normalize_api_url(api_url) + "/"
        self._cancel_method = CANCEL_METHODS[0]  # switched for good by a 405 (`cancel`)
        self._api_key = api_key
        self._headers = {"Authorization": f"Key {api_key}", "Accept": "application/json"}
        self._retry = retry or RetryPolicy()
        self._timeout = timeout
        self._max_pages = max_pages
        self.server_clock = ServerClock()
        self._clock = clock
        self._history = History()  # what the last complete listing showed (sutro_history)

    @classmethod
    def from_config(
        cls,
        name: str,
        section: Mapping[str, Any],
        base_dir: Path,
        environ: Mapping[str, str] | None = None,
    ) -> SutroBackend:
        """Build from a `reaper.yaml` section: `api_url` (the deployment's URL, required), and
        `api_key_env` or `api_key_file` (relative to `base_dir`). Raises BackendError when the
        URL is not a deployment's or the key cannot be read."""
        try:
            api_url = normalize_api_url(str(section.get("api_url") or ""))
        except SutroUrlError as exc:
            raise BackendError(name, str(exc)) from None
        api_key = read_api_key(name, section, base_dir, os.environ if environ is None else environ)
        return cls(
            name, HttpClient(api_url), api_url, api_key, timeout=call_timeouts(section),
            max_pages=max_pages_of(name, section),
        )  # fmt: skip

    # -- the Backend interface ------------------------------------------------------------------
    def list_active(self) -> Iterator[Page]:
        """Yield the non-terminal jobs of each list-jobs page, following `next_cursor`; the next
        page is fetched while the caller works on this one (`paging.chained_pages`). Jobs with
        an unknown status are skipped and logged; an unreadable record is a BadRecord. Stops
        before the end of the history once past every job the last complete listing left open
        (reaper.backends.sutro_history). Raises BackendError, also when the paging does not end
        (`ListingGuard`)."""
        guard = ListingGuard(self.name, self._max_pages)
        listing = Listing(self._history, self._clock())
        for records in chained_pages(lambda cursor: self._list_page(cursor, guard)):
            page = self._active_jobs(records, listing)
            if page:
                yield page
            if listing.done():
                break
        self._remember(listing)

    def _remember(self, listing: Listing) -> None:
        """Keep what a complete listing showed, for the next one."""
        if self._history.ordered and not listing.in_order:
            logger.warning("%s: list-jobs answered jobs out of creation order; every listing "
                           "reads the whole job history from now on", self.name)  # fmt: skip
        self._history = listing.history()

    def _list_page(self, cursor: str | None, guard: ListingGuard) -> tuple[list[Any], str | None]:
        """One list-jobs page: its records and the next cursor (None after the last page),
        checked by `guard`. Raises BackendError."""
        params = {"limit": str(PAGE_LIMIT)} | ({"cursor": cursor} if cursor else {})
        body = self._get_json("list-jobs", params)
        records = body.get("jobs")
        if not isinstance(records, list):
            raise BackendError(self.name, "list-jobs answered without a `jobs` list")
        next_cursor = self._next_cursor(body, guard)
        guard.page(map(_record_id, records), "list-jobs", last=next_cursor is None)
        return records, next_cursor

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """list-jobs already carries the full record: nothing to add."""
        return list(jobs)

    def refresh(self, job: Job) -> Job | None:
        """The job's full current record (`GET jobs/{id}`), or None when Sutro no longer knows
        it. Raises BackendError when the answer cannot be had or read."""
        path = f"jobs/{quote(job.id, safe='')}"
        response = self._request("GET", path)
        if response.status_code == 404:
            return None
        body = self._parse(response, f"GET {path}")
        record = body.get("job", body)
        try:
            return parse_job(self.name, record)
        except ValueError as exc:
            raise BackendError(self.name, f"GET {path}: unreadable job record: {exc}") from None

    def cancel(self, job: Job, reason: str) -> CancelResult:
        """Ask Sutro to cancel the job. `reason` is not sent: job-cancel has no field for it,
        so it is recorded only in the audit log. An answer lost to a 5xx or a transport failure
        is followed by a re-read of the job before any retry (`retry.cancel_honestly`). Never
        raises for a per-job problem."""
        return cancel_honestly(lambda: self._cancel_once(job), lambda: self.refresh(job),
                               self._retry)  # fmt: skip

    def _cancel_once(self, job: Job) -> CancelResult:
        """One job-cancel call: GET (the SDK's and the current docs'), or once the other method
        where a deployment answers 405, which is then remembered. Raises RetryableError (429:
        not applied) and LostAnswerError (5xx, 524, no answer: maybe applied)."""
        path, method = f"job-cancel/{quote(job.id, safe='')}", self._cancel_method
        try:
            response = self._send(method, path, None)
            if response.status_code == 405:
                method = next(m for m in CANCEL_METHODS if m != method)
                response = self._send(method, path, None)
                if response.status_code != 405:
                    logger.info("%s: job-cancel takes %s on this deployment", self.name, method)
                    self._cancel_method = method
        except BackendError as exc:
            raise LostAnswerError(str(exc)) from None
        status = response.status_code
        if status == 429:
            raise RetryableError(f"{method} {path}: HTTP 429")
        if status in SUTRO_RETRYABLE:
            raise LostAnswerError(f"backend {self.name}: {method} {path}: HTTP {status}")
        if status == 404:
            return CancelResult(CancelOutcome.NOT_FOUND)
        try:
            body = self._parse(response, f"{method} {path}")
        except BackendError as exc:
            return CancelResult(CancelOutcome.FAILED, str(exc))
        result = classify_cancel(body)
        return self._verify_accepted(job) if result.outcome == CancelOutcome.CANCELLED else result

    def _verify_accepted(self, job: Job) -> CancelResult:
        """`cancelled: true` also answers a job that had already finished (the endpoint "does
        not reject jobs that are already terminal"): one re-read tells a job that ended on its
        own (SUCCEEDED, FAILED: `already_terminal`) from one reaper's call is stopping. A job
        now CANCELLING, CANCELLED or still active counts as reaper's cancel, which the audit's
        confirmation follows to its end; so does one the re-read cannot see."""
        try:
            fresh = self.refresh(job)
        except BackendError as exc:
            logger.info("%s: cancel of %s accepted, re-read failed: %s", self.name, job.id, exc)
            return CancelResult(CancelOutcome.CANCELLED)
        if fresh is not None and fresh.status.upper() in FINISHED_ON_THEIR_OWN:
            return CancelResult(CancelOutcome.ALREADY_TERMINAL)
        return CancelResult(CancelOutcome.CANCELLED)

    def close(self) -> None:
        self._http.close()

    # -- listing helpers ------------------------------------------------------------------------
    def _active_jobs(self, records: list[Any], listing: Listing) -> list[Job | BadRecord]:
        """The page's active jobs, and its bad records (never acted on, still counted as
        active). A job whose status the phase table does not know is left out, with a warning,
        so that it is never acted on. Every record is shown to `listing`."""
        jobs: list[Job | BadRecord] = []
        for record in records:
            job = read_record(TYPE, self.name, record)
            if isinstance(job, BadRecord):
                listing.unreadable()
                jobs.append(job)
                continue
            listing.record(job.created_at, job.status)
            if job.phase == Phase.UNKNOWN:
                logger.warning(
                    "skipping Sutro job %s on %s: unknown status %r", job.id, self.name, job.status
                )
            elif job.phase in ACTIVE_PHASES:
                jobs.append(job)
        return jobs

    def _next_cursor(self, body: Mapping[str, Any], guard: ListingGuard) -> str | None:
        cursor = body.get("next_cursor")
        if cursor is None or cursor == "":
            return None
        if not isinstance(cursor, str):
            raise BackendError(self.name, "list-jobs answered with a non-string `next_cursor`")
        guard.cursor(cursor, "list-jobs")
        return cursor

    # -- HTTP -----------------------------------------------------------------------------------
    def _get_json(self, path: str, params: Mapping[str, str]) -> dict[str, Any]:
        return self._parse(self._request("GET", path, params), f"GET {path}")

    def _request(self, method: str, path: str, params: Mapping[str, str] | None = None) -> Answer:
        """One call, retried on 429/5xx with backoff and jitter. Returns the final response
        (any other status). Raises BackendError on network failure, timeout, or when the retry
        budget is spent."""
        numbers = itertools.count()

        def attempt() -> Answer:
            response = self._send(method, path, params)
            if response.status_code in SUTRO_RETRYABLE:
                self._honour_retry_after(response, next(numbers))
                raise RetryableError(f"HTTP {response.status_code}")
            return response

        try:
            return call_with_retries(attempt, self._retry)
        except RetryableError as exc:
            tries = self._retry.attempts
            raise BackendError(self.name, f"{method} {path}: {exc} after {tries} tries") from None

    def _send(self, method: str, path: str, params: Mapping[str, str] | None) -> Answer:
        url = self._base + path + ("?" + urlencode(params) if params else "")
        try:
            response = self._http.request(method, url, self._headers, self._timeout)
        except TransportError as exc:
            if exc.timed_out:
                message = f"{method} {path}: no answer within {self._timeout[1]:g} s (timeout)"
            else:
                message = self._redact(f"{method} {path}: {exc}")
            raise BackendError(self.name, message) from None
        self.server_clock.observe(response.headers.get("Date"))
        return response

    def _honour_retry_after(self, response: Answer, attempt: int) -> None:
        """Sleep what the server asked for (capped) before the helper's own jittered backoff;
        not after the last attempt, which is not retried."""
        wait = parse_retry_after(response.headers.get("Retry-After"))
        if wait and attempt < self._retry.attempts - 1:
            self._retry.sleep(min(wait, RETRY_AFTER_CAP_S))

    def _parse(self, response: Answer, what: str) -> dict[str, Any]:
        """The JSON object of a 2xx answer. Raises BackendError for auth failures, other error
        statuses, and bodies that are not a JSON object."""
        status = response.status_code
        if status in AUTH_FAILURE:
            raise BackendError(self.name, f"{what}: authentication failed (HTTP {status})")
        if not 200 <= status < 300:
            detail = self._redact(error_detail(response))
            raise BackendError(self.name, f"{what}: HTTP {status}: {detail}")
        try:
            body = response.json()
        except ValueError:
            raise BackendError(self.name, f"{what}: malformed JSON in the answer") from None
        if not isinstance(body, dict):
            raise BackendError(self.name, f"{what}: answer is not a JSON object")
        return body

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text


# -- pure helpers ---------------------------------------------------------------------------------
def _record_id(record: Any) -> str | None:
    job_id = record.get("job_id") if isinstance(record, dict) else None
    return job_id if isinstance(job_id, str) and job_id else None


def classify_cancel(body: Mapping[str, Any]) -> CancelResult:
    """The outcome of a job-cancel answer `{cancelled, message}`. Sutro reports a job it cannot
    cancel only in the message, so the message decides between not found, already terminal and
    a real failure; an unrecognised message is a failure, never silently a success."""
    cancelled, message = body.get("cancelled"), str(body.get("message") or "")
    if cancelled is True:
        return CancelResult(CancelOutcome.CANCELLED)
    if cancelled is not False:
        return CancelResult(CancelOutcome.FAILED, "job-cancel answered without `cancelled`")
    if _NOT_FOUND.search(message):
        return CancelResult(CancelOutcome.NOT_FOUND)
    if _ALREADY_TERMINAL.search(message):
        return CancelResult(CancelOutcome.ALREADY_TERMINAL)
    return CancelResult(CancelOutcome.FAILED, message or "Sutro refused the cancel")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds; None if absent or an HTTP date
    (rare for APIs; the jittered backoff covers it)."""
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None


def error_detail(response: Answer) -> str:
    """The `message` or `detail` of an error answer, else its first 200 characters."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body.get("detail") or body)[:200]
    return str(body)[:200]


def read_api_key(
    name: str, section: Mapping[str, Any], base_dir: Path, environ: Mapping[str, str]
) -> str:
    """The API key from `api_key_env` or `api_key_file`. Raises BackendError naming the
    variable or file, never the key."""
    key = read_secret(
        name, section, base_dir, environ, env_key="api_key_env", file_key="api_key_file"
    )
    if key is None:
        raise BackendError(name, "set api_key_env or api_key_file")
    return key
