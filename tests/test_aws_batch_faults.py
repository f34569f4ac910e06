"""AwsBatchBackend when the service misbehaves: throttling, 5xx past botocore's retry budget, read
timeouts, refused connections, malformed JSON, bad credentials. Only BackendError escapes, and no
message carries a credential."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from reaper.backends.aws_batch import AwsBatchBackend, client_config, redact
from reaper.backends.base import CancelOutcome
from reaper.emulators.aws_batch import AwsBatchEmulator, error_response
from reaper.emulators.base import Knobs, Request, Response, Route
from reaper.errors import BackendError
from tests.daemon_support import wait_for
from tests.harness_aws_batch import make_client

# Shaped like real credentials (AWS's documented example key pair), so that redaction by shape
# is exercised as well as the absence of echoes.
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEXAMPLETOKEN" + "Zm9vYmFy" * 30
CREDENTIALS = {KEY_ID: SECRET}


def assert_no_secret(text: str) -> None:
    for secret in (SECRET, TOKEN, TOKEN[:60], KEY_ID):
        assert secret not in text
    assert re.search(r"Signature=[0-9a-f]{16}", text) is None


@pytest.fixture
def emulator() -> Iterator[AwsBatchEmulator]:
    emu = AwsBatchEmulator(Knobs(page_size=1000), credentials=CREDENTIALS).start()
    emu.seed_jobs("q1", "RUNNING", 5)  # type: ignore[attr-defined]
    try:
        yield emu  # type: ignore[misc]
    finally:
        emu.stop()


def backend_for(emulator: AwsBatchEmulator, **config: Any) -> AwsBatchBackend:
    client = make_client(emulator, client_config(**config), KEY_ID, SECRET, session_token=TOKEN)
    return AwsBatchBackend("batch-test", client, ["q1"])


def list_all(backend: AwsBatchBackend) -> list:
    return [job for page in backend.list_active() for job in page]


def test_throttling_then_success_is_retried_by_botocore(emulator) -> None:
    emulator.knobs.throttle_first = 1
    assert len(list_all(backend_for(emulator))) == 5
    # The first call (DescribeJobQueues, which tells the queue's kind) is throttled and retried;
    # then one ListJobs per active status.
    assert emulator.calls["DescribeJobQueues"] == 1 + 1
    assert emulator.calls["ListJobs"] == 5


def test_5xx_beyond_the_retry_budget_is_a_backend_error(emulator) -> None:
    emulator.knobs.fail_first = 100
    # The listing's first call tells the queue's kind (DescribeJobQueues).
    match = r"DescribeJobQueues failed: ServerException \(HTTP 500\)"
    with pytest.raises(BackendError, match=match):
        list_all(backend_for(emulator))
    assert emulator.calls["DescribeJobQueues"] == 6  # botocore's 1 + 5 retries, no second layer
    assert emulator.calls["ListJobs"] == 0


def test_a_listing_that_fails_part_way_raises_after_the_good_pages(emulator) -> None:
    emulator.knobs.page_size = 2
    emulator.knobs.fail_list_page = 2
    pages = []
    with pytest.raises(BackendError):
        for page in backend_for(emulator, max_retries=1).list_active():
            pages.append(page)
    assert sum(len(p) for p in pages) < 5


def test_a_read_timeout_is_a_backend_error(emulator) -> None:
    emulator.knobs.latency_s = 1.0
    backend = backend_for(emulator, read_timeout_s=0.2, max_retries=1)
    with pytest.raises(BackendError, match="ReadTimeoutError") as caught:
        list_all(backend)
    assert_no_secret(str(caught.value))
    # The client gave up on the second attempt's answer, not on its arrival: on a loaded machine
    # the emulator may count that request a moment after the error was raised. The listing's
    # first call is DescribeJobQueues (it tells the queue's kind).
    wait_for(lambda: emulator.calls["DescribeJobQueues"] >= 2 or None, 15, "the retried call")
    assert emulator.calls["DescribeJobQueues"] == 2


def test_a_refused_connection_is_a_backend_error() -> None:
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    client = make_client(url, client_config(max_retries=1), KEY_ID, SECRET)
    with pytest.raises(BackendError, match="EndpointConnectionError"):
        list_all(AwsBatchBackend("b", client, ["q1"]))


def test_malformed_json_is_a_backend_error_and_a_failed_cancel(emulator) -> None:
    backend = backend_for(emulator)
    (job, *_) = list_all(backend)
    emulator.knobs.malformed = True
    for call in (
        lambda: list_all(backend),
        lambda: backend.enrich([job]),
        lambda: backend.refresh(job),
    ):
        with pytest.raises(BackendError, match="malformed response"):
            call()
    assert backend.cancel(job, "r").outcome == CancelOutcome.FAILED
    assert {r.outcome for r in backend.cancel_many([job], "r")} == {CancelOutcome.FAILED}


@pytest.mark.parametrize(
    ("key_id", "secret", "code"),
    [
        (KEY_ID, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEYXX", "InvalidSignatureException"),
        ("AKIAUNKNOWNKEY000000", SECRET, "UnrecognizedClientException"),
    ],
)
def test_bad_credentials_are_a_backend_error_without_secrets(
    emulator, key_id, secret, code
) -> None:
    client = make_client(emulator, client_config(), key_id, secret, session_token=TOKEN)
    backend = AwsBatchBackend("b", client, ["q1"])
    with pytest.raises(BackendError, match=code) as caught:
        list_all(backend)
    for text in (str(caught.value), repr(caught.value)):
        assert_no_secret(text)
        assert secret not in text and key_id not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_an_unsigned_request_is_rejected(emulator) -> None:
    answer = requests.post(f"{emulator.url}/v1/listjobs", json={"jobQueue": "q1"}, timeout=5)
    assert answer.status_code == 403
    assert answer.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"


class EchoingEmulator(AwsBatchEmulator):
    """A hostile endpoint that echoes the request's credentials back in its error message."""

    def route(self, request: Request) -> Route:
        echo = " ".join(
            f"{h}: {request.headers.get(h, '')}" for h in ("authorization", "x-amz-security-token")
        )
        answer = error_response(400, "ClientException", f"bad request {echo} {TOKEN} {SECRET}")
        return "Echo", lambda: answer


