"""Confirmation of asynchronous cancels (docs/audit.md, "Confirmation"): every `cancelled` job is
followed up at later sweeps until it has ended (`confirmed`), or is flagged `stuck` after
`limits.confirm_within` and cancelled exactly once more; meanwhile the re-cancel window holds
it."""

from __future__ import annotations

import time
from pathlib import Path

from reaper.emulators.world import World
from tests.e2e_support import (
    audit_records,
    expected_cancels,
    job_keys,
    run_once,
    same_knobs,
)
from tests.e2e_support import standard_world as world_of

DELAY_S = 1.0


def cancel_calls(world: World) -> int:
    emulators = world.emulators
    return sum(sum(e.calls[op] for op in e.cancel_operations) for e in emulators.values())


def test_asynchronous_cancels_are_confirmed_on_every_backend(tmp_path: Path) -> None:
    """Acceptance 5: each backend's cancels complete DELAY_S after the call."""
    with world_of(
        tmp_path, config={"dry_run": False}, knobs=same_knobs(cancel_delay_s=DELAY_S)
    ) as world:
        assert run_once(world).code == 0
        calls = cancel_calls(world)
        assert job_keys(audit_records(world), "confirmed") == set()  # not ended yet
        time.sleep(DELAY_S + 0.5)
        assert run_once(world).code == 0
        records = audit_records(world)
        confirmed = [r for r in records if r["event"] == "confirmed"]
        assert {(r["backend"], r["job_id"]) for r in confirmed} == expected_cancels()
        assert {r["backend"] for r in confirmed} == {"batch", "hpc", "inference"}
        for record in confirmed:
            assert record["seconds_to_terminal"] >= DELAY_S
            status = world.emulators[record["backend"]].status_of(record["job_id"])
            assert record["status"] == status
        assert cancel_calls(world) == calls  # confirming is reading, nothing more
        assert run_once(world).code == 0  # confirmed once, not again
        assert len([r for r in audit_records(world) if r["event"] == "confirmed"]) == len(confirmed)


def test_an_unconfirmed_cancel_is_held_until_confirm_within(tmp_path: Path) -> None:
    """Before `confirm_within` (30m by default) a job still winding down is neither stuck nor
    cancelled again, whatever the 10-minute window says."""
    knobs = same_knobs(cancel_delay_s=3600.0)
    with world_of(tmp_path, config={"dry_run": False}, knobs=knobs) as world:
        assert run_once(world).code == 0
        first = cancel_calls(world)
        assert run_once(world).code == 0
        assert cancel_calls(world) == first
        assert job_keys(audit_records(world), "stuck") == set()


def test_a_job_that_never_ends_is_stuck_and_cancelled_once_more(tmp_path: Path) -> None:
    config = {"dry_run": False, "limits": {"confirm_within": "1s"},
              "metrics": {"textfile": str(tmp_path / "reaper.prom")}}  # fmt: skip
    knobs = same_knobs(cancel_delay_s=3600.0)  # accepted, never lands
    with world_of(tmp_path / "w", config=config, knobs=knobs) as world:
        assert run_once(world).code == 0
        first = cancel_calls(world)
        time.sleep(1.5)
        second = run_once(world)
        records = audit_records(world)
        # AWS Batch and Sutro end a job that had not started at once; the running ones (and
        # every Tapis job) never end here: Sutro's stay CANCELLING, which is not the end.
        ended = {("batch", "batch-stale-1"), ("inference", "inference-stale-1")}
        never = expected_cancels() - ended
        assert job_keys(records, "confirmed") == ended
        assert job_keys(records, "stuck") == never
        again = [r for r in records if r["event"] == "intent" and r.get("after_stuck")]
        assert {(r["backend"], r["job_id"]) for r in again} == never
        results = [r for r in records if r["event"] == "result" and r.get("after_stuck")]
        assert len(results) == len(again)
        assert cancel_calls(world) > first
        assert "has not ended the job" in second.err
        metrics = (tmp_path / "reaper.prom").read_text()
        assert 'reaper_cancels_stuck_total{backend="hpc"} 3.0' in metrics
        # Stuck once: later sweeps neither flag it again nor call again (the window holds it).
        calls = cancel_calls(world)
        time.sleep(1.5)
        assert run_once(world).code == 0
        stuck = [r for r in audit_records(world) if r["event"] == "stuck"]
        assert len(stuck) == len(never)
        assert cancel_calls(world) == calls
