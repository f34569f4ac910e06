"""End to end: the safety guards of a sweep, through `reaper run --once` on the emulators — the
fraction guard, the cancel limits, a listing that fails part-way, the pause file, and the
re-check of a job that finished between listing and acting."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import reaper.engine.runtime
from reaper.backends.base import Backend
from reaper.emulators.base import Knobs
from reaper.emulators.world import World
from reaper.errors import ExitCode
from tests.e2e_support import (
    CANCELLED,
    FINISHED,
    NAMES,
    POLICIES,
    FinishBeforeRecheck,
    audit_records,
    expected_cancels,
    expected_protected,
    failing_requests,
    job_id,
    job_keys,
    last_sweep,
    mutating_calls,
    run_cli,
    run_once,
    running,
    standard_seeds,
    standard_world,
    status_of,
)

# Mutating calls per cancel: Tapis records the reason with sendEvent, then cancels.
CALLS_PER_CANCEL = {"batch": 1, "hpc": 2, "inference": 1}


def cancelled_keys(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return job_keys(last_sweep(records), "result", outcome="cancelled")


def test_fraction_guard_refuses_a_too_broad_policy_on_that_backend(tmp_path: Path) -> None:
    now = time.time()
    seeds = standard_seeds(now)
    seeds["batch"] += [running("batch", f"long-{i}", 5, now) for i in range(3, 7)]
    with standard_world(tmp_path, seeds=seeds) as world:
        result = run_once(world)
        assert result.code == ExitCode.REFUSED, result.out + result.err
        sweep = last_sweep(audit_records(world))
        refused = {("batch", job_id("batch", f"long-{i}")) for i in range(1, 7)}
        assert job_keys(sweep, "skipped", cause="fraction_guard") == refused
        for i in range(1, 7):
            assert status_of(world, "batch", f"long-{i}") == "RUNNING"
        # Refused per (policy, backend): the other policy still acts there, the policy elsewhere.
        others = expected_cancels() - {("batch", job_id("batch", n)) for n in ("long-1", "long-2")}
        assert cancelled_keys(sweep) == others
        assert status_of(world, "batch", "stale-1") == CANCELLED["batch"]


def test_max_cancels_per_policy_holds_back_the_youngest(tmp_path: Path) -> None:
    policies = POLICIES.replace("max_runtime: 2h\n", "max_runtime: 2h\n    max_cancels: 2\n")
    with standard_world(tmp_path, policies_yaml=policies) as world:
        result = run_once(world)
        assert result.code == ExitCode.REFUSED, result.out + result.err
        sweep = last_sweep(audit_records(world))
        by_policy = [r for r in sweep if r["event"] == "result" and r["policy"] == "runtime-cap"]
        assert len(by_policy) == 2
        assert {r["job_name"] for r in by_policy} == {"long-1"}  # the oldest go first
        assert len(job_keys(sweep, "skipped", cause="limit", policy="runtime-cap")) == 4
        stale = {(b, job_id(b, "stale-1")) for b in NAMES}
        assert job_keys(sweep, "result", policy="stale-queue", outcome="cancelled") == stale
        assert_calls_match_cancels(world, cancelled_keys(sweep))


def assert_calls_match_cancels(world: World, cancelled: set[tuple[str, str]]) -> None:
    """Each backend received exactly the mutating calls of the cancels the audit records."""
    expected = {b: CALLS_PER_CANCEL[b] * sum(1 for k in cancelled if k[0] == b) for b in NAMES}
    assert mutating_calls(world) == expected


@pytest.mark.parametrize(("limit", "code"), [(4, ExitCode.REFUSED), (9, ExitCode.OK)])
def test_max_cancels_per_sweep_is_never_exceeded(tmp_path: Path, limit: int, code: int) -> None:
    config = {"limits": {"max_cancels_per_sweep": limit, "max_match_fraction": 0.5}}
    with standard_world(tmp_path, config=config) as world:
        result = run_once(world)
        assert result.code == code, result.out + result.err
        sweep = last_sweep(audit_records(world))
        cancelled = cancelled_keys(sweep)
        assert len(cancelled) == min(limit, 9)
        assert len(job_keys(sweep, "skipped", cause="limit")) == 9 - len(cancelled)
        assert_calls_match_cancels(world, cancelled)
        for backend, jid in expected_cancels():
            terminal = world.emulators[backend].status_of(jid) == CANCELLED[backend]
            assert terminal is ((backend, jid) in cancelled)


@pytest.mark.parametrize("broken", NAMES)
def test_listing_failing_on_page_2_cancels_nothing_on_that_backend(
    tmp_path: Path, broken: str
) -> None:
    """The knob fails page 2 every time, so no retry can paper over it; page 1 alone must not
    be acted on, while the other backends sweep as usual."""
    knobs = {broken: Knobs(fail_list_page=2, page_size=2)}
    with standard_world(tmp_path, knobs=knobs) as world:
        result = run_once(world)
        assert result.code == ExitCode.FAILED, result.out + result.err
        assert mutating_calls(world)[broken] == 0
        sweep = last_sweep(audit_records(world))
        healthy = [b for b in NAMES if b != broken]
        assert cancelled_keys(sweep) == expected_cancels(healthy)
        assert job_keys(sweep, "intent", backend=broken) == set()
        for record in job_keys(sweep, "skipped", backend=broken):
            assert record in expected_cancels([broken]) | expected_protected([broken])
        end = sweep[-1]
        assert end["event"] == "sweep_end"
        assert end["backends"][broken]["error"]
        assert all(end["backends"][b]["error"] is None for b in healthy)
        assert f"{broken}: " in result.out and "ERROR" in result.out


def test_pause_file_holds_every_cancel(tmp_path: Path) -> None:
    with standard_world(tmp_path, config={"pause_file": "PAUSE"}) as world:
        (tmp_path / "PAUSE").write_text("maintenance\n", encoding="utf-8")
        planned = run_cli("plan", "--config", str(world.config_path))
        assert "PAUSED: the pause file exists" in planned.out
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        assert mutating_calls(world) == dict.fromkeys(NAMES, 0)
        sweep = last_sweep(audit_records(world))
        assert sweep[0]["paused"] is True
        assert job_keys(sweep, "skipped", cause="paused") == expected_cancels()
        assert job_keys(sweep, "skipped", cause="protected") == expected_protected()
        assert job_keys(sweep, "intent") == set()
        (tmp_path / "PAUSE").unlink()
        resumed = run_once(world)
        assert resumed.code == ExitCode.OK, resumed.out + resumed.err
        assert cancelled_keys(audit_records(world)) == expected_cancels()


@pytest.mark.parametrize("backend", NAMES)
def test_job_finishing_between_plan_and_act_is_skipped_changed(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with standard_world(tmp_path) as world:
        target = job_id(backend, "long-1")
        create = reaper.engine.runtime.create_backend

        def create_wrapped(name: str, section: Any, base: Path) -> Backend:
            built = create(name, section, base)
            if name != backend:
                return built
            return FinishBeforeRecheck(built, world.emulators[name], target, FINISHED[name])

        monkeypatch.setattr(reaper.engine.runtime, "create_backend", create_wrapped)
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        sweep = last_sweep(audit_records(world))
        assert job_keys(sweep, "skipped", cause="changed") == {(backend, target)}
        assert cancelled_keys(sweep) == expected_cancels() - {(backend, target)}
        assert (backend, target) not in job_keys(sweep, "intent")
        assert status_of(world, backend, "long-1") == FINISHED[backend]
        assert mutating_calls(world)[backend] == 2 * CALLS_PER_CANCEL[backend]


def test_a_failed_cancel_exits_1_and_is_retried_next_sweep(tmp_path: Path) -> None:
    """A cancel that fails after its retries is audited `failed` with the error; the other
    cancels go on; the next sweep tries it again (a failure does not open the re-cancel window)."""
    target = job_id("inference", "long-1")
    with standard_world(tmp_path) as world:
        with failing_requests(world.emulators["inference"], "CancelJob", target):
            first = run_once(world)
        assert first.code == ExitCode.FAILED, first.out + first.err
        failed = [r for r in last_sweep(audit_records(world)) if r.get("outcome") == "failed"]
        assert [r["job_id"] for r in failed] == [target]
        assert "500" in failed[0]["error"]
        assert cancelled_keys(audit_records(world)) == expected_cancels() - {("inference", target)}
        assert status_of(world, "inference", "long-1") == "RUNNING"
        second = run_once(world)
        assert second.code == ExitCode.OK, second.out + second.err
        assert cancelled_keys(audit_records(world)) == {("inference", target)}
        assert status_of(world, "inference", "long-1") == CANCELLED["inference"]
