"""The Tapis side of tests/test_backend_contract.py: the emulator, and the backend talking to it
through a real tapipy client."""

from __future__ import annotations

from typing import Any

from reaper.backends.retry import RetryPolicy
from reaper.backends.tapis import TapisBackend, make_client
from reaper.emulators.base import EmulatorServer, Knobs
from reaper.emulators.tapis import TapisEmulator

TYPE = "tapis"
QUEUE = "normal"
STATUSES = {
    "pending": "QUEUED",
    "running": "RUNNING",
    "terminal": "CANCELLED",
    "finished": "FINISHED",
}
HAS_TAGS = True
REASON_REACHES_JOB = True


def no_sleep(seconds: float) -> None:
    """Retries in tests back off without waiting."""


def start_emulator(knobs: Knobs, **options: Any) -> TapisEmulator:
    return TapisEmulator(knobs, **options).start()  # type: ignore[return-value]


def make_backend(
    emulator: EmulatorServer,
    name: str,
    token: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: tuple[float, float] = (2.0, 5.0),
) -> TapisBackend:
    assert isinstance(emulator, TapisEmulator)
    client = make_client(emulator.url, access_token=token or emulator.token)
    return TapisBackend(name, client, retry=retry or RetryPolicy(sleep=no_sleep), timeout=timeout)
