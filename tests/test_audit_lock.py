"""One writer per audit log (docs/audit.md, "One writer"): the flock on `<audit_log>.lock`, exit
75 for a second `run --once` or daemon, `--lock-wait`, and two runs started together against slow
emulators that never cancel a job twice."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest

from reaper.audit.lock import AuditLock, AuditLockedError, lock_path
from reaper.emulators.base import Request, Response
from reaper.emulators.world import World, child_environ
from reaper.errors import ExitCode
from tests.crash_support import MUTATING, job_ids_of
from tests.e2e_support import REPO_ROOT, expected_cancels, run_cli, run_once, same_knobs
from tests.e2e_support import standard_world as world_of

ACT = {"dry_run": False}


def test_a_second_lock_is_refused_naming_the_holders_pid(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    with AuditLock(audit) as first:
        first.acquire()
        with pytest.raises(AuditLockedError) as refused:
            AuditLock(audit).acquire()
    assert f"pid {os.getpid()}" in str(refused.value)
    assert lock_path(audit).stat().st_mode & 0o777 == 0o640


def test_the_lock_is_free_again_once_released(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    first = AuditLock(audit)
    first.acquire()
    first.release()
    with AuditLock(audit) as second:
        second.acquire()  # does not raise


def test_lock_wait_waits_for_the_holder_to_finish(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    holder = AuditLock(audit)
    holder.acquire()
    threading.Timer(0.3, holder.release).start()
    waiter = AuditLock(audit)
    waiter.acquire(wait_s=30)  # returns once the holder lets go, well within 30 s
    waiter.release()


def test_run_once_exits_75_while_another_reaper_holds_the_log(tmp_path: Path) -> None:
    with world_of(tmp_path, config=ACT) as world, AuditLock(world.audit_path) as other:
        other.acquire()
        refused = run_once(world)
        assert refused.code == ExitCode.TEMPFAIL == 75
        assert f"pid {os.getpid()}" in refused.err
        assert not world.audit_path.exists()  # nothing was done, not even reconciliation
        assert sum(e.mutating_calls() for e in world.emulators.values()) == 0
        assert run_once(world, "--lock-wait", "nonsense").code == ExitCode.USAGE


def test_the_daemon_refuses_to_start_on_a_locked_log(tmp_path: Path) -> None:
    with world_of(tmp_path, config=ACT) as world, AuditLock(world.audit_path) as other:
        other.acquire()
        refused = run_cli("daemon", "--config", str(world.config_path))
        assert refused.code == ExitCode.TEMPFAIL
        assert "in use by another reaper" in refused.err
        assert not world.audit_path.exists()


def count_cancel_calls(world: World) -> Counter[tuple[str, str]]:
    """Every job id a mutating request names, counted as the emulators receive them (sendEvent,
    Tapis' reason note, is not a cancel)."""
    calls: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    for name, emulator in world.emulators.items():
        route, dispatch = emulator.route, emulator.dispatch

        def spy(request: Request, name: str = name, route=route, dispatch=dispatch) -> Response:  # type: ignore[no-untyped-def]
            operation = route(request)[0]
            if operation in MUTATING[name] and operation != "sendEvent":
                with lock:
                    calls.update((name, job) for job in job_ids_of(name, request))
            return dispatch(request)

        emulator.dispatch = spy  # type: ignore[method-assign]
    return calls


def start_run(world: World) -> subprocess.Popen[str]:
    env = child_environ(world)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "reaper", "run", "--once", "--config", str(world.config_path)]
    return subprocess.Popen(argv, env=env, cwd=world.folder, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_two_runs_started_together_never_cancel_a_job_twice(tmp_path: Path) -> None:
    """Acceptance 1: 20 tries of two `run --once` at once against emulators answering in 30 ms."""
    refused = 0
    for attempt in range(20):
        knobs = same_knobs(latency_s=0.03)
        with world_of(tmp_path / f"try-{attempt}", config=ACT, knobs=knobs) as world:
            calls = count_cancel_calls(world)
            runs = [start_run(world), start_run(world)]
            results = [(run.wait(timeout=120), *run.communicate()) for run in runs]
            codes = sorted(code for code, _, _ in results)
            assert set(codes) <= {0, 75}, results
            assert codes[0] == 0, results
            refused += codes.count(75)
            twice = {job: n for job, n in calls.items() if n > 1}
            assert not twice, f"try {attempt}: cancelled more than once: {twice}"
            assert set(calls) == expected_cancels()
            verified = run_cli("audit", "verify", "--config", str(world.config_path))
            assert verified.code == 0, verified.out + verified.err
    # Started together, the two runs overlap in (nearly) every try: the lock must have refused
    # one of them at least once, or this test did not exercise it.
    assert refused >= 1
