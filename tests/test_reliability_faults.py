"""Reliability: one sick backend among healthy ones (docs/architecture.md: "a backend that fails is
reported and retried next sweep; the other backends' sweeps go on").

The emulated world (three emulators seeded with the demo mix, the demo policies) with real
clients built with small retry budgets. For each backend x fault — a 429
storm that outlasts the retries, a short one that the retries absorb, 5xx, read timeouts,
malformed JSON, credentials rotated after start, a listing failing on page 2 — one sweep runs:
the healthy backends complete their cancels, the sick one cancels nothing, the sweep exits 1,
no exception escapes, and the error names the backend without any secret, in the report, the
logs and the audit log alike."""

from __future__ import annotations

import functools
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reaper.audit.writer import AuditLog, read_audit, verify_audit
from reaper.backends.aws_batch import AwsBatchBackend
from reaper.backends.aws_client import client_config
from reaper.backends.base import Backend
from reaper.backends.http import HttpClient
from reaper.backends.retry import RetryPolicy
from reaper.backends.sutro import SutroBackend
from reaper.backends.tapis import TapisBackend, make_client
from reaper.emulators import aws_batch as aws_emulator
from reaper.emulators.base import EmulatorServer
from reaper.emulators.sutro import SutroEmulator
from reaper.emulators.tapis import TapisEmulator, make_token
from reaper.emulators.world import World, child_environ, emulated_world
from reaper.engine.runtime import sweep_env
from reaper.engine.sweep import SweepReport, run_sweep
from reaper.errors import ExitCode
from reaper.policy.config import load_all
from reaper.service.logs import SDK_LOGGERS, configure_logging, remove_reaper_handlers
from tests.harness_aws_batch import make_client as make_aws_client

# What the demo policies cancel in the demo mix (reaper/emulators/seed.py): batch has three
# runaway trainings and one stale dev job, hpc one runaway and two stale dev jobs, inference two
# expensive llama batches. Protected and excluded jobs survive.
EXPECTED_CANCELS = {"batch": 4, "hpc": 3, "inference": 2}
ATTEMPTS = 2  # calls per request, retries included: small, so that a storm outlasts them
# Every read timeout is generous, so that a loaded machine (CI beside other work) never turns a
# slow answer into a fault the test did not inject. Only a timeout fault shortens the sick
# backend's, and its emulator then never answers: whatever the load, the faulty calls time out and
# the healthy ones (a listing before a fault that starts at the cancels) have a second to answer.
HEALTHY_READ_TIMEOUT_S = 30.0
TIMEOUT_FAULT_READ_TIMEOUT_S = 1.0


def no_sleep(seconds: float) -> None:
    """Backoff without waiting: the retry schedule is tested elsewhere (tests/test_retry.py)."""


def build_backend(name: str, emulator: EmulatorServer, read_timeout_s: float) -> Backend:
    """The backend `name` of the world, on a real client with few retries and `read_timeout_s`."""
    retry = RetryPolicy(attempts=ATTEMPTS, sleep=no_sleep)
    timeout = (1.0, read_timeout_s)
    if name == "batch":
        config = client_config(1.0, read_timeout_s, max_retries=ATTEMPTS - 1)
        return AwsBatchBackend(name, make_aws_client(emulator, config))
    if name == "hpc":
        client = make_client(emulator.url, access_token=emulator.token)  # type: ignore[attr-defined]
        return TapisBackend(name, client, retry=retry, timeout=timeout)
    return SutroBackend(
        name, HttpClient(emulator.url), emulator.url, emulator.api_key,  # type: ignore[attr-defined]
        retry=retry, timeout=timeout,
    )  # fmt: skip


def secrets_of(world: World) -> list[str]:
    """Every credential in play, the ones rotated in included."""
    emulators = world.emulators
    return [
        aws_emulator.SECRET_ACCESS_KEY, aws_emulator.ACCESS_KEY_ID, ROTATED_AWS_SECRET,
        emulators["hpc"].token, emulators["inference"].api_key,  # type: ignore[attr-defined]
        ROTATED_SUTRO_KEY,
    ]  # fmt: skip


# --- faults -------------------------------------------------------------------------------------

ROTATED_AWS_SECRET = "rotated-secret-access-key-0123456789abcd"
ROTATED_SUTRO_KEY = "sk_emu_rotated_after_start_0123456789"


