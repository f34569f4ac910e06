"""The audit log writer: append-only JSON Lines with a sha256 hash chain (docs/audit.md).

Guarantees of `AuditLog.append`: the record is one line written by ONE `os.write` on an
`O_APPEND` descriptor and `fsync`ed before `append` returns, so a caller that cancels only after
`append` returned never cancels without a durable record. `append_many` writes a batch's lines
(a bulk cancel's intents, or its results) with one `os.write` and returns once all are durable.
Any failure raises `AuditWriteError` and the caller must then not make the call the record
announces.

Group commit: lines are written under the writer's lock, in chain order, and `fsync` runs
outside it; one `fsync` covers every line written before it, so concurrent appenders (a sweep's
cancel lanes) share fsyncs instead of queueing one by one behind the lock. An appender returns
once an `fsync` that began after its own write has succeeded; when that `fsync` fails, every
appender it covered raises (Linux may drop the dirty pages of a failed fsync and report success
next time, so a later success proves nothing about them).

Line format (readers must not depend on it; the hash covers the exact bytes written):
`ts event sweep_id host version` first, then the event's own fields sorted by key, `prev` last;
compact separators; ASCII only (`\\uXXXX` escapes), so no job name can make encoding fail.
`ts` is UTC ISO 8601 with milliseconds and `Z`. `prev` is the sha256 of the previous record's
line (64 zeros for the first record of a chain). Torn lines left by power loss are recovered as
described in `reaper/audit_read.py`: ended with a newline, skipped by the next record's `prev`.
Reading and verifying live in `reaper/audit_read.py` and `reaper/audit_verify.py`; the names are
re-exported here so callers import one module.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from stat import S_ISREG
from types import TracebackType
from typing import Any, BinaryIO

from reaper import __version__
from reaper.audit.reader import (
    GENESIS,
    AuditReadResult,
    Record,
    decode_line,
    filter_records,
    hash_line,
    iter_lines_backward,
    open_warnings,
    read_audit,
    read_recent,
    read_tail,
    read_tail_from,
    read_tail_with_rotated,
    recently_cancelled,
    unresolved_intents,
)
from reaper.audit.seal import Head, head_path, read_head, seal_line, write_head
from reaper.audit.verify import VerifyResult, verify_audit
from reaper.audit.window import AuditWindow
from reaper.errors import ReaperError
from reaper.jobs import SkipCause, utc_now  # `cause` of a `skipped` record; the clock
from reaper.redact import masker

log = logging.getLogger(__name__)

__all__ = [
    "GENESIS",
    "AuditEvent",
    "AuditLog",
    "AuditOutcome",
    "AuditReadResult",
    "AuditWriteError",
    "SkipCause",
    "VerifyResult",
    "filter_records",
    "open_warnings",
    "read_audit",
    "read_recent",
    "read_tail",
    "read_tail_with_rotated",
    "recently_cancelled",
    "unconfirmed_outcome",
    "unresolved_intents",
    "verify_audit",
]

HEADER_KEYS = ("ts", "event", "sweep_id", "host", "version")
RESERVED_KEYS = frozenset({"ts", "event", "host", "version", "prev"})
UNCONFIRMED_PREFIX = "unconfirmed→"
FILE_MODE = 0o640
DIR_MODE = 0o750


class AuditEvent(StrEnum):
    SWEEP_START = "sweep_start"
    INTENT = "intent"  # written and fsynced before the cancel call
    RESULT = "result"  # after it, or at start-up for an intent a crash left open
    SKIPPED = "skipped"
    SWEEP_END = "sweep_end"
    RELOAD = "reload"
    RELOAD_FAILED = "reload_failed"
    CONFIRMED = "confirmed"  # a job reaper cancelled has ended (seen at a later sweep)
    STUCK = "stuck"  # still active after limits.confirm_within: one more cancel follows
    # The ladder (docs/audit.md, "Warnings"): a policy with a grace period warns first.
    WARNED = "warned"  # the job will be cancelled at `due` if it still matches then
    CLEARED = "cleared"  # a warned job no longer matches: no cancel
    NOTIFIED = "notified"  # a notice was delivered to a notifier (names the jobs)
    NOTIFY_FAILED = "notify_failed"  # a notice could not be delivered, after the retries


class AuditOutcome(StrEnum):
    """`outcome` of a `result` record; start-up reconciliation writes `unconfirmed→<outcome>`."""

    CANCELLED = "cancelled"
    ALREADY_TERMINAL = "already_terminal"
    NOT_FOUND = "not_found"
    FAILED = "failed"
    DRY_RUN = "dry_run"


class AuditWriteError(ReaperError):
    """A record could not be written durably; the action it announces must not happen."""


def unconfirmed_outcome(outcome: str) -> str:
    """The outcome start-up reconciliation records for an interrupted cancel, e.g.
    `unconfirmed→cancelled`: the job's state was looked up, the cancel call's answer is lost."""
    return UNCONFIRMED_PREFIX + str(outcome)


def format_timestamp(moment: datetime) -> str:
    """`2024-05-01T12:00:00.123Z`. Raises ValueError for a naive datetime (its zone is unknown)."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps need an aware datetime")
    utc = moment.astimezone(UTC)
    if utc.year >= 1000:  # isoformat is quicker; strftime writes years before 1000 unpadded
        return utc.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# One encoder for every record (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_json_default)


