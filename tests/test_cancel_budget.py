"""`limits.max_cancels_per_sweep` holds across every backend in the daemon, within one schedule
period (reaper/engine/budget.py, docs/config.md), as it does in `run --once`."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from reaper.emulators.base import JobSpec
from reaper.engine.budget import CancelBudget
from tests.daemon_support import daemon_process, events, free_port, wait_for
from tests.e2e_support import NAMES, running, standard_world

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
CAP = 5
DOOMED = 6  # per backend: 18 in all, against a cap of 5
POLICIES = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    max_runtime: 2h
"""


def take(budget: CancelBudget, now: datetime, wanted: int) -> int:
    """Decide `wanted` cancels within the budget; returns how many it allowed."""
    return budget.decide_within(now, lambda left: (min(left, wanted), min(left, wanted)))


def test_sweeps_of_one_period_share_the_cap_and_the_next_period_gets_it_afresh() -> None:
    budget = CancelBudget(CAP, timedelta(minutes=5))
    assert [take(budget, T0 + timedelta(seconds=s), 3) for s in (0, 1, 20)] == [3, 2, 0]
    assert take(budget, T0 + timedelta(minutes=5), 3) == 3  # the next round
    assert take(budget, T0 + timedelta(minutes=5, seconds=2), 3) == 2


def test_concurrent_sweeps_never_take_more_than_the_cap_together() -> None:
    budget = CancelBudget(CAP, timedelta(minutes=5))
    allowed: list[int] = []
    threads = [
        threading.Thread(target=lambda: allowed.append(take(budget, T0, 2))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == CAP


def test_the_daemon_holds_max_cancels_per_sweep_across_three_backends(tmp_path: Path) -> None:
    """Acceptance 7 (second half): three backends of six doomed jobs each, a cap of 5: the
    daemon's first cycle cancels 5 in all, not 5 per backend."""
    now = time.time()
    seeds: dict[str, list[JobSpec]] = {
        backend: [running(backend, f"long-{n}", 5, now) for n in range(DOOMED)]
        + [running(backend, f"other-{n}", 9, now) for n in range(DOOMED + 2)]
        for backend in NAMES
    }
    metrics = {"listen": f"127.0.0.1:{free_port()}"}
    config = {"dry_run": False, "limits": {"max_cancels_per_sweep": CAP},
              "schedule": {"every": "1h"}, "metrics": metrics}  # fmt: skip
    with (
        standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES, config=config) as world,
        daemon_process(world, tmp_path / "daemon.log") as daemon,
    ):
        wait_for(lambda: len(events(world.audit_path, "sweep_end")) >= 3, 60, "one cycle")
        daemon.terminate()
        assert daemon.wait(60) == 0
        cancelled = events(world.audit_path, "result", outcome="cancelled")
        held = events(world.audit_path, "skipped", cause="limit")
        assert len(cancelled) == CAP
        assert len(held) == DOOMED * len(NAMES) - CAP
