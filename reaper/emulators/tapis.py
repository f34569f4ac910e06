"""A loopback emulator of the Tapis Jobs v3 API, the subset reaper uses: `GET jobs/search` with
`<attr>.<op>=<value>` conditions, `select`, `limit`/`skip`/`orderBy`/`computeTotal`;
`listType`; `GET jobs/list`; `GET jobs/{uuid}` and `jobs/{uuid}/status`;
`POST jobs/{uuid}/cancel` and `jobs/{uuid}/sendEvent`; and the Authenticator's
`POST oauth2/tokens` password grant. Every call but the last needs `X-Tapis-Token` equal to
`emulator.token`, an unsigned but well-formed JWT (tapipy decodes it to read `exp`).

Answers use Tapis' envelope (`status`, `message`, `version`, `commit`, `build`, `metadata`,
`result`) with the shapes of the OpenAPI spec that ships in tapipy
(tapipy/resources/openapi_v3-jobs.yml); tests/test_tapis_openapi.py validates them against it.
Where the running service differs from that spec, `dialect="server"` answers as the service
does: a search `result` of `{"search": [...], "metadata": {...}}` (tapis-shared-java
`RespSearch`/`ResultSearch`) and a sendEvent `result` that is the event's description string
(tapis-jobs `JobSubmitResource.sendEvent`). Status codes follow tapis-jobs: cancel answers 404
for an unknown job (with status "success", as `JobCancelResource` does) and 409 for a terminal
one; sendEvent answers 400 for both.

Reach, as tapis-jobs decides it (`JobSearchResource.getJobSearchList`, `JobsDao`
`getJobsSearchListCountByUsername`): `listType` defaults to MY_JOBS, the jobs whose `owner` is
the caller; SHARED_JOBS are the jobs shared with the caller (through the Security Kernel's
shares of a `JOB_*` resource); ALL_JOBS is the caller's own jobs followed by the shared ones,
paged as one list. Every list type leaves out jobs with `visible: false` (hidden by their
owner); any other value answers 400. Jobs are owned by `emulator.username` unless a seed's
`extra` names another `owner`; `share()` shares one with a user. A job the caller neither owns
nor has been shared answers 403 to every per-job call.

Tokens: the service accepts `emulator.token` until its `exp` passes or `expire_token()` is
called; an expired or unknown JWT answers 401 with the Tapis envelope (status "error",
`TAPIS_SECURITY_JWT_EXPIRED` / `TAPIS_SECURITY_JWT_INVALID`, as the services' JWT filter does).
`issue_token()` makes a new one current (an agent rotating the credential); the password grant
hands out the current token, or a new one when it has expired.

Client credentials, as tapipy uses them (tapipy/tapis.py `get_user_tokens`,
`refresh_user_tokens`): with `client_id`/`client_key` set on the emulator, a token request
that carries them as HTTP Basic authorization gets a refresh token beside the access token
(password grant), and a `refresh_token` grant with them and a refresh token the emulator handed
out gets a new pair; wrong client credentials answer 401. `grants` lists the grant type of
every token request."""

from __future__ import annotations

import base64
import fnmatch
import functools
import itertools
import json
import re
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

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

VERSION = "1.8.0"
DEFAULT_LIMIT = 100
TOKEN_TTL_S = 10 * 365 * 24 * 3600  # far beyond any test: tapipy refreshes tokens near expiry
TERMINAL = frozenset({"FINISHED", "CANCELLED", "FAILED"})
RUNNING = frozenset({"RUNNING", "ARCHIVING"})
CONDITION = {"FINISHED": "NORMAL_COMPLETION", "CANCELLED": "CANCELLED_BY_USER"}
LIST_TYPES = ("MY_JOBS", "SHARED_JOBS", "ALL_JOBS")  # tapis-jobs JobListType
# Reserved query parameters of a dedicated search endpoint (tapis-shared-java SearchUtils),
# plus listType, which JobSearchResource reads itself.
RESERVED = frozenset(
    {"pretty", "select", "search", "orderby", "limit", "skip", "startafter", "computetotal"}
    | {"listtype"}
)
# JobListDTO: the summary a search without `select` and jobs/list return (spec).
SUMMARY_FIELDS = (
    "uuid", "name", "owner", "appId", "created", "status", "condition", "remoteStarted",
    "ended", "tenant", "execSystemId", "archiveSystemId", "appVersion", "lastUpdated",
)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _values(want: str) -> frozenset[str]:
    """The comma-separated values of an `in`/`nin` condition, split once per query, not once
    per record (a re-check asks `uuid.in` with 50 uuids)."""
    return frozenset(want.split(","))


