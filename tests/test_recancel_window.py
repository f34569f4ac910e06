"""The re-cancel window survives rotation and restarts (docs/audit.md, "The re-cancel window"):
jobs whose asynchronous cancel is still winding down are not cancelled again, whether the next
sweep is a new process or the daemon after logrotate's rename and SIGHUP."""

from __future__ import annotations

import signal
from pathlib import Path

from reaper.audit.reader import read_audit, read_recent
from reaper.audit.writer import AuditLog
from tests.daemon_support import daemon_process, events, free_port, wait_for
from tests.e2e_support import expected_cancels, mutating_calls, run_once, same_knobs
from tests.e2e_support import standard_world as world_of

# Cancels complete ten minutes after the call: every cancelled job stays active meanwhile.
SLOW = same_knobs(cancel_delay_s=600.0)
ACT = {"dry_run": False}


def cancel_calls(world) -> int:  # type: ignore[no-untyped-def]
    calls = mutating_calls(world)
    return calls["batch"] + calls["inference"] + world.emulators["hpc"].calls["cancelJob"]


def test_a_restart_after_a_rotation_does_not_cancel_again(tmp_path: Path) -> None:
    with world_of(tmp_path, config=ACT, knobs=SLOW) as world:
        assert run_once(world).code == 0
        first = cancel_calls(world)
        assert first >= 1
        assert run_once(world).code == 0  # a restart: a new process reads the window
        world.audit_path.rename(world.audit_path.with_name("audit.jsonl.1"))
        assert run_once(world).code == 0  # after a rotation: the window reads audit.jsonl.1
        assert cancel_calls(world) == first
        # The jobs that still match while they wind down (some backends show them as stopping,
        # which no policy matches) are held back by the window read from the rotated file.
        records = events(world.audit_path, "skipped", cause="recently_cancelled")
        held = {(r["backend"], r["job_id"]) for r in records}
        assert held and held <= expected_cancels()


def test_the_daemon_after_rename_and_sighup_does_not_cancel_again(tmp_path: Path) -> None:
    config = ACT | {"schedule": {"every": "1s"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"}}
    with (
        world_of(tmp_path, config=config, knobs=SLOW) as world,
        daemon_process(world, tmp_path / "daemon.log") as daemon,
    ):
        wait_for(lambda: len(events(world.audit_path, "sweep_end")) >= 3, 30, "first sweeps")
        wait_for(lambda: len(events(world.audit_path, "result")) >= 9, 30, "the cancels")
        first = cancel_calls(world)
        rotated = world.audit_path.rename(world.audit_path.with_name("audit.jsonl.1"))
        daemon.send_signal(signal.SIGHUP)
        wait_for(lambda: len(events(world.audit_path, "sweep_end")) >= 6, 30, "later sweeps")
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0
        assert cancel_calls(world) == first
        assert len(events(rotated, "result")) == len(expected_cancels())
        held = events(world.audit_path, "skipped", cause="recently_cancelled")
        assert held and {(r["backend"], r["job_id"]) for r in held} <= expected_cancels()


def test_the_window_stops_reading_at_its_start(tmp_path: Path) -> None:
    """Start-up cost stays bounded: files older than the window are not opened."""
    from datetime import UTC, datetime, timedelta

    moments = iter(datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=n) for n in range(100))
    path = tmp_path / "audit.jsonl"
    for name in ("audit.jsonl.3", "audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"):
        with AuditLog(tmp_path / name, host="h", clock=lambda: next(moments)) as log:
            for _ in range(5):
                log.append("sweep_start")
    (tmp_path / "audit.jsonl.3").write_bytes(b"not json, and never read\n")
    since = datetime(2024, 5, 1, tzinfo=UTC) + timedelta(minutes=7)
    newer = [
        record
        for name in ("audit.jsonl.2", "audit.jsonl.1", "audit.jsonl")
        for record in read_audit(tmp_path / name).records
        if record["ts"] >= "2024-05-01T00:07"
    ]
    assert read_audit(tmp_path / "audit.jsonl.2").records[0] not in newer  # the cut is inside .2
    assert read_recent(path, since) == newer
