"""Tapis Jobs v3 backend on tapipy (docs/backends.md, docs/architecture.md, sweep step 5).

What Tapis does, and where that is written down:
- `GET /v3/jobs/search` takes search conditions as query parameters `<attr>.<op>=<value>`
  (`status.in=RUNNING,QUEUED`) beside the reserved limit, skip, startAfter, orderBy, computeTotal,
  select and listType (tapis-shared-java `SearchUtils.buildListFromQueryParms`; tapis-jobs
  `JobSearchResource.getJobSearchList`). `select=allAttributes` returns full Job records, and
  `orderBy` takes `attr(asc|desc)` items separated by commas (tapipy README).
- The spec shipped in tapipy (`resources/openapi_v3-jobs.yml`, RespJobSearchAllAttributes) says
  the search `result` is the array of jobs; the service serialises `RespSearch`, whose `result`
  is `{"search": [...], "metadata": {...}}` (tapis-shared-java `ResultSearch`). Both are read.
- The sweep's re-check is one search per 50 jobs, `uuid.in=<uuids>` with no status condition (the
  `in` operator applies to any searchable attribute, uuid included: SearchUtils), so a job that
  ended shows as ended. A job the answer leaves out is read with `GET /v3/jobs/{uuid}`: only its
  404 says the job is gone (a server may cap `limit` below the uuids asked for).
- `POST /v3/jobs/{uuid}/cancel` answers 200 when the cancel is accepted (it completes
  asynchronously), 404 for an unknown job and 409 for a job already in a terminal state (spec;
  tapis-jobs `JobCancelResource`).
- `POST /v3/jobs/{uuid}/sendEvent` with `{"eventData", "eventDetail"}` adds a JOB_USER_EVENT to
  the job's history; eventData must be non-blank, eventDetail is `[a-zA-Z0-9_]+`; an unknown or
  terminated job answers 400 (tapis-jobs `ReqUserEvent.validate`, `JobSubmitResource.sendEvent`).
- tapipy sends the token as `X-Tapis-Token` and decodes it, unverified, as a JWT to read `exp`;
  given a base_url without a tenant_id it calls the Tenants API while constructing the client.
  It raises `tapipy.errors.*` for any non-2xx answer, wraps transport failures (timeouts
  included) in `BaseTapyException`, returns raw bytes when a JSON body does not parse, and sets
  no timeout of its own (tapipy/tapis.py, `Tapis.__init__`, `Operation.__call__`).

- The search's `listType` decides the reach (tapis-jobs `JobSearchResource.getJobSearchList`,
  `JobsDao`; the spec's default is MY_JOBS): MY_JOBS are the jobs whose owner is the caller,
  SHARED_JOBS those shared with the caller, ALL_JOBS both, owned first, paged as one list. No
  list type shows a job its owner has hidden (`visible` false). reaper sends ALL_JOBS unless
  `list_type` says otherwise.

Known limits: the identity and `list_type` decide the reach; hidden jobs are invisible. Paging
is by offset (`skip`), ordered by creation time: a job that ends mid-listing shifts later jobs
forward and one of them may be missed this sweep (never acted on wrongly, only later); a job
listed twice counts once (engine/scan.py). The offsets are known in advance, so the pages after
the first are fetched several at once, which also narrows the time in which the table can
shift; the listing ends at the first page shorter than the first one, and up to 7 searches
past the end come back empty. Cancels are asynchronous."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt  # PyJWT, which tapipy uses to read the token's claims
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers
from tapipy.errors import BaseTapyException
from tapipy.tapis import Tapis, TapisResult

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
    truncate_reason,
)
from reaper.backends.credentials import read_secret
from reaper.backends.http import Answer, HttpClient, TransportError, pin_environment
from reaper.backends.paging import offset_pages
from reaper.backends.records import read_record
from reaper.backends.records.tapis import TYPE, job_from_record
from reaper.backends.retry import (
    RETRYABLE_STATUS,
    LostAnswerError,
    RetryableError,
    RetryPolicy,
    call_with_retries,
    cancel_honestly,
)
from reaper.backends.tapis_tokens import FileToken, LoginToken, StaticToken, register_tokens
from reaper.errors import BackendError
from reaper.jobs import ACTIVE_PHASES, BadRecord, Job, active_statuses
from reaper.redact import register_secret

logger = logging.getLogger(__name__)

PAGE_LIMIT = 100
# Jobs re-read by one search (`uuid.in`): 50 uuids keep the query under 2 KB, well within any
# proxy's URL limit.
RECHECK_CHUNK = 50
ORDER_BY = "created(asc),uuid(asc)"  # a total order, so that offset paging is stable
EVENT_DETAIL = "REAPER_CANCEL"  # eventDetail allows only [a-zA-Z0-9_]
DEFAULT_TIMEOUT = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
MAX_DETAIL_CHARS = 300  # server messages quoted in errors are cut to this length


def _uuid_of(record: Mapping[str, Any]) -> str | None:
    uuid = record.get("uuid")
    return uuid if isinstance(uuid, str) and uuid else None


def _is_listed(item: Job | BadRecord) -> bool:
    return isinstance(item, BadRecord) or item.phase in ACTIVE_PHASES


_CANCEL_OUTCOMES = {409: CancelOutcome.ALREADY_TERMINAL, 404: CancelOutcome.NOT_FOUND}


class ListType(StrEnum):
    """`list_type` in reaper.yaml; sent upper-cased as the search's `listType`."""

    ALL_JOBS = "all_jobs"  # owned by the identity, and shared with it
    MY_JOBS = "my_jobs"  # owned by the identity (the service's default)
    SHARED_JOBS = "shared_jobs"  # shared with the identity, not owned by it