def encode_record(record: Record) -> bytes:
    """The record as one line with its newline, in the documented key order. Raises
    AuditWriteError for a value JSON cannot represent (NaN, an arbitrary object)."""
    ordered = {key: record[key] for key in HEADER_KEYS if key in record}
    rest = (item for item in record.items() if item[0] not in HEADER_KEYS and item[0] != "prev")
    ordered.update(sorted(rest, key=lambda item: item[0]))
    ordered["prev"] = record["prev"]
    try:
        text = _ENCODER.encode(ordered)
    except (TypeError, ValueError) as exc:
        raise AuditWriteError(f"audit record cannot be encoded: {exc}") from exc
    return text.encode("ascii") + b"\n"


def find_chain_head(fd: int) -> tuple[str | None, bool]:
    """(sha256 of the last line that is a JSON object or None, whether the file ends without a
    newline), reading backwards from the end of the open file only as far as needed."""
    torn = False
    with os.fdopen(os.dup(fd), "rb") as file:
        for raw, terminated in iter_lines_backward(file):
            torn = torn or not terminated
            if decode_line(raw) is not None:
                return hash_line(raw), torn
    return None, torn


def make_folder(folder: Path) -> None:
    """Create `folder` and any missing parents with mode 0750 whatever the umask (mkdir(2)
    applies the umask to the mode, and `Path.mkdir(parents=True)` gives parents the default).
    Folders that exist keep their mode. Raises OSError."""
    missing: list[Path] = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        try:
            created.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # another process made it first: its mode is its own
        os.chmod(created, DIR_MODE)


