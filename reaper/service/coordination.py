"""Optional coordination between daemons through tooz (docs/scale.md): the instances join one
tooz group, split the backends between the live members with tooz's hash-ring partitioner, and
each backend's sweep runs under a tooz lock named after the backend.

The lock is for efficiency, not safety: the re-check before every cancel and the re-cancel
window keep an overlap harmless (at worst a duplicate cancel of a job already ending). What the
lock does guarantee while the coordination service works is that two instances never sweep one
backend at once, also while the membership changes: the partitioner only says whose turn it is,
the lock decides.

Leases. A member's group membership and its locks expire `lease_s` after its last heartbeat,
so the backends of a member that dies are swept by another within `lease_s` plus one schedule
period. `lease_for` picks a quarter of the period (1 to 30 s) unless the URL sets tooz's
`timeout`; the heartbeat runs in its own thread every third of the lease (tooz's own heart
thread beats only once per lease, which lets the keys expire between beats).

tooz is imported only here, and only when `coordination:` is configured (the optional
`coordination` extra: tooz and redis-py). API: tooz.coordination.get_coordinator, start,
join_partitioned_group, run_watchers, Partitioner.belongs_to_self, get_lock, heartbeat, stop."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from reaper.errors import ReaperError
from reaper.policy.config import Coordination
from reaper.redact import redact, register_secret

log = logging.getLogger(__name__)

LOCK_PREFIX = "reaper-backend:"
MIN_LEASE_S = 1
MAX_LEASE_S = 30  # tooz's own default timeout
LEASE_OPTIONS = ("timeout", "lock_timeout", "membership_timeout")


class CoordinationError(ReaperError):
    """The coordination service could not be reached or refused an operation."""


def lease_for(period: timedelta) -> int:
    """Seconds a dead member keeps its membership and locks: a quarter of the schedule period,
    1 to 30 s (tooz's lock timeouts are whole seconds)."""
    return max(MIN_LEASE_S, min(MAX_LEASE_S, math.ceil(period.total_seconds() / 4)))


def resolve_url(coordination: Coordination, base_environ: Mapping[str, str] | None = None) -> str:
    """The tooz URL from `url`, `url_env` or `url_file`, registered for log redaction when it
    holds a password. Raises CoordinationError naming the variable or file, never the value."""
    environ = os.environ if base_environ is None else base_environ
    if coordination.url is not None:
        url = coordination.url
    elif coordination.url_env is not None:
        url = environ.get(coordination.url_env, "").strip()
        if not url:
            raise CoordinationError(f"coordination.url_env: {coordination.url_env} is unset")
    else:
        url = _read_url_file(coordination.url_file)
    password = urlsplit(url).password
    if password:
        register_secret(password)
    if coordination.url is None:  # read from a secret source: mask all of it
        register_secret(url)
    return url


def _read_url_file(path: Path | None) -> str:
    assert path is not None  # the config allows exactly one of the three
    try:
        url = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CoordinationError(
            f"cannot read coordination.url_file {path}: {exc.strerror}"
        ) from None
    if not url:
        raise CoordinationError(f"coordination.url_file {path} is empty")
    return url


def with_lease(url: str, lease_s: int) -> str:
    """`url` with tooz's `timeout`, `lock_timeout` and `membership_timeout` set to `lease_s`,
    unless the URL already sets `timeout` (then it is used as given)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(key == "timeout" for key, _ in query):
        return url
    given = {key for key, _ in query}
    query += [(key, str(lease_s)) for key in LEASE_OPTIONS if key not in given]
    return urlunsplit(parts._replace(query=urlencode(query)))


def lease_of(url: str) -> float:
    """The membership lease a tooz URL asks for (what the heartbeat must outpace)."""
    options = dict(parse_qsl(urlsplit(url).query))
    return float(options.get("membership_timeout", options.get("timeout", MAX_LEASE_S)))


class Coordinator:
    """One daemon's membership: `owns(backend)` asks the partitioner, `holding(backend)` takes
    the backend's lock without waiting. Thread-safe: the sweep threads share it."""

    def __init__(self, url: str, member: str | None = None, group: str = "reaper") -> None:
        self.url = url
        self.member = member or socket.gethostname()
        self.group = group
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._driver: Any = None
        self._partitioner: Any = None
        self._beat: threading.Thread | None = None

    def start(self) -> None:
        """Connect, join the group and start heartbeating. Raises CoordinationError."""
        from tooz import coordination

        with self._errors("cannot join the coordination group"):
            self._driver = coordination.get_coordinator(self.url, self.member.encode())
            self._driver.start(start_heart=False)  # beats once
            # Beat from now on: joining may take longer than a short lease, and a member
            # whose beat key has expired is dropped from the group by the next one to look.
            interval = max(0.2, lease_of(self.url) / 3)
            self._beat = threading.Thread(target=self._beat_forever, args=(interval,),
                                          name="coordination-heartbeat", daemon=True)  # fmt: skip
            self._beat.start()
            self._partitioner = self._join()
        log.info("coordination: member %s joined group %s", self.member, self.group)

    def _join(self) -> Any:
        from tooz import coordination, partitioner

        group = self.group.encode()
        try:
            return self._driver.join_partitioned_group(group)
        except coordination.MemberAlreadyExist:
            # This member restarted within its lease: its old entry is still there, and is us.
            return partitioner.Partitioner(self._driver, group)

    def owns(self, backend: str) -> bool:
        """True if the hash ring of the live members gives `backend` to this member now.
        Raises CoordinationError."""
        with self._lock, self._errors("cannot read the group's members"):
            self._driver.run_watchers()
            return bool(self._partitioner.belongs_to_self(backend))

    @contextlib.contextmanager
    def holding(self, backend: str) -> Iterator[bool]:
        """Try to take `backend`'s lock without waiting; yields whether it was taken and
        releases it on the way out (a failed release is logged: the lease ends it anyway).
        Raises CoordinationError when the lock cannot be asked for."""
        with self._errors(f"cannot take the lock of {backend}"):
            lock = self._driver.get_lock((LOCK_PREFIX + backend).encode())
            taken = bool(lock.acquire(blocking=False))
        try:
            yield taken
        finally:
            if taken:
                self._release(backend, lock)

    def stop(self) -> None:
        """Leave the group and disconnect (locks still held are released by tooz's stop)."""
        self._stopping.set()
        if self._beat is not None:
            self._beat.join(5)
        if self._driver is None:
            return
        from tooz import ToozError

        try:
            if self._partitioner is not None:
                self._driver.leave_partitioned_group(self._partitioner)
            self._driver.stop()
        except ToozError as exc:
            log.warning("coordination: leaving the group failed: %s", redact(str(exc)))

    def _beat_forever(self, interval: float) -> None:
        from tooz import ToozError

        while not self._stopping.wait(interval):
            try:
                self._driver.heartbeat()
            except ToozError as exc:  # keep beating: the service may come back within the lease
                log.error("coordination: heartbeat failed: %s", redact(str(exc)))

    def _release(self, backend: str, lock: Any) -> None:
        from tooz import ToozError

        try:
            lock.release()
        except ToozError as exc:
            log.warning("coordination: releasing the lock of %s failed (it expires with its "
                        "lease): %s", backend, redact(str(exc)))  # fmt: skip

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        from tooz import ToozError

        try:
            yield
        except ToozError as exc:
            raise CoordinationError(f"coordination: {what}: {redact(str(exc))}") from None
