import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reaper.audit.reader import is_cancelled_outcome, iter_lines_backward, read_tail_from
from reaper.audit.writer import (
    GENESIS,
    AuditEvent,
    AuditLog,
    AuditOutcome,
    AuditWriteError,
    SkipCause,
    filter_records,
    format_timestamp,
    read_audit,
    read_tail,
    recently_cancelled,
    unconfirmed_outcome,
    unresolved_intents,
    verify_audit,
)
from reaper.commands.audit import parse_since

T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


def ticking_clock(
    start: datetime = T0, step: timedelta = timedelta(minutes=1)
) -> Callable[[], datetime]:
    """A clock that advances `step` on every call."""
    moments = iter(start + i * step for i in range(10**6))
    return lambda: next(moments)


def write_log(path: Path, count: int, **kwargs: Any) -> list[dict[str, Any]]:
    with AuditLog(path, host="test-host", clock=ticking_clock(), **kwargs) as log:
        return [
            log.append(AuditEvent.INTENT, sweep_id="s1", backend="b", job_id=f"job-{i:03d}")
            for i in range(count)
        ]


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")[:-1]


def set_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def flip_byte(path: Path, line_no: int, offset: int) -> None:
    lines = lines_of(path)
    line = bytearray(lines[line_no - 1])
    line[offset] ^= 0x01
    lines[line_no - 1] = bytes(line)
    set_lines(path, lines)