SEARCH_OPS: dict[str, Callable[[str, str], bool]] = {
    "eq": lambda have, want: have == want,
    "neq": lambda have, want: have != want,
    "in": lambda have, want: have in _values(want),
    "nin": lambda have, want: have not in _values(want),
    # LIKE wildcards: `*` any run of characters, `!` one character (SearchUtils).
    "like": lambda have, want: fnmatch.fnmatchcase(have, want.replace("!", "?")),
    "nlike": lambda have, want: not fnmatch.fnmatchcase(have, want.replace("!", "?")),
}
_ORDER_ITEM = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\((asc|desc)\))?$", re.IGNORECASE)
_EVENT_DETAIL = re.compile(r"^[a-zA-Z0-9_]+$")  # tapis-jobs ReqUserEvent


class Dialect(StrEnum):
    SPEC = "spec"  # shapes as the OpenAPI spec in tapipy declares them
    SERVER = "server"  # shapes as the tapis-jobs service serialises them


@dataclass
class Exchange:
    """One request and the answer it got, for tests that check the wire."""

    operation: str
    request: Request
    response: Response


@dataclass
class _Job(TableJob):
    """`due` is when a cancelled job reaches CANCELLED; `events` are its user events."""

    events: list[dict[str, str]] = field(default_factory=list)

    def reason(self) -> str | None:
        """The eventData of the job's last user event: reaper sends its reason there."""
        return self.events[-1]["eventData"] if self.events else None


def iso(epoch: float) -> str:
    """Epoch seconds as Tapis writes instants: ISO 8601, microseconds, `Z`."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def make_token(tenant: str, username: str, now: float, ttl_s: float = TOKEN_TTL_S) -> str:
    """An unsigned but well-formed Tapis access JWT (random signature bytes)."""

    def segment(data: dict[str, Any] | bytes) -> str:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {
        "jti": str(uuidlib.uuid4()),
        "iss": f"https://{tenant}.tapis.io/v3/tokens",
        "sub": f"{username}@{tenant}",
        "tapis/tenant_id": tenant,
        "tapis/token_type": "access",
        "tapis/delegation": False,
        "tapis/username": username,
        "tapis/account_type": "user",
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    header = {"alg": "RS256", "typ": "JWT"}
    return ".".join((segment(header), segment(claims), segment(secrets.token_bytes(64))))


def token_expiry(token: str) -> float:
    """The `exp` claim of a JWT, unverified; 0.0 when it has none or is no JWT."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


def envelope(
    result: Any = None, message: str = "", status: str = "success", metadata: Any = None
) -> dict[str, Any]:
    """Tapis' response stanza. A null result is left out, as the service's Gson does."""
    body: dict[str, Any] = {
        "status": status,
        "message": message,
        "version": VERSION,
        "commit": "emulated",
        "build": "emulated",
        "metadata": {} if metadata is None else metadata,
    }
    if result is not None:
        body["result"] = result
    return body


def error(http_status: int, message: str, result: Any = None, status: str = "error") -> Response:
    return Response(http_status, envelope(result, message, status))