def rotate_credentials(emulator: EmulatorServer, secrets: list[str]) -> None:
    """The service stops accepting the credentials the client was built with."""
    if isinstance(emulator, aws_emulator.AwsBatchEmulator):
        emulator.credentials = {aws_emulator.ACCESS_KEY_ID: ROTATED_AWS_SECRET}
    elif isinstance(emulator, TapisEmulator):
        # The service now wants a new token, and the one it would hand out expired in 1980.
        emulator.token = make_token(emulator.tenant, emulator.username, 0.0)
        secrets.append(emulator.token)
    elif isinstance(emulator, SutroEmulator):
        emulator.api_key = ROTATED_SUTRO_KEY


@dataclass(frozen=True)
class Fault:
    knobs: dict[str, Any] = field(default_factory=dict)
    apply: Callable[[EmulatorServer, list[str]], None] | None = None
    recovers: bool = False  # the retries absorb it: the backend is healthy after all
    at: str = "start"  # or the first call of `refresh` / `cancel`: after a complete listing
    read_timeout_s: float = HEALTHY_READ_TIMEOUT_S  # the sick backend's

    def inject(self, emulator: EmulatorServer, secrets: list[str]) -> None:
        for knob, value in self.knobs.items():
            setattr(emulator.knobs, knob, value)
        if self.apply is not None:
            self.apply(emulator, secrets)


# The backend methods that make an operation's calls: the sweep uses the bulk forms where a
# backend offers them (AWS Batch: DescribeJobs of many ids, TerminateJobs).
OPERATION_METHODS = {
    "refresh": ("refresh", "refresh_many"),
    "cancel": ("cancel", "cancel_checked", "cancel_many"),
}


class FaultAtFirstCall:
    """A backend whose emulator turns sick at the first call of one operation."""

    def __init__(self, backend: Backend, operation: str, start: Callable[[], None]) -> None:
        self.name, self.type = backend.name, backend.type
        self._backend, self._operation, self._start = backend, operation, start
        self._lock = threading.Lock()
        self._started = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._backend, name)
        if name not in OPERATION_METHODS.get(self._operation, (self._operation,)):
            return method

        def call(*args: Any) -> Any:
            with self._lock:
                if not self._started:
                    self._started = True
                    self._start()
            return method(*args)

        return call


FAULTS = {
    "429-storm": Fault({"throttle_first": 1000}),
    "429-burst": Fault({"throttle_first": ATTEMPTS - 1}, recovers=True),
    "5xx": Fault({"fail_first": 1000}),
    "read-timeout": Fault({"hang": True}, read_timeout_s=TIMEOUT_FAULT_READ_TIMEOUT_S),
    "malformed-json": Fault({"malformed": True}),
    "bad-credentials": Fault(apply=rotate_credentials),
    "list-page-2-fails": Fault({"page_size": 2, "fail_list_page": 2}),
    "5xx-from-recheck-on": Fault({"fail_first": 1000}, at="refresh"),
    "5xx-from-cancel-on": Fault({"fail_first": 1000}, at="cancel"),
    "read-timeout-from-cancel-on": Fault(
        {"hang": True}, at="cancel", read_timeout_s=TIMEOUT_FAULT_READ_TIMEOUT_S
    ),
}


