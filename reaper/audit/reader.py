"""Reading the audit log (docs/audit.md): lines forwards and backwards, records, queries.

The file format, shared with the writer in `reaper/audit.py`:

* One JSON object per line, ended by `\\n`. Each record's `prev` is the sha256 (lower-case hex)
  of the previous record's line bytes without the newline; the first record of a chain has
  `prev` = 64 zeros (`GENESIS`).
* A *fragment* is a line that is not a JSON object: the remains of a write cut short by power
  loss (a prefix of a line, or NUL bytes where the file system had not written the data yet).
  A prefix of a JSON object is never a JSON object, so a fragment cannot pass for a record.
* Recovery rule: a writer that finds fragments at the end of the file ends them with a newline
  and chains its next record to the last line that *is* a JSON object, skipping the fragments.
  A file holding only fragments gets a new chain (GENESIS). Readers therefore accept a run of
  fragments that the next record's `prev` skips (reported as recovered; at the start of a file
  that record's `prev` must be GENESIS), and a run of fragments at the end of the file (reported
  as a torn last line). Any other fragment is corruption.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

GENESIS = "0" * 64
BLOCK_SIZE = 64 * 1024
RECENT_CANCEL_WINDOW = timedelta(minutes=10)
MAX_ROTATED = 100  # rotated files read for the re-cancel window, at most (logrotate `rotate N`)

Record = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Line:
    """One line of an audit file."""

    number: int  # 1-based
    raw: bytes  # without the newline
    record: Record | None  # None: a fragment (not a JSON object)
    terminated: bool  # False only for a last line without its newline


@dataclass(frozen=True, slots=True)
class AuditReadResult:
    """Records of one audit file, in file order, with what could not be read."""

    records: list[Record]
    line_numbers: list[int]  # 1-based line of each record
    torn_line: int | None  # first line of the fragments at the end of the file
    errors: list[str]  # "line N: ..." for fragments in the middle that no record skips
    recovered_lines: list[int] = field(default_factory=list)  # fragments a later record skips


def hash_line(raw: bytes) -> str:
    """sha256 hex of a line's bytes without its newline: the next record's `prev`."""
    return hashlib.sha256(raw).hexdigest()


def decode_line(raw: bytes) -> Record | None:
    """The JSON object on this line, or None if the line is a fragment."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):  # JSONDecodeError is a ValueError
        return None
    return value if isinstance(value, dict) else None


def is_valid_prev(value: object) -> bool:
    """True for 64 lower-case hex digits, the only form a writer produces."""
    return (
        isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
    )


def iter_lines(path: Path) -> Iterator[Line]:
    """Stream the lines of an audit file from first to last. Raises OSError."""
    with path.open("rb") as file:
        for number, chunk in enumerate(file, start=1):
            terminated = chunk.endswith(b"\n")
            raw = chunk[:-1] if terminated else chunk
            yield Line(number, raw, decode_line(raw), terminated)


def iter_lines_backward(
    file: BinaryIO, block_size: int = BLOCK_SIZE, end: int | None = None
) -> Iterator[tuple[bytes, bool]]:
    """Yield (line bytes, terminated) from the last line to the first, reading `block_size`
    bytes at a time from the end (or from byte `end`: the file as it was then), so that finding
    the last record of a 1 GB file reads a block. `terminated` is False only for a last line
    without its newline."""
    pos = file.seek(0, os.SEEK_END) if end is None else end
    carry = b""
    at_tail = True  # the next piece is the text after the file's last newline
    while pos > 0:
        step = min(block_size, pos)
        pos -= step
        file.seek(pos)
        pieces = (file.read(step) + carry).split(b"\n")
        carry = pieces[0]
        for piece in reversed(pieces[1:]):
            if at_tail:
                at_tail = False
                if piece:
                    yield piece, False
            else:
                yield piece, True
    if not at_tail:
        yield carry, True
    elif carry:
        yield carry, False