def test_round_trip_keeps_records_and_links_each_line_to_the_previous(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "audit.jsonl"
    written = write_log(path, 5)
    result = read_audit(path)
    assert result.records == written
    assert result.line_numbers == [1, 2, 3, 4, 5]
    assert (result.torn_line, result.errors) == (None, [])
    lines = lines_of(path)
    assert written[0]["prev"] == GENESIS
    for before, record in zip(lines, written[1:], strict=False):
        assert record["prev"] == hashlib.sha256(before).hexdigest()
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == 5
    assert verdict.head == hashlib.sha256(lines[-1]).hexdigest()


def test_line_format_is_compact_ascii_with_header_keys_first_and_prev_last(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h", version="9.9", clock=ticking_clock()) as log:
        record = log.append(AuditEvent.SKIPPED, cause=SkipCause.PROTECTED, job_name="träning", a=1)
    line = lines_of(path)[0]
    assert line.startswith(b'{"ts":"2024-05-01T12:00:00.123Z","event":"skipped","sweep_id":null,')
    assert (
        b'"host":"h","version":"9.9","a":1,"cause":"protected","job_name":"tr\\u00e4ning",' in line
    )
    assert line.endswith(b'"prev":"' + GENESIS.encode() + b'"}')
    assert json.loads(line) == record
    assert (path.stat().st_mode & 0o777) == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_format_timestamp_is_utc_with_milliseconds() -> None:
    offset = datetime(2024, 5, 1, 14, 0, 0, 5000, tzinfo=UTC).astimezone()
    assert format_timestamp(offset) == "2024-05-01T14:00:00.005Z"
    with pytest.raises(ValueError, match="aware"):
        format_timestamp(datetime(2024, 5, 1))


# Lines 1-5 of 6. Offsets: 2 is inside "ts" (stays valid JSON), 0 turns `{` into `z` (not JSON),
# -10 is inside `prev`. The newest line is left out: see the next test.
@pytest.mark.parametrize("line_no", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("offset", [0, 2, 40, -10], ids=["brace", "key", "value", "prev"])
def test_flipping_one_byte_names_that_line(tmp_path: Path, line_no: int, offset: int) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    flip_byte(path, line_no, offset)
    verdict = verify_audit(path)
    assert not verdict.ok
    assert (verdict.file, verdict.first_bad_line) == (path, line_no)


def test_the_newest_record_is_protected_only_by_the_head_hash(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    head_before = verify_audit(path).head
    flip_byte(path, 3, 40)
    verdict = verify_audit(path)
    assert verdict.ok  # no later record vouches for it ...
    assert verdict.head != head_before  # ... so anchor the printed head elsewhere


def test_deleting_a_line_is_found(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    lines = lines_of(path)
    set_lines(path, lines[:3] + lines[4:])
    verdict = verify_audit(path)
    assert not verdict.ok and verdict.first_bad_line == 3
    assert "missing" in verdict.message


def test_a_file_that_does_not_start_at_genesis_is_reported_as_continued(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    set_lines(path, lines_of(path)[1:])
    verdict = verify_audit(path)
    assert verdict.ok and "continues a chain from an earlier file" in verdict.message


@pytest.mark.parametrize(
    "fragment", [b'{"ts":"2024-05-01T12:0', b"\x00" * 40, b"{"], ids=["prefix", "nul", "brace"]
)
def test_torn_last_line_is_reported_then_recovered_by_the_next_writer(
    tmp_path: Path, fragment: bytes
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    with path.open("ab") as file:
        file.write(fragment)
    result = read_audit(path)
    assert (len(result.records), result.torn_line, result.errors) == (3, 4, [])
    verdict = verify_audit(path)
    assert verdict.ok and "torn last line at line 4" in verdict.message

    with AuditLog(path, host="h") as log:
        record = log.append(AuditEvent.SWEEP_START, sweep_id="s2")
    lines = lines_of(path)
    assert lines[3] == fragment and record["prev"] == hashlib.sha256(lines[2]).hexdigest()
    result = read_audit(path)
    assert (len(result.records), result.torn_line, result.recovered_lines) == (4, None, [4])
    verdict = verify_audit(path)
    assert (
        verdict.ok and verdict.records == 4 and "recovered torn write at line 4" in verdict.message
    )


def test_a_complete_record_missing_only_its_newline_is_completed_and_chained(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    path.write_bytes(path.read_bytes()[:-1])
    with AuditLog(path, host="h") as log:
        record = log.append(AuditEvent.SWEEP_END, sweep_id="s1")
    assert record["prev"] == hashlib.sha256(lines_of(path)[1]).hexdigest()
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == 3 and "torn" not in verdict.message


def test_a_fragment_in_the_middle_that_no_record_skips_is_corruption(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    lines = lines_of(path)
    lines[1] = lines[1][:30]
    set_lines(path, lines)
    assert read_audit(path).errors == ["line 2: not a JSON object"]
    verdict = verify_audit(path)
    assert not verdict.ok and verdict.first_bad_line == 2


def test_a_json_line_without_prev_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    with path.open("ab") as file:
        file.write(b'{"event":"intent"}\n')
    verdict = verify_audit(path)
    assert not verdict.ok and verdict.first_bad_line == 3 and "prev" in verdict.message


def test_reopen_after_rename_carries_the_chain_into_the_new_file(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    with AuditLog(path, host="h", clock=ticking_clock()) as log:
        log.append(AuditEvent.SWEEP_START, sweep_id="s1")
        last_old = log.append(AuditEvent.SWEEP_END, sweep_id="s1")
        path.rename(rotated)
        # The writer follows its file: the next record goes to the path, not the renamed file,
        # SIGHUP (reopen) or not.
        first_new = log.append(AuditEvent.RELOAD)
        log.reopen()
        log.append(AuditEvent.SWEEP_START, sweep_id="s2")
    assert len(lines_of(rotated)) == 2 and len(lines_of(path)) == 2
    assert (
        first_new["prev"] == hashlib.sha256(lines_of(rotated)[-1]).hexdigest() != last_old["prev"]
    )
    assert verify_audit([rotated, path]).ok
    assert verify_audit([rotated, path]).records == 4
    assert "continues a chain" in verify_audit(path).message


def test_rotated_files_out_of_order_or_with_a_gap_fail(tmp_path: Path) -> None:
    files = [tmp_path / f"audit.jsonl.{n}" for n in (3, 2, 1)]
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        for rotated in files:
            log.append(AuditEvent.SWEEP_START)
            path.rename(rotated)
            log.reopen()
        log.append(AuditEvent.SWEEP_END)
    assert verify_audit([*files, path]).ok
    swapped = verify_audit([files[0], files[2], files[1], path])
    assert not swapped.ok and (swapped.file, swapped.first_bad_line) == (files[2], 1)
    gap = verify_audit([files[0], files[2], path])
    assert not gap.ok and "missing" in gap.message


def test_reopen_without_rotation_keeps_appending_to_the_same_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        log.append(AuditEvent.SWEEP_START)
        log.reopen()
        log.append(AuditEvent.SWEEP_END)
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == 2


def test_a_writer_that_never_saw_the_rotated_file_starts_a_new_chain(tmp_path: Path) -> None:
    path, rotated = tmp_path / "audit.jsonl", tmp_path / "audit.jsonl.1"
    write_log(path, 2)
    path.rename(rotated)
    write_log(path, 2)  # a one-shot run after logrotate
    refused = verify_audit([rotated, path])
    assert not refused.ok and (refused.file, refused.first_bad_line) == (path, 1)
    assert "starts a new chain instead of continuing audit.jsonl.1:2" in refused.message
    verdict = verify_audit([rotated, path], new_chain_ok=True)
    assert verdict.ok and "audit.jsonl starts a new chain" in verdict.message


def test_unwritable_paths_raise_audit_write_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(AuditWriteError, match="cannot open audit log"):
        AuditLog(not_a_dir / "audit.jsonl")
    with pytest.raises(AuditWriteError):
        AuditLog(tmp_path)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_failing_write_raises_audit_write_error() -> None:
    # The OS's wording of ENOSPC is not reaper's to assert: the error's cause carries the errno.
    with AuditLog(Path("/dev/full")) as log, pytest.raises(AuditWriteError) as caught:
        log.append(AuditEvent.INTENT, job_id="j1")
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC


SHORT_WRITE_CHILD = """
import resource, signal, sys
from pathlib import Path
from reaper.audit.writer import AuditLog, AuditWriteError
path = Path(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
log = AuditLog(path, host="h")
log.append("sweep_start", sweep_id="s1")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 100, hard))
try:
    log.append("intent", sweep_id="s1", reason="x" * 1000)
except AuditWriteError as exc:
    print("raised:", exc)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.append("sweep_end", sweep_id="s1")
"""


def test_a_short_write_raises_and_the_next_append_recovers(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = [sys.executable, "-c", SHORT_WRITE_CHILD, str(path)]
    done = subprocess.run(child, env=env, capture_output=True, text=True, timeout=60, check=True)
    assert "raised: short write" in done.stdout
    result = read_audit(path)
    assert [r["event"] for r in result.records] == ["sweep_start", "sweep_end"]
    assert result.recovered_lines == [2]
    assert verify_audit(path).ok


def test_append_refuses_reserved_fields_and_unencodable_values(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        with pytest.raises(ValueError, match="prev"):
            log.append(AuditEvent.INTENT, prev="x")
        with pytest.raises(AuditWriteError, match="cannot be encoded"):
            log.append(AuditEvent.INTENT, runtime_s=float("nan"))
        with pytest.raises(AuditWriteError):
            log.append(AuditEvent.INTENT, job=object())
        log.append(AuditEvent.INTENT, when=T0, path=Path("/p"), tags={"b", "a"})
    records = read_audit(path).records
    assert records == [records[0]] and records[0]["tags"] == ["a", "b"]
    assert records[0]["when"] == "2024-05-01T12:00:00.123Z" and verify_audit(path).ok


def test_append_after_close_raises(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    log.close()
    with pytest.raises(AuditWriteError, match="closed"):
        log.append(AuditEvent.SWEEP_START)


def test_concurrent_appends_keep_the_chain_valid(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    threads, per_thread = 8, 40
    with AuditLog(path, host="h") as log:

        def cancel_many(worker: int) -> None:
            for i in range(per_thread):
                log.append(AuditEvent.INTENT, backend="b", job_id=f"{worker}-{i}")

        pool = [threading.Thread(target=cancel_many, args=(w,)) for w in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == threads * per_thread
    jobs = {r["job_id"] for r in read_audit(path).records}
    assert len(jobs) == threads * per_thread


def record(event: str, minutes_ago: float, job: str, **fields: Any) -> dict[str, Any]:
    ts = format_timestamp(T0 - timedelta(minutes=minutes_ago))
    return {"ts": ts, "event": event, "sweep_id": "s1", "backend": "b", "job_id": job, **fields}


def test_unresolved_intents_are_intents_without_a_later_result() -> None:
    records = [
        record("intent", 9, "done", dry_run=False),
        record("result", 9, "done", outcome="cancelled"),
        record("intent", 8, "open", dry_run=False),
        record("intent", 7, "dry", dry_run=True),
        record("intent", 6, "other-sweep", sweep_id="s2"),
        record("result", 6, "other-sweep", sweep_id="s1", outcome="cancelled"),
        record("result", 5, "open-elsewhere", outcome="cancelled"),
        record("intent", 4, "open-elsewhere"),
    ]
    open_jobs = [r["job_id"] for r in unresolved_intents(records)]
    assert open_jobs == ["open", "other-sweep", "open-elsewhere"]


def test_recently_cancelled_survives_in_the_log_for_the_window() -> None:
    records = [
        record("intent", 15, "old"),
        record("result", 15, "old", outcome=AuditOutcome.CANCELLED),
        record("intent", 5, "new"),
        record("result", 5, "new", outcome=AuditOutcome.CANCELLED),
        record("intent", 4, "failed"),
        record("result", 4, "failed", outcome=AuditOutcome.FAILED),
        record("intent", 3, "gone"),
        record("result", 3, "gone", outcome=AuditOutcome.NOT_FOUND),
        record("intent", 2, "interrupted"),
        record("intent", 2, "dry", dry_run=True),
        record("result", 1, "reconciled", outcome=unconfirmed_outcome("cancelled")),
        # still active at start-up: an asynchronous cancel may be winding it down
        record("result", 1, "winding-down", outcome=unconfirmed_outcome("failed")),
        record("result", 1, "vanished", outcome=unconfirmed_outcome("not_found")),
    ]
    found = recently_cancelled(records, T0)
    assert found == {("b", "new"), ("b", "interrupted"), ("b", "reconciled"), ("b", "winding-down")}
    assert recently_cancelled(records, T0, window=timedelta(minutes=20)) >= {("b", "old")}


def test_unconfirmed_outcome_names_the_looked_up_state() -> None:
    assert unconfirmed_outcome(AuditOutcome.CANCELLED) == "unconfirmed→cancelled"
    assert is_cancelled_outcome("unconfirmed→cancelled") and not is_cancelled_outcome("failed")


def test_filter_records_by_time_policy_and_job() -> None:
    records = [
        record("intent", 30, "j1", policy="p1"),
        record("intent", 5, "j1", policy="p2"),
        record("intent", 5, "j2", policy="p1"),
        {"event": "sweep_start", "ts": "garbage"},
    ]
    since = T0 - timedelta(minutes=10)
    assert filter_records(records, since=since) == records[1:3]
    assert filter_records(records, policy="p1") == [records[0], records[2]]
    assert filter_records(records, since=since, job="j1") == [records[1]]
    assert filter_records(records) == records


def test_tail_reads_only_recent_records_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    written = write_log(path, 10)  # one minute apart from T0
    since = T0.replace(microsecond=0) + timedelta(minutes=7)
    assert read_tail(path, since) == written[7:]
    assert read_tail(path, since, block_size=17) == written[7:]
    assert read_tail(tmp_path / "missing.jsonl", since) == []
    with AuditLog(path, host="h", clock=ticking_clock(T0 + timedelta(hours=1))) as log:
        assert log.tail_records(since) == written[7:]
        newest = log.append(AuditEvent.SWEEP_START)
        assert log.tail_records(T0 + timedelta(minutes=30)) == [newest]


@given(st.lists(st.sampled_from([b"a", b"bc", b"\n", b"{}", b"\x00"]), max_size=40))
def test_reading_backwards_matches_reading_forwards(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    forward = data.split(b"\n")
    tail = forward.pop()
    expected = [(line, True) for line in forward] + ([(tail, False)] if tail else [])
    for block_size in (1, 3, 64):
        backward = list(iter_lines_backward(io.BytesIO(data), block_size))
        assert backward[::-1] == expected


def test_parse_since_accepts_durations_and_times() -> None:
    assert parse_since("24h", T0) == T0 - timedelta(hours=24)
    assert parse_since("1h30m", T0) == T0 - timedelta(minutes=90)
    assert parse_since("2024-05-01T10:00:00Z", T0) == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert parse_since("2024-05-01", T0) == datetime(2024, 5, 1, tzinfo=UTC)
    for bad in ("24", "yesterday", "-1h"):
        with pytest.raises(ValueError, match="duration"):
            parse_since(bad, T0)


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk


def test_tail_reads_backwards_only_as_far_as_needed(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2000)
    data = path.read_bytes()
    file = CountingReader(data)
    since = T0.replace(microsecond=0) + timedelta(minutes=1995)
    assert [r["job_id"] for r in read_tail_from(file, since, block_size=4096)] == [
        f"job-{i:03d}" for i in range(1995, 2000)
    ]
    assert file.bytes_read <= 2 * 4096 < len(data) // 10
