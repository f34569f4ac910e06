"""`reaper demo`: plan and one sweep against the three emulators, seeded with the demo mix."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

from reaper.emulators.base import JobSpec
from reaper.emulators.seed import SEEDS
from reaper.emulators.world import BACKENDS, emulated_world
from reaper.errors import ExitCode
from tests.e2e_support import (
    CANCELLED,
    audit_records,
    job_keys,
    mutating_calls,
    run_cli,
    run_once,
)

CANCELLED_LINE = re.compile(r"^(batch|hpc|inference): \d+ active; cancelled [1-9]", re.MULTILINE)

# What the demo policies must do to the demo mix (reaper/emulators/seed.py).
DEMO_CANCELS = {
    "batch": {"train-llm-0", "train-llm-1", "train-llm-2", "etl-dev-1"},
    "hpc": {"train-cfd-mesh", "dev-notebook", "dev-scaling-test"},
    "inference": {"summaries-q3", "embeddings-full"},
}
DEMO_PROTECTED = {"batch": {"train-baseline"}, "hpc": {"dev-kept"}, "inference": set()}


def backends_with_cancellations(output: str) -> set[str]:
    return set(CANCELLED_LINE.findall(output))


def cancelled_backends_in_audit(path: Path) -> set[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line.split('"backend":"')[1].split('"')[0] for line in lines
            if '"event":"result"' in line and '"outcome":"cancelled"' in line}  # fmt: skip


def test_demo_cancels_on_all_three_backends(tmp_path: Path) -> None:
    result = run_cli("demo", "--dir", str(tmp_path))
    assert result.code == ExitCode.OK, result.out + result.err
    assert backends_with_cancellations(result.out) == set(BACKENDS)
    assert "chain intact" in result.out
    assert cancelled_backends_in_audit(tmp_path / "audit.jsonl") == set(BACKENDS)
    assert run_cli("audit", "verify", "--file", str(tmp_path / "audit.jsonl")).code == 0


def test_demo_run_twice_in_one_folder_cancels_on_all_three_backends_again(tmp_path: Path) -> None:
    """The folder (and its audit log) is kept between runs, so each new world's job ids must be
    new: otherwise the re-cancel window of the first run holds the second run's jobs."""
    assert run_cli("demo", "--dir", str(tmp_path)).code == ExitCode.OK
    again = run_cli("demo", "--dir", str(tmp_path))
    assert again.code == ExitCode.OK, again.out + again.err
    assert backends_with_cancellations(again.out) == set(BACKENDS)


def demo_seeds_with_readable_ids(now: float) -> dict[str, list[JobSpec]]:
    return {
        name: [replace(spec, id=f"{name}-{spec.name}") for spec in SEEDS[kind](now)]
        for name, kind in BACKENDS.items()
    }


def test_demo_mix_and_policies_cancel_exactly_the_runaways(tmp_path: Path) -> None:
    """The demo's world, policies and sweep, with the emulators' job tables checked after."""
    seeds = demo_seeds_with_readable_ids(time.time())
    with emulated_world(tmp_path, seeds=seeds) as world:
        before = {s.id: world.emulators[b].status_of(str(s.id)) for b in seeds for s in seeds[b]}
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        for backend, specs in seeds.items():
            emulator = world.emulators[backend]
            for spec in specs:
                now_status = emulator.status_of(str(spec.id))
                if spec.name in DEMO_CANCELS[backend]:
                    assert now_status == CANCELLED[backend], spec.name
                else:
                    assert now_status == before[spec.id], spec.name
        records = audit_records(world)
        calls = mutating_calls(world)
    cancelled = {(b, f"{b}-{n}") for b, names in DEMO_CANCELS.items() for n in names}
    assert job_keys(records, "result", outcome="cancelled") == cancelled
    protected = {(b, f"{b}-{n}") for b, names in DEMO_PROTECTED.items() for n in names}
    assert job_keys(records, "skipped", cause="protected") == protected
    assert calls == {"batch": 4, "hpc": 6, "inference": 2}  # Tapis: sendEvent, then cancel
