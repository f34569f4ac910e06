"""The Tapis backend when the service misbehaves: throttling, 5xx beyond the retry budget, a
listing that fails part-way, hangs, malformed JSON, refused connections and bad tokens. Listing
and re-reading raise BackendError and nothing else; cancel returns FAILED and never raises; no
message ever holds the token."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from reaper.backends.base import CancelOutcome
from reaper.backends.retry import RetryPolicy
from reaper.backends.tapis import TapisBackend
from reaper.emulators.base import JobSpec, Knobs, Request, Response
from reaper.emulators.tapis import TapisEmulator, error
from reaper.errors import BackendError
from tests.harness_tapis import make_backend, no_sleep, start_emulator

ATTEMPTS = 3


@pytest.fixture
def emulator() -> Iterator[TapisEmulator]:
    emu = start_emulator(Knobs(page_size=2))
    try:
        yield emu
    finally:
        emu.stop()


def backend_for(emulator: TapisEmulator, **kw: Any) -> TapisBackend:
    kw.setdefault("retry", RetryPolicy(attempts=ATTEMPTS, sleep=no_sleep))
    return make_backend(emulator, "tacc", **kw)


def seed(emulator: TapisEmulator, n: int = 1) -> list[str]:
    now = time.time()
    spec = JobSpec(name="sim", status="RUNNING", created_at=now - 60, started_at=now - 30)
    return [emulator.add_job(spec) for _ in range(n)]


def listed(backend: TapisBackend) -> list[Any]:
    return [job for page in backend.list_active() for job in page]


def assert_secret_free(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert secret[-20:] not in text  # not even the signature's tail


def test_throttling_then_success(emulator: TapisEmulator) -> None:
    ids = seed(emulator, 3)
    emulator.knobs.throttle_first = 2
    assert sorted(j.id for j in listed(backend_for(emulator))) == sorted(ids)
    assert emulator.calls["searchJobs"] == 2 + 2  # two 429s, a full page, a short one


def test_cancel_is_retried_through_throttling(emulator: TapisEmulator) -> None:
    (job_id,) = seed(emulator)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    emulator.knobs.throttle_first = 2  # sendEvent answers 429 twice, then records the reason
    assert backend.cancel(job, "throttled").outcome == CancelOutcome.CANCELLED
    assert emulator.reason_of(job_id) == "throttled"


def test_5xx_beyond_the_retry_budget(emulator: TapisEmulator) -> None:
    seed(emulator)
    emulator.knobs.fail_first = 100
    with pytest.raises(BackendError) as raised:
        listed(backend_for(emulator))
    message = str(raised.value)
    assert "HTTP 500" in message and f"gave up after {ATTEMPTS} attempts" in message
    assert emulator.calls["searchJobs"] == ATTEMPTS
    assert_secret_free(message, emulator.token)


def test_a_listing_that_fails_part_way(emulator: TapisEmulator) -> None:
    seed(emulator, 5)
    emulator.knobs.fail_list_page = 2
    pages = backend_for(emulator).list_active()
    assert len(next(pages)) == 2
    with pytest.raises(BackendError, match="HTTP 500"):
        next(pages)


def test_refresh_and_cancel_under_5xx(emulator: TapisEmulator) -> None:
    seed(emulator)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    emulator.knobs.fail_first = 100
    with pytest.raises(BackendError, match="getJob failed: HTTP 500"):
        backend.refresh(job)
    result = backend.cancel(job, "boom")
    assert result.outcome == CancelOutcome.FAILED
    assert result.error is not None and "cancelJob failed: HTTP 500" in result.error
    assert emulator.calls["cancelJob"] == ATTEMPTS
    assert_secret_free(result.error, emulator.token)


def test_a_hung_service_times_out(emulator: TapisEmulator) -> None:
    seed(emulator)
    # A second for the listing before the hang: a loaded machine's slow answer is not the fault.
    backend = backend_for(emulator, timeout=(1.0, 1.0))
    (job,) = listed(backend)
    emulator.knobs.hang = True
    with pytest.raises(BackendError, match="timed out") as raised:
        listed(backend)
    assert "no answer from the Jobs service" in str(raised.value)
    result = backend.cancel(job, "stuck")
    assert result.outcome == CancelOutcome.FAILED and "timed out" in (result.error or "")
    assert emulator.calls["searchJobs"] == 3  # 2 before the hang, 1 timed out: no retry
    assert_secret_free(str(raised.value) + (result.error or ""), emulator.token)


def test_malformed_json(emulator: TapisEmulator) -> None:
    seed(emulator)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    emulator.knobs.malformed = True
    with pytest.raises(BackendError, match="malformed response"):
        listed(backend)
    with pytest.raises(BackendError, match="malformed response"):
        backend.refresh(job)
    result = backend.cancel(job, "garbled")
    assert result.outcome == CancelOutcome.FAILED and "unconfirmed" in (result.error or "")


def test_a_refused_connection(emulator: TapisEmulator) -> None:
    seed(emulator)
    (job,) = listed(backend_for(emulator))
    backend = backend_for(emulator)  # no pooled keep-alive connection to the old server
    emulator.stop()
    with pytest.raises(BackendError, match="no answer from the Jobs service"):
        listed(backend)
    assert backend.cancel(job, "nobody home").outcome == CancelOutcome.FAILED


def test_a_bad_token(emulator: TapisEmulator) -> None:
    seed(emulator)
    wrong = emulator.token[:-8] + "AAAAAAAA"
    backend = backend_for(emulator, token=wrong)
    with pytest.raises(BackendError, match="HTTP 401, authentication failed") as raised:
        listed(backend)
    assert emulator.calls["searchJobs"] == 1  # an auth failure is not retried
    (job_id,) = emulator.table
    good = listed(backend_for(emulator))[0]
    result = backend.cancel(good, "no right")
    assert result.outcome == CancelOutcome.FAILED and "HTTP 401" in (result.error or "")
    assert emulator.status_of(job_id) == "RUNNING"
    assert_secret_free(str(raised.value) + (result.error or ""), wrong, emulator.token)


class OddShapeEmulator(TapisEmulator):
    """Answers searches with JSON that parses but is no list of job objects."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result

    def dispatch(self, request: Request) -> Response:
        if "search" not in request.path:
            return super().dispatch(request)
        return Response(200, {"status": "success", "message": "", "result": self.result})