def _open_append(path: Path) -> int:
    """Open for appending (and reading back the chain head), creating the file (0640 whatever
    the umask) and its folder (0750); a new file's directory entry is fsynced so that the file
    survives a crash. Raises OSError."""
    make_folder(path.parent)
    # O_RDWR rather than O_WRONLY: recovery reads the tail through this same descriptor, so it
    # reads the file it appends to even if the path is renamed in between. Writes still append.
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
    try:
        fd = os.open(path, flags | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        _fsync_dir(path.parent)
    except OSError:
        os.close(fd)
        raise
    return fd


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class AuditLog:
    """The append-only audit file. Thread-safe: one lock orders appends, so `ts` and `prev`
    follow file order even when cancels run concurrently.

    The writer follows its file: before every record it checks that its descriptor is still
    the file at the path (device and inode). A log deleted, renamed or replaced under it is
    reopened at the path and the chain carried on, as after a rotation, so that no `intent` goes
    to a file no longer at the path (and so no cancel follows one)."""

    def __init__(
        self,
        path: Path,
        *,
        host: str | None = None,
        version: str = __version__,
        clock: Callable[[], datetime] = utc_now,
        key: bytes | None = None,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        """Open (creating it and its folder) and recover the chain head. A torn last line gets
        its newline now. With `key`, every record carries an HMAC-SHA256 `mac`
        (reaper/audit/seal.py). `fsync` makes the log's lines durable (tests count or fail
        it). Raises AuditWriteError if the file cannot be opened or repaired."""
        self._path = Path(path)
        self._host = socket.gethostname() if host is None else host
        self._version = version
        self._clock = clock
        self._key = key
        self._lock = threading.Lock()
        self._head = GENESIS
        self._records = 0  # records in the file now open (for the head file)
        self._identity: tuple[int, int] | None = None
        self._regular = True  # a regular file (not a device, as in tests): it gets a head file
        self._fd: int | None = None
        self._needs_recovery = False
        self._fsync = fsync
        # Group commit (module docstring). Writes (one per append or append_many: one appender
        # each) are numbered in the order made (under `_lock`); `_synced` is the last number an
        # fsync has settled, durable or failed (under `_sync_lock`, which is also held to swap
        # or close the descriptor, after `_lock`).
        self._sync_lock = threading.Lock()
        self._written = 0
        self._synced = 0
        self._failed: list[_FailedSync] = []
        self._fd = self._open_and_recover()
        # What the sweeps read back (the follow-up, the re-cancel window, open warnings), kept
        # between sweeps and refreshed from the file: reaper/audit/window.py.
        self.recent = AuditWindow(self._path)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def head(self) -> str:
        """sha256 of the last record written or found: the next record's `prev`."""
        return self._head

    @property
    def records(self) -> int:
        """How many records the file now open holds."""
        return self._records

    def append(self, event: str, **fields: Any) -> Record:
        """Write one record durably and return it as written (with `ts` and `prev`). `sweep_id`
        comes from `fields` (default None). Raises AuditWriteError on any failure, and
        ValueError if `fields` tries to set ts, event, host, version or prev."""
        return self.append_many([(event, fields)])[0]

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Record]:
        """Write several records, in order and chained, with ONE `os.write`, and return once
        every one of them is durable (one fsync covers them all): a batch's intents before its
        one cancel call, or its results after. All or nothing for the caller: on AuditWriteError
        none of them may be taken as written (a torn tail is recovered as after a crash).
        Raises ValueError, before writing anything, if an entry's fields set a reserved key."""
        for _, fields in entries:
            clash = (RESERVED_KEYS | {"mac"}) & fields.keys()
            if clash:
                raise ValueError(f"audit fields may not set {sorted(clash)}")
        if not entries:
            return []
        with self._lock:
            self._follow()
            fd = self._ready_fd()
            head, lines, records = self._head, [], []
            for event, fields in entries:
                record, line = self._encode(str(event), fields, head)
                head = hash_line(line[:-1])
                lines.append(line)
                records.append(record)
            self._write_only(fd, b"".join(lines))
            self._head = head
            self._records += len(lines)
            self._written += 1
            number = self._written
        self._await_durable(number)
        return records

    def reopen(self) -> None:
        """Reopen the path after log rotation by rename (SIGHUP). The next record chains to the
        last one written before, even in a new empty file. On failure the old file stays in use
        and AuditWriteError is raised."""
        with self._lock:
            self._swap()

    def write_head(self) -> None:
        """Replace `<audit_log>.head` atomically with the record count and the sha256 of the
        newest record of the file at the path (after each sweep and at exit). Raises
        AuditWriteError."""
        with self._lock:
            if self._fd is None:
                raise AuditWriteError("audit log is closed")
            self._follow()
            if not self._regular:
                return
            self._flush()  # the head must name a record that is on disk
            head = Head(self._records, self._head, format_timestamp(self._clock()))
            try:
                write_head(head_path(self._path), head, self._key)
            except OSError as exc:
                raise AuditWriteError(self._describe(exc, "write the head of")) from exc

    def close(self) -> None:
        """Write the head file, then close; later appends raise AuditWriteError. Idempotent."""
        if self._fd is None:
            return
        try:
            self.write_head()
        except AuditWriteError as exc:
            log.error("%s", exc)
        with self._lock:
            if self._fd is not None:
                self._flush()
                with self._sync_lock:
                    os.close(self._fd)
                    self._fd = None

    def tail_records(self, since: datetime) -> list[Record]:
        """Records of the current file with `ts` >= `since`, read backwards from the end only as
        far as needed (see `read_tail_from`). Raises AuditWriteError if the file is unreadable."""
        with self._lock:
            fd = self._ready_fd()
            try:
                with os.fdopen(os.dup(fd), "rb") as file:
                    return read_tail_from(file, since)
            except OSError as exc:
                raise AuditWriteError(self._describe(exc, "read")) from exc

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _encode(self, event: str, fields: Mapping[str, Any], prev: str) -> tuple[Record, bytes]:
        """The record chained to `prev`, and its line (sealed when there is a key)."""
        record: Record = {
            "ts": format_timestamp(self._clock()),
            "event": event,
            "sweep_id": None,
            "host": self._host,
            "version": self._version,
        }
        record.update(redact_value(fields if isinstance(fields, dict) else dict(fields)))
        record["prev"] = prev
        line = encode_record(record)
        if self._key is not None:
            line = seal_line(self._key, line)
            record = decode_line(line[:-1]) or record
        return record, line

    def _follow(self) -> None:
        """Reopen the path if the open file is no longer the one there (lock held). Raises
        AuditWriteError when the path cannot be opened: no record, hence no cancel, then."""
        if self._fd is None:
            raise AuditWriteError("audit log is closed")
        try:
            at_path = os.stat(self._path)
        except FileNotFoundError:
            at_path = None
        except OSError:
            return  # cannot tell (a folder we may not search): keep the file we have
        if at_path is not None and (at_path.st_dev, at_path.st_ino) == self._identity:
            return
        what = "deleted" if at_path is None else "replaced or renamed"
        log.warning("audit log %s was %s under the writer; reopening the path and carrying the "
                    "chain on", self._path, what)  # fmt: skip
        self._swap()

    def _swap(self) -> None:
        """Open the path afresh in place of the open file (lock held); the chain carries on.
        On failure the old file stays open and AuditWriteError is raised."""
        if self._fd is None:
            raise AuditWriteError("audit log is closed")
        old, old_state = self._fd, (self._identity, self._records)
        try:
            new = self._open_and_recover()
        except AuditWriteError:
            self._identity, self._records = old_state
            raise
        self._needs_recovery = False
        # The old file's lines are settled before its descriptor goes: no appender waits on a
        # descriptor that is closed (or reused by another file).
        self._flush()
        with self._sync_lock:
            self._fd = new
            os.close(old)

    def _ready_fd(self) -> int:
        """The open descriptor; after a failed write, first re-reads the chain head from the
        file, since a short or failed write may have left part of a line or a whole one."""
        if self._fd is None:
            raise AuditWriteError("audit log is closed")
        if self._needs_recovery:
            self._recover(self._fd)
            self._needs_recovery = False
        return self._fd

    def _open_and_recover(self) -> int:
        try:
            fd = _open_append(self._path)
        except OSError as exc:
            raise AuditWriteError(self._describe(exc, "open")) from exc
        try:
            self._recover(fd)
            stat = os.fstat(fd)
            self._identity = (stat.st_dev, stat.st_ino)
            self._regular = S_ISREG(stat.st_mode)
            self._records = self._count_records(fd) if self._regular else 0
        except (AuditWriteError, OSError) as exc:
            os.close(fd)
            if isinstance(exc, AuditWriteError):
                raise
            raise AuditWriteError(self._describe(exc, "open")) from exc
        return fd

    def _count_records(self, fd: int) -> int:
        """Records in the open file: the head file's count plus the records after its head,
        read backwards (bounded by what was written since the last head); the whole file only
        when the head file is missing, stale or not this file's."""
        try:
            head: Head | None = read_head(head_path(self._path), self._key)
        except (OSError, ValueError):
            head = None
        with os.fdopen(os.dup(fd), "rb") as file:
            return count_records(file, head)

    def _recover(self, fd: int) -> None:
        """Chain to the file's last JSON line, ending a torn last line with a newline first. An
        empty file keeps the current head (GENESIS, or the chain from before rotation); a file
        of fragments only starts a new chain, which is what verify accepts after fragments."""
        try:
            head, torn = find_chain_head(fd)
            if head is None and os.fstat(fd).st_size > 0:
                head = GENESIS
            if torn:
                self._write_line(fd, b"\n")
        except OSError as exc:
            raise AuditWriteError(self._describe(exc, "recover")) from exc
        self._head = head if head is not None else self._head

    def _write_line(self, fd: int, line: bytes) -> None:
        """One write, then fsync (the newline that ends a torn line: rare, under the lock).
        Raises AuditWriteError (and marks the file for recovery) on an OS error or a short
        write."""
        self._write_only(fd, line)
        try:
            self._fsync(fd)
        except OSError as exc:
            self._needs_recovery = True
            raise AuditWriteError(self._describe(exc, "write")) from exc

    def _write_only(self, fd: int, line: bytes) -> None:
        """One write, no fsync (lock held). Raises AuditWriteError (and marks the file for
        recovery) on an OS error or a short write."""
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise AuditWriteError(
                    f"short write to audit log {self._path}: {written} of {len(line)} bytes"
                )
        except (OSError, AuditWriteError) as exc:
            self._needs_recovery = True
            if isinstance(exc, AuditWriteError):
                raise
            raise AuditWriteError(self._describe(exc, "write")) from exc

    def _await_durable(self, number: int) -> None:
        """Return once write `number` is on disk: settled by an fsync some other appender made
        after it was written, or by one made here that covers every write made so far.
        Raises AuditWriteError if the fsync that covered it failed."""
        with self._sync_lock:
            if number > self._synced:
                self._sync_locked()
            self._raise_if_failed(number)

    def _flush(self) -> None:
        """Settle every line written so far (`_lock` held: none is being written). A failed
        fsync is reported to the appenders it covered, not here."""
        with self._sync_lock:
            if self._written > self._synced:
                self._sync_locked()

    def _sync_locked(self) -> None:
        """fsync the open file, settling every line written until now (`_sync_lock` held; the
        descriptor cannot change meanwhile). A line written while the fsync runs waits for the
        next one."""
        first, last = self._synced + 1, self._written
        try:
            if self._fd is None:
                raise AuditWriteError("audit log is closed")
            self._fsync(self._fd)
        except (OSError, AuditWriteError) as exc:
            message = str(exc) if isinstance(exc, AuditWriteError) else self._describe(exc, "sync")
            self._needs_recovery = True  # read the head from the file again, as after a write
            self._failed.append(_FailedSync(first, last, last - first + 1, message))
        self._synced = last

    def _raise_if_failed(self, number: int) -> None:
        """Raise AuditWriteError if write `number` was covered by a failed fsync (each appender
        asks once: a failure is forgotten once everyone it covered has heard of it)."""
        for failure in self._failed:
            if failure.first <= number <= failure.last:
                failure.unheard -= 1
                if failure.unheard <= 0:
                    self._failed.remove(failure)
                raise AuditWriteError(failure.message)

    def _describe(self, exc: OSError, action: str) -> str:
        return f"cannot {action} audit log {self._path}: {exc.strerror or exc}"


@dataclass
class _FailedSync:
    """Writes `first`..`last` whose fsync failed; `unheard` of their appenders not yet told."""

    first: int
    last: int
    unheard: int
    message: str


def count_records(file: BinaryIO, head: Head | None) -> int:
    """Records in `file`: `head.records` plus those after the record hashing to `head.sha256`,
    found reading backwards; a full count when there is no head or it is not in the file."""
    if head is not None:
        after = 0
        for raw, _ in iter_lines_backward(file):
            if decode_line(raw) is None:
                continue
            if hash_line(raw) == head.sha256:
                return head.records + after
            after += 1
    file.seek(0)
    return sum(1 for chunk in file if decode_line(chunk.rstrip(b"\n")) is not None)


def redact_value(value: Any, mask: Callable[[str], str] | None = None) -> Any:
    """`value` with every string in it masked as log lines are (reaper/redact.py): an SDK error
    echoing a credential must not reach the audit log either. `mask`: `redact.masker()`,
    looked up once for a whole record."""
    mask = masker() if mask is None else mask
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, dict):
        return {key: redact_value(item, mask) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item, mask) for item in value]
    return value