class TapisCallError(BackendError):
    """One Jobs API call failed (after retries where they apply). `http_status` is the
    service's answer when there was one; the message never holds the token."""

    def __init__(
        self,
        backend: str,
        operation: str,
        message: str,
        http_status: int | None = None,
        *,
        no_answer: bool = False,  # a transport failure: the call may have reached the service
    ) -> None:
        super().__init__(backend, f"{operation} failed: {message}")
        self.operation, self.detail, self.http_status = operation, message, http_status
        self.no_answer = no_answer


class TapisBackend:
    """Lists, re-reads and cancels Tapis jobs through a ready tapipy `Tapis` client. Raises only
    `BackendError` from list/refresh; `cancel` returns an outcome instead of raising."""

    type = TYPE

    def __init__(
        self,
        name: str,
        client: Any,
        *,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] | None = None,
        page_limit: int = PAGE_LIMIT,
        max_pages: int = DEFAULT_MAX_PAGES,
        list_type: ListType = ListType.ALL_JOBS,
        credential: StaticToken | FileToken | LoginToken | None = None,
    ) -> None:
        self.name = name
        self.list_type = ListType(list_type)
        self._credential = credential or StaticToken()
        self._client = client
        self._retry = retry or RetryPolicy()
        self._page_limit = page_limit
        self._max_pages = max_pages
        self.server_clock = ServerClock()
        session = client.requests_session
        if timeout is not None or not isinstance(session.get_adapter("https://"), TimeoutAdapter):
            install_timeout(session, timeout or DEFAULT_TIMEOUT)
        for adapter in session.adapters.values():
            if isinstance(adapter, TimeoutAdapter):
                adapter.server_clock = self.server_clock

    @classmethod
    def from_config(cls, name: str, section: Mapping[str, Any], base_dir: Path) -> TapisBackend:
        """Build from a `reaper.yaml` section: `base_url`, optional `tenant`, and a token from
        `token_env` or `token_file` (read now, whitespace stripped), else `username_env` and
        `password_env` traded for a token through the Authenticator, with the OAuth client
        `client_id` and its key (`client_key_env` / `client_key_file`) when given, so that the
        token is renewed through a refresh token. Raises BackendError, never with a secret in
        its message."""
        base_url, tenant = section.get("base_url"), section.get("tenant")
        if not isinstance(base_url, str) or not base_url:
            raise BackendError(name, "base_url is required")
        token, timeout = read_token(name, section, base_dir), call_timeouts(section)
        credential: StaticToken | FileToken | LoginToken
        if token is not None:
            client = client_with_token(name, base_url, token, timeout)
            token_file = None if section.get("token_env") else section.get("token_file")
            credential = FileToken(base_dir / token_file, token) if token_file else StaticToken()
        else:
            username, password = read_login(name, section)
            register_secret(password)
            oauth_client = read_oauth_client(name, section, base_dir)
            client = client_with_login(
                name, base_url, username, password, timeout, oauth_client=oauth_client
            )
            register_tokens(client)
            credential = LoginToken()
        if tenant:
            client.tenant_id = str(tenant)
        list_type = ListType(section.get("list_type", ListType.ALL_JOBS))
        return cls(
            name, client, timeout=timeout, list_type=list_type, credential=credential,
            max_pages=max_pages_of(name, section),
        )  # fmt: skip

    # -- Backend --------------------------------------------------------------------------------
    def list_active(self) -> Iterator[Page]:
        """Yield the non-terminal jobs one search page at a time, in offset order; the pages
        after the first are fetched up to 8 at once (`paging.offset_pages`), and the listing
        ends at the first short page. Raises TapisCallError when a page fails or
        does not parse; the pages already yielded are then not the whole picture."""
        guard = ListingGuard(self.name, self._max_pages)
        for skip, records in offset_pages(self._search_page, self._page_limit):
            # The empty page that ends an offset listing never reaches the guard.
            guard.page(map(_uuid_of, records), f"getJobSearchList skip={skip}")
            page = [job for job in map(self._job_or_bad, records) if _is_listed(job)]
            if page:
                yield page

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        """The search already returns every attribute (select=allAttributes)."""
        return list(jobs)

    def refresh(self, job: Job) -> Job | None:
        """The job as `GET /jobs/{uuid}` returns it now, or None when the service no longer
        knows it (404)."""
        try:
            result = self._invoke("getJob", jobUuid=job.id)
        except TapisCallError as exc:
            if exc.http_status == 404:
                return None
            raise
        if not isinstance(result, TapisResult):
            raise self._malformed("getJob", "the result is not a job record")
        return self._to_job(to_plain(result))

    # -- the sweep's bulk path (reaper.engine.sweep.BulkBackend) ------------------------------
    @property
    def refresh_batch(self) -> int:
        """The most jobs one `refresh_many` search reads (their uuids are in its query)."""
        return min(RECHECK_CHUNK, self._page_limit)

    @property
    def cancel_batch(self) -> int:
        """Tapis cancels one job per call (sendEvent, then cancel)."""
        return 1

    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]:
        """The jobs as they are now, in order: one search per `refresh_batch` jobs
        (`uuid.in=…`, any status, every attribute, the listing's `listType`), then `refresh`
        (getJob) for each job that search did not return: a server may cap `limit` below the
        uuids asked for, or ignore the condition, and only getJob's 404 says a job is gone
        (None). Raises TapisCallError, also for a record that does not read (as `refresh`
        does for one job)."""
        found: dict[str, Job | None] = {}
        for start in range(0, len(jobs), self.refresh_batch):
            chunk = jobs[start : start + self.refresh_batch]
            wanted = {job.id for job in chunk}
            uuids = ",".join(job.id for job in chunk)
            for record in self._search(len(chunk), 0, {"uuid.in": uuids}):
                if _uuid_of(record) in wanted:  # anything else was not asked for
                    job = self._to_job(record)
                    found[job.id] = job
            for job in chunk:
                if job.id not in found:
                    found[job.id] = self.refresh(job)
        return [found[job.id] for job in jobs]

    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        """`cancel` for each job, one after the other (no bulk cancel in the Jobs API)."""
        return [self.cancel(job, reason) for job in jobs]

    def cancel(self, job: Job, reason: str) -> CancelResult:
        """Record `reason` on the job with sendEvent, then ask for the cancel. 409 is
        ALREADY_TERMINAL, 404 NOT_FOUND; any other failure is FAILED with the error. An answer
        lost to a 5xx or a transport failure is followed by a re-read of the job before any
        retry (`retry.cancel_honestly`)."""
        self._record_reason(job, reason)
        return cancel_honestly(lambda: self._cancel_once(job), lambda: self.refresh(job),
                               self._retry)  # fmt: skip

    def _cancel_once(self, job: Job) -> CancelResult:
        """One cancelJob call. Raises RetryableError (429: not applied) and LostAnswerError
        (5xx, no answer: maybe applied)."""
        self._credential.prepare(self._client)
        try:
            result = self._attempt("cancelJob", {"jobUuid": job.id})
        except RetryableError as exc:
            error: TapisCallError = exc.args[0]
            if error.http_status == 429:
                raise
            raise LostAnswerError(str(error)) from None
        except TapisCallError as exc:
            if exc.no_answer:
                raise LostAnswerError(str(exc)) from None
            outcome = _CANCEL_OUTCOMES.get(exc.http_status or 0, CancelOutcome.FAILED)
            return CancelResult(outcome, str(exc) if outcome == CancelOutcome.FAILED else None)
        if not isinstance(result, TapisResult | dict):
            error = self._malformed("cancelJob", "the answer did not parse; cancel unconfirmed")
            return CancelResult(CancelOutcome.FAILED, str(error))
        return CancelResult(CancelOutcome.CANCELLED)

    def close(self) -> None:
        self._client.requests_session.close()

    # -- calls ----------------------------------------------------------------------------------
    def _search_page(self, skip: int) -> list[dict[str, Any]]:
        active = {"status.in": ",".join(active_statuses(TYPE))}
        return self._search(self._page_limit, skip, active)

    def _search(self, limit: int, skip: int, conditions: dict[str, str]) -> list[dict[str, Any]]:
        answer = self._invoke(
            "getJobSearchList",
            limit=limit,
            skip=skip,
            orderBy=ORDER_BY,
            select="allAttributes",
            listType=self.list_type.upper(),
            _tapis_query_parameters=conditions,
            _tapis_debug=True,
        )
        result = _sent_result(answer)
        items = result.get("search") if isinstance(result, dict) else result
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise self._malformed("getJobSearchList", "the result is not a list of jobs")
        # A record without a uuid is a bad record of its own (list_active), not a bad page.
        return items

    def _record_reason(self, job: Job, reason: str) -> None:
        # Best effort: the audit log holds the reason anyway. A job that ended or vanished
        # answers 400 here, and the cancel call that follows reports it properly.
        try:
            self._invoke(
                "sendEvent",
                jobUuid=job.id,
                eventData=truncate_reason(reason.strip() or "cancelled by reaper"),
                eventDetail=EVENT_DETAIL,
            )
        except TapisCallError as exc:
            level = logging.DEBUG if exc.http_status == 400 else logging.WARNING
            logger.log(level, "reason not recorded on Tapis job %s: %s", job.id, exc)

    def _invoke(self, operation: str, **kwargs: Any) -> Any:
        """Call one Jobs operation through tapipy, retrying 429 and 5xx with backoff and jitter.
        Raises TapisCallError for everything else, and when the retries are spent."""
        self._credential.prepare(self._client)
        try:
            return self._invoke_with_retries(operation, kwargs)
        except TapisCallError as exc:
            # A token that expired or was rotated: renew it once, then try the call once more.
            if exc.http_status != 401 or not self._credential.renew(self._client):
                raise
            logger.info("Tapis answered 401 for %s; retrying with the renewed token", operation)
            return self._invoke_with_retries(operation, kwargs)

    def _invoke_with_retries(self, operation: str, kwargs: dict[str, Any]) -> Any:
        try:
            return call_with_retries(lambda: self._attempt(operation, kwargs), self._retry)
        except RetryableError as exc:
            last: TapisCallError = exc.args[0]
            raise TapisCallError(
                self.name,
                operation,
                f"{last.detail} (gave up after {self._retry.attempts} attempts)",
                last.http_status,
            ) from None

    def _attempt(self, operation: str, kwargs: dict[str, Any]) -> Any:
        """One call of a Jobs operation. Raises RetryableError (429, 5xx) carrying the
        TapisCallError, and TapisCallError for everything else."""
        try:
            return getattr(self._client.jobs, operation)(**kwargs)
        except BaseTapyException as exc:
            error = self._call_error(operation, exc)
        except (TypeError, AttributeError, KeyError, ValueError) as exc:
            # tapipy turns the JSON `result` into TapisResult objects with `**item`; an
            # answer of an unexpected shape ([[1, 2]]) fails there with a plain TypeError.
            what = f"tapipy could not read the answer ({type(exc).__name__})"
            raise self._malformed(operation, what) from None
        if error.http_status in RETRYABLE_STATUS:
            raise RetryableError(error)
        raise error

    def _call_error(self, operation: str, exc: BaseTapyException) -> TapisCallError:
        response = getattr(exc, "response", None)
        status = response.status_code if response is not None else None
        detail = self._redact(_text(exc.message))[:MAX_DETAIL_CHARS]
        if status is None:
            message = f"no answer from the Jobs service: {detail}"
        elif status in (401, 403):
            message = f"HTTP {status}, authentication failed (check the token): {detail}"
        else:
            message = f"HTTP {status}: {detail}"
        return TapisCallError(self.name, operation, message, status, no_answer=status is None)

    def _job_or_bad(self, record: dict[str, Any]) -> Job | BadRecord:
        """One bad record is one skipped job: it never ends the listing."""
        return read_record(TYPE, self.name, record)

    def _to_job(self, record: dict[str, Any]) -> Job:
        try:
            return job_from_record(self.name, record)
        except ValueError as exc:
            raise self._malformed("job record", str(exc)) from None

    def _malformed(self, operation: str, what: str) -> TapisCallError:
        return TapisCallError(self.name, operation, f"malformed response: {what}")

    def _redact(self, text: str) -> str:
        token = self._client.get_access_jwt()
        return text.replace(token, "[redacted]") if isinstance(token, str) and token else text


