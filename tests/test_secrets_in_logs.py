"""No credential reaches a log line, even at `--log-level DEBUG`: `reaper plan` and
`reaper run --once` talk to all three emulators (through a few throttled requests, so the retry
paths log too) and every byte they write to stdout and stderr, and the audit log, is searched
for every credential the clients hold and every credential header the emulators received."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from reaper.emulators.base import EmulatorServer, Knobs, Request, Response
from reaper.emulators.world import World, child_environ, emulated_world
from tests.daemon_support import ROOT

CREDENTIAL_HEADERS = ("authorization", "x-tapis-token", "x-amz-security-token")
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "REAPER_DEMO_TAPIS_TOKEN",
    "REAPER_DEMO_SUTRO_KEY",
)
MIN_FRAGMENT = 8  # shorter pieces of a header (e.g. "Key") are ordinary words


def record_credential_headers(emulator: EmulatorServer, seen: dict[str, set[str]]) -> None:
    """Keep every credential header value `emulator` receives (wrapping its request entry),
    by header name."""
    dispatch: Callable[[Request], Response] = emulator.dispatch

    def recording(request: Request) -> Response:
        for name, value in request.headers.items():
            if name in CREDENTIAL_HEADERS and value:
                seen.setdefault(name, set()).add(value)
        return dispatch(request)

    emulator.dispatch = recording  # type: ignore[method-assign]


def secrets_of(world: World, headers: set[str]) -> set[str]:
    """Whole header values, their credential parts (SigV4 Signature=, the key after `Key `),
    and the credentials in the environment."""
    found = {str(world.environ[name]) for name in CREDENTIAL_VARIABLES}
    for value in headers:
        found.add(value)
        found.update(re.findall(r"Signature=([0-9a-f]{64})", value))
        found.update(part for part in value.split() if len(part) >= MIN_FRAGMENT)
    return {s.strip(",") for s in found if len(s.strip(",")) >= MIN_FRAGMENT}


def run_reaper(world: World, *args: str) -> str:
    env = child_environ(world) | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "reaper", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode in (0, 1, 3), done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_debug_logs_of_plan_and_sweep_hold_no_credential(tmp_path: Path, log_format: str) -> None:
    knobs = {name: Knobs(throttle_first=2) for name in ("batch", "hpc", "inference")}
    with emulated_world(tmp_path, knobs=knobs) as world:
        seen: dict[str, set[str]] = {}
        for emulator in world.emulators.values():
            record_credential_headers(emulator, seen)
        config = str(world.config_path)
        flags = ["--log-level", "DEBUG", "--log-format", log_format]
        output = run_reaper(world, *flags, "plan", "--config", config)
        output += run_reaper(world, *flags, "run", "--once", "--config", config)
        output += world.audit_path.read_text(encoding="utf-8")
    sigv4 = {v for v in seen["authorization"] if v.startswith("AWS4-HMAC-SHA256 ")}
    assert sigv4 and seen["authorization"] - sigv4 and seen["x-tapis-token"]  # all three spoke
    assert "DEBUG" in output and '"outcome":"cancelled"' in output  # it logged and it acted
    headers = set().union(*seen.values())
    leaked = sorted(secret for secret in secrets_of(world, headers) if secret in output)
    assert leaked == []