class TapisEmulator(EmulatorServer):
    """Tapis Jobs v3 in memory. Beyond the base knobs: `dialect` (see the module docstring),
    `record_exchanges` (keep every request and answer in `exchanges`), and the identity."""

    mutating_operations = ("cancelJob", "sendEvent")
    cancel_operations = ("cancelJob",)
    table: JobTable[_Job]

    def __init__(
        self,
        knobs: Knobs | None = None,
        clock: Callable[[], float] = time.time,
        *,
        tenant: str = "emulated",
        username: str = "reaper",
        password: str | None = None,
        dialect: Dialect | str = Dialect.SPEC,
        record_exchanges: bool = False,
        token_ttl_s: float = TOKEN_TTL_S,
    ) -> None:
        super().__init__(knobs, clock)
        self.tenant, self.username = tenant, username
        self.password = password or secrets.token_urlsafe(16)
        # Real time, not `clock`: tapipy compares the token's `exp` with its own clock.
        self.token_ttl_s = token_ttl_s
        self.expired: set[str] = set()
        self.token = make_token(tenant, username, time.time(), token_ttl_s)
        self.dialect = Dialect(dialect)
        self.record_exchanges = record_exchanges
        self.exchanges: list[Exchange] = []
        self.shares: dict[str, set[str]] = {}  # job uuid → the users it is shared with
        self._ids = itertools.count(1)
        self.client_id: str | None = None  # client credentials the Authenticator knows
        self.client_key: str | None = None
        self.refresh_tokens: set[str] = set()  # refresh tokens handed out and still valid
        self.grants: list[str] = []  # grant_type of every token request, in order

    # -- routing --------------------------------------------------------------------------------
    def route(self, request: Request) -> Route:
        parts = [p for p in request.path.split("/") if p]
        method, tail = request.method, parts[2:]
        if parts == ["v3", "oauth2", "tokens"] and method == "POST":
            return "createToken", lambda: self._create_token(request)
        if parts[:2] != ["v3", "jobs"] or not tail:
            return "notFound", lambda: error(404, f"no such path: {request.path}")
        routes: dict[tuple[str, str], tuple[str, Callable[[], Response]]] = {
            ("GET", "search"): ("searchJobs", lambda: self._search(request)),
            ("GET", "list"): ("listJobs", lambda: self._list(request)),
            ("GET", ""): ("getJob", lambda: self._get(tail[0])),
            ("GET", "status"): ("getJobStatus", lambda: self._status(tail[0])),
            ("POST", "cancel"): ("cancelJob", lambda: self._cancel(tail[0])),
            ("POST", "sendEvent"): ("sendEvent", lambda: self._send_event(tail[0], request)),
        }
        collection = tail[0] in ("search", "list")
        key = (method, tail[0] if collection else "/".join(tail[1:]))
        if len(tail) > (1 if collection else 2) or key not in routes:
            return "notFound", lambda: error(404, f"no such path: {request.path}")
        operation, handler = routes[key]
        return operation, self._authorised(request, handler)

    def issue_token(self, ttl_s: float | None = None) -> str:
        """A new token becomes the one the service accepts (the old one stops working)."""
        with self.lock:
            ttl = self.token_ttl_s if ttl_s is None else ttl_s
            self.token = make_token(self.tenant, self.username, time.time(), ttl)
            return self.token

    def expire_token(self) -> None:
        """The current token expires now, as if its `exp` had passed."""
        with self.lock:
            self.expired.add(self.token)

    def _is_expired(self, token: str) -> bool:
        return token in self.expired or token_expiry(token) <= time.time()

    def _authorised(
        self, request: Request, handler: Callable[[], Response]
    ) -> Callable[[], Response]:
        given = request.headers.get("x-tapis-token", "")
        if _same(given, self.token) and not self._is_expired(given):
            return handler
        if given and token_expiry(given) and self._is_expired(given):
            return lambda: error(401, "TAPIS_SECURITY_JWT_EXPIRED The Tapis JWT has expired.")
        return lambda: error(401, "TAPIS_SECURITY_JWT_INVALID Invalid or missing Tapis JWT.")

    def dispatch(self, request: Request) -> Response:
        response = super().dispatch(request)
        if self.record_exchanges:
            with self.lock:
                self.exchanges.append(Exchange(self.route(request)[0], request, response))
        return response

    def throttle_response(self) -> Response:
        return error(429, "Too Many Requests")

    def error_response(self) -> Response:
        return error(500, "TAPIS_INTERNAL_ERROR emulated server error")

    def list_page_number(self, request: Request) -> int:
        try:
            skip, limit = int(request.arg("skip") or 0), self._page_limit(request)
        except ValueError:
            return 1
        return skip // limit + 1

    # -- job table ------------------------------------------------------------------------------
    def add_job(self, spec: JobSpec) -> str:
        job_uuid = spec.id or f"{uuidlib.uuid4()}-007"
        record = self._record(job_uuid, spec)
        self.table.add(_Job(job_uuid, record))
        return job_uuid

    def set_status(self, job_id: str, status: str) -> None:
        with self.lock:
            job = self.table[job_id]
            self.table.unschedule(job)
            self._enter(job, status)

    def share(self, job_id: str, *users: str) -> None:
        """Share the job with `users` (default: the emulator's identity)."""
        with self.lock:
            self.shares.setdefault(job_id, set()).update(users or (self.username,))
            self.table.invalidate()

    def hide(self, job_id: str, hidden: bool = True) -> None:
        """Hide (or unhide) the job as its owner would: no list type shows it."""
        with self.lock:
            self.table[job_id].record["visible"] = not hidden
            self.table.invalidate()

    def events_of(self, job_id: str) -> list[dict[str, str]]:
        with self.lock:
            job = self.table.get(job_id)
            return [dict(e) for e in job.events] if job else []

    def _record(self, job_uuid: str, spec: JobSpec) -> dict[str, Any]:
        created = iso(spec.created_at)
        record: dict[str, Any] = {
            "id": next(self._ids),
            "uuid": job_uuid,
            "name": spec.name,
            "owner": self.username,
            "tenant": self.tenant,
            "description": f"{spec.name} (emulated)",
            "status": spec.status.upper(),
            "lastMessage": f"Job in state {spec.status.upper()}",
            "created": created,
            "lastUpdated": created,
            "appId": "emulated-app",
            "appVersion": "1.0",
            "execSystemId": "emulated-hpc",
            "execSystemLogicalQueue": spec.queue,
            "remoteQueue": spec.queue,
            "archiveSystemId": "emulated-storage",
            "nodeCount": 1,
            "coresPerNode": 1,
            "memoryMB": 1024,
            "maxMinutes": 60,
            "jobType": "BATCH",
            "visible": True,
            "createdby": self.username,
            "createdbyTenant": self.tenant,
            "tags": [f"{k}={v}" if v else k for k, v in spec.tags.items()],
        }
        if spec.started_at is not None:
            record["remoteStarted"] = iso(spec.started_at)
        if record["status"] in TERMINAL:
            self._stamp_end(record)
        return apply_extra(record, spec.extra)

    def complete_cancel(self, job: _Job, due: float) -> None:
        if job.record["status"] not in TERMINAL:
            self._enter(job, "CANCELLED")

    def _enter(self, job: _Job, status: str) -> None:
        record, status = job.record, status.upper()
        self.table.invalidate()  # listings filter and order on the record's attributes
        record["status"] = record["lastMessage"] = status
        record["lastUpdated"] = iso(self.clock())
        if status in RUNNING and "remoteStarted" not in record:
            record["remoteStarted"] = record["lastUpdated"]
        if status in TERMINAL:
            self._stamp_end(record)

    def _stamp_end(self, record: dict[str, Any]) -> None:
        record.setdefault("ended", iso(self.clock()))
        record["condition"] = CONDITION.get(record["status"], "JOB_INTERNAL_ERROR")

    # -- operations -----------------------------------------------------------------------------
    def _search(self, request: Request) -> Response:
        try:
            conditions = parse_conditions(request.query)
            order = parse_order(request.arg("orderBy"))
            skip, limit = int(request.arg("skip") or 0), self._page_limit(request)
            list_type = parse_list_type(request.arg("listType"))
        except ValueError as exc:
            return error(400, f"JOBS_SEARCH_LIST_ERROR {exc}")
        if request.arg("startAfter"):
            return error(400, "JOBS_SEARCH_LIST_ERROR startAfter is not emulated; use skip")
        key = ("search", list_type, _condition_key(request.query), tuple(order))
        matching = self._reachable(key, list_type, order, lambda r: all(c(r) for c in conditions))
        selected = request.arg("select", "summaryAttributes") != "summaryAttributes"
        # Any select but summaryAttributes returns every attribute: the service's select list
        # is still a TODO (JobSearchResource, "TODO selectable fields").
        chunk, _ = self.page_at(matching, skip, limit)  # offset paging: no "next" to offer
        page = [dict(r) if selected else summary(r) for r in chunk]
        meta = {
            "recordCount": len(page),
            "recordLimit": int(request.arg("limit") or DEFAULT_LIMIT),
            "recordsSkipped": skip,
            "orderBy": request.arg("orderBy"),
            "totalCount": len(matching) if _truthy(request.arg("computeTotal")) else -1,
        }
        meta = {k: v for k, v in meta.items() if v is not None}
        message = f"JOBS_SEARCH_RESULT_LIST_RETRIEVED {len(page)} jobs"
        if self.dialect == Dialect.SERVER:
            return Response(200, envelope({"search": page, "metadata": meta}, message))
        return Response(200, envelope(page, message, metadata=meta))

    def _list(self, request: Request) -> Response:
        try:
            order = parse_order(request.arg("orderBy"))
            skip, limit = int(request.arg("skip") or 0), self._page_limit(request)
            list_type = parse_list_type(request.arg("listType"))
        except ValueError as exc:
            return error(400, f"JOBS_LIST_ERROR {exc}")
        ordered = self._reachable(("list", list_type, tuple(order)), list_type, order, _any)
        page = [summary(r) for r in ordered[skip : skip + limit]]
        return Response(200, envelope(page, f"JOBS_LIST_RETRIEVED {len(page)} jobs"))

    def _reached(self, job_uuid: str, missing: Callable[[str], Response]) -> _Job | Response:
        """The job as it stands now, or the answer the service gives instead: `missing` for an
        unknown job, 403 for one the identity neither owns nor has been shared."""
        job = self.table.current(job_uuid)
        if job is None:
            return missing(job_uuid)
        owner = job.record.get("owner")
        if owner == self.username or self.username in self.shares.get(job.id, ()):
            return job
        message = f"JOBS_JOB_NOT_AUTHORIZED User {self.username} may not access job {job_uuid}."
        return error(403, message)

    def _get(self, job_uuid: str) -> Response:
        job = self._reached(job_uuid, _not_found)
        if isinstance(job, Response):
            return job
        return Response(200, envelope(dict(job.record), f"JOBS_JOB_RETRIEVED {job_uuid}"))

    def _status(self, job_uuid: str) -> Response:
        job = self._reached(job_uuid, _not_found)
        if isinstance(job, Response):
            return job
        result = {k: job.record[k] for k in ("status", "condition") if k in job.record}
        return Response(200, envelope(result, f"JOBS_STATUS_RETRIEVED {job_uuid}"))

    def _cancel(self, job_uuid: str) -> Response:
        job = self._reached(job_uuid, _not_found)
        if isinstance(job, Response):
            return job
        status = job.record["status"]
        if status in TERMINAL:
            message = f"JOBSAPI_IN_TERM_STATE Job {job_uuid} is in terminal state {status}."
            return error(409, message, {"name": job_uuid})
        if job.due is None:
            self.table.schedule(job, self.clock() + self.knobs.cancel_delay_s)
            self.table.settle(job)
        accepted = f"JOBS_JOB_CANCEL_ACCEPTED Request to cancel job {job_uuid} accepted."
        return Response(200, envelope({"message": accepted}, accepted))

    def _send_event(self, job_uuid: str, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return error(400, "NET_INVALID_JSON_INPUT job send event")
        data, detail = payload.get("eventData"), payload.get("eventDetail") or "DEFAULT"
        if not isinstance(data, str) or not data.strip():
            return error(400, "TAPIS_NULL_PARAMETER validate eventData")
        if not isinstance(detail, str) or not _EVENT_DETAIL.match(detail):
            return error(400, "TAPIS_INVALID_PARAMETER validate eventDetail")
        job = self._reached(job_uuid, _event_not_found)
        if isinstance(job, Response):
            return job
        if job.record["status"] in TERMINAL:
            return error(400, f"JOBSAPI_IN_TERM_STATE Job {job_uuid} is terminal.")
        job.events.append({"eventData": data, "eventDetail": detail, "created": iso(self.clock())})
        message = "TAPIS_CREATED event JOB_USER_EVENT"
        description = f"JOB_USER_EVENT {detail}: {data}"
        return Response(
            200, envelope(description if self.dialect == Dialect.SERVER else None, message)
        )

    def _create_token(self, request: Request) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return error(400, "Invalid JSON.")
        grant = str(payload.get("grant_type"))
        self.grants.append(grant)
        client = self._client_of(request)
        if client is False:
            return error(401, "Invalid client credentials.")
        if grant == "refresh_token":
            given = str(payload.get("refresh_token", ""))
            if not client or given not in self.refresh_tokens:
                return error(401, "Invalid refresh token or client credentials.")
            self.refresh_tokens.discard(given)  # a refresh token is used once
            self.issue_token()
        else:
            valid = (
                grant == "password"
                and payload.get("username") == self.username
                and _same(str(payload.get("password", "")), self.password)
            )
            if not valid:
                return error(401, "Invalid username/password combination.")
            if self._is_expired(self.token):
                self.issue_token()
        result = {"access_token": self._token_stanza("access_token", self.token)}
        if client:
            refresh = make_token(self.tenant, self.username, time.time(), 100 * self.token_ttl_s)
            self.refresh_tokens.add(refresh)
            result["refresh_token"] = self._token_stanza("refresh_token", refresh)
        return Response(201, envelope(result, "Token created successfully."))

    def _token_stanza(self, kind: str, token: str) -> dict[str, Any]:
        expiry = token_expiry(token)
        return {kind: token, "expires_in": int(expiry - time.time()), "jti": "emulated",
                "expires_at": iso(expiry)}  # fmt: skip

    def _client_of(self, request: Request) -> bool | None:
        """True for the known client credentials (HTTP Basic), False for others, None for
        none given."""
        header = request.headers.get("authorization", "")
        if not header.startswith("Basic "):
            return None
        try:
            given = base64.b64decode(header[6:]).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        if self.client_id is None or self.client_key is None:
            return False
        return _same(given, f"{self.client_id}:{self.client_key}")

    # -- helpers --------------------------------------------------------------------------------
    def _reachable(
        self,
        key: Hashable,
        list_type: str,
        order: list[tuple[str, bool]],
        keep: Callable[[dict[str, Any]], bool],
    ) -> list[dict[str, Any]]:
        """What `list_type` shows of the records `keep` selects: owned, then shared, each in
        `order`, never a hidden job (tapis-jobs pages ALL_JOBS as owned followed by shared)."""

        def owned(record: dict[str, Any]) -> bool:
            return record.get("owner") == self.username

        def shared(record: dict[str, Any]) -> bool:
            return not owned(record) and self.username in self.shares.get(record["uuid"], ())

        parts = {"MY_JOBS": (owned,), "SHARED_JOBS": (shared,), "ALL_JOBS": (owned, shared)}
        listed: list[dict[str, Any]] = []
        for index, part in enumerate(parts[list_type]):

            def select(r: dict[str, Any], part: Callable[[dict[str, Any]], bool] = part) -> bool:
                return r.get("visible", True) is not False and part(r) and keep(r)

            listed += self._ordered((key, index), order, select)
        return listed

    def _ordered(
        self,
        key: Hashable,
        order: list[tuple[str, bool]],
        keep: Callable[[dict[str, Any]], bool],
    ) -> list[dict[str, Any]]:
        """The records `keep` selects, in `order`; `key` names the query for the cache."""

        def select() -> list[dict[str, Any]]:
            return sort_records([j.record for j in self.table.values() if keep(j.record)], order)

        return self.table.listing(key, select)  # type: ignore[no-any-return]

    def _page_limit(self, request: Request) -> int:
        """The page size served: the requested limit (<= 0: unlimited), capped by the knob."""
        limit = int(request.arg("limit") or DEFAULT_LIMIT)
        return min(limit, self.knobs.page_size) if limit > 0 else self.knobs.page_size


def _any(record: dict[str, Any]) -> bool:
    return True


def parse_list_type(value: str | None) -> str:
    """The listType of a request (default MY_JOBS, as the service's). Raises ValueError for a
    value the service rejects."""
    list_type = value or "MY_JOBS"
    if list_type not in LIST_TYPES:
        raise ValueError(f"JOBS_SEARCH_INVALID_LISTTYPE_ERROR {list_type!r}")
    return list_type


def _event_not_found(job_uuid: str) -> Response:
    return error(400, f"JOBS_JOB_NOT_FOUND Job {job_uuid} not found.")


def _not_found(job_uuid: str) -> Response:
    # tapis-jobs answers an unknown job with 404 and status "success" (JobCancelResource).
    message = f"TAPIS_NOT_FOUND Job {job_uuid} not found."
    return error(404, message, {"name": job_uuid}, status="success")


def _same(given: str, secret: str) -> bool:
    """Constant-time comparison that also copes with non-ASCII input."""
    return secrets.compare_digest(given.encode("utf-8", "replace"), secret.encode("utf-8"))


def _condition_key(query: dict[str, list[str]]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The search conditions of a query (its non-reserved parameters), as a cache key."""
    return tuple(sorted((k, tuple(v)) for k, v in query.items() if k.lower() not in RESERVED))


def _truthy(value: str | None) -> bool:
    return (value or "").lower() == "true"


def summary(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in SUMMARY_FIELDS if k in record}


def parse_conditions(query: dict[str, list[str]]) -> list[Callable[[dict[str, Any]], bool]]:
    """Search conditions from the non-reserved query parameters `<attr>.<op>=<value>`. Raises
    ValueError for a malformed condition or an operator the emulator does not implement."""
    conditions: list[Callable[[dict[str, Any]], bool]] = []
    for key, values in query.items():
        if key.lower() in RESERVED:
            continue
        attr, _, op = key.rpartition(".")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", attr) or op.lower() not in SEARCH_OPS:
            raise ValueError(f"invalid search condition {key!r}")
        conditions.extend(_condition(attr, SEARCH_OPS[op.lower()], v) for v in values)
    return conditions


def _condition(
    attr: str, test: Callable[[str, str], bool], want: str
) -> Callable[[dict[str, Any]], bool]:
    return lambda record: test(str(record.get(attr, "")), want)


def parse_order(order_by: str | None) -> list[tuple[str, bool]]:
    """`created(asc),uuid(desc)` → [("created", False), ("uuid", True)]; (attr, descending)."""
    order = []
    for item in filter(None, (order_by or "").split(",")):
        match = _ORDER_ITEM.match(item.strip())
        if match is None:
            raise ValueError(f"invalid orderBy item {item!r}")
        order.append((match.group(1), (match.group(2) or "asc").lower() == "desc"))
    return order


def sort_records(
    records: Iterable[dict[str, Any]], order: list[tuple[str, bool]]
) -> list[dict[str, Any]]:
    """Records sorted by `order` (stable; without an order, in creation order of the table)."""
    result = list(records)
    for attr, descending in reversed(order):
        result.sort(key=lambda r: _sort_key(r.get(attr)), reverse=descending)
    return result


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, bool) or value is None:
        return (2, str(value))
    return (0, value) if isinstance(value, int | float) else (1, str(value))