def test_credentials_echoed_by_the_service_are_redacted() -> None:
    emu = EchoingEmulator(credentials=CREDENTIALS).start()
    try:
        backend = backend_for(emu)  # type: ignore[arg-type]
        with pytest.raises(BackendError, match="ClientException") as caught:
            list_all(backend)
        assert_no_secret(str(caught.value))
    finally:
        emu.stop()


@pytest.mark.parametrize(
    ("answer", "expected", "unanswered"),
    [
        (error_response(400, "ClientException", "Job 1234 not found"), CancelOutcome.NOT_FOUND,
         False),
        (error_response(403, "AccessDeniedException", "not authorized"), CancelOutcome.FAILED,
         False),  # a refusal: an answer, which never counts towards giving up on the backend
        (error_response(500, "ServerException", "Internal"), CancelOutcome.FAILED, True),
        (error_response(400, "ThrottlingException", "Rate exceeded"), CancelOutcome.FAILED, True),
    ],
)  # fmt: skip
def test_cancel_turns_terminate_errors_into_outcomes(answer, expected, unanswered) -> None:
    emu = RefusingEmulator(answer, credentials=CREDENTIALS).start()
    try:
        emu.seed_jobs("q1", "RUNNING", 1)  # type: ignore[attr-defined]
        backend = backend_for(emu, max_retries=1)  # type: ignore[arg-type]
        (job,) = list_all(backend)
        result = backend.cancel(job, "r")
        assert result.outcome == expected
        assert result.unanswered is unanswered
        assert answer.body["__type"] in (result.error or "")
    finally:
        emu.stop()


class RefusingEmulator(AwsBatchEmulator):
    """Answers every TerminateJob with a fixed error."""

    def __init__(self, answer: Response, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answer = answer

    def route(self, request: Request) -> Route:
        if request.path == "/v1/terminatejob":
            return "TerminateJob", lambda: self.answer
        return super().route(request)


def test_redact_masks_credential_shaped_text() -> None:
    text = (
        f"Authorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/20240101/us-east-1/batch/"
        f"aws4_request, SignedHeaders=host, Signature=abc123 token {TOKEN} secret {SECRET}"
    )
    assert_no_secret(redact(text))
    assert "Authorization: [redacted]" in redact(text)