def read_audit(path: Path, keep: Callable[[Record], bool] | None = None) -> AuditReadResult:
    """Read one audit file in a single streaming pass, keeping the records `keep` accepts (all
    by default). Fragments are classified by the recovery rule in this module's docstring; a
    torn last line is reported in `torn_line`, not as an error. Raises OSError."""
    records: list[Record] = []
    numbers: list[int] = []
    errors: list[str] = []
    recovered: list[int] = []
    last_hash: str | None = None  # None: no record yet in this file
    run: list[int] = []  # fragments since the last record
    for line in iter_lines(path):
        if line.record is None:
            run.append(line.number)
            continue
        if run:
            skipped = line.record.get("prev") == (last_hash or GENESIS)
            if skipped:
                recovered.extend(run)
            else:
                errors.extend(f"line {n}: not a JSON object" for n in run)
            run = []
        last_hash = hash_line(line.raw)
        if keep is None or keep(line.record):
            records.append(line.record)
            numbers.append(line.number)
    return AuditReadResult(records, numbers, run[0] if run else None, errors, recovered)


def parse_record_time(record: Record) -> datetime | None:
    """The record's `ts` as an aware UTC datetime, or None if it is missing or malformed."""
    text = record.get("ts")
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo else None


def read_tail(path: Path, since: datetime, block_size: int = BLOCK_SIZE) -> list[Record]:
    """`read_tail_from` on the file at `path`; a missing file has no records. Raises OSError."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return []
    with file:
        return read_tail_from(file, since, block_size)


def read_tail_with_rotated(path: Path, since: datetime) -> list[Record]:
    """Records since `since` from `path` and the files rotated away before it (`PATH.1`, …):
    state that must outlive a rotation (open warnings) is found in either. `read_recent`, which
    stops at the first older record. Raises OSError."""
    return read_recent(path, since)


def read_tail_from(file: BinaryIO, since: datetime, block_size: int = BLOCK_SIZE) -> list[Record]:
    """Records with `ts` >= `since`, in file order, reading backwards from the end only until the
    first older record. Fragments are skipped. Assumes `ts` never decreases along the file (the
    writer stamps records under its lock); a clock stepped back may hide a few records."""
    return _tail(file, since, block_size)[0]


def _tail(
    file: BinaryIO, since: datetime, block_size: int, end: int | None = None
) -> tuple[list[Record], bool]:
    """`read_tail_from` (of the file's first `end` bytes, if given), and whether an older record
    was found (False: the whole file is newer than `since`, so older files may hold more of the
    window)."""
    found: list[Record] = []
    older = False
    for raw, _ in iter_lines_backward(file, block_size, end):
        record = decode_line(raw)
        when = parse_record_time(record) if record is not None else None
        if record is None or when is None:
            continue
        if when < since:
            older = True
            break
        found.append(record)
    found.reverse()
    return found, older


def rotated_files(path: Path) -> Iterator[Path]:
    """`path`, then `path.1`, `path.2`, … as logrotate names them (newest first), as long as
    they exist (`path` itself may be missing just after a rotation). At most MAX_ROTATED."""
    yield path
    for number in range(1, MAX_ROTATED + 1):
        older = path.with_name(f"{path.name}.{number}")
        if not older.exists():
            return
        yield older


def read_recent(path: Path, since: datetime, block_size: int = BLOCK_SIZE) -> list[Record]:
    """Records with `ts` >= `since` from the log at `path` and, when the window reaches back past
    its first record, from its rotated files (`rotated_files`), in time order. Reads backwards
    and stops at the first record older than `since`, so the cost is bounded by the window, not
    by the files. Compressed rotated files (`.gz`) are not read. Raises OSError."""
    return read_recent_from(path, since, block_size)[0]


class RecentRecords(Protocol):
    """Where a sweep's readers get the log's recent records: `LogTail` (read afresh) or
    `reaper.audit.window.AuditWindow` (kept between a daemon's sweeps)."""

    def records(self, since: datetime, now: datetime) -> list[Record]: ...


@dataclass(frozen=True)
class LogTail:
    """The log at `path` read afresh on every call (`read_recent`): what `plan` and `explain`
    use, which run once and keep nothing."""

    path: Path

    def records(self, since: datetime, now: datetime) -> list[Record]:
        """Records with `ts` >= `since` (`now` is unused: a fresh read knows nothing newer).
        Raises OSError."""
        return read_recent(self.path, since)


@dataclass(frozen=True, slots=True)
class FileMark:
    """Where a reader stopped in the live log: the file (device, inode) and the offset just
    past its last complete line then. A later reader goes on from there while the same file
    only grew, and starts over otherwise (rotated, replaced or truncated)."""

    device: int
    inode: int
    offset: int


def read_recent_from(
    path: Path, since: datetime, block_size: int = BLOCK_SIZE
) -> tuple[list[Record], FileMark | None]:
    """`read_recent`, and the mark of the live file's end as read (None: there was no live
    file). Only complete lines of the live file are read: a line being written is left to the
    next reader, which begins at the mark. Raises OSError."""
    found: list[Record] = []
    mark = None
    for file in rotated_files(path):
        try:
            handle = file.open("rb")
        except FileNotFoundError:
            continue
        with handle:
            end = None
            if mark is None and file == path:
                mark = mark_of(handle)
                end = mark.offset
            records, older = _tail(handle, since, block_size, end)
        found[:0] = records
        if older:
            break
    return found, mark


def mark_of(file: BinaryIO) -> FileMark:
    """The mark just past the last complete line of the open file, as it is now."""
    stat = os.fstat(file.fileno())
    return FileMark(stat.st_dev, stat.st_ino, complete_end(file, stat.st_size))


def complete_end(file: BinaryIO, size: int, block_size: int = BLOCK_SIZE) -> int:
    """The offset just past the last newline in the file's first `size` bytes (0: none)."""
    pos = size
    while pos > 0:
        step = min(block_size, pos)
        pos -= step
        file.seek(pos)
        at = file.read(step).rfind(b"\n")
        if at >= 0:
            return pos + at + 1
    return 0


def filter_records(
    records: Iterable[Record],
    since: datetime | None = None,
    policy: str | None = None,
    job: str | None = None,
) -> list[Record]:
    """Records at or after `since`, of policy `policy`, about job id `job` (each None = any)."""
    return [r for r in records if matches_filter(r, since, policy, job)]


def matches_filter(
    record: Record, since: datetime | None, policy: str | None, job: str | None
) -> bool:
    """The predicate behind `filter_records`, usable as `read_audit(path, keep=...)`."""
    if policy is not None and record.get("policy") != policy:
        return False
    if job is not None and record.get("job_id") != job:
        return False
    if since is None:
        return True
    when = parse_record_time(record)
    return when is not None and when >= since


def _job_key(record: Record) -> tuple[str, str]:
    return (str(record.get("backend")), str(record.get("job_id")))


def _intent_key(record: Record) -> tuple[str, str, str]:
    return (str(record.get("sweep_id")), *_job_key(record))


def is_cancelled_outcome(outcome: object) -> bool:
    """`cancelled`, or `unconfirmed→cancelled` written by start-up reconciliation."""
    return isinstance(outcome, str) and outcome.split("→")[-1] == "cancelled"


def unresolved_intents(records: Iterable[Record]) -> list[Record]:
    """`intent` records (not dry-run) with no later `result` for the same (sweep_id, backend,
    job_id), in file order: cancels a crash may have interrupted, which start-up reconciles."""
    open_intents: dict[tuple[str, str, str], Record] = {}
    for record in records:
        event = record.get("event")
        if event == "intent" and not record.get("dry_run"):
            open_intents[_intent_key(record)] = record
        elif event == "result":
            open_intents.pop(_intent_key(record), None)
    return list(open_intents.values())


def recently_cancelled(
    records: Iterable[Record], now: datetime, window: timedelta = RECENT_CANCEL_WINDOW
) -> set[tuple[str, str]]:
    """(backend, job_id) of jobs cancelled within `window` before `now`: a `result` whose outcome
    is cancelled, or any `unconfirmed→…` result but `not_found`, or an `intent` (not dry-run)
    without a result yet — an interrupted cancel may have reached the backend, and an
    asynchronous cancel leaves the job active while it winds down, so start-up reconciliation
    cannot tell "never arrived" from "still stopping". A failed cancel does not count, so the
    next sweep retries it. Read from the log, this survives restarts (docs/architecture.md)."""
    recent = [r for r in records if _is_within(r, now - window)]
    found = {
        _job_key(r)
        for r in recent
        if r.get("event") == "result" and _may_have_cancelled(r.get("outcome"))
    }
    found.update(_job_key(r) for r in unresolved_intents(recent))
    return found


def _may_have_cancelled(outcome: object) -> bool:
    if is_cancelled_outcome(outcome):
        return True
    return (
        isinstance(outcome, str)
        and outcome.startswith("unconfirmed→")
        and not (outcome.endswith("not_found"))
    )


def _is_within(record: Record, start: datetime) -> bool:
    when = parse_record_time(record)
    return when is not None and when >= start


@dataclass(frozen=True, slots=True)
class Awaiting:
    """A `cancelled` result whose job no `confirmed` record has followed yet (docs/audit.md,
    "Confirmation"). `stuck` is True once a `stuck` record was written for the job: its one
    extra cancel was made, and it is only confirmed from then on, never stuck again."""

    result: Record
    stuck: bool


def awaiting_confirmation(records: Iterable[Record]) -> list[Awaiting]:
    """The latest `cancelled` result (not dry run) of each job that has no later `confirmed`
    record, in file order."""
    pending: dict[tuple[str, str], Awaiting] = {}
    stuck: set[tuple[str, str]] = set()
    for record in records:
        event, key = record.get("event"), _job_key(record)
        if event == "result" and record.get("outcome") == "cancelled" and not record.get("dry_run"):
            pending[key] = Awaiting(record, key in stuck)
        elif event == "confirmed":
            pending.pop(key, None)
            stuck.discard(key)
        elif event == "stuck":
            stuck.add(key)
            if key in pending:
                pending[key] = Awaiting(pending[key].result, True)
    return list(pending.values())


def held_for_confirmation(
    records: Iterable[Record], now: datetime, within: timedelta
) -> set[tuple[str, str]]:
    """(backend, job_id) of jobs cancelled less than `within` ago and not yet confirmed: the
    re-cancel window holds them until their confirmation is due (a `stuck` record and one more
    cancel then), however long an asynchronous cancel takes to land."""
    held = set()
    for awaiting in awaiting_confirmation(records):
        when = parse_record_time(awaiting.result)
        if when is not None and now - when < within:
            held.add(_job_key(awaiting.result))
    return held


def open_warnings(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """The `warned` records still open, by (backend, job_id), in file order: the latest warning
    of each job that no later `cleared` record, cancel (`result` cancelled, already terminal or
    not found, or an `unconfirmed→…` one) or newer warning closed. Each returned record is a copy
    with `delivered` set: True if a later `notified` record for notice `warned` names the job
    (`jobs`: [[backend, job_id], ...]) — what `require_notice` waits for."""
    found: dict[tuple[str, str], Record] = {}
    for record in records:
        event = record.get("event")
        if event == "warned":
            found[_job_key(record)] = {**record, "delivered": False}
        elif event == "cleared" or (event == "result" and _closes_warning(record)):
            found.pop(_job_key(record), None)
        elif event == "notified" and record.get("notice") == "warned":
            for key in _named_jobs(record):
                if key in found:
                    found[key]["delivered"] = True
    return found


def _closes_warning(record: Record) -> bool:
    """A real cancel's result that leaves nothing to warn about: the job is gone or going. A
    failed cancel (retried next sweep) and a dry run keep the warning open."""
    outcome = record.get("outcome")
    if record.get("dry_run") or not isinstance(outcome, str):
        return False
    return outcome.split("→")[-1] in ("cancelled", "already_terminal", "not_found")


def _named_jobs(record: Record) -> list[tuple[str, str]]:
    jobs = record.get("jobs")
    if not isinstance(jobs, list):
        return []
    return [(str(j[0]), str(j[1])) for j in jobs if isinstance(j, list) and len(j) == 2]
