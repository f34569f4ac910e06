"""The audit window (reaper/audit/window.py): a sweep's read-back of the log, kept between sweeps.

The reference is `read_recent`, which reads the file backwards from scratch every time: after
any sequence of appends, rotations, replacements, torn lines and writes by another process, the
window must give the same records (of the events it keeps), and hold no more than its span."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from reaper.audit import window as window_module
from reaper.audit.reader import (
    held_for_confirmation,
    open_warnings,
    read_recent,
    read_recent_from,
    recently_cancelled,
)
from reaper.audit.window import DROPPED_FIELDS, KEPT_EVENTS, PRUNE_SLACK, AuditWindow
from reaper.audit.writer import AuditLog
from reaper.backends.memory import MemoryBackend
from reaper.engine.decide import Guards
from reaper.engine.sweep import SweepEnv, run_sweep
from reaper.jobs import Job, Phase
from reaper.policy.model import PolicySet, PolicySource, compile_policy

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
EVENTS = sorted(KEPT_EVENTS | {"sweep_start", "sweep_end", "skipped"})


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


def kept(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the window gives for these records: its events, without the chain's fields."""
    return [
        {k: v for k, v in r.items() if k not in DROPPED_FIELDS}
        for r in records
        if r["event"] in KEPT_EVENTS
    ]


STEP = st.one_of(
    st.tuples(st.just("append"), st.sampled_from(EVENTS), st.integers(0, 9)),
    st.tuples(st.just("advance"), st.integers(1, 40)),  # minutes
    st.tuples(st.just("read"), st.integers(0, 90)),  # look-back in minutes
    st.tuples(st.just("rotate")),  # logrotate: rename to .1, the writer reopens at the path
    st.tuples(st.just("other_writer"), st.sampled_from(sorted(KEPT_EVENTS))),
    st.tuples(st.just("torn")),  # half a line at the end, then a restart
)


