"""Loud guards in the daemon (issue: guards were silent): a refusing fraction guard, a cap and
the pause file each log a WARNING naming policy, backend and numbers; every sweep logs one INFO
summary line per backend; and STATUS= shows what the guards did, PAUSED, a failed reload and a
backend stuck past max_sweep.

In-process: the real Daemon, config and policy files, a MemoryBackend, systemd as a datagram
socket the test owns."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from reaper.audit.writer import AuditLog
from reaper.backends.memory import MemoryBackend
from reaper.engine.pool import BackendPool
from reaper.jobs import Job, Phase
from reaper.policy.config import load_all
from reaper.service.daemon import Daemon, DaemonOptions, Services
from reaper.service.metrics import Metrics
from reaper.service.reload import Loaded
from reaper.service.signals import SignalFlags, Wakeup
from reaper.service.systemd import Notifier
from tests.daemon_support import NotifyListener, wait_for

NOW = datetime.now(UTC)
CONFIG = """\
policies: policies/
audit_log: audit.jsonl
dry_run: false
pause_file: PAUSE
schedule: {every: 1h}
limits: {max_match_fraction: 0.5, max_cancels_per_sweep: 100}
backends:
  mem: {type: sutro, api_url: https://sutro.example.com, api_key_env: UNUSED_KEY}
"""
POLICIES = """\
policies:
  - name: too-broad
    names: ["job-*"]
    max_runtime: 1h
  - name: old-cap
    names: ["old-*"]
    max_runtime: 12h
    max_cancels: 1
"""


def running(name: str, hours: float) -> Job:
    return Job(backend="mem", type="sutro", id=name, name=name, queue="", status="RUNNING",
               phase=Phase.RUNNING, created_at=NOW - timedelta(hours=hours + 1),
               started_at=NOW - timedelta(hours=hours))  # fmt: skip


JOBS = [*(running(f"job-{i}", 2) for i in range(6)), running("old-1", 13), running("old-2", 14),
        running("young", 0.5)]  # fmt: skip  # 9 active: too-broad matches 6, old-cap 2


class GatedList(MemoryBackend):
    """Lists only once `gate` is open: a sweep that hangs in its listing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.entered = threading.Event()

    def list_active(self) -> Iterator[list[Job]]:
        self.entered.set()
        assert self.gate.wait(30), "gate never opened"
        yield from super().list_active()


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    yield listener
    listener.close()


@pytest.fixture
def make_daemon(tmp_path: Path, notify: NotifyListener) -> Iterator[Any]:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICIES, encoding="utf-8")
    (tmp_path / "reaper.yaml").write_text(CONFIG, encoding="utf-8")
    closers: list[Any] = []

    def make(backend: MemoryBackend, options: DaemonOptions | None = None) -> Daemon:
        audit = AuditLog(tmp_path / "audit.jsonl")
        wakeup = Wakeup()
        notifier = Notifier(env={"NOTIFY_SOCKET": notify.address})
        services = Services(audit, BackendPool(lambda *_: backend), Metrics(CollectorRegistry()),
                            notifier, wakeup, SignalFlags(wakeup))  # fmt: skip
        daemon = Daemon(Loaded(*load_all(tmp_path / "reaper.yaml")), services, options)
        closers.extend([lambda: daemon.scheduler.stop(wait=False), audit.close, notifier.close,
                        wakeup.close])  # fmt: skip
        return daemon

    yield make
    for close in closers:
        close()


def statuses(notify: NotifyListener) -> list[str]:
    return [line for m in notify.poll(0.3) for line in m if line.startswith("STATUS=")]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def summaries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.INFO and r.getMessage().startswith("sweep ")]  # fmt: skip


def test_refusal_cap_and_pause_are_logged_and_shown_in_status(
    make_daemon: Any, notify: NotifyListener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    backend = MemoryBackend("mem", "sutro", JOBS)
    daemon = make_daemon(backend)

    daemon.sweep_backend("mem")
    daemon.step()
    assert warnings(caplog) == [
        "fraction guard refused policy too-broad: matches 6 of 9 active on mem, limit 50%; "
        "6 job(s) not cancelled",
        "max_cancels 1 of policy old-cap reached: 1 job(s) held back until a later sweep",
    ]
    (summary,) = summaries(caplog)
    assert summary.startswith("sweep ") and " mem: 9 active, 8 matched, 1 cancelled, " in summary
    assert "skipped 7 (fraction_guard 6, limit 1), 0 errors, " in summary
    assert summary.endswith(" s")
    assert backend.mutating_calls == 1
    (status,) = statuses(notify)
    assert status.startswith("STATUS=2 policies; mem: 9 active, 1 cancelled, 7 skipped, ")
    assert "REFUSED policy too-broad (6 of 9 active > 50%)" in status
    assert "LIMIT max_cancels 1 of policy old-cap: 1 held back" in status

    caplog.clear()
    (tmp_path / "PAUSE").write_text("maintenance\n", encoding="utf-8")
    daemon.step()  # the pause file alone changes STATUS, before the next sweep
    (status,) = statuses(notify)
    assert status.startswith("STATUS=PAUSED: the pause file exists, nothing is cancelled; ")
    daemon.sweep_backend("mem")
    daemon.step()
    assert f"paused: the pause file {tmp_path / 'PAUSE'} exists; nothing is cancelled, 1 " \
        "cancel(s) held back" in warnings(caplog)  # fmt: skip
    (summary,) = summaries(caplog)
    assert "0 cancelled" in summary and "paused 1" in summary
    assert backend.mutating_calls == 1


def test_a_failed_reload_shows_in_status_until_a_good_one(
    make_daemon: Any, notify: NotifyListener, tmp_path: Path
) -> None:
    daemon = make_daemon(MemoryBackend("mem", "sutro", JOBS))
    policy_file = tmp_path / "policies" / "p.yaml"
    policy_file.write_text(POLICIES.replace("max_runtime: 1h", "max_runtime: one hour"))
    assert not daemon.reload()
    status = statuses(notify)[-1]
    assert status.startswith("STATUS=RELOAD FAILED at ") and f"{policy_file}:4:18: " in status
    assert "the 2 policies loaded before stay active; 2 policies; mem: waiting" in status
    policy_file.write_text(POLICIES)
    assert daemon.reload()
    assert statuses(notify)[-1].startswith("STATUS=2 policies; mem: waiting")


def test_a_backend_stuck_past_max_sweep_shows_in_status(
    make_daemon: Any, notify: NotifyListener
) -> None:
    backend = GatedList("mem", "sutro", JOBS)
    daemon = make_daemon(backend, DaemonOptions(max_sweep=timedelta(seconds=1)))
    daemon.scheduler.start(run_now=True)
    try:
        assert backend.entered.wait(10)

        def stuck() -> str | None:
            daemon.step()
            return next((s for s in statuses(notify) if "STUCK" in s), None)

        status = wait_for(stuck, 10, "STATUS with STUCK")
        assert "mem: STUCK: sweep in flight longer than max_sweep 1s; last: waiting" in status
    finally:
        backend.gate.set()
