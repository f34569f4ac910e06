"""The daemon in-process: reload (swap whole or keep), policy snapshots per sweep, failure
isolation, watchdog gating, graceful stop, the self-pipe and signal flags, the backend pool.

Backends are `MemoryBackend` fakes handed out by an injected opener; config and policies are
real files loaded by `reaper.policy.config`; systemd is a datagram socket the test owns."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from reaper.audit.writer import AuditLog, hash_line
from reaper.backends.memory import MemoryBackend
from reaper.cli import main as cli_main
from reaper.engine.pool import BackendPool
from reaper.errors import BackendError, ExitCode
from reaper.jobs import Job, Phase
from reaper.policy.config import load_all
from reaper.service.coordination import CoordinationError
from reaper.service.daemon import Daemon, DaemonOptions, Services
from reaper.service.metrics import Metrics
from reaper.service.reload import Loaded, plan_reload
from reaper.service.signals import SignalFlags, Wakeup, handling_signals
from reaper.service.systemd import Notifier
from tests.daemon_support import NotifyListener, events, read_records, wait_for

NOW = datetime.now(UTC)
HOUR = timedelta(hours=1)

CONFIG = """\
policies: policies/
audit_log: audit.jsonl
dry_run: false
schedule: {every: 1h}
limits: {max_match_fraction: 1.0}
backends:
  mem: {type: sutro, api_url: https://sutro.example.com, api_key_env: UNUSED_KEY}
"""
CAP_OLD = """\
policies:
  - name: cap-old
    names: ["old-*"]
    max_runtime: 12h
"""
CAP_NEW = """\
policies:
  - name: cap-new
    names: ["new-*"]
    max_runtime: 12h
"""
BROKEN = """\
policies:
  - name: cap-new
    names: ["new-*"]
    max_runtimee: 12h
"""


def running(name: str, hours: float) -> Job:
    return Job(backend="mem", type="sutro", id=name, name=name, queue="", status="RUNNING",
               phase=Phase.RUNNING, created_at=NOW - (hours + 1) * HOUR,
               started_at=NOW - hours * HOUR)  # fmt: skip


class GatedBackend(MemoryBackend):
    """A MemoryBackend whose listing or cancel waits for a gate: a sweep that is slow or hangs."""

    def __init__(self, *args: Any, gate_on: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.gate_on = gate_on
        self.entered = threading.Event()

    def _pass_gate(self, operation: str) -> None:
        if operation == self.gate_on:
            self.entered.set()
            assert self.gate.wait(30), "gate never opened"

    def list_active(self) -> Iterator[list[Job]]:
        self._pass_gate("list")
        yield from super().list_active()

    def cancel(self, job: Job, reason: str) -> Any:
        self._pass_gate("cancel")
        return super().cancel(job, reason)


@dataclass
class Rig:
    daemon: Daemon
    folder: Path
    backend: MemoryBackend
    notify: NotifyListener
    metrics: Metrics
    audit: AuditLog
    opened: list[str]
    services: Services

    @property
    def audit_path(self) -> Path:
        return self.folder / "audit.jsonl"

    def write_policies(self, text: str) -> None:
        (self.folder / "policies" / "policies.yaml").write_text(text, encoding="utf-8")

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def write_world(folder: Path, policies: str = CAP_OLD) -> Path:
    (folder / "policies").mkdir(parents=True, exist_ok=True)
    (folder / "policies" / "policies.yaml").write_text(policies, encoding="utf-8")
    (folder / "reaper.yaml").write_text(CONFIG, encoding="utf-8")
    return folder / "reaper.yaml"


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Any]:
    made: list[Rig] = []

    def make(
        backend: MemoryBackend | None = None,
        *,
        fail_opens: int = 0,
        options: DaemonOptions | None = None,
        monotonic: Any = time.monotonic,
        load: Any = load_all,
        coordinator: Any = None,
    ) -> Rig:
        backend = backend or MemoryBackend("mem", "sutro", [running("old-1", 13),
                                                            running("new-1", 14),
                                                            running("young", 1)])  # fmt: skip
        opened: list[str] = []

        def opener(name: str, section: Mapping[str, Any], base: Path) -> MemoryBackend:
            opened.append(name)
            if len(opened) <= fail_opens:
                raise BackendError(name, "injected: cannot build")
            return backend

        loaded = Loaded(*load_all(write_world(tmp_path)))
        notify = NotifyListener()
        audit = AuditLog(tmp_path / "audit.jsonl")
        metrics = Metrics(CollectorRegistry())
        wakeup = Wakeup()
        notifier = Notifier(env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "1000000"})
        services = Services(audit, BackendPool(opener), metrics, notifier, wakeup,
                            SignalFlags(wakeup))  # fmt: skip
        daemon = Daemon(loaded, services, options, monotonic=monotonic, load=load,
                        coordinator=coordinator)  # fmt: skip
        rig = Rig(daemon, tmp_path, backend, notify, metrics, audit, opened, services)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.daemon.scheduler.stop(wait=False)
        rig.audit.close()
        rig.notify.close()
        rig.services.notifier.close()
        rig.services.wakeup.close()


# -- reload ------------------------------------------------------------------------------------


def test_reload_swaps_the_policy_set_and_says_so(make_rig: Any) -> None:
    rig = make_rig()
    rig.write_policies(CAP_NEW)
    assert rig.daemon.reload()
    assert [p.name for p in rig.daemon.loaded.policies] == ["cap-new"]
    reloading, ready = rig.notify.poll(0.5)[:2]
    assert reloading[:2] == ["RELOADING=1", reloading[1]]  # one datagram, as systemd requires
    assert reloading[1].startswith("MONOTONIC_USEC=") and reloading[1][15:].isdigit()
    assert ready[0] == "READY=1"
    (record,) = events(rig.audit_path, "reload")
    assert record["policy_names"] == ["cap-new"]
    assert record["policy_files"][0]["file"].endswith("policies.yaml")
    assert rig.sample("reaper_reloads_total") == 1
    assert rig.sample("reaper_config_last_reload_successful") == 1
    assert rig.sample("reaper_policies_loaded") == 1


def test_invalid_reload_keeps_the_old_set_and_audits_file_line_col(make_rig: Any) -> None:
    rig = make_rig()
    rig.write_policies(BROKEN)
    before = rig.daemon.loaded
    assert not rig.daemon.reload()
    assert rig.daemon.loaded is before
    (record,) = events(rig.audit_path, "reload_failed")
    (diagnostic,) = record["diagnostics"]
    assert diagnostic.startswith(f"{rig.folder / 'policies' / 'policies.yaml'}:4:5: ")
    assert "max_runtimee" in diagnostic
    assert record["policies_kept"] == 1
    assert rig.notify.poll(0.5)[-1][0] == "READY=1"  # READY=1 even after a refused reload
    assert rig.sample("reaper_reload_failures_total") == 1
    assert rig.sample("reaper_config_last_reload_successful") == 0


def test_each_sweep_uses_the_set_current_when_it_starts(make_rig: Any) -> None:
    rig = make_rig()
    rig.daemon.sweep_backend("mem")
    rig.write_policies(BROKEN)
    rig.daemon.reload()
    rig.backend.add(running("old-2", 20))
    rig.daemon.sweep_backend("mem")  # the old set still acts after a refused reload
    rig.write_policies(CAP_NEW)
    rig.daemon.reload()
    rig.daemon.sweep_backend("mem")
    cancelled = [(r["job_id"], r["policy"]) for r in events(rig.audit_path, "result")]
    assert cancelled == [("old-1", "cap-old"), ("old-2", "cap-old"), ("new-1", "cap-new")]


def test_reload_reopens_the_audit_log_and_the_chain_carries_on(make_rig: Any) -> None:
    rig = make_rig()
    rig.daemon.sweep_backend("mem")
    last_line = rig.audit_path.read_bytes().splitlines()[-1]
    rotated = rig.audit_path.rename(rig.folder / "audit.jsonl.1")
    rig.daemon.reload()
    (first,) = read_records(rig.audit_path)
    assert first["event"] == "reload"
    assert first["prev"] == hash_line(last_line)
    assert rotated.exists()


def test_reload_applies_a_new_schedule_and_new_backends(make_rig: Any) -> None:
    rig = make_rig()
    rig.daemon.scheduler.start()
    before = rig.daemon.scheduler.next_run_times()["mem"]
    assert before is not None
    mem2 = "  mem2: {type: sutro, api_url: https://sutro.example.com, api_key_env: K}\n"
    config = CONFIG.replace("every: 1h", "every: 3h") + mem2
    (rig.folder / "reaper.yaml").write_text(config, encoding="utf-8")
    assert rig.daemon.reload()
    assert rig.daemon.scheduler.backend_names == ["mem", "mem2"]
    after = rig.daemon.scheduler.next_run_times()
    assert after["mem"] is not None and after["mem"] - before > HOUR  # 3h from now, not 1h
    assert rig.sample("reaper_backend_errors_total", backend="mem2") == 0  # declared at zero


def test_an_unexpected_error_in_a_reload_keeps_the_old_set(make_rig: Any) -> None:
    def explode(path: Path) -> Any:
        raise RuntimeError("bug")

    rig = make_rig(load=explode)
    before = rig.daemon.loaded
    assert not rig.daemon.reload()
    assert rig.daemon.loaded is before
    (record,) = events(rig.audit_path, "reload_failed")
    assert "internal error: RuntimeError('bug')" in record["diagnostics"][0]
    assert rig.notify.poll(0.5)[-1][0] == "READY=1"


def test_plan_reload_names_what_changed(tmp_path: Path) -> None:
    old = Loaded(*load_all(write_world(tmp_path)))
    config = replace(old.config, schedule=replace(old.config.schedule, every=2 * HOUR),
                     audit_log=tmp_path / "elsewhere.jsonl")  # fmt: skip
    plan = plan_reload(old, Loaded(config, old.policies))
    assert plan.schedule_changed and not plan.backends_changed
    assert plan.refused == ("audit_log",) and plan.restart_only == ()
    assert not plan_reload(old, old).schedule_changed


def test_a_reload_that_moves_the_audit_log_is_refused_whole(make_rig: Any) -> None:
    """Writer, window and lock live on one log: moving it takes a restart (docs/config.md)."""
    rig = make_rig()
    before = rig.daemon.loaded
    config = CONFIG.replace("audit_log: audit.jsonl", "audit_log: elsewhere.jsonl")
    (rig.folder / "reaper.yaml").write_text(config.replace("every: 1h", "every: 3h"))
    assert not rig.daemon.reload()
    assert rig.daemon.loaded is before  # not even the new schedule was applied
    (record,) = events(rig.audit_path, "reload_failed")
    assert "audit_log changed: it takes a restart" in record["diagnostics"][0]
    rig.daemon.sweep_backend("mem")
    assert not (rig.folder / "elsewhere.jsonl").exists()
    assert events(rig.audit_path, "sweep_end")


# -- sweeps ------------------------------------------------------------------------------------


def test_a_backend_that_cannot_be_built_is_retried_at_its_next_sweep(make_rig: Any) -> None:
    rig = make_rig(fail_opens=1)
    rig.daemon.sweep_backend("mem")  # must not raise
    assert rig.sample("reaper_backend_errors_total", backend="mem") == 1
    assert read_records(rig.audit_path) == []
    rig.daemon.sweep_backend("mem")
    assert [r["job_id"] for r in events(rig.audit_path, "result")] == ["old-1"]
    assert rig.opened == ["mem", "mem"]


def test_a_finished_sweep_shows_in_status_and_metrics(make_rig: Any) -> None:
    rig = make_rig()
    rig.daemon.sweep_backend("mem")
    rig.daemon.step()
    status = next(m for m in rig.notify.poll(0.5) if m[0].startswith("STATUS="))
    assert status[0].startswith("STATUS=1 policies; mem: 3 active, 1 cancelled at ")
    assert rig.sample("reaper_cancels_total", backend="mem", outcome="cancelled") == 1
    assert rig.sample("reaper_jobs_seen_total", backend="mem") == 3


def test_the_schedule_period_is_published_for_alerts(make_rig: Any) -> None:
    rig = make_rig()
    assert rig.sample("reaper_schedule_interval_seconds") == 3600  # CONFIG: every 1h


class FakeCoordinator:
    """The two questions the daemon asks (the real thing runs on Redis in
    tests/test_coordination.py): is the backend mine, and is its lock free."""

    def __init__(self, owns: bool = True, free: bool = True, error: bool = False) -> None:
        self.mine, self.free, self.error = owns, free, error
        self.held: list[str] = []

    def owns(self, backend: str) -> bool:
        if self.error:
            raise CoordinationError("coordination: cannot read the group's members: down")
        return self.mine

    @contextlib.contextmanager
    def holding(self, backend: str) -> Iterator[bool]:
        self.held.append(backend)
        yield self.free


@pytest.mark.parametrize("owns, free", [(False, True), (True, False)])
def test_a_backend_of_another_member_or_locked_by_one_is_not_swept(
    make_rig: Any, owns: bool, free: bool
) -> None:
    rig = make_rig(coordinator=FakeCoordinator(owns=owns, free=free))
    rig.daemon.sweep_backend("mem")
    assert read_records(rig.audit_path) == []
    assert rig.opened == []
    assert rig.daemon.status_line() == "1 policies; mem: another member's"


def test_a_backend_this_member_owns_and_holds_is_swept(make_rig: Any) -> None:
    coordinator = FakeCoordinator()
    rig = make_rig(coordinator=coordinator)
    rig.daemon.sweep_backend("mem")
    assert coordinator.held == ["mem"]
    assert [r["job_id"] for r in events(rig.audit_path, "result")] == ["old-1"]


def test_a_lost_coordination_service_is_a_backend_error_not_a_sweep(make_rig: Any) -> None:
    rig = make_rig(coordinator=FakeCoordinator(error=True))
    rig.daemon.sweep_backend("mem")  # must not raise
    assert rig.sample("reaper_backend_errors_total", backend="mem") == 1
    assert read_records(rig.audit_path) == []


# -- watchdog ----------------------------------------------------------------------------------


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_stop_while_a_sweep_overruns_and_resume_after(make_rig: Any) -> None:
    backend = GatedBackend("mem", "sutro", [running("young", 1)], gate_on="list")
    clock = FakeMonotonic()
    rig = make_rig(backend, options=DaemonOptions(max_sweep=timedelta(seconds=60)),
                   monotonic=clock)  # fmt: skip
    rig.daemon.scheduler.start(run_now=True)
    assert backend.entered.wait(10)
    assert rig.daemon.ping_watchdog()  # in flight, but within its limit
    clock.now += 61
    assert not rig.daemon.ping_watchdog()
    assert not any("WATCHDOG=1" in m for m in rig.notify.poll(0.2)[1:])
    backend.gate.set()
    wait_for(lambda: not rig.daemon.scheduler.in_flight(), 10, "the sweep to end")
    assert rig.daemon.ping_watchdog()
    assert rig.notify.poll(0.5)[-1] == ["WATCHDOG=1"]


# -- stop --------------------------------------------------------------------------------------


def stop_when_told(rig: Rig, backend: GatedBackend) -> threading.Thread:
    """Open the backend's gate once the daemon says STOPPING=1 (as SIGTERM arrives mid-call)."""

    def release() -> None:
        wait_for(lambda: any("STOPPING=1" in m for m in rig.notify.poll(0.05)), 20, "STOPPING")
        backend.gate.set()

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    return thread


def test_stop_lets_cancels_in_flight_finish_and_record_their_result(make_rig: Any) -> None:
    backend = GatedBackend("mem", "sutro", [running("old-1", 13), running("young", 1)],
                           gate_on="cancel")  # fmt: skip
    rig = make_rig(backend)
    rig.daemon.scheduler.start(run_now=True)
    assert backend.entered.wait(10)
    assert [r["job_id"] for r in events(rig.audit_path, "intent")] == ["old-1"]
    releaser = stop_when_told(rig, backend)
    assert rig.daemon.shutdown() == ExitCode.OK
    releaser.join(5)
    (result,) = events(rig.audit_path, "result")
    assert (result["job_id"], result["outcome"]) == ("old-1", "cancelled")
    assert events(rig.audit_path, "sweep_end")


def test_stop_starts_no_new_cancel(make_rig: Any) -> None:
    backend = GatedBackend("mem", "sutro", [running("old-1", 13), running("young", 1)],
                           gate_on="list")  # fmt: skip
    rig = make_rig(backend)
    rig.daemon.scheduler.start(run_now=True)
    assert backend.entered.wait(10)
    releaser = stop_when_told(rig, backend)
    assert rig.daemon.shutdown() == ExitCode.OK
    releaser.join(5)
    assert events(rig.audit_path, "intent") == []
    assert backend.mutating_calls == 0
    assert events(rig.audit_path, "sweep_end")
    rig.daemon.sweep_backend("mem")  # a sweep the scheduler had already handed over
    assert len(events(rig.audit_path, "sweep_start")) == 1


def test_stop_gives_up_on_a_hung_cancel_after_the_grace(make_rig: Any) -> None:
    backend = GatedBackend("mem", "sutro", [running("old-1", 13)], gate_on="cancel")
    rig = make_rig(backend, options=DaemonOptions(stop_grace=timedelta(seconds=0.2)))
    rig.daemon.scheduler.start(run_now=True)
    assert backend.entered.wait(10)
    try:
        assert rig.daemon.shutdown() == ExitCode.FAILED
        assert rig.daemon.abandoned == ["mem"]
    finally:
        backend.gate.set()


def test_stop_does_not_wait_for_a_hung_listing(make_rig: Any) -> None:
    """Only cancels in flight are waited for: a listing that never returns is abandoned (its
    thread ends with its call's timeout), the sweep records that, and the daemon exits 0."""
    backend = GatedBackend("mem", "sutro", [running("old-1", 13)], gate_on="list")
    rig = make_rig(backend, options=DaemonOptions(stop_grace=timedelta(seconds=60)))
    rig.daemon.scheduler.start(run_now=True)
    assert backend.entered.wait(10)
    try:
        started = time.monotonic()
        assert rig.daemon.shutdown() == ExitCode.OK
        assert time.monotonic() - started < 30  # far below the 60 s grace it used to wait out
        assert rig.daemon.abandoned == []
        (end,) = events(rig.audit_path, "sweep_end")
        assert end["backends"]["mem"]["error"] == "listing abandoned: stopped (signal)"
        assert backend.mutating_calls == 0
    finally:
        backend.gate.set()


# -- wakeup, signals, pool, cli ------------------------------------------------------------------


def test_signal_handlers_only_set_flags_and_wake_the_loop() -> None:
    wakeup = Wakeup()
    flags = SignalFlags(wakeup)
    try:
        with handling_signals(flags):
            os.kill(os.getpid(), signal.SIGHUP)
            assert wakeup.wait(5)
            assert flags.take_reload() and not flags.take_reload()
            assert not flags.stop
            os.kill(os.getpid(), signal.SIGTERM)
            assert wakeup.wait(5)
            assert flags.stop
        assert signal.getsignal(signal.SIGTERM) is not flags.handle
        assert not wakeup.wait(0)
    finally:
        wakeup.close()


def test_pool_rebuilds_after_renew_and_closes_retired_backends_when_idle(tmp_path: Path) -> None:
    built: list[MemoryBackend] = []

    def opener(name: str, section: Mapping[str, Any], base: Path) -> MemoryBackend:
        built.append(MemoryBackend(name, "sutro"))
        return built[-1]

    config = load_all(write_world(tmp_path))[0]
    with BackendPool(opener) as pool:
        first = pool.get("mem", config)
        assert pool.get("mem", config) is first
        pool.renew(config)
        second = pool.get("mem", config)
        assert second is not first and first.closed
        pool.renew(replace(config, backends={}))
        pool.close_retired(busy={"mem"})
        assert not second.closed
        pool.close_retired(busy=set())
        assert second.closed
        with pytest.raises(BackendError, match="not in the config"):
            pool.get("mem", replace(config, backends={}))


def test_an_unknown_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--log-level", "LOUD", "schema"]) == ExitCode.USAGE
    assert "log level 'LOUD'" in capsys.readouterr().err


def test_daemon_with_invalid_policies_exits_78_before_anything(tmp_path: Path) -> None:
    config = write_world(tmp_path, BROKEN)
    assert cli_main(["daemon", "--config", str(config)]) == ExitCode.CONFIG
    assert not (tmp_path / "audit.jsonl").exists()
