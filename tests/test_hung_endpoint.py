"""A backend that accepts the TCP connection and never answers (issue: a hung endpoint hung
reaper, and Ctrl-C did not stop it).

- Every backend call runs under the configured connect and read timeouts (`timeout`,
  `connect_timeout`, `read_timeout` in each backend section), for botocore, tapipy and requests.
- SIGINT and SIGTERM end `plan` and `run --once` promptly with a message (exit 130 / 143).
- The daemon's SIGTERM waits only for cancels in flight, not for a listing that hangs.

The listener is a tiny loopback server written here: it accepts connections and holds them open
without reading or writing. The CLI runs in a subprocess under `timeout(1)`, as an operator or a
timer would run it. Bounds are generous; nothing asserts how fast anything is beyond them."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reaper.backends.aws_batch import AwsBatchBackend
from reaper.emulators.world import World, child_environ, emulated_world
from tests.daemon_support import NotifyListener, daemon_process, events, free_port, wait_for
from tests.e2e_support import REPO_ROOT, edit_config, run_cli

ALL = ("batch", "hpc", "inference")
URL_KEYS = {"batch": "endpoint_url", "hpc": "base_url", "inference": "api_url"}
NOTHING = """\
policies:
  - name: nothing-matches
    names: [no-such-job]
    max_runtime: 1h
"""


class SilentListener:
    """Accepts TCP connections on loopback and never answers: each is held open, unread, until
    `close`."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append(conn)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._thread.join(5)
        self.sock.close()
        with self._lock:
            for conn in self.accepted:
                conn.close()


@pytest.fixture
def listener() -> Iterator[SilentListener]:
    silent = SilentListener()
    yield silent
    silent.close()


@pytest.fixture
def hung_world(tmp_path: Path, listener: SilentListener) -> Iterator[World]:
    """The emulated world's config and credentials, every backend pointed at the listener."""
    config = {"metrics": {"listen": f"127.0.0.1:{free_port()}"}, "schedule": {"every": "1h"}}
    with emulated_world(tmp_path, seeds={}, policies_yaml=NOTHING, config=config) as world:

        def point_at_listener(data: dict[str, Any]) -> None:
            for name, key in URL_KEYS.items():
                data["backends"][name][key] = listener.url

        edit_config(world, point_at_listener)
        yield world


def reaper_under_timeout(
    world: World, sig: str, after_s: int, *argv: str
) -> tuple[int, str, float]:
    """`timeout --preserve-status -s SIG AFTER python -m reaper ARGV`: rc, stderr, seconds."""
    env = child_environ(world) | {"PYTHONPATH": str(REPO_ROOT)}
    command = ["timeout", "--preserve-status", "-s", sig, str(after_s), sys.executable, "-m",
               "reaper", *argv, "--config", str(world.config_path)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, env=env, cwd=world.folder, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    return done.returncode, done.stderr, time.monotonic() - started


def test_run_once_ends_on_sigint_with_a_message(hung_world: World) -> None:
    code, err, seconds = reaper_under_timeout(hung_world, "INT", 10, "run", "--once")
    assert seconds < 15, f"took {seconds:.1f} s"
    assert code == 130, err
    assert "reaper run: interrupted by SIGINT; listings in progress were abandoned" in err
    assert "Traceback" not in err
    (end,) = events(hung_world.audit_path, "sweep_end")
    for name in ALL:
        assert end["backends"][name]["error"] == "listing abandoned: stopped (signal)"


def test_plan_ends_on_sigint_with_a_message(hung_world: World) -> None:
    code, err, seconds = reaper_under_timeout(hung_world, "INT", 10, "plan")
    assert seconds < 15, f"took {seconds:.1f} s"
    assert code == 130, err
    assert "reaper plan: interrupted by SIGINT; nothing was cancelled" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("backend", ALL)
def test_explain_ends_on_sigint_with_a_message(hung_world: World, backend: str) -> None:
    """`explain` reads one live job: a backend that never answers must not hold a Ctrl-C."""
    code, err, seconds = reaper_under_timeout(hung_world, "INT", 5, "explain", backend, "job-1")
    assert seconds < 12, f"took {seconds:.1f} s"
    assert code == 130, err
    assert (
        "reaper explain: interrupted by SIGINT; a backend call was still in flight and is "
        "abandoned (explain makes no mutating call)" in err
    )
    assert "Traceback" not in err


def test_run_once_ends_on_sigterm_with_143(hung_world: World) -> None:
    code, err, seconds = reaper_under_timeout(hung_world, "TERM", 5, "run", "--once")
    assert seconds < 15, f"took {seconds:.1f} s"
    assert code == 143, err
    assert "reaper run: interrupted by SIGTERM" in err


@pytest.mark.parametrize("backend", ["hpc", "inference"])
def test_a_configured_read_timeout_fails_the_listing(hung_world: World, backend: str) -> None:
    """tapipy and requests: the call gives up after `read_timeout`, the plan reports it."""
    edit_config(hung_world, lambda data: data["backends"][backend].update(read_timeout="1s"))
    started = time.monotonic()
    result = run_cli("plan", "--backend", backend, "--config", str(hung_world.config_path))
    assert time.monotonic() - started < 60
    assert result.code == 1, result.out + result.err
    assert "LISTING FAILED on " + backend in result.out
    assert "timeout" in result.out.lower() or "timed out" in result.out.lower(), result.out


def test_a_sweep_deadline_abandons_a_hung_listing(hung_world: World) -> None:
    started = time.monotonic()
    result = run_cli("plan", "--deadline", "2s", "--config", str(hung_world.config_path))
    assert time.monotonic() - started < 30
    assert result.code == 1, result.out + result.err
    assert result.out.count("listing abandoned: sweep deadline of 2 s reached") == 3, result.out


def test_timeouts_reach_botocore(tmp_path: Path) -> None:
    section = {"type": "aws_batch", "region": "us-east-1", "endpoint_url": "http://127.0.0.1:9",
               "timeout": 7.0, "read_timeout": 11.0}  # fmt: skip
    backend = AwsBatchBackend.from_config("b", section, tmp_path)
    config = backend._client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (7.0, 11.0)


def test_daemon_stops_within_5s_of_sigterm_while_a_listing_hangs(
    hung_world: World, tmp_path: Path
) -> None:
    notify = NotifyListener()
    log_path = tmp_path / "daemon.log"
    try:
        with daemon_process(hung_world, log_path, env={"NOTIFY_SOCKET": notify.address}) as daemon:
            notify.wait_for("READY=1", 30)
            wait_for(lambda: len(events(hung_world.audit_path, "sweep_start")) == 3, 30,
                     "every backend's sweep to start (and hang in its listing)")  # fmt: skip
            time.sleep(1.0)
            assert events(hung_world.audit_path, "sweep_end") == []  # still hanging
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
            seconds = time.monotonic() - started
        log = log_path.read_text(encoding="utf-8")
        assert seconds < 5, f"took {seconds:.1f} s: {log}"
        assert code == 0, log
        assert len(events(hung_world.audit_path, "sweep_end")) == 3
    finally:
        notify.close()
