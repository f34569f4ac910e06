"""The Sutro side of tests/test_backend_contract.py: the emulator, and the backend talking to it
over a real HTTP client (reaper.backends.http.HttpClient)."""

from __future__ import annotations

from reaper.backends.http import HttpClient
from reaper.backends.retry import RetryPolicy
from reaper.backends.sutro import SutroBackend
from reaper.emulators.base import EmulatorServer, Knobs
from reaper.emulators.sutro import SutroEmulator

TYPE = "sutro"
QUEUE = ""
STATUSES = {
    "pending": "QUEUED",
    "running": "RUNNING",
    "terminal": "SUCCEEDED",
    "finished": "SUCCEEDED",
}
HAS_TAGS = False
REASON_REACHES_JOB = False


def no_sleep(seconds: float) -> None:
    """Retries in tests back off without waiting."""


def start_emulator(knobs: Knobs, **options: object) -> SutroEmulator:
    return SutroEmulator(knobs, **options).start()  # type: ignore[arg-type,return-value]


def make_backend(
    emulator: EmulatorServer,
    name: str,
    api_key: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: tuple[float, float] = (2.0, 5.0),
) -> SutroBackend:
    assert isinstance(emulator, SutroEmulator)
    return SutroBackend(
        name,
        HttpClient(emulator.url),
        emulator.url,
        emulator.api_key if api_key is None else api_key,
        retry=retry or RetryPolicy(sleep=no_sleep),
        timeout=timeout,
    )