@settings(max_examples=150, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_the_window_reads_what_a_fresh_read_reads(tmp_path_factory: Any, steps: list[Any]) -> None:
    folder = tmp_path_factory.mktemp("window")
    path = folder / "audit.jsonl"
    clock = Clock()
    log = AuditLog(path, host="h", clock=clock)
    window = AuditWindow(path)
    try:
        for step in steps:
            _apply(step, log, path, clock)
            if step[0] == "read":
                since = clock.now - timedelta(minutes=step[1])
                got = window.records(since, clock.now)
                fresh = read_recent(path, since)
                assert got == kept(fresh)
                # and so the sweep's readers decide alike on either
                now = clock.now
                assert recently_cancelled(got, now) == recently_cancelled(fresh, now)
                within = timedelta(minutes=30)
                assert held_for_confirmation(got, now, within) == held_for_confirmation(
                    fresh, now, within
                )
                assert open_warnings(got).keys() == open_warnings(fresh).keys()
                # nothing older than the longest look-back asked for is kept
                span = max(timedelta(minutes=s[1]) for s in steps if s[0] == "read")
                horizon = clock.now - span - PRUNE_SLACK
                assert window.held() <= len(kept(read_recent(path, horizon)))
    finally:
        log.close()


def _apply(step: Any, log: AuditLog, path: Path, clock: Clock) -> None:
    kind = step[0]
    if kind == "append":
        log.append(step[1], backend="b", job_id=f"j{step[2]}", outcome="cancelled")
    elif kind == "advance":
        clock.now += timedelta(minutes=step[1])
    elif kind == "rotate":
        path.rename(path.with_name(path.name + ".1"))
        log.reopen()
    elif kind == "other_writer":  # the daemon's log is open; another process appends a record
        with AuditLog(path, host="other", clock=clock) as other:
            other.append(step[1], backend="b", job_id="jx", outcome="cancelled")
        log.reopen()  # the daemon's writer carries the chain on from the other's record
    elif kind == "torn":  # killed mid-write; the restarted writer ends the fragment's line
        with path.open("ab") as file:
            file.write(b'{"ts": "2025-03-01T08:00:00+00:00", "event": "res')
        log.reopen()


def test_a_line_being_written_is_read_once_it_is_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    with AuditLog(path, host="h", clock=clock) as log:
        log.append("result", backend="b", job_id="j1", outcome="cancelled")
    line = path.read_bytes()
    window = AuditWindow(path)
    with path.open("ab") as file:
        file.write(line[:-20])  # half of a second record: the writer's write is under way
        assert [r["job_id"] for r in window.records(T0, T0)] == ["j1"]
        file.write(line[-20:])
    assert [r["job_id"] for r in window.records(T0, T0)] == ["j1", "j1"]


def test_a_replaced_or_truncated_log_is_read_afresh(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    with AuditLog(path, host="h", clock=clock) as log:
        for i in range(3):
            log.append("result", backend="b", job_id=f"j{i}", outcome="cancelled")
    window = AuditWindow(path)
    assert len(window.records(T0, T0)) == 3
    path.write_bytes(b"")  # truncated in place (logrotate copytruncate)
    assert window.records(T0, T0) == []
    with AuditLog(path, host="h", clock=clock) as log:
        log.append("intent", backend="b", job_id="new")
    assert [r["job_id"] for r in window.records(T0, T0)] == ["new"]


def test_sweeps_a_little_out_of_order_are_served_without_a_new_read(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """Backends sweep concurrently: one that began earlier may ask with an earlier `now`, and
    must not make the window read the whole tail again."""
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    with AuditLog(path, host="h", clock=clock) as log:
        log.append("result", backend="b", job_id="j1", outcome="cancelled")
    loads = []
    monkeypatch.setattr(window_module, "read_recent_from",
                        lambda *a: loads.append(a) or read_recent_from(*a))  # fmt: skip
    window = AuditWindow(path)
    hour = timedelta(hours=1)
    later = T0 + timedelta(seconds=30)
    assert len(window.records(later - hour, later)) == 1
    assert len(window.records(T0 - hour, T0)) == 1
    assert len(loads) == 1
    assert len(window.records(T0 - 2 * hour, T0)) == 1  # further back than it holds: a new read
    assert len(loads) == 2


def test_a_rotated_log_grown_past_the_old_mark_is_read_afresh(tmp_path: Path) -> None:
    """The size alone cannot tell a new file: one rotated away and refilled past the mark."""
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    window = AuditWindow(path)
    with AuditLog(path, host="h", clock=clock) as log:
        log.append("result", backend="b", job_id="old", outcome="cancelled")
        assert len(window.records(T0, T0)) == 1
        path.rename(path.with_name("audit.jsonl.1"))
        log.reopen()
        for i in range(5):
            log.append("intent", backend="b", job_id=f"new{i}")
    got = [r["job_id"] for r in window.records(T0, T0)]
    assert got == ["old"] + [f"new{i}" for i in range(5)]


def test_the_window_holds_the_cancels_of_its_span_not_the_sweeps(tmp_path: Path) -> None:
    """A daemon's memory follows the cancels in the look-back, not the sweeps it made."""
    path = tmp_path / "audit.jsonl"
    clock = Clock()
    window = AuditWindow(path)
    with AuditLog(path, host="h", clock=clock) as log:
        for minute in range(240):
            clock.now = T0 + timedelta(minutes=minute)
            for _ in range(20):
                log.append("sweep_start")
                log.append("skipped", backend="b", job_id="p", cause="protected")
            log.append("result", backend="b", job_id=f"j{minute}", outcome="cancelled")
            window.records(clock.now - timedelta(hours=1), clock.now)
    assert window.held() == 66  # one cancel a minute: an hour, the slack and the last minute


# --- in a sweep --------------------------------------------------------------------------------
TYPES = {"aws_batch", "tapis", "sutro"}


def running_job() -> Job:
    return Job(backend="b", type="tapis", id="j1", name="train", queue="q", status="RUNNING",
               phase=Phase.RUNNING, created_at=T0 - timedelta(hours=3),
               started_at=T0 - timedelta(hours=2), tags={})  # fmt: skip


def test_the_cancel_a_follow_up_makes_holds_the_job_in_the_same_sweep(tmp_path: Path) -> None:
    """A job still running after `confirm_within` is cancelled once more by the follow-up, at
    the start of a sweep; that sweep's decision must see that cancel (written moments earlier)
    and hold the job, although its first cancel is past both windows: two cancels, not three."""
    clock = Clock()
    backend = MemoryBackend("b", "tapis", [running_job()], clock=clock,
                            cancel_delay=timedelta(days=1))  # fmt: skip
    source = PolicySource("p.yaml", "0" * 64, None, 0)
    policies = PolicySet.of([compile_policy({"name": "cap", "max_runtime": "1h"}, source, TYPES)])
    guards = Guards(dry_run=False, max_match_fraction=None)
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, host="h", clock=clock) as log:
        env = SweepEnv(
            policies=policies, backends={"b": backend}, audit=log, audit_path=path,
            guards=guards, clock=clock, confirm_within=timedelta(minutes=20),
        )  # fmt: skip
        for minutes in (0, 15, 25, 27):  # cancel; held (confirming); stuck + once more; held
            clock.now = T0 + timedelta(minutes=minutes)
            run_sweep(env)
    assert backend.mutating_calls == 2
    events = [r["event"] for r in read_recent(path, T0) if r.get("job_id") == "j1"]
    assert events.count("stuck") == 1 and events.count("intent") == 2
