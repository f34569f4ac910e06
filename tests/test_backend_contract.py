"""One contract, every backend: each runs against its emulator through its real client.

Each backend type provides `tests/harness_<type>.py` with
  start_emulator(knobs: Knobs) -> EmulatorServer      (started; the test stops it)
  make_backend(emulator: EmulatorServer, name: str) -> Backend
  STATUSES: dict with keys "pending", "running", "terminal", "finished" → a native status name
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from types import ModuleType

import pytest

from reaper.backends.base import Backend, CancelOutcome
from reaper.emulators.base import EmulatorServer, JobSpec, Knobs
from reaper.jobs import Phase

TYPES = ["aws_batch", "tapis", "sutro"]


@pytest.fixture(params=TYPES)
def harness(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(f"tests.harness_{request.param}")


@pytest.fixture
def emulator(harness: ModuleType) -> Iterator[EmulatorServer]:
    emu = harness.start_emulator(Knobs(page_size=3))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def backend(harness: ModuleType, emulator: EmulatorServer) -> Iterator[Backend]:
    b = harness.make_backend(emulator, "b1")
    try:
        yield b
    finally:
        b.close()


def _seed(
    harness: ModuleType, emulator: EmulatorServer, status_key: str, n: int, **kw: object
) -> list[str]:
    now = time.time()
    ids = []
    for i in range(n):
        started = now - 60 if status_key == "running" else None
        spec = JobSpec(
            name=f"{status_key}-{i}",
            status=harness.STATUSES[status_key],
            created_at=now - 3600,
            started_at=started,
            queue=harness.QUEUE,
            **kw,  # type: ignore[arg-type]
        )
        ids.append(emulator.add_job(spec))
    return ids


def _listed(backend: Backend) -> list:
    return [job for page in backend.list_active() for job in page]


def test_lists_every_active_job_over_several_pages(harness, emulator, backend) -> None:
    pending = _seed(harness, emulator, "pending", 5)
    running = _seed(harness, emulator, "running", 4)
    _seed(harness, emulator, "terminal", 3)
    jobs = _listed(backend)
    assert sorted(j.id for j in jobs) == sorted(pending + running)
    assert all(j.backend == "b1" and j.type == harness.TYPE for j in jobs)
    phases = {j.id: j.phase for j in jobs}
    assert {phases[i] for i in pending} == {Phase.PENDING}
    assert {phases[i] for i in running} == {Phase.RUNNING}
    assert all(j.started_at is not None for j in jobs if j.id in running)
    assert all(j.started_at is None for j in jobs if j.id in pending)


def test_enrich_returns_tags(harness, emulator, backend) -> None:
    if not harness.HAS_TAGS:
        pytest.skip(f"{harness.TYPE} jobs carry no tags")
    (job_id,) = _seed(harness, emulator, "running", 1, tags={"team": "ml", "reaper:keep": ""})
    (job,) = _listed(backend)
    (detailed,) = backend.enrich([job])
    assert detailed.id == job_id and detailed.detailed
    assert detailed.tags == {"team": "ml", "reaper:keep": ""}


def test_cancel_running_job(harness, emulator, backend) -> None:
    (job_id,) = _seed(harness, emulator, "running", 1)
    (job,) = _listed(backend)
    result = backend.cancel(job, "ran too long (policy test)")
    assert result.outcome == CancelOutcome.CANCELLED, result.error
    assert emulator.mutating_calls() >= 1
    if harness.REASON_REACHES_JOB:
        assert emulator.reason_of(job_id) == "ran too long (policy test)"


def test_cancel_pending_job(harness, emulator, backend) -> None:
    _seed(harness, emulator, "pending", 1)
    (job,) = _listed(backend)
    assert backend.cancel(job, "waited too long").outcome == CancelOutcome.CANCELLED


def test_job_that_finished_between_list_and_cancel(harness, emulator, backend) -> None:
    (job_id,) = _seed(harness, emulator, "running", 1)
    (job,) = _listed(backend)
    emulator.set_status(job_id, harness.STATUSES["finished"])
    assert backend.refresh(job).phase == Phase.TERMINAL  # type: ignore[union-attr]
    assert backend.cancel(job, "too late").outcome == CancelOutcome.ALREADY_TERMINAL


def test_job_that_vanished(harness, emulator, backend) -> None:
    (job_id,) = _seed(harness, emulator, "running", 1)
    (job,) = _listed(backend)
    emulator.remove_job(job_id)
    assert backend.refresh(job) is None
    assert backend.cancel(job, "gone").outcome == CancelOutcome.NOT_FOUND


def test_refresh_sees_current_state(harness, emulator, backend) -> None:
    (job_id,) = _seed(
        harness, emulator, "pending", 1, tags={"env": "dev"} if harness.HAS_TAGS else {}
    )
    (job,) = _listed(backend)
    emulator.set_status(job_id, harness.STATUSES["running"])
    fresh = backend.refresh(job)
    assert fresh is not None and fresh.phase == Phase.RUNNING and fresh.detailed
    if harness.HAS_TAGS:
        assert fresh.tags == {"env": "dev"}
