"""Group commit in the audit writer (reaper/audit/writer.py): concurrent appenders share fsyncs,
and still no `append` returns before an fsync that began after its line was written.

The writer's fsync is replaced by one that notes what the file held when it was called (what a
real fsync makes durable: the bytes written before the call) and, for the first call, holds the
caller until every appender has written its line, so that the grouping does not depend on how
the threads happen to be scheduled."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from reaper.audit.writer import AuditLog, AuditWriteError, read_audit, verify_audit

APPENDERS = 8
WAIT_S = 15.0  # generous: the machine may be busy


class RecordingFsync:
    """An fsync that snapshots the file at each call, holds the first call until the file has
    `hold_for_lines` lines, and raises EIO on the calls numbered in `fail_calls`."""

    def __init__(self, path: Path, hold_for_lines: int, fail_calls: frozenset[int] = frozenset()):
        self.path, self.hold_for_lines, self.fail_calls = path, hold_for_lines, fail_calls
        self.lock = threading.Lock()
        self.snapshots: list[bytes] = []
        self.calls = 0
        self.held_until_full = False

    def __call__(self, fd: int) -> None:
        with self.lock:
            self.calls += 1
            number = self.calls
            self.snapshots.append(self.path.read_bytes())  # durable once this fsync succeeds
        if number == 1:
            self.held_until_full = self.wait_for_lines()
        if number in self.fail_calls:
            raise OSError(errno.EIO, "injected fsync failure")
        os.fsync(fd)

    def wait_for_lines(self) -> bool:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.path.read_bytes().count(b"\n") >= self.hold_for_lines:
                return True
            time.sleep(0.005)
        return False

    def durable(self) -> list[bytes]:
        with self.lock:
            return list(self.snapshots)


def append_concurrently(
    log: AuditLog, fsync: RecordingFsync, count: int
) -> tuple[dict[str, list[bytes]], list[str]]:
    """`count` threads append one intent each at once. Returns, per job, the snapshots fsync had
    been given by the moment its `append` returned, and the jobs whose `append` raised."""
    seen: dict[str, list[bytes]] = {}
    failed: list[str] = []
    start = threading.Barrier(count)

    def appender(i: int) -> None:
        job = f"job-{i}"
        start.wait(WAIT_S)
        try:
            log.append("intent", sweep_id="s1", backend="b", job_id=job)
        except AuditWriteError:
            failed.append(job)
            return
        seen[job] = fsync.durable()

    threads = [threading.Thread(target=appender, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    return seen, failed


def line_of(job: str) -> bytes:
    return f'"job_id":"{job}"'.encode()


def test_concurrent_appends_share_fsyncs_and_return_only_once_their_line_is_synced(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    fsync = RecordingFsync(path, hold_for_lines=APPENDERS)
    with AuditLog(path, host="h", fsync=fsync) as log:
        seen, failed = append_concurrently(log, fsync, APPENDERS)
        calls_by_appends = fsync.calls
    assert fsync.held_until_full, "the appenders did not all write while the first fsync ran"
    assert failed == [] and len(seen) == APPENDERS
    # One fsync for the first line, one for the seven written while it ran.
    assert calls_by_appends < APPENDERS
    for job, snapshots in seen.items():
        assert any(line_of(job) in snapshot for snapshot in snapshots), job
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == APPENDERS


def test_a_failed_fsync_fails_every_append_it_covered_and_the_next_append_succeeds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.jsonl"
    # Call 1 (the first line) succeeds; call 2, covering the lines written meanwhile, fails.
    fsync = RecordingFsync(path, hold_for_lines=APPENDERS, fail_calls=frozenset({2}))
    with AuditLog(path, host="h", fsync=fsync) as log:
        seen, failed = append_concurrently(log, fsync, APPENDERS)
        assert fsync.held_until_full
        assert len(seen) == 1 and len(failed) == APPENDERS - 1
        (first,) = seen
        assert any(line_of(first) in snapshot for snapshot in seen[first])
        log.append("result", sweep_id="s1", backend="b", job_id="after")
    # The failed lines are in the file (their appenders were told), and the chain holds.
    records = read_audit(path).records
    assert [r["job_id"] for r in records][-1] == "after"
    assert verify_audit(path).ok


def test_one_appender_at_a_time_gets_one_fsync_per_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fsync = RecordingFsync(path, hold_for_lines=1)
    with AuditLog(path, host="h", fsync=fsync) as log:
        for i in range(5):
            log.append("intent", sweep_id="s1", backend="b", job_id=f"j{i}")
            assert line_of(f"j{i}") in fsync.durable()[-1]
        assert fsync.calls == 5


def test_append_many_writes_a_batch_chained_in_one_write_and_returns_once_all_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "audit.jsonl"
    fsync = RecordingFsync(path, hold_for_lines=1)
    writes: list[int] = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(fd) or real_write(fd, data))
    with AuditLog(path, host="h", fsync=fsync) as log:
        log.append("sweep_start", sweep_id="s1")
        writes.clear()
        records = log.append_many([("intent", {"job_id": f"j{i}"}) for i in range(50)])
        assert len(writes) == 1 and fsync.calls == 2  # one write, one fsync for the 50
        assert all(line_of(f"j{i}") in fsync.durable()[-1] for i in range(50))
        assert [r["job_id"] for r in records] == [f"j{i}" for i in range(50)]
        assert log.records == 51
        log.append("result", sweep_id="s1", backend="b", job_id="after")
    verdict = verify_audit(path)
    assert verdict.ok and verdict.records == 52


def test_append_many_refuses_a_reserved_key_before_writing_any_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h") as log:
        with pytest.raises(ValueError, match="prev"):
            log.append_many([("intent", {"job_id": "ok"}), ("intent", {"prev": "0" * 64})])
        assert log.records == 0
    assert read_audit(path).records == []


def test_a_failed_fsync_fails_the_whole_batch_and_the_chain_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fsync = RecordingFsync(path, hold_for_lines=1, fail_calls=frozenset({1}))
    with AuditLog(path, host="h", fsync=fsync) as log:
        with pytest.raises(AuditWriteError, match="injected"):
            log.append_many([("intent", {"job_id": f"j{i}"}) for i in range(3)])
        log.append("result", job_id="after")
    assert [r["job_id"] for r in read_audit(path).records][-1] == "after"
    assert verify_audit(path).ok
