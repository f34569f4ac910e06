"""systemd notifications over `$NOTIFY_SOCKET` (sd_notify(3)), without libsystemd.

The protocol is one AF_UNIX datagram of newline-separated `KEY=VALUE` assignments sent to the
socket systemd names in `$NOTIFY_SOCKET`: a file system path, or an abstract-namespace name
written with a leading `@`. Without that variable (not started by systemd, or `Type=simple`)
every method is a no-op, so the daemon calls them unconditionally. A failed send never raises:
losing a status line must not stop a sweep, and a missed watchdog ping is exactly what the
watchdog exists to notice. See sd_notify(3) and
https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta

from reaper.untrusted import clean

log = logging.getLogger(__name__)

# sd_watchdog_enabled(3): $WATCHDOG_USEC is the watchdog timeout in microseconds; $WATCHDOG_PID,
# when set, names the one process it is meant for (so a child does not ping for its parent).
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
NOTIFY_SOCKET = "NOTIFY_SOCKET"
SEND_TIMEOUT_S = 1.0
MAX_STATUS_CHARS = 1024  # `systemctl status` shows one line; a datagram must stay small


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds: the clock systemd compares MONOTONIC_USEC= against."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def parse_notify_address(value: str | None) -> str | None:
    """The socket address for `$NOTIFY_SOCKET`, or None when it is unset or unusable.

    `@name` becomes the abstract address `\\0name`; an absolute path is used as is. Anything
    else (a relative path, `vsock:` addresses of newer systemd) is not supported here."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None


def parse_watchdog_interval(env: Mapping[str, str], pid: int) -> timedelta | None:
    """The watchdog timeout systemd expects pings within, or None when it is off for `pid`.

    Same rules as sd_watchdog_enabled(3): `$WATCHDOG_USEC` must be a positive integer, and if
    `$WATCHDOG_PID` is set it must equal `pid`. Malformed values mean "off", never an error."""
    usec = env.get(WATCHDOG_USEC, "")
    if not usec.isdigit() or int(usec) <= 0:
        return None
    owner = env.get(WATCHDOG_PID)
    if owner is not None and (not owner.isdigit() or int(owner) != pid):
        return None
    return timedelta(microseconds=int(usec))


def sanitize_status(text: str) -> str:
    """One line of status: a newline would start a new assignment (e.g. a forged READY=1), and
    an escape sequence from a backend's error body would reach `systemctl status`."""
    return clean(text, MAX_STATUS_CHARS)


class Notifier:
    """Sends sd_notify messages; a no-op when `$NOTIFY_SOCKET` is absent. Thread-safe.

    `env` defaults to `os.environ`, `clock_usec` to CLOCK_MONOTONIC in µs and `getpid` to
    `os.getpid`; tests inject all three."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        clock_usec: Callable[[], int] = monotonic_usec,
        getpid: Callable[[], int] = os.getpid,
    ) -> None:
        self._env: Mapping[str, str] = os.environ if env is None else env
        self._address = parse_notify_address(self._env.get(NOTIFY_SOCKET))
        self._clock_usec = clock_usec
        self._getpid = getpid
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failure_logged = False
        if self._env.get(NOTIFY_SOCKET) and self._address is None:
            log.warning("NOTIFY_SOCKET is not an absolute path or @name; not notifying systemd")

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) is complete."""
        return self.send("READY=1", *self._status_lines(status))

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC= in one datagram, as systemd 253+ requires for
        Type=notify-reload and older versions accept; follow it with `ready()`."""
        lines = ["RELOADING=1", f"MONOTONIC_USEC={self._clock_usec()}"]
        return self.send(*lines, *self._status_lines(status))

    def stopping(self, status: str | None = None) -> bool:
        """STOPPING=1: shutting down; systemd stops expecting watchdog pings."""
        return self.send("STOPPING=1", *self._status_lines(status))

    def watchdog(self) -> bool:
        """WATCHDOG=1: the caller has made real progress since the last ping."""
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """STATUS=<one line>, shown by `systemctl status`."""
        return self.send(*self._status_lines(text))

    def watchdog_interval(self) -> timedelta | None:
        """The watchdog timeout for this process (ping at least twice per interval), or None."""
        return parse_watchdog_interval(self._env, self._getpid())

    def send(self, *assignments: str) -> bool:
        """Send `assignments` as one datagram. Returns True if it was sent; never raises."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode("utf-8", errors="replace")
        with self._lock:
            try:
                self._socket().sendto(payload, self._address)
            except (OSError, ValueError) as exc:  # ValueError: a NUL inside a path address
                self._log_failure(exc)
                return False
        return True

    def close(self) -> None:
        """Close the socket; a later send opens a new one."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # A datagram to a receiver whose queue is full blocks the sender; the daemon's main
            # loop sends these, and must not hang on a slow reader (the failure is logged).
            self._sock.settimeout(SEND_TIMEOUT_S)
        return self._sock

    def _log_failure(self, exc: OSError | ValueError) -> None:
        # Once at WARNING, then DEBUG: a gone socket would otherwise log every watchdog ping.
        level = logging.DEBUG if self._failure_logged else logging.WARNING
        self._failure_logged = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.log(level, "cannot notify systemd at NOTIFY_SOCKET: %s", reason)

    @staticmethod
    def _status_lines(status: str | None) -> list[str]:
        return [] if status is None else [f"STATUS={sanitize_status(status)}"]
