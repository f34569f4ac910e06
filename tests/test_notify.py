"""reaper.service.systemd against real AF_UNIX datagram sockets, the way systemd listens."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from reaper.service.systemd import (
    Notifier,
    monotonic_usec,
    parse_notify_address,
    parse_watchdog_interval,
)

MAX_SUN_PATH = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and the $NOTIFY_SOCKET value that names it."""
    path = tmp_path / "notify.sock"
    assert len(str(path)) <= MAX_SUN_PATH
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def nothing_waiting(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


def test_ready_stopping_watchdog_status_each_send_one_datagram(listener):
    sock, path = listener
    with Notifier(env={"NOTIFY_SOCKET": path}) as notifier:
        assert notifier.enabled
        assert notifier.ready()
        assert receive(sock) == ["READY=1"]
        assert notifier.watchdog()
        assert receive(sock) == ["WATCHDOG=1"]
        assert notifier.status("sweeping batch-prod")
        assert receive(sock) == ["STATUS=sweeping batch-prod"]
        assert notifier.stopping("SIGTERM received")
        assert receive(sock) == ["STOPPING=1", "STATUS=SIGTERM received"]
    assert nothing_waiting(sock)


def test_reloading_carries_monotonic_usec_in_the_same_datagram(listener):
    sock, path = listener
    with Notifier(env={"NOTIFY_SOCKET": path}, clock_usec=lambda: 123456789) as notifier:
        notifier.reloading()
    assert receive(sock) == ["RELOADING=1", "MONOTONIC_USEC=123456789"]
    assert nothing_waiting(sock)


def test_default_clock_is_clock_monotonic_in_microseconds():
    # time.monotonic() reads CLOCK_MONOTONIC on Linux, so a reading taken between two of ours
    # lies between them (±1 µs for the float's rounding). Ordering only, no durations.
    before = monotonic_usec()
    via_time = int(time.monotonic() * 1_000_000)
    after = monotonic_usec()
    assert before - 1 <= via_time <= after + 1


def test_abstract_namespace_address_with_at_sign():
    name = f"reaper-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        with Notifier(env={"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier.ready()
        assert receive(sock) == ["READY=1"]
    finally:
        sock.close()


def test_status_cannot_smuggle_another_assignment(listener):
    sock, path = listener
    with Notifier(env={"NOTIFY_SOCKET": path}) as notifier:
        notifier.status("bad policy\nREADY=1")
    assert receive(sock) == ["STATUS=bad policy\\nREADY=1"]  # escaped visibly, one line


def test_without_notify_socket_every_call_is_a_no_op():
    notifier = Notifier(env={})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.reloading()
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.status("x")


@pytest.mark.parametrize("value", ["relative/path", "vsock:2:1234", ""])
def test_unsupported_addresses_disable_notification(value):
    assert parse_notify_address(value) is None
    assert not Notifier(env={"NOTIFY_SOCKET": value}).ready()


def test_send_failure_never_raises_and_warns_once(tmp_path, caplog):
    notifier = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.DEBUG, logger="reaper.service.systemd"), notifier:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify systemd" in warnings[0].getMessage()


def test_socket_that_appears_later_is_used(tmp_path):
    path = tmp_path / "late.sock"
    notifier = Notifier(env={"NOTIFY_SOCKET": str(path)})
    assert not notifier.ready()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        assert notifier.watchdog()
        assert receive(sock) == ["WATCHDOG=1"]
    finally:
        notifier.close()
        sock.close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, timedelta(seconds=30)),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, timedelta(seconds=30)),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_follows_sd_watchdog_enabled(env, expected):
    assert parse_watchdog_interval(env, pid=4242) == expected
    assert Notifier(env=env, getpid=lambda: 4242).watchdog_interval() == expected


def test_watchdog_interval_uses_the_real_pid_by_default():
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(env=env).watchdog_interval() == timedelta(seconds=1)