_LEAVES = (str, int, float, bool, type(None))  # most fields of a job record: no call for them


def _sent_result(answer: Any) -> Any:
    """The `result` of a search answer as the service sent it (None if it cannot be had).
    With `_tapis_debug`, tapipy returns (its objects, Debug) and the Debug holds the response,
    whose JSON reaper's adapter parsed once: the records are read from it rather than turned
    from tapipy's TapisResult objects back into dicts, which cost a quarter of a page's CPU."""
    debug = answer[1] if isinstance(answer, tuple) and len(answer) == 2 else None
    response = getattr(debug, "response", None)
    try:
        body = response.json() if response is not None else None
    except ValueError:
        return None
    return body.get("result") if isinstance(body, dict) else None


def to_plain(value: Any) -> Any:
    """tapipy's TapisResult objects (and lists of them) as plain dicts and lists."""
    if isinstance(value, TapisResult):
        return {key: item if isinstance(item, _LEAVES) else to_plain(item)
                for key, item in vars(value).items()}  # fmt: skip
    if isinstance(value, list):
        return [item if isinstance(item, _LEAVES) else to_plain(item) for item in value]
    return value


def _text(message: Any) -> str:
    if isinstance(message, bytes):
        return message.decode("utf-8", errors="replace")
    return "" if message is None else str(message)


