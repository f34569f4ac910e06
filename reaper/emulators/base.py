"""Shared machinery of the emulators: a threaded loopback HTTP server with an in-memory job
table, a per-operation call counter, and fault knobs. Each emulator supplies `route()`, which
names the operation and returns the response; this module adds latency, errors and throttling."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


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
    seed: int | None = None


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


class EmulatorServer:
    """Base class. Subclasses implement `route(request)` → (operation, handler) and the two
    protocol-specific fault responses. `calls` counts requests per operation."""

    def __init__(self, knobs: Knobs | None = None, clock: Callable[[], float] = time.time) -> None:
        self.knobs = knobs or Knobs()
        self.clock = clock
        self.calls: Counter[str] = Counter()
        self.lock = threading.RLock()
        self._rng = random.Random(self.knobs.seed)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._listings: dict[Hashable, Any] = {}

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

    # -- job table (every emulator implements these) -------------------------------------------
    def add_job(self, spec: JobSpec) -> str:
        """Seed one job; returns its id."""
        raise NotImplementedError

    def status_of(self, job_id: str) -> str | None:
        """Native status now (after any cancel delay has elapsed), or None if unknown."""
        raise NotImplementedError

    def set_status(self, job_id: str, status: str) -> None:
        raise NotImplementedError

    def remove_job(self, job_id: str) -> None:
        raise NotImplementedError

    def reason_of(self, job_id: str) -> str | None:
        """The cancel reason the API recorded on the job, where the API records one."""
        return None

    def mutating_calls(self) -> int:
        """Requests that could change a job (cancel, terminate, send event)."""
        raise NotImplementedError

    # -- listing cache --------------------------------------------------------------------------
    # A list call filters and orders the whole job table; paging through 100,000 jobs would redo
    # that for every page. Emulators keep the result per query until the table changes.
    def cached_listing(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The listing of `key`, computed once per state of the job table. Call with the lock
        held, and call `invalidate()` whenever a job is added, removed or changes status."""
        if key not in self._listings:
            self._listings[key] = compute()
        return self._listings[key]

    def invalidate(self) -> None:
        """Forget the cached listings: the job table changed."""
        self._listings.clear()

    # -- request pipeline -----------------------------------------------------------------------
    def dispatch(self, request: Request) -> Response:
        operation, handler = self.route(request)
        with self.lock:
            self.calls[operation] += 1
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
        with self.lock:
            return handler()

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

    return Handler
