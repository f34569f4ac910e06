"""The in-memory fake backend and its knobs (reaper/backends/memory.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from reaper.backends.base import Backend, CancelOutcome
from reaper.backends.memory import CANCELLED_STATUS, MemoryBackend
from reaper.errors import BackendError
from reaper.jobs import Job, Phase

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def job(job_id: str, status: str = "RUNNING", tags: dict[str, str] | None = None) -> Job:
    return Job(
        backend="ignored",
        type="ignored",
        id=job_id,
        name=f"name-{job_id}",
        queue="q",
        status=status,
        phase=Phase.UNKNOWN,  # the backend recomputes it from the status
        created_at=T0 - timedelta(hours=1),
        tags=tags or {},
    )


def listed(backend: MemoryBackend) -> list[str]:
    return [j.id for page in backend.list_active() for j in page]


def test_is_a_backend_and_relabels_jobs() -> None:
    b = MemoryBackend("mem", "tapis", [job("j1")])
    assert isinstance(b, Backend)
    (j,) = [j for page in b.list_active() for j in page]
    assert (j.backend, j.type, j.phase) == ("mem", "tapis", Phase.RUNNING)


def test_rejects_unknown_type_and_empty_pages() -> None:
    with pytest.raises(ValueError, match="unknown backend type"):
        MemoryBackend("mem", "slurm")
    with pytest.raises(ValueError, match="page_size"):
        MemoryBackend("mem", "sutro", page_size=0)


def test_lists_active_jobs_page_by_page() -> None:
    jobs = [job(f"r{i}") for i in range(5)] + [job(f"p{i}", "RUNNABLE") for i in range(2)]
    jobs += [job("done", "SUCCEEDED"), job("failed", "FAILED")]
    b = MemoryBackend("mem", "aws_batch", jobs, page_size=3)
    pages = [[j.id for j in page] for page in b.list_active()]
    assert pages == [["r0", "r1", "r2"], ["r3", "r4", "p0"], ["p1"]]
    assert (b.calls["list_active"], b.calls["list_page"]) == (1, 3)


def test_empty_listing_is_one_empty_page() -> None:
    b = MemoryBackend("mem", "aws_batch")
    assert list(b.list_active()) == [[]]


@pytest.mark.parametrize(
    ("type_", "status", "listed_as"),
    [
        ("aws_batch", "STARTING", Phase.RUNNING),
        ("aws_batch", "SUBMITTED", Phase.PENDING),
        ("tapis", "BLOCKED", Phase.PENDING),
        ("tapis", "ARCHIVING", Phase.FINISHING),
        ("sutro", "running", Phase.RUNNING),  # older Sutro documents use lower case
        ("sutro", "CANCELLING", None),  # terminal: not listed
        ("sutro", "UNKNOWN", None),  # never acted on: not listed
    ],
)
def test_phase_tables_of_the_type_apply(type_: str, status: str, listed_as: Phase | None) -> None:
    b = MemoryBackend("mem", type_, [job("j1", status)])
    jobs = [j for page in b.list_active() for j in page]
    assert [j.phase for j in jobs] == ([] if listed_as is None else [listed_as])


def test_listing_fails_part_way_on_the_chosen_page() -> None:
    b = MemoryBackend("mem", "aws_batch", [job(f"j{i}") for i in range(7)], page_size=3)
    b.fail_list_on_page = 2
    pages = b.list_active()
    assert [j.id for j in next(pages)] == ["j0", "j1", "j2"]
    with pytest.raises(BackendError, match=r"backend mem: .*page 2"):
        next(pages)
    b.fail_list_on_page = None
    assert len(listed(b)) == 7


def test_listing_without_details_needs_enrich_for_tags() -> None:
    b = MemoryBackend(
        "mem", "aws_batch", [job("j1", tags={"team": "ml"}), job("j2")], listing_detailed=False
    )
    first, second = [j for page in b.list_active() for j in page]
    assert (first.tags, first.detailed) == ({}, False)
    b.remove("j2")
    (enriched,) = b.enrich([second, first])  # vanished jobs are left out, order is kept
    assert (enriched.id, enriched.tags, enriched.detailed) == ("j1", {"team": "ml"}, True)
    assert b.calls["enrich"] == 1


def test_refresh_sees_current_state_and_vanished_jobs() -> None:
    b = MemoryBackend("mem", "tapis", [job("j1", "QUEUED"), job("j2")])
    j1, j2 = [j for page in b.list_active() for j in page]
    b.set_status("j1", "RUNNING")
    b.set_status("j2", "FINISHED")
    assert b.refresh(j1).phase is Phase.RUNNING  # type: ignore[union-attr]
    assert b.refresh(j2).phase is Phase.TERMINAL  # type: ignore[union-attr]
    b.remove("j1")
    assert b.refresh(j1) is None
    assert b.calls["refresh"] == 3


@pytest.mark.parametrize("operation", ["refresh", "enrich"])
def test_refresh_and_enrich_faults_raise_backend_error(operation: str) -> None:
    b = MemoryBackend("mem", "sutro", [job("j1")])
    (j,) = [j for page in b.list_active() for j in page]
    setattr(b, f"fail_{operation}", True)
    with pytest.raises(BackendError, match=operation):
        b.refresh(j) if operation == "refresh" else b.enrich([j])


@pytest.mark.parametrize("type_", sorted(CANCELLED_STATUS))
def test_cancel_lands_at_once_without_delay(type_: str) -> None:
    b = MemoryBackend("mem", type_, [job("j1")])
    (j,) = [j for page in b.list_active() for j in page]
    assert b.cancel(j, "ran too long").outcome is CancelOutcome.CANCELLED
    stored = b.job("j1")
    assert stored is not None
    assert (stored.status, stored.phase) == (CANCELLED_STATUS[type_], Phase.TERMINAL)
    assert b.reason_of("j1") == "ran too long"
    assert listed(b) == []


def test_cancel_outcomes_and_mutating_calls() -> None:
    b = MemoryBackend("mem", "aws_batch", [job("run"), job("done", "SUCCEEDED"), job("bad")])
    b.fail_cancel_ids = {"bad"}
    results = {job_id: b.cancel(job(job_id), "r") for job_id in ("run", "done", "bad", "gone")}
    assert {k: r.outcome for k, r in results.items()} == {
        "run": CancelOutcome.CANCELLED,
        "done": CancelOutcome.ALREADY_TERMINAL,
        "bad": CancelOutcome.FAILED,
        "gone": CancelOutcome.NOT_FOUND,
    }
    assert results["bad"].error and "bad" in results["bad"].error
    assert b.job("bad").phase is Phase.RUNNING  # type: ignore[union-attr]
    assert b.reason_of("bad") is None
    assert b.mutating_calls == 4


def test_cancel_delay_keeps_the_job_listed_until_the_clock_passes_it() -> None:
    clock = FakeClock()
    b = MemoryBackend("mem", "tapis", [job("j1")], cancel_delay=timedelta(minutes=2), clock=clock)
    (j,) = [j for page in b.list_active() for j in page]
    assert b.cancel(j, "first").outcome is CancelOutcome.CANCELLED
    clock.advance(seconds=90)
    assert b.refresh(j).status == "RUNNING"  # type: ignore[union-attr]
    assert listed(b) == ["j1"]
    # a repeated cancel is accepted and does not push the landing time back
    assert b.cancel(j, "again").outcome is CancelOutcome.CANCELLED
    clock.advance(seconds=30)
    assert b.refresh(j).status == "CANCELLED"  # type: ignore[union-attr]
    assert listed(b) == []
    assert b.cancel(j, "late").outcome is CancelOutcome.ALREADY_TERMINAL
    assert b.reason_of("j1") == "again"


def test_removed_job_with_pending_cancel_stays_gone() -> None:
    clock = FakeClock()
    b = MemoryBackend("mem", "sutro", [job("j1")], cancel_delay=timedelta(minutes=1), clock=clock)
    b.cancel(job("j1"), "r")
    b.remove("j1")
    clock.advance(minutes=5)
    assert b.job("j1") is None and listed(b) == []


def test_close_is_counted() -> None:
    b = MemoryBackend("mem", "sutro")
    b.close()
    assert b.closed and b.calls["close"] == 1 and b.mutating_calls == 0