# -- client construction ------------------------------------------------------------------------
class TimeoutAdapter(BaseAdapter):
    """The transport of tapipy's session: requests' adapter interface over reaper's HttpClient
    (urllib3; one pool per origin, proxy and CA setting, each HTTP_POOL_SIZE connections, as
    many as a sweep has calls in flight). tapipy sends every request with
    `requests_session.send(request, verify=...)` and no timeout (tapipy/tapis.py
    `Operation.__call__`): this adapter gives every request that brings none a (connect, read)
    timeout. Nothing is retried (retries are reaper's, one layer only), no redirect followed.
    The answer's JSON is parsed once: tapipy reads `json()` three times per answer. A client
    certificate (`cert`) is not sent: reaper configures none, and `stream` changes nothing
    (every answer is read whole)."""

    def __init__(self, timeout: tuple[float, float]) -> None:
        super().__init__()
        self.timeout = timeout
        # tapipy hands back only the parsed result: the Date header of every answer is read
        # here, where the response passes (reaper.backends.base.ServerClock).
        self.server_clock: ServerClock | None = None
        self._clients: dict[tuple[str, tuple[tuple[str, str], ...], bool | str], HttpClient] = {}
        self._lock = threading.Lock()

    def send(  # noqa: PLR0917 (requests' adapter interface)
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        url, method = str(request.url), str(request.method)
        pair = _timeouts(timeout or self.timeout, self.timeout)
        try:
            answer = self._client(url, proxies or {}, verify).request(
                method, url, request.headers, pair, request.body
            )
        except TransportError as exc:
            failure = requests.Timeout if exc.timed_out else requests.ConnectionError
            raise failure(str(exc), request=request) from None
        if self.server_clock is not None:
            self.server_clock.observe(answer.headers.get("Date"))
        return _response(request, answer)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _client(self, url: str, proxies: Mapping[str, str], verify: bool | str) -> HttpClient:
        parts = urlsplit(url)
        key = (f"{parts.scheme}://{parts.netloc}", tuple(sorted(proxies.items())), verify)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = HttpClient(key[0], proxies=proxies, verify=verify)
            return client


def _timeouts(
    given: float | tuple[float, float] | tuple[float, None], default: tuple[float, float]
) -> tuple[float, float]:
    """(connect, read) from a requests timeout (one number, or a pair whose read part may be
    None, which here means the default rather than forever)."""
    if not isinstance(given, tuple):
        return float(given), float(given)
    connect, read = given
    return float(connect), default[1] if read is None else float(read)


def _verify(setting: Any) -> bool | str:
    """requests' `verify` (True, False or a CA bundle); None, which requests' adapter would take
    for False, verifies."""
    return True if setting is None else setting if isinstance(setting, str) else bool(setting)


class _Answered(requests.Response):
    """A response whose JSON is parsed once, however often it is asked for (tapipy asks three
    times: for an error message, for a version, for the result)."""

    _parsed: Any = None

    def json(self, **kwargs: Any) -> Any:
        if kwargs:
            return super().json(**kwargs)
        if self._parsed is None:
            self._parsed = super().json()
        return self._parsed


def _response(request: requests.PreparedRequest, answer: Answer) -> requests.Response:
    response = _Answered()
    response.status_code = answer.status_code
    response.headers = CaseInsensitiveDict(answer.headers)
    response._content = answer.content  # how requests holds a read body
    response.encoding = get_encoding_from_headers(response.headers)
    response.url, response.request, response.reason = str(request.url), request, ""
    return response


class _Session(requests.Session):
    """tapipy's session, sending straight through its mounted adapter. requests' own `send`
    adds hooks, cookies, settings merging and redirects, which the Jobs API does not use (a
    redirect is reported, not followed, as for Sutro) and which cost as much client CPU as the
    adapter's call (benchmarks/results.md)."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        adapter = self.get_adapter(str(request.url))
        return adapter.send(
            request,
            stream=bool(kwargs.get("stream", False)),
            timeout=kwargs.get("timeout"),
            verify=_verify(kwargs.get("verify", self.verify)),
            cert=kwargs.get("cert", self.cert),
            proxies=kwargs.get("proxies") or self.proxies,
        )


def install_timeout(session: requests.Session, timeout: tuple[float, float]) -> None:
    """Give every request made through `session` a (connect, read) timeout."""
    adapter = TimeoutAdapter(timeout)
    session.mount("https://", adapter)
    session.mount("http://", adapter)


class _OfflineTenants:
    """Stands in for tapipy's tenant cache so that building a client never calls the Tenants
    API (tapipy does when given a base_url without a tenant_id). Jobs calls do not need it."""

    def __init__(self) -> None:
        self.tenants: dict[str, Any] = {}  # tapipy iterates it after reload_tenants()

    def reload_tenants(self) -> None:
        """Nothing to load: the Jobs API does not need tenant records."""

    def get_tenant_config(self, tenant_id: str) -> Any:
        raise BaseTapyException(msg="tenant lookups are disabled in reaper")


def make_client(
    base_url: str,
    access_token: str | None = None,
    username: str | None = None,
    password: str | None = None,
    *,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    oauth_client: tuple[str, str] | None = None,
) -> Any:
    """A tapipy client that works offline until called: the specs bundled with tapipy, no
    Tenants lookup, tapipy's own retries off, a timeout on every request; `oauth_client` is
    (client_id, client_key), which tapipy sends as HTTP Basic authorization with a token
    request and needs to use a refresh token. Raises whatever tapipy raises for an unreadable
    token (callers wrap it)."""
    client_id, client_key = oauth_client or (None, None)
    client = Tapis(
        base_url=base_url.rstrip("/"),
        access_token=access_token,
        username=username,
        password=password,
        client_id=client_id,
        client_key=client_key,
        tenants=_OfflineTenants(),
        download_latest_specs=False,
        debug_prints=False,
        config={"retries": 0},
        plugins=[],
    )
    claims = getattr(client.access_token, "claims", None) or {}
    client.tenant_id = claims.get("tapis/tenant_id")
    client.requests_session = _Session()
    install_timeout(client.requests_session, timeout)
    pin_environment(client.requests_session, base_url)
    # tapipy sends every request with `send(request, verify=client.verify)` (tapipy/tapis.py,
    # `Operation.__call__`), and an explicit verify=True overrides the session's CA bundle:
    # hand tapipy the session's setting, which requests accepts as a bool or a bundle path.
    client.verify = client.requests_session.verify
    return client


def client_with_token(
    name: str, base_url: str, token: str, timeout: tuple[float, float] = DEFAULT_TIMEOUT
) -> Any:
    """A client that sends `token`. Raises BackendError when the token is not a JWT that
    carries an expiry (tapipy decodes it to read `exp`)."""
    try:
        return make_client(base_url, access_token=token, timeout=timeout)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError, OSError):
        # A DecodeError, or a missing or absurd `exp`: the details could quote the token.
        raise BackendError(
            name, "the access token is not a well-formed Tapis JWT with an `exp` claim"
        ) from None


def client_with_login(
    name: str,
    base_url: str,
    username: str,
    password: str,
    timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    *,
    oauth_client: tuple[str, str] | None = None,
) -> Any:
    """A client holding a fresh token from the Authenticator's password grant (and, with
    `oauth_client`, a refresh token)."""
    client = make_client(
        base_url, username=username, password=password, timeout=timeout, oauth_client=oauth_client
    )
    try:
        client.get_tokens()
    except BaseTapyException as exc:
        response = getattr(exc, "response", None)
        status = f"HTTP {response.status_code}" if response is not None else "no answer"
        detail = _text(exc.message).replace(password, "[redacted]")
        if oauth_client:
            detail = detail.replace(oauth_client[1], "[redacted]")
        detail = detail[:MAX_DETAIL_CHARS]
        raise BackendError(name, f"login as {username} failed ({status}): {detail}") from None
    if not isinstance(client.get_access_jwt(), str):
        raise BackendError(name, f"login as {username} returned no access token")
    return client


def read_token(name: str, section: Mapping[str, Any], base_dir: Path) -> str | None:
    """The token from `token_env` or `token_file` (relative to `base_dir`), stripped; None when
    neither is configured. Raises BackendError when the configured source is empty or absent."""
    return read_secret(
        name, section, base_dir, os.environ, env_key="token_env", file_key="token_file"
    )


def read_oauth_client(
    name: str, section: Mapping[str, Any], base_dir: Path
) -> tuple[str, str] | None:
    """(client_id, client_key) from `client_id` and `client_key_env` / `client_key_file`, the
    key registered for redaction; None when no `client_id` is configured. Raises BackendError
    when the key's source is unset, unreadable or empty (never quoting it)."""
    client_id = section.get("client_id")
    if not client_id:
        return None
    key = read_secret(
        name, section, base_dir, os.environ, env_key="client_key_env", file_key="client_key_file"
    )
    if key is None:
        raise BackendError(name, "client_id needs client_key_env or client_key_file")
    return str(client_id), key


def read_login(name: str, section: Mapping[str, Any]) -> tuple[str, str]:
    """Username and password from the variables named by `username_env`/`password_env`."""
    user_env, pass_env = section.get("username_env"), section.get("password_env")
    if not user_env or not pass_env:
        raise BackendError(
            name,
            "no credentials: set token_env, token_file, or both of username_env and password_env",
        )
    username, password = os.environ.get(str(user_env), ""), os.environ.get(str(pass_env), "")
    if not username or not password:
        raise BackendError(name, f"environment variables {user_env}/{pass_env} are unset")
    return username, password
