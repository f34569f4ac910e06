"""A daemon restart between a warning and its due time keeps the due time (issue 14,
acceptance 3): each "daemon" here is built from scratch — config and policies loaded from the
files, a new audit log writer, a new backend pool — so the only thing one hands the next is
the audit log file. The sweeps' clock is injected (no sleeping)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from reaper.audit.writer import AuditLog
from reaper.backends.memory import MemoryBackend
from reaper.engine.pool import BackendPool
from reaper.jobs import Job, Phase
from reaper.policy.config import load_all
from reaper.service.daemon import Daemon, Services
from reaper.service.metrics import Metrics
from reaper.service.reload import Loaded
from reaper.service.signals import SignalFlags, Wakeup
from reaper.service.systemd import Notifier
from tests.daemon_support import events

T0 = datetime.now(UTC).replace(microsecond=0)
GRACE = timedelta(hours=2)
CONFIG = """\
policies: policies/
audit_log: audit.jsonl
dry_run: false
schedule: {every: 1h}
limits: {max_match_fraction: 1.0}
backends:
  mem: {type: sutro, api_url: https://sutro.example.com, api_key_env: UNUSED_KEY}
"""
POLICIES = """\
policies:
  - name: cap
    names: ["old-*"]
    max_runtime: 12h
    grace: 2h
"""


def job(name: str, hours: float) -> Job:
    return Job(backend="mem", type="sutro", id=name, name=name, queue="", status="RUNNING",
               phase=Phase.RUNNING, created_at=T0 - (hours + 1) * timedelta(hours=1),
               started_at=T0 - hours * timedelta(hours=1))  # fmt: skip


def sweep_once(folder: Path, backend: MemoryBackend, now: datetime) -> None:
    """Start a daemon from the files, let it sweep `mem` once at `now`, shut it down."""

    def opener(name: str, section: Mapping[str, Any], base: Path) -> MemoryBackend:
        return backend

    loaded = Loaded(*load_all(folder / "reaper.yaml"))
    wakeup = Wakeup()
    with AuditLog(folder / "audit.jsonl") as audit, Notifier(env={}) as notifier:
        services = Services(audit, BackendPool(opener), Metrics(CollectorRegistry()), notifier,
                            wakeup, SignalFlags(wakeup))  # fmt: skip
        daemon = Daemon(loaded, services, clock=lambda: now)
        try:
            daemon.sweep_backend("mem")
        finally:
            daemon.scheduler.stop(wait=False)
            wakeup.close()


def write_files(folder: Path) -> None:
    (folder / "policies").mkdir()
    (folder / "policies" / "p.yaml").write_text(POLICIES, encoding="utf-8")
    (folder / "reaper.yaml").write_text(CONFIG, encoding="utf-8")


def test_a_restart_between_warning_and_due_keeps_the_due_time(tmp_path: Path) -> None:
    write_files(tmp_path)
    backend = MemoryBackend("mem", "sutro", [job("old-1", 13), job("young", 1)])
    audit_path = tmp_path / "audit.jsonl"

    sweep_once(tmp_path, backend, T0)
    [warned] = events(audit_path, "warned")
    assert warned["job_id"] == "old-1"
    assert datetime.fromisoformat(warned["due"]) == T0 + GRACE

    sweep_once(tmp_path, backend, T0 + timedelta(hours=1))  # a new daemon, one hour later
    assert len(events(audit_path, "warned")) == 1  # not warned again: the due time holds
    [held] = events(audit_path, "skipped", cause="grace")
    assert datetime.fromisoformat(held["due"]) == T0 + GRACE
    assert backend.reason_of("old-1") is None

    sweep_once(tmp_path, backend, T0 + GRACE - timedelta(seconds=1))
    assert backend.reason_of("old-1") is None

    sweep_once(tmp_path, backend, T0 + GRACE)  # at `due`: a sweep at or after it cancels
    assert backend.reason_of("old-1") is not None
    [result] = events(audit_path, "result")
    assert result["outcome"] == "cancelled"
    assert datetime.fromisoformat(result["due"]) == T0 + GRACE


def test_a_rotation_between_warning_and_due_keeps_the_due_time(tmp_path: Path) -> None:
    write_files(tmp_path)
    backend = MemoryBackend("mem", "sutro", [job("old-1", 13)])
    audit_path = tmp_path / "audit.jsonl"
    sweep_once(tmp_path, backend, T0)
    audit_path.rename(tmp_path / "audit.jsonl.1")  # logrotate's rename
    sweep_once(tmp_path, backend, T0 + timedelta(hours=1))
    assert events(audit_path, "warned") == []  # not warned again after the rotation
    [held] = events(audit_path, "skipped", cause="grace")
    assert datetime.fromisoformat(held["due"]) == T0 + GRACE
