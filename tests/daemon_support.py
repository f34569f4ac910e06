"""Helpers for the daemon tests: a systemd-like notify socket, bounded polling, audit reading,
and a daemon subprocess against the emulated world."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from reaper.emulators.world import World, child_environ

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str) -> T:
    """Poll `probe` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class NotifyListener:
    """An AF_UNIX datagram socket in the abstract namespace, as systemd's $NOTIFY_SOCKET, read
    by a thread as PID 1 reads it (a full socket queue would block the sender). Every message
    (a list of KEY=VALUE lines) is kept in `messages`, in order of arrival."""

    def __init__(self) -> None:
        self.name = f"reaper-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.05)
        self.messages: list[list[str]] = []
        self._cursor = 0
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def address(self) -> str:
        """The $NOTIFY_SOCKET value."""
        return "@" + self.name

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode().split("\n"))

    def poll(self, timeout_s: float = 0.0) -> list[list[str]]:
        """Wait `timeout_s`, then return the messages not returned by an earlier `poll`."""
        time.sleep(timeout_s)
        with self._lock:
            fresh, self._cursor = self.messages[self._cursor :], len(self.messages)
        return fresh

    def wait_for(self, line: str, timeout_s: float) -> list[str]:
        """The first message holding `line` among those not yet returned by `poll`/`wait_for`."""

        def probe() -> list[str] | None:
            return next((m for m in self.poll() if line in m), None)

        return wait_for(probe, timeout_s, f"notify message {line}")

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self.sock.close()


def read_records(path: Path) -> list[dict[str, Any]]:
    """The audit records written so far (a line still being written is left out)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def events(path: Path, event: str, **fields: Any) -> list[dict[str, Any]]:
    """Audit records of `event` whose fields equal `fields`."""
    return [
        r
        for r in read_records(path)
        if r["event"] == event and all(r.get(k) == v for k, v in fields.items())
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def daemon_process(
    world: World,
    log_path: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    global_args: Sequence[str] = (),
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m reaper [global_args] daemon --config ... [args]` against `world`, stdout and
    stderr to `log_path`. Killed on the way out if the test did not stop it."""
    child_env = child_environ(world) | {"PYTHONPATH": str(ROOT)} | (env or {})
    config = ["--config", str(world.config_path)]
    command = [sys.executable, "-m", "reaper", *global_args, "daemon", *config, *args]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=child_env, stderr=log, stdout=log, cwd=ROOT)
        try:
            yield process
        finally:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
