"""Shared machinery of the emulators: a threaded loopback HTTP server with an in-memory job
table (`JobTable`), a per-operation call counter, and fault knobs. Each emulator supplies
`route()`, which names the operation and returns the response, and renders its own job records;
this module adds latency, errors and throttling, and keeps the jobs."""

from __future__ import annotations

import json
import random
import socket
import struct
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, urlsplit


class LostAnswer(StrEnum):
    """How the answer to a cancel that was applied gets lost (`Knobs.lose_cancel_answers`)."""

    ERROR = "error"  # the protocol's 500
    RESET = "reset"  # the connection is reset (RST) instead of an answer
    TIMEOUT = "timeout"  # no answer for `lost_answer_wait_s`: the client times out first


# A Response status the handler turns into a reset connection instead of an answer.
RESET_STATUS = 0


@dataclass
class Knobs:
    """Fault and behaviour knobs, changeable while the server runs."""

    latency_s: float = 0.0  # added to every request
    error_rate: float = 0.0  # fraction of requests answered with a 5xx
    throttle_rate: float = 0.0  # fraction of requests answered with a throttling error
    throttle_first: int = 0  # the next N requests are throttled, then normal service resumes
    fail_first: int = 0  # the next N requests get a 5xx
    page_size: int = 100  # the largest page a list call returns, whatever the client asks
    cancel_delay_s: float = 0.0  # how long a cancelled job takes to reach its terminal state
    fail_list_page: int | None = None  # 1-based list page that always fails with a 5xx
    malformed: bool = False  # answer 200 with a body that is not JSON
    hang: bool = False  # never answer (until the server stops)
    cancel_latency_s: float = 0.0  # added to cancel calls only: slow cancels
    # The next N cancel calls are applied, and then their answer is lost as `lost_answer` says:
    # what a client sees when a server dies or a proxy times out after doing the work.
    lose_cancel_answers: int = 0
    lost_answer: LostAnswer = LostAnswer.ERROR
    lost_answer_wait_s: float = 5.0  # how long a TIMEOUT answer is held back
    fail_cancels: int = 0  # the next N cancel calls get a 5xx and are NOT applied
    seed: int | None = None
    # Hostile listings (docs/backends.md, "Listings"): after the last page, this many more
    # pages, each the first page again; and a listing whose last page still offers a next page
    # (empty ones past the end, each with a fresh cursor), forever.
    repeat_pages: int = 0
    endless_pages: bool = False
    # The server's clock, in every answer's Date header, is the host's plus this (seconds).
    clock_offset_s: float = 0.0


# In `JobSpec.extra`: remove this field from the record the emulator renders (a record that
# lacks `startedAt`, `createdAt`, ...).
DROP: Any = object()


