"""One writer per audit log (docs/audit.md, "One writer"): an exclusive `flock(2)` on
`<audit_log>.lock`, taken before start-up reconciliation and held for the life of the run or the
daemon.

Why a lock beside the log and not on it: a rotation renames the log, and a lock on the renamed
inode would let the next writer in on the new file. The lock file is never rotated. Why flock:
the kernel drops it when the holder dies (SIGKILL, OOM), so a crash never leaves a stale lock;
the pid written into the file only names the holder in the refusal message."""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from reaper.errors import ReaperError, TemporaryError

LOCK_SUFFIX = ".lock"
LOCK_MODE = 0o640
POLL_S = 0.05


class AuditLockedError(TemporaryError):
    """Another reaper holds the audit log's lock; nothing was done (exit 75, EX_TEMPFAIL)."""


def lock_path(audit_log: Path) -> Path:
    """`<audit_log>.lock`."""
    return audit_log.with_name(audit_log.name + LOCK_SUFFIX)


class AuditLock:
    """The exclusive lock on `<audit_log>.lock`. `acquire` waits up to `wait_s` seconds, then
    raises AuditLockedError naming the holder's pid; `release` (or leaving the `with`) frees it."""

    def __init__(
        self,
        audit_log: Path,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._log = Path(audit_log)
        self._path = lock_path(self._log)
        self._monotonic, self._sleep = monotonic, sleep
        self._fd: int | None = None

    @property
    def path(self) -> Path:
        return self._path

    def acquire(self, wait_s: float = 0.0) -> None:
        """Take the lock, polling until `wait_s` has passed. Raises AuditLockedError when another
        process holds it, ReaperError when the lock file cannot be opened."""
        fd = _open_lock_file(self._path)
        deadline = self._monotonic() + max(0.0, wait_s)
        while not _try_flock(fd):
            if self._monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise AuditLockedError(
                    f"the audit log {self._log} is in use by another reaper "
                    f"(pid {holder}, lock {self._path}); try again later or pass --lock-wait"
                )
            self._sleep(POLL_S)
        _write_holder(fd)
        self._fd = fd

    def release(self) -> None:
        """Free the lock. Idempotent."""
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> AuditLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _open_lock_file(path: Path) -> int:
    """Open (creating, mode 0640 whatever the umask) the lock file. Raises ReaperError."""
    try:
        path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, LOCK_MODE)
    except OSError as exc:
        raise ReaperError(f"cannot open the audit lock {path}: {exc.strerror or exc}") from exc
    try:
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, LOCK_MODE)
    except OSError:
        pass  # a mode we cannot set is no reason to refuse to lock
    return fd


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise ReaperError(f"cannot lock the audit log: {exc.strerror or exc}") from exc
    return True


def _write_holder(fd: int) -> None:
    """Our pid into the lock file, for the message a refused reaper prints."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # the lock holds without the pid; only the message would lack it


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return "unknown"
    return text if text.isdigit() else "unknown"
