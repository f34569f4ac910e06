"""Sutro backend against its emulator: paging, lower-case statuses, unknown statuses, every
cancel outcome, refresh, configuration."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from reaper.backends.base import CancelOutcome
from reaper.backends.records.sutro import parse_job, parse_time
from reaper.backends.sutro import SutroBackend, classify_cancel
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.sutro import SutroEmulator
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase
from tests.harness_sutro import make_backend, start_emulator

NOW = time.time()


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def emulator() -> Iterator[SutroEmulator]:
    emu = start_emulator(Knobs(page_size=3))
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def backend(emulator: SutroEmulator) -> Iterator[SutroBackend]:
    b = make_backend(emulator, "sutro")
    try:
        yield b
    finally:
        b.close()


def seed(emulator: SutroEmulator, status: str, n: int = 1, **extra: object) -> list[str]:
    started = NOW - 60 if status.upper() in ("RUNNING", "SUCCEEDED") else None
    return [
        emulator.add_job(
            JobSpec(f"{status}-{i}", status, NOW - 3600 + i, started, extra=dict(extra))
        )
        for i in range(n)
    ]


def listed(backend: SutroBackend) -> list[Job]:
    return [job for page in backend.list_active() for job in page]


# -- listing --------------------------------------------------------------------------------------
def test_follows_cursor_pages_and_drops_terminal_jobs(emulator, backend) -> None:
    active = (
        seed(emulator, "QUEUED", 4) + seed(emulator, "STARTING", 2) + seed(emulator, "RUNNING", 4)
    )
    seed(emulator, "SUCCEEDED", 2)
    seed(emulator, "FAILED", 1)
    seed(emulator, "CANCELLED", 1)
    pages = list(backend.list_active())
    assert emulator.calls["ListJobs"] == 5  # 14 jobs, 3 a page
    ids = [job.id for page in pages for job in page]
    assert sorted(ids) == sorted(active)  # each exactly once
    assert all(len(page) <= 3 for page in pages)


def test_a_job_added_mid_listing_shifts_nothing(emulator, backend) -> None:
    first = seed(emulator, "RUNNING", 6)
    pages = backend.list_active()
    seen = [job.id for job in next(pages)]
    emulator.add_job(JobSpec("newest", "QUEUED", NOW))  # lands on page 1, already served
    seen += [job.id for page in pages for job in page]
    assert sorted(seen) == sorted(first)


def test_deployment_without_paging_answers_everything_at_once(emulator, backend) -> None:
    emulator.paging = False
    ids = seed(emulator, "RUNNING", 7)
    assert sorted(j.id for j in listed(backend)) == sorted(ids)
    assert emulator.calls["ListJobs"] == 1


def test_job_record_is_normalised(emulator, backend) -> None:
    (job_id,) = seed(emulator, "RUNNING", job_cost=61.5, model="llama-3.3-70b", description="d")
    (job,) = listed(backend)
    assert (job.backend, job.type, job.id, job.name) == ("sutro", "sutro", job_id, "RUNNING-0")
    assert (job.queue, job.tags, job.owner, job.detailed) == ("", {}, None, True)
    assert job.phase == Phase.RUNNING
    assert job.created_at == datetime.fromtimestamp(int(NOW - 3600), UTC)
    assert job.started_at == datetime.fromtimestamp(int(NOW - 60), UTC)
    assert job.raw["job_cost"] == 61.5 and job.raw["model"] == "llama-3.3-70b"


def test_lower_case_statuses_are_understood(emulator, backend) -> None:
    emulator.lowercase_status = True
    queued = seed(emulator, "QUEUED", 2)
    running = seed(emulator, "RUNNING", 2)
    seed(emulator, "SUCCEEDED", 2)
    jobs = {job.id: job for job in listed(backend)}
    assert sorted(jobs) == sorted(queued + running)
    assert {jobs[i].phase for i in queued} == {Phase.PENDING}
    assert {jobs[i].status for i in running} == {"RUNNING"}
    assert jobs[running[0]].raw["status"] == "running"  # the raw record is kept as served


def test_unknown_statuses_are_skipped_and_logged(emulator, backend, caplog) -> None:
    (unknown,) = seed(emulator, "UNKNOWN")
    (legacy,) = seed(emulator, "submitted")  # older documents' status the phase table lacks
    (running,) = seed(emulator, "RUNNING")
    with caplog.at_level(logging.WARNING, logger="reaper.backends.sutro"):
        jobs = listed(backend)
    assert [j.id for j in jobs] == [running]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert unknown in logged and legacy in logged


def test_unreadable_records_are_reported_not_fatal(emulator, backend) -> None:
    (running,) = seed(emulator, "RUNNING")
    (broken,) = seed(emulator, "RUNNING", datetime_created=None)
    items = [item for page in backend.list_active() for item in page]
    assert [j.id for j in items if isinstance(j, Job)] == [running]
    (bad,) = [item for item in items if isinstance(item, BadRecord)]
    assert bad.job_id == broken


# -- refresh --------------------------------------------------------------------------------------
def test_refresh_reads_the_full_current_record(emulator, backend) -> None:
    (job_id,) = seed(emulator, "QUEUED", job_cost=3.0)
    (job,) = listed(backend)
    assert job.started_at is None
    emulator.set_status(job_id, "RUNNING")
    fresh = backend.refresh(job)
    assert fresh is not None
    assert fresh.phase == Phase.RUNNING and fresh.started_at is not None
    assert fresh.raw["job_cost"] == 3.0
    assert emulator.calls["FetchJob"] == 1


def test_refresh_of_a_vanished_job_is_none(emulator, backend) -> None:
    (job_id,) = seed(emulator, "RUNNING")
    (job,) = listed(backend)
    emulator.remove_job(job_id)
    assert backend.refresh(job) is None


# -- cancel ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["QUEUED", "STARTING", "RUNNING"])
def test_cancel_active_job(emulator, backend, status) -> None:
    (job_id,) = seed(emulator, status)
    (job,) = listed(backend)
    result = backend.cancel(job, "policy says so")
    assert result.outcome == CancelOutcome.CANCELLED and result.error is None
    assert emulator.status_of(job_id) == "CANCELLED"
    assert emulator.reason_of(job_id) is None  # Sutro has nowhere to put a reason


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "CANCELLED"])
def test_an_older_deployment_refuses_a_finished_job(emulator, backend, final) -> None:
    emulator.refuse_terminal = True  # older deployments answered `cancelled: false`
    (job_id,) = seed(emulator, "RUNNING")
    (job,) = listed(backend)
    emulator.set_status(job_id, final)
    result = backend.cancel(job, "too late")
    assert result.outcome == CancelOutcome.ALREADY_TERMINAL
    assert emulator.status_of(job_id) == final


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "CANCELLED"])
def test_the_current_api_accepts_a_finished_job_and_changes_nothing(
    emulator, backend, final
) -> None:
    # docs.sutro.sh/reference/api/cancel-job: the endpoint "does not reject jobs that are already
    # terminal": `cancelled: true` alone does not prove reaper ended the job. The job itself
    # keeps its final status.
    (job_id,) = seed(emulator, "RUNNING")
    (job,) = listed(backend)
    emulator.set_status(job_id, final)
    outcome = backend.cancel(job, "too late").outcome
    # The backend re-reads the job: one that finished on its own is `already_terminal`; one
    # cancelled meanwhile cannot be told from reaper's own (fast) cancel and counts as that.
    assert outcome == (CancelOutcome.CANCELLED if final == "CANCELLED" else "already_terminal")
    assert emulator.status_of(job_id) == final


def test_a_slow_cancel_passes_through_cancelling() -> None:
    clock = FakeClock(NOW)
    with SutroEmulator(Knobs(cancel_delay_s=30), clock) as emu:
        assert isinstance(emu, SutroEmulator)
        backend = make_backend(emu, "sutro")
        (job_id,) = seed(emu, "RUNNING")
        (job,) = listed(backend)
        assert backend.cancel(job, "r").outcome == CancelOutcome.CANCELLED
        assert emu.status_of(job_id) == "CANCELLING"
        assert listed(backend) == []  # CANCELLING is terminal: never cancelled twice
        emu.refuse_terminal = True
        assert backend.cancel(job, "again").outcome == CancelOutcome.ALREADY_TERMINAL
        clock.now += 31
        assert emu.status_of(job_id) == "CANCELLED"
        backend.close()


@pytest.mark.parametrize("not_found_status", [200, 404])
def test_cancel_of_an_unknown_job_is_not_found(emulator, backend, not_found_status) -> None:
    emulator.not_found_status = not_found_status
    (job_id,) = seed(emulator, "RUNNING")
    (job,) = listed(backend)
    emulator.remove_job(job_id)
    assert backend.cancel(job, "gone").outcome == CancelOutcome.NOT_FOUND


@pytest.mark.parametrize(
    ("body", "outcome"),
    [
        ({"cancelled": True, "message": "Job j has been successfully cancelled"}, "cancelled"),
        (
            {
                "cancelled": False,
                "message": "Job j could not be cancelled because it has already completed",
            },
            "already_terminal",
        ),
        ({"cancelled": False, "message": "Job j has already been cancelled"}, "already_terminal"),
        ({"cancelled": False, "message": "job j is finished"}, "already_terminal"),
        ({"cancelled": False, "message": "Job j was FAILED"}, "already_terminal"),
        ({"cancelled": False, "message": "job is in a terminal state"}, "already_terminal"),
        ({"cancelled": False, "message": "Job j not found"}, "not_found"),
        ({"cancelled": False, "message": "job j does not exist"}, "not_found"),
        ({"cancelled": False, "message": "worker unreachable, try later"}, "failed"),
        ({"cancelled": False, "message": "cancel failed: it failed to reach the worker"}, "failed"),
        ({"cancelled": False}, "failed"),
        ({"message": "ok"}, "failed"),  # no `cancelled`: never read as a success
        ({"cancelled": "yes"}, "failed"),
    ],
)
def test_cancel_outcome_by_message(body, outcome) -> None:
    result = classify_cancel(body)
    assert result.outcome == outcome
    assert (result.error is not None) == (outcome == "failed")


# -- pure parsing ---------------------------------------------------------------------------------
def test_parse_time_forms() -> None:
    expected = datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert parse_time("2024-01-15T10:30:00Z") == expected
    assert parse_time("2024-01-15T11:30:00+01:00") == expected
    assert parse_time("2024-01-15T10:30:00") == expected  # naive is UTC
    assert parse_time(expected.timestamp()) == expected
    assert parse_time(None) is None
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_parse_job_reads_older_field_names() -> None:
    job = parse_job("s", {"job_id": "j", "status": "pending", "created_at": "2024-01-15T10:30:00Z"})
    assert job.created_at == datetime(2024, 1, 15, 10, 30, tzinfo=UTC)
    assert job.phase == Phase.UNKNOWN  # `pending` is not in Sutro's current status set


# -- configuration --------------------------------------------------------------------------------
def test_from_config_reads_the_key_from_the_environment(emulator) -> None:
    section = {"type": "sutro", "api_url": emulator.url, "api_key_env": "SUTRO_KEY"}
    backend = SutroBackend.from_config(
        "s", section, Path("/"), environ={"SUTRO_KEY": emulator.api_key}
    )
    seed(emulator, "RUNNING")
    assert len(listed(backend)) == 1
    backend.close()


def test_from_config_reads_the_key_from_a_relative_file(emulator, tmp_path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "sutro").write_text(emulator.api_key + "\n")
    section = {"type": "sutro", "api_url": emulator.url, "api_key_file": "creds/sutro"}
    backend = SutroBackend.from_config("s", section, tmp_path, environ={})
    seed(emulator, "QUEUED")
    assert len(listed(backend)) == 1
    backend.close()


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ({"api_key_env": "SUTRO_KEY"}, "SUTRO_KEY"),
        ({"api_key_file": "missing"}, "missing"),
        ({}, "api_key_env"),
    ],
)
def test_from_config_without_a_key_is_a_backend_error(tmp_path, section, needle) -> None:
    with pytest.raises(BackendError, match=needle):
        section = {"type": "sutro", "api_url": "https://sutro.example.com", **section}
        SutroBackend.from_config("s", section, tmp_path, environ={})


def test_a_deployment_that_wants_post_is_asked_once_with_get(emulator, backend) -> None:
    emulator.cancel_methods = ("POST",)  # an older deployment: GET answers 405
    first, second = seed(emulator, "RUNNING", n=2)
    jobs = {job.id: job for job in listed(backend)}
    assert backend.cancel(jobs[first], "r").outcome == CancelOutcome.CANCELLED
    assert backend.cancel(jobs[second], "r").outcome == CancelOutcome.CANCELLED
    cancels = [(method, path) for op, method, path in emulator.recent if op == "CancelJob"]
    assert cancels == [
        ("GET", f"/v1/job-cancel/{first}"),
        ("POST", f"/v1/job-cancel/{first}"),
        ("POST", f"/v1/job-cancel/{second}"),  # remembered: no second 405
    ]


def test_cloudflare_524_is_retried_like_a_5xx(emulator) -> None:
    emulator.error_status = 524
    (job_id,) = seed(emulator, "RUNNING")
    emulator.knobs.fail_first = 1
    backend = make_backend(emulator, "sutro")
    try:
        assert [job.id for job in listed(backend)] == [job_id]
    finally:
        backend.close()
    assert emulator.calls["ListJobs"] == 2


def test_paths_outside_v1_are_not_served(emulator) -> None:
    response = requests.get(
        f"{emulator.url}/list-jobs", headers={"Authorization": f"Key {emulator.api_key}"}, timeout=5
    )
    assert response.status_code == 404