def apply_extra(record: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`record` with `extra` merged in (raw overrides of any type, NaN and infinities
    included: the emulators' JSON writes them as `NaN`/`Infinity`, as a careless server would),
    and the fields set to DROP removed."""
    for key, value in extra.items():
        if value is DROP:
            record.pop(key, None)
        else:
            record[key] = value
    return record


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else {}

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)


Route = tuple[str, Callable[[], Response]]  # (operation name, handler)


@dataclass
class JobSpec:
    """A job to seed into any emulator; each emulator turns it into its native record."""

    name: str
    status: str  # native status name of that backend
    created_at: float  # epoch seconds
    started_at: float | None = None
    queue: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    id: str | None = None  # generated when None
    extra: dict[str, Any] = field(default_factory=dict)  # raw fields merged into the record


@dataclass
class TableJob:
    """One job of a `JobTable`: its id, its record as the emulator's API renders it (status
    included), and `due`, when a cancel still under way completes (None: no such cancel)."""

    id: str
    record: dict[str, Any]
    due: float | None = field(default=None, kw_only=True)

    def reason(self) -> str | None:
        """The cancel reason the API recorded on the job, where the API records one."""
        return None


J = TypeVar("J", bound=TableJob)
RECENT_REQUESTS = 1000  # requests `EmulatorServer.recent` keeps, newest last
T = TypeVar("T")


class JobTable(Generic[J]):
    """The jobs of one emulator, by id in insertion order, with the lock that guards them,
    the cancels still under way, and a cache of listings.

    A cancel that takes time is `schedule`d with the moment it completes; `settle` completes it
    once the clock has reached that moment by calling `on_due(job, due)`, the emulator's own
    transition. `add`, `remove` and `reason_of` take the lock; the other methods expect it held
    (the request pipeline holds it around every handler)."""

    def __init__(self, clock: Callable[[], float], on_due: Callable[[J, float], None]) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self._on_due = on_due
        self._jobs: dict[str, J] = {}
        self._timed: set[str] = set()  # ids of jobs with a cancel under way (`due` set)
        self._listings: dict[Hashable, Any] = {}

    # -- jobs -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[str]:
        """The job ids, in table order."""
        return iter(self._jobs)

    def __getitem__(self, job_id: str) -> J:
        return self._jobs[job_id]

    def get(self, job_id: str) -> J | None:
        """The job as stored (a cancel under way not settled), or None."""
        return self._jobs.get(job_id)

    def values(self) -> Iterable[J]:
        """The jobs as stored, in table order."""
        return self._jobs.values()

    def add(self, job: J) -> None:
        """Add `job`, or replace the job of its id."""
        with self.lock:
            self._jobs[job.id] = job
            self.invalidate()

    def remove(self, job_id: str) -> None:
        with self.lock:
            self._jobs.pop(job_id, None)
            self._timed.discard(job_id)
            self.invalidate()

    def reason_of(self, job_id: str) -> str | None:
        with self.lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.reason()

    # -- cancels under way ----------------------------------------------------------------------
    def schedule(self, job: J, due: float) -> None:
        """A cancel of `job` is under way and completes at `due`."""
        job.due = due
        self._timed.add(job.id)

    def unschedule(self, job: J) -> None:
        """Forget the cancel under way of `job`, if any."""
        job.due = None
        self._timed.discard(job.id)

    def settle(self, job: J) -> J:
        """`job`, with its cancel under way completed if its due time has passed."""
        if job.due is not None and self.clock() >= job.due:
            due = job.due
            self.unschedule(job)
            self._on_due(job, due)
        return job

    def current(self, job_id: str) -> J | None:
        """The job as it stands now (settled), or None if unknown."""
        job = self._jobs.get(job_id)
        return None if job is None else self.settle(job)

    def settle_all(self) -> None:
        """Settle every job with a cancel under way."""
        for job_id in list(self._timed):
            self.settle(self._jobs[job_id])

    # -- listing cache --------------------------------------------------------------------------
    # A list call filters and orders the whole job table; paging through 100,000 jobs would redo
    # that for every page. The table keeps the result per query until the jobs change.
    def listing(self, key: Hashable, compute: Callable[[], Any], *, settle: bool = True) -> Any:
        """The listing of `key`, computed once per state of the table. `settle` first completes
        the cancels that are due, so that the cached listing holds settled states (pass False
        where the listing does not depend on status). Call `invalidate()` whenever a job
        changes in a way a listing shows."""
        if settle:
            self.settle_all()
        if key not in self._listings:
            self._listings[key] = compute()
        return self._listings[key]

    def invalidate(self) -> None:
        """Forget the cached listings: the jobs changed."""
        self._listings.clear()


@dataclass(frozen=True)
class CallRecord:
    """One request, as `EmulatorServer.record_calls` keeps it: who made it (`caller_of`),
    the operation and path, and when it was served (wall clock, as the audit log's `ts`)."""

    caller: str
    operation: str
    path: str
    started: float
    ended: float


class EmulatorServer:
    """Base class. Subclasses implement `route(request)` → (operation, handler), the two
    protocol-specific fault responses, and how a job is added, changes status and completes a
    cancel; `table` holds the jobs. `calls` counts requests per operation, and those named in
    `mutating_operations` are the ones that could change a job; `recent` keeps the newest
    requests as (operation, method, path), for tests that check what a client really sent."""

    mutating_operations: tuple[str, ...] = ()
    # The operations that end a job (a subset of `mutating_operations`), for the cancel knobs.
    cancel_operations: tuple[str, ...] = ()

    def __init__(self, knobs: Knobs | None = None, clock: Callable[[], float] = time.time) -> None:
        self.knobs = knobs or Knobs()
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.recent: deque[tuple[str, str, str]] = deque(maxlen=RECENT_REQUESTS)
        self.table: JobTable[Any] = JobTable(clock, self.complete_cancel)
        self.lock = self.table.lock
        self._rng = random.Random(self.knobs.seed)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.call_log: list[CallRecord] | None = None  # None: not recording (record_calls)

    # -- protocol hooks -------------------------------------------------------------------------
    def route(self, request: Request) -> Route:
        raise NotImplementedError

    def throttle_response(self) -> Response:
        return Response(429, {"message": "Too Many Requests"})

    def error_response(self) -> Response:
        return Response(500, {"message": "Internal Server Error"})

    def is_list_operation(self, operation: str) -> bool:
        return operation.startswith("list") or operation.startswith("search")

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}"

    def start(self) -> EmulatorServer:
        handler = _make_handler(self)
        self._server = _QuietServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        # A short poll interval makes stop() return in ~50 ms instead of up to 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- job table ----------------------------------------------------------------------------
    def add_job(self, spec: JobSpec) -> str:
        """Seed one job; returns its id."""
        raise NotImplementedError

    def set_status(self, job_id: str, status: str) -> None:
        raise NotImplementedError

    def complete_cancel(self, job: Any, due: float) -> None:
        """The cancel under way of `job` has reached its `due` time: finish it the way the
        service does. Called by `table`, with the lock held."""
        raise NotImplementedError

    def status_of(self, job_id: str) -> str | None:
        """Native status now (after any cancel delay has elapsed), or None if unknown."""
        with self.lock:
            job = self.table.current(job_id)
            return None if job is None else str(job.record["status"])

    def remove_job(self, job_id: str) -> None:
        self.table.remove(job_id)

    def reason_of(self, job_id: str) -> str | None:
        """The cancel reason the API recorded on the job, where the API records one."""
        return self.table.reason_of(job_id)

    def mutating_calls(self) -> int:
        """Requests that could change a job (cancel, terminate, send event)."""
        with self.lock:
            return sum(self.calls[op] for op in self.mutating_operations)

    # -- request pipeline -----------------------------------------------------------------------
    def record_calls(self) -> None:
        """From now on keep a `CallRecord` of every request in `call_log` (tests of several
        reaper instances use it to see which instance called, and when)."""
        with self.lock:
            self.call_log = []

    def caller_of(self, request: Request) -> str:
        """Who made `request`; protocols with per-caller credentials override this."""
        return request.headers.get("user-agent", "")

    def dispatch(self, request: Request) -> Response:
        started = time.time()
        operation, handler = self.route(request)
        response = self._serve(operation, handler, request)
        if self.call_log is not None:
            record = CallRecord(self.caller_of(request), operation, request.path, started,
                                time.time())  # fmt: skip
            with self.lock:
                self.call_log.append(record)
        return response

    def _serve(self, operation: str, handler: Callable[[], Response], request: Request) -> Response:
        with self.lock:
            self.calls[operation] += 1
            self.recent.append((operation, request.method, request.path))
            fault = self._fault_for(operation, request)
        if self.knobs.latency_s:
            time.sleep(self.knobs.latency_s)
        if self.knobs.hang:
            self._stopping.wait()
            return self.error_response()
        if fault is not None:
            return fault
        if self.knobs.malformed:
            return Response(200, b'{"jobs": [ this is not json')
        if operation in self.cancel_operations:
            return self._cancel_with_knobs(handler)
        with self.lock:
            return handler()

    def _cancel_with_knobs(self, handler: Callable[[], Response]) -> Response:
        """A cancel call, with the cancel knobs: slow, refused unapplied, or applied with its
        answer lost."""
        k = self.knobs
        if k.cancel_latency_s:
            time.sleep(k.cancel_latency_s)
        with self.lock:
            if k.fail_cancels > 0:
                k.fail_cancels -= 1
                return self.error_response()
            response = handler()
            lose = k.lose_cancel_answers > 0
            if lose:
                k.lose_cancel_answers -= 1
        if not lose:
            return response
        if k.lost_answer is LostAnswer.TIMEOUT:
            self._stopping.wait(k.lost_answer_wait_s)
        if k.lost_answer is LostAnswer.RESET:
            return Response(RESET_STATUS)
        return self.error_response()

    def _fault_for(self, operation: str, request: Request) -> Response | None:
        k = self.knobs
        if k.throttle_first > 0:
            k.throttle_first -= 1
            return self.throttle_response()
        if k.fail_first > 0:
            k.fail_first -= 1
            return self.error_response()
        if (
            k.fail_list_page is not None
            and self.is_list_operation(operation)
            and self.list_page_number(request) == k.fail_list_page
        ):
            return self.error_response()
        if k.throttle_rate and self._rng.random() < k.throttle_rate:
            return self.throttle_response()
        if k.error_rate and self._rng.random() < k.error_rate:
            return self.error_response()
        return None

    def list_page_number(self, request: Request) -> int:
        """1-based page number of a list request; protocols override to read their cursor."""
        return 1

    def page_at(self, items: list[T], offset: int, limit: int) -> tuple[list[T], bool]:
        """The page of `items` starting at `offset`, and whether the answer offers a next page,
        with the listing knobs applied: `repeat_pages` pages past the end repeat the first
        page, and `endless_pages` offers one more page every time."""
        if offset < len(items):
            chunk, more, extra = items[offset : offset + limit], offset + limit < len(items), -1
        else:
            extra = (offset - len(items)) // max(1, limit)  # 0-based among the pages past the end
            chunk, more = (items[:limit] if extra < self.knobs.repeat_pages else []), False
        more = more or self.knobs.endless_pages or extra + 1 < self.knobs.repeat_pages
        return chunk, more

    def server_time(self) -> float:
        """The server's clock as its Date header shows it."""
        return self.clock() + self.knobs.clock_offset_s


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up (a killed `reaper run`, a timed-out request) is normal here, not
    an error worth a traceback on stderr."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _make_handler(emulator: EmulatorServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command,
                path=parts.path,
                query=parse_qs(parts.query),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            try:
                response = emulator.dispatch(request)
            except Exception as exc:  # an emulator bug must surface as a 500, not a hung socket
                response = Response(500, {"message": f"emulator error: {exc!r}"})
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up first (a timeout test against `hang`): nobody to answer.
                self.close_connection = True

        def _send(self, response: Response) -> None:
            if response.status == RESET_STATUS:
                # SO_LINGER with a zero timeout: close() sends RST, the client sees a reset.
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.close_connection = True
                return
            body = response.body
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(response.status)
            headers = {"Content-Type": "application/json", **response.headers}
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def date_time_string(self, timestamp: float | None = None) -> str:
            # The Date header of every answer (send_response): the emulator's clock, offset.
            return super().date_time_string(
                emulator.server_time() if timestamp is None else timestamp
            )

    return Handler