@dataclass
class Outcome:
    world: World
    report: SweepReport
    secrets: list[str]
    log_text: str

    def audit_text(self) -> str:
        return self.world.audit_path.read_text(encoding="utf-8")


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """reaper's own logging at DEBUG (SDK loggers held at INFO, redaction on), into a buffer;
    the logging set-up is restored afterwards."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in SDK_LOGGERS}
    root_level = root.level
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, env={})
    yield stream
    remove_reaper_handlers(root)
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def sweep_with_fault(
    tmp_path: Path, log_stream: io.StringIO
) -> Iterator[Callable[[str, Fault], Outcome]]:
    with emulated_world(tmp_path) as world:

        def sweep(sick: str, fault: Fault) -> Outcome:
            config, policies = load_all(world.config_path)
            timeouts = {n: HEALTHY_READ_TIMEOUT_S for n in world.emulators} | {
                sick: fault.read_timeout_s
            }
            backends = {n: build_backend(n, e, timeouts[n]) for n, e in world.emulators.items()}
            secrets = secrets_of(world)
            emulator = world.emulators[sick]
            if fault.at == "start":
                fault.inject(emulator, secrets)
            else:
                start = functools.partial(fault.inject, emulator, secrets)
                backends[sick] = FaultAtFirstCall(backends[sick], fault.at, start)
            try:
                with AuditLog(config.audit_log) as audit:
                    report = run_sweep(sweep_env(config, policies, backends, audit))
            finally:
                for backend in backends.values():
                    backend.close()
            return Outcome(world, report, secrets, log_stream.getvalue())

        yield sweep


@pytest.mark.parametrize("fault_name", sorted(FAULTS))
@pytest.mark.parametrize("sick", sorted(EXPECTED_CANCELS))
def test_one_sick_backend_does_not_stop_the_others(
    sick: str, fault_name: str, sweep_with_fault: Callable[[str, Fault], Outcome]
) -> None:
    fault = FAULTS[fault_name]
    outcome = sweep_with_fault(sick, fault)
    report, emulators = outcome.report, outcome.world.emulators
    for name, expected in EXPECTED_CANCELS.items():
        if name == sick and not fault.recovers:
            continue
        assert report.backends[name].error is None, report.backends[name].error
        assert report.backends[name].outcomes == {"cancelled": expected}, name
    if fault.recovers:
        assert emulators[sick].knobs.throttle_first == 0  # the burst did happen
        assert report.exit_code is ExitCode.OK
        return
    sick_report = report.backends[sick]
    if fault.at == "cancel":
        # The first cancel call fails (an outcome, not an exception); the re-checks running
        # beside it meet the sick service too and skip their jobs.
        error = " ".join(r["error"] for r in results_of(outcome.world, sick))
        assert set(sick_report.outcomes) == {"failed"}
        failed = sick_report.outcomes["failed"] + sick_report.skipped["recheck_failed"]
        assert failed == EXPECTED_CANCELS[sick]
    else:
        error = sick_report.error or ""
        assert emulators[sick].mutating_calls() == 0
        assert sum(sick_report.outcomes.values()) == 0
    assert f"backend {sick}:" in error
    assert report.exit_code is ExitCode.FAILED
    for text in (error, outcome.log_text, outcome.audit_text()):
        for secret in outcome.secrets:
            assert secret not in text
    assert verify_audit(outcome.world.audit_path).ok


def results_of(world: World, backend: str) -> list[dict[str, Any]]:
    records = read_audit(world.audit_path).records
    return [r for r in records if r["event"] == "result" and r.get("backend") == backend]


def test_a_listing_that_fails_part_way_is_audited_as_incomplete(
    sweep_with_fault: Callable[[str, Fault], Outcome],
) -> None:
    """The jobs of the pages read before the failure are decided, and skipped: acting on half
    a picture would break the fraction guard and the dedupe (docs/architecture.md)."""
    outcome = sweep_with_fault("hpc", FAULTS["list-page-2-fails"])  # oldest first: page 1 matches
    records = read_audit(outcome.world.audit_path).records
    causes = {r["cause"] for r in records if r.get("backend") == "hpc" and "cause" in r}
    assert "listing_incomplete" in causes
    assert causes <= {"listing_incomplete", "protected"}
    assert not [r for r in records if r.get("backend") == "hpc" and r["event"] == "intent"]


def test_reaper_run_once_exits_1_naming_the_sick_backend(tmp_path: Path) -> None:
    """The same through the command line: exit 1, the healthy backends' cancels done, the sick
    backend named on the way out, no credential printed."""
    with emulated_world(tmp_path, apply_env=False) as world:
        world.emulators["inference"].knobs.fail_first = 1000
        env = child_environ(world) | {"PYTHONPATH": str(Path(__file__).parents[1])}
        done = subprocess.run(
            [sys.executable, "-m", "reaper", "run", "--once", "--config", str(world.config_path)],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == ExitCode.FAILED, done.stderr
        assert "inference" in done.stdout + done.stderr
        assert world.emulators["inference"].mutating_calls() == 0
        assert world.emulators["batch"].mutating_calls() > 0
        for secret in secrets_of(world):
            assert secret not in done.stdout + done.stderr