@pytest.mark.parametrize(
    "result", [[[1, 2]], [{"uuid": 7}], "jobs", {"search": "none"}, [{"tags": [[1]]}]]
)
def test_an_answer_of_the_wrong_shape(result: Any) -> None:
    with OddShapeEmulator(result) as emulator:
        assert isinstance(emulator, TapisEmulator)
        # Records without a uuid are bad records; a page of nothing else adds no job id.
        with pytest.raises(BackendError, match=r"malformed response|added no new job id"):
            listed(backend_for(emulator))


class EchoingEmulator(TapisEmulator):
    """A careless server that quotes the request's token in its error messages."""

    def _authorised(self, request: Request, handler: Any) -> Any:
        token = request.headers.get("x-tapis-token", "")
        return lambda: error(401, f"Invalid JWT {token} presented")

    def error_response(self) -> Response:
        return error(503, f"overloaded; your token was {self.token}")


@pytest.mark.parametrize("knob", ["none", "fail_first"])
def test_a_token_quoted_by_the_server_is_redacted(knob: str) -> None:
    with EchoingEmulator() as emulator:
        assert isinstance(emulator, TapisEmulator)
        emulator.knobs.fail_first = 100 if knob == "fail_first" else 0
        with pytest.raises(BackendError) as raised:
            listed(backend_for(emulator))
    assert "[redacted]" in str(raised.value)
    assert_secret_free(str(raised.value), emulator.token)


@pytest.mark.parametrize(
    "knobs",
    [
        {"fail_first": 100},
        {"throttle_first": 100},
        {"error_rate": 1.0},
        {"malformed": True},
        {"fail_list_page": 1},
    ],
)
def test_only_backend_errors_escape_a_listing(
    emulator: TapisEmulator, knobs: dict[str, Any]
) -> None:
    seed(emulator, 3)
    for key, value in knobs.items():
        setattr(emulator.knobs, key, value)
    with pytest.raises(BackendError) as raised:
        listed(backend_for(emulator))
    assert_secret_free(str(raised.value), emulator.token)


def test_a_redirect_is_reported_not_followed(emulator: TapisEmulator) -> None:
    """A moved Jobs service is an error naming the 3xx, for the listing and for a cancel: the
    token is never sent where the Location says."""
    seed(emulator)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    elsewhere = start_emulator(Knobs())
    try:
        moved = Response(301, {"message": "moved"}, {"Location": f"{elsewhere.url}/v3/jobs"})
        emulator.route = lambda request: ("getJobSearchList", lambda: moved)  # type: ignore[method-assign]
        with pytest.raises(BackendError, match="HTTP 301"):
            listed(backend)
        assert backend.cancel(job, "r").outcome == CancelOutcome.FAILED
        assert sum(elsewhere.calls.values()) == 0
    finally:
        elsewhere.stop()
