"""Phase tables (docs/backends.md), case-insensitive status names, and Job's durations."""

from datetime import UTC, datetime, timedelta

import pytest

from reaper.jobs import (
    BACKEND_TYPES,
    PHASES,
    Job,
    Phase,
    active_statuses,
    phase_of,
    statuses_in_group,
)

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

# Transcribed from docs/backends.mdindependently of reaper/jobs.py.
EXPECTED = {
    "aws_batch": {
        Phase.PENDING: "SUBMITTED PENDING RUNNABLE",
        Phase.RUNNING: "STARTING RUNNING",
        Phase.TERMINAL: "SUCCEEDED FAILED",
    },
    "tapis": {
        Phase.PENDING: "PENDING PROCESSING_INPUTS STAGING_INPUTS STAGING_JOB SUBMITTING_JOB "
        "QUEUED BLOCKED PAUSED",
        Phase.RUNNING: "RUNNING ARCHIVING",
        Phase.TERMINAL: "FINISHED CANCELLED FAILED",
    },
    "sutro": {
        Phase.PENDING: "QUEUED STARTING",
        Phase.RUNNING: "RUNNING",
        Phase.TERMINAL: "SUCCEEDED FAILED CANCELLING CANCELLED",
        Phase.UNKNOWN: "UNKNOWN",
    },
}
CASES = [
    (backend, status, phase)
    for backend, table in EXPECTED.items()
    for phase, statuses in table.items()
    for status in statuses.split()
]


@pytest.mark.parametrize(("backend", "status", "phase"), CASES)
def test_phase_of_follows_design_table(backend: str, status: str, phase: Phase) -> None:
    assert phase_of(backend, status) is phase


@pytest.mark.parametrize(("backend", "status", "phase"), CASES)
def test_phase_of_ignores_case(backend: str, status: str, phase: Phase) -> None:
    assert phase_of(backend, status.lower()) is phase
    assert phase_of(backend, status.title()) is phase


def test_older_sutro_lower_case_statuses() -> None:
    assert phase_of("sutro", "running") is Phase.RUNNING
    assert phase_of("sutro", "queued") is Phase.PENDING
    assert phase_of("sutro", "cancelling") is Phase.TERMINAL


@pytest.mark.parametrize("backend", BACKEND_TYPES)
def test_tables_hold_exactly_the_design_statuses(backend: str) -> None:
    expected = {status for _, status, _ in filter(lambda case: case[0] == backend, CASES)}
    assert set(PHASES[backend]) == expected


@pytest.mark.parametrize("status", ["", "DONE", "EXPIRED", "running "])
def test_unlisted_status_is_unknown(status: str) -> None:
    assert phase_of("aws_batch", status) is Phase.UNKNOWN


def test_active_statuses_exclude_terminal_and_unknown() -> None:
    assert active_statuses("sutro") == ["QUEUED", "STARTING", "RUNNING"]
    assert "SUCCEEDED" not in active_statuses("aws_batch")
    assert statuses_in_group("tapis", "running") == ["RUNNING", "ARCHIVING"]


def make_job(created_ago: timedelta, started_ago: timedelta | None) -> Job:
    started = None if started_ago is None else NOW - started_ago
    return Job("b", "sutro", "j", "n", "", "RUNNING", Phase.RUNNING, NOW - created_ago, started)


def test_durations_of_a_started_job() -> None:
    job = make_job(timedelta(hours=3), timedelta(hours=2))
    assert job.runtime(NOW) == timedelta(hours=2)
    assert job.pending(NOW) is None
    assert job.age(NOW) == timedelta(hours=3)


def test_durations_of_a_job_that_never_started() -> None:
    job = make_job(timedelta(minutes=5), None)
    assert job.runtime(NOW) is None
    assert job.pending(NOW) == timedelta(minutes=5)
    assert job.age(NOW) == timedelta(minutes=5)


def test_durations_never_negative_under_clock_skew() -> None:
    job = make_job(-timedelta(minutes=1), -timedelta(seconds=30))
    assert job.runtime(NOW) == timedelta(0)
    assert job.age(NOW) == timedelta(0)
