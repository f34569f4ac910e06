"""Sutro backend when the API misbehaves: throttling, 5xx past the retry budget, a listing that
fails part-way, timeouts, malformed JSON, a bad key, a closed port. Only BackendError escapes
list/refresh, cancel never raises, and no message or log line carries the API key."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from reaper.backends.base import CancelOutcome
from reaper.backends.http import HttpClient
from reaper.backends.retry import RetryPolicy
from reaper.backends.sutro import SutroBackend
from reaper.emulators.base import JobSpec, Knobs, Request, Response
from reaper.emulators.sutro import SutroEmulator
from reaper.errors import BackendError
from reaper.jobs import Job, Phase
from tests.harness_sutro import make_backend, start_emulator

NOW = time.time()
BAD_KEY = "sk_live_not-the-right-key-0123456789"


@pytest.fixture
def emulator() -> Iterator[SutroEmulator]:
    emu = start_emulator(Knobs(page_size=3))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def backend(emulator: SutroEmulator, sleeps: list[float]) -> Iterator[SutroBackend]:
    b = make_backend(emulator, "sutro", retry=RetryPolicy(attempts=4, sleep=sleeps.append))
    try:
        yield b
    finally:
        b.close()


def seed_running(emulator: SutroEmulator, n: int = 1) -> list[str]:
    return [
        emulator.add_job(JobSpec(f"r{i}", "RUNNING", NOW - 3600 + i, NOW - 60)) for i in range(n)
    ]


def a_job(job_id: str = "job-000001") -> Job:
    created = datetime.fromtimestamp(NOW, UTC)
    return Job("sutro", "sutro", job_id, "r", "", "RUNNING", Phase.RUNNING, created_at=created)


def answer_every_request_with(emulator: SutroEmulator, status: int, body: object) -> None:
    """Make the emulator answer like a deployment that got the protocol wrong."""

    def route(request: Request) -> tuple[str, Callable[[], Response]]:
        return "ListJobs", lambda: Response(status, body)

    emulator.route = route  # type: ignore[method-assign]


def listed(backend: SutroBackend) -> list[Job]:
    return [job for page in backend.list_active() for job in page]


def backend_error(call: Callable[[], object], *secrets: str) -> BackendError:
    """Run `call`, expecting a BackendError whose message holds none of `secrets`."""
    with pytest.raises(BackendError) as info:
        call()
    for secret in secrets:
        assert secret not in str(info.value)
    assert info.value.backend == "sutro"
    return info.value


# -- throttling and 5xx ---------------------------------------------------------------------------
def test_throttling_then_success(emulator, backend, sleeps) -> None:
    ids = seed_running(emulator, 2)
    emulator.knobs.throttle_first = 2
    assert sorted(j.id for j in listed(backend)) == sorted(ids)
    assert emulator.calls["ListJobs"] == 3
    assert len(sleeps) == 2  # one backoff per retry


def test_retry_after_is_honoured_and_capped(emulator, backend, sleeps) -> None:
    seed_running(emulator)
    emulator.retry_after = 2
    emulator.knobs.throttle_first = 1
    assert len(listed(backend)) == 1
    assert sleeps[0] == 2.0  # the server's wish, then the jittered backoff
    emulator.retry_after = 3600
    emulator.knobs.throttle_first = 1
    listed(backend)
    assert sleeps[2] == 30.0  # capped: a sweep is never stalled for an hour


def test_5xx_past_the_retry_budget(emulator, backend) -> None:
    (job_id,) = seed_running(emulator)
    (job,) = listed(backend)
    emulator.knobs.fail_first = 100
    error = backend_error(lambda: listed(backend), emulator.api_key)
    assert "HTTP 500" in str(error) and "4 tries" in str(error)
    assert emulator.calls["ListJobs"] == 1 + 4
    backend_error(lambda: backend.refresh(job), emulator.api_key)
    result = backend.cancel(job, "r")
    assert result.outcome == CancelOutcome.FAILED and "HTTP 500" in (result.error or "")
    assert emulator.api_key not in (result.error or "")
    emulator.knobs.fail_first = 0
    assert emulator.status_of(job_id) == "RUNNING"


def test_a_listing_that_fails_part_way_raises_after_the_good_pages(emulator, backend) -> None:
    seed_running(emulator, 9)
    emulator.knobs.fail_list_page = 2
    pages = backend.list_active()
    assert len(next(pages)) == 3
    backend_error(lambda: next(pages), emulator.api_key)


def test_random_faults_never_leak_another_exception() -> None:
    knobs = Knobs(page_size=3, error_rate=0.3, throttle_rate=0.2, seed=7)
    with SutroEmulator(knobs) as emulator:
        assert isinstance(emulator, SutroEmulator)
        backend = make_backend(emulator, "sutro")
        ids = seed_running(emulator, 8)
        outcomes = set()
        for job_id in ids * 3:
            try:
                listed(backend)
                backend.refresh(a_job(job_id))
            except BackendError as exc:
                assert emulator.api_key not in str(exc)
            outcomes.add(backend.cancel(a_job(job_id), "r").outcome)
        backend.close()
    assert CancelOutcome.CANCELLED in outcomes
    assert outcomes <= {
        CancelOutcome.CANCELLED,
        CancelOutcome.ALREADY_TERMINAL,
        CancelOutcome.FAILED,
    }


# -- timeouts, malformed answers, auth, network ---------------------------------------------------
def test_a_hanging_api_times_out(emulator) -> None:
    backend = make_backend(emulator, "sutro", timeout=(1.0, 0.2))
    emulator.knobs.hang = True
    error = backend_error(lambda: listed(backend), emulator.api_key)
    assert "timeout" in str(error)
    assert emulator.calls["ListJobs"] == 1  # a timeout is not retried: it would stall the sweep
    result = backend.cancel(a_job(), "r")
    assert result.outcome == CancelOutcome.FAILED and "timeout" in (result.error or "")
    backend.close()


def test_malformed_json(emulator, backend) -> None:
    emulator.knobs.malformed = True
    error = backend_error(lambda: listed(backend), emulator.api_key)
    assert "malformed JSON" in str(error)
    backend_error(lambda: backend.refresh(a_job()), emulator.api_key)
    assert backend.cancel(a_job(), "r").outcome == CancelOutcome.FAILED


def test_a_listing_without_jobs_is_an_error_not_an_empty_backend(emulator, backend) -> None:
    answer_every_request_with(emulator, 200, {"message": "ok"})
    assert "`jobs`" in str(backend_error(lambda: listed(backend), emulator.api_key))


def test_a_repeated_cursor_ends_the_listing_with_an_error(emulator, backend) -> None:
    record = {"job_id": "j1", "status": "RUNNING", "datetime_created": "2025-01-01T00:00:00Z"}
    answer_every_request_with(emulator, 200, {"jobs": [record], "next_cursor": "same"})
    assert "repeated a cursor" in str(backend_error(lambda: listed(backend)))
    assert emulator.calls["ListJobs"] == 2


def test_an_empty_page_with_a_cursor_ends_the_listing_with_an_error(emulator, backend) -> None:
    answer_every_request_with(emulator, 200, {"jobs": [], "next_cursor": "fresh"})
    assert "empty page" in str(backend_error(lambda: listed(backend)))
    assert emulator.calls["ListJobs"] == 1


def test_a_bad_key_is_an_auth_error_that_names_no_key(emulator, caplog) -> None:
    seed_running(emulator)
    backend = make_backend(emulator, "sutro", api_key=BAD_KEY)
    with caplog.at_level(logging.DEBUG):
        error = backend_error(lambda: listed(backend), BAD_KEY, emulator.api_key)
        assert "authentication failed (HTTP 401)" in str(error)
        backend_error(lambda: backend.refresh(a_job()), BAD_KEY)
        result = backend.cancel(a_job(), "r")
    assert result.outcome == CancelOutcome.FAILED and BAD_KEY not in (result.error or "")
    assert emulator.calls["ListJobs"] == 1  # 401 is not retried
    assert BAD_KEY not in caplog.text
    backend.close()


def test_a_closed_port_is_a_backend_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    backend = SutroBackend("sutro", HttpClient(url), url, BAD_KEY, timeout=(0.5, 0.5))
    error = backend_error(lambda: listed(backend), BAD_KEY)
    assert "connection failed" in str(error)
    assert backend.cancel(a_job(), "r").outcome == CancelOutcome.FAILED
    backend.close()


def test_a_redirect_is_reported_not_followed(emulator, backend) -> None:
    """A moved API is an error naming the 3xx: the key is never sent where the Location says."""
    elsewhere = SutroEmulator(Knobs()).start()
    try:
        moved = Response(301, {"detail": "moved"}, {"Location": f"{elsewhere.url}/v1/list-jobs"})
        emulator.route = lambda request: ("ListJobs", lambda: moved)  # type: ignore[method-assign]
        error = backend_error(lambda: listed(backend), emulator.api_key)
        assert "HTTP 301" in str(error)
        assert backend.cancel(a_job(), "r").outcome == CancelOutcome.FAILED
        assert sum(elsewhere.calls.values()) == 0
    finally:
        elsewhere.stop()


def test_a_key_echoed_by_the_server_is_redacted(emulator, backend) -> None:
    key = emulator.api_key
    answer_every_request_with(emulator, 400, {"message": f"bad key {key}"})
    error = backend_error(lambda: listed(backend), key)
    assert "HTTP 400" in str(error) and "***" in str(error)
