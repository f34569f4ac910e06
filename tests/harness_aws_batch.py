"""The AWS Batch side of tests/test_backend_contract.py: the emulator, and the backend talking
to it through a real boto3 client."""

from __future__ import annotations

import time
from typing import Any

import boto3
from botocore.config import Config

from reaper.backends.aws_batch import AwsBatchBackend, client_config
from reaper.emulators.aws_batch import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    AwsBatchEmulator,
)
from reaper.emulators.base import EmulatorServer, Knobs

TYPE = "aws_batch"
QUEUE = "gpu-a"
STATUSES = {
    "pending": "RUNNABLE",
    "running": "RUNNING",
    "terminal": "SUCCEEDED",
    "finished": "SUCCEEDED",
}
HAS_TAGS = True
REASON_REACHES_JOB = True


class FakeClock:
    """A clock for an emulator that a test moves on by hand (`clock.now += 3600`)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def start_emulator(knobs: Knobs) -> AwsBatchEmulator:
    return AwsBatchEmulator(knobs).start()  # type: ignore[return-value]


def make_client(
    endpoint: EmulatorServer | str,
    config: Config | None = None,
    access_key_id: str = ACCESS_KEY_ID,
    secret_access_key: str = SECRET_ACCESS_KEY,
    session_token: str | None = None,
) -> Any:
    """A boto3 `batch` client pointed at an emulator (or a URL), with explicit credentials, so
    that the host's AWS configuration plays no part."""
    return boto3.Session().client(
        "batch",
        region_name=REGION,
        endpoint_url=endpoint if isinstance(endpoint, str) else endpoint.url,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        aws_session_token=session_token,
        config=config or client_config(),
    )


def make_backend(
    emulator: EmulatorServer, name: str, queues: list[str] | None = None
) -> AwsBatchBackend:
    return AwsBatchBackend(name, make_client(emulator), queues or [QUEUE])
