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
        Phase.PENDING: "SUBMITTED PENDING RUNNABLE SCHEDULED",  # SCHEDULED: service jobs only
        Phase.RUNNING: "STARTING RUNNING",
        Phase.TERMINAL: "SUCCEEDED FAILED",
    },
    "tapis": {
        Phase.PENDING: "PENDING PROCESSING_INPUTS STAGING_INPUTS STAGING_JOB SUBMITTING_JOB "
        "QUEUED BLOCKED PAUSED",
        Phase.RUNNING: "RUNNING",
        Phase.FINISHING: "ARCHIVING",
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
    assert statuses_in_group("tapis", "running") == ["RUNNING"]
    assert "ARCHIVING" in active_statuses("tapis")  # listed and counted, in neither group


def make_job(
    created_ago: timedelta, started_ago: timedelta | None, phase: Phase | None = None
) -> Job:
    started = None if started_ago is None else NOW - started_ago
    if phase is None:
        phase = Phase.PENDING if started is None else Phase.RUNNING
    status = "QUEUED" if phase is Phase.PENDING else "RUNNING"
    return Job("b", "sutro", "j", "n", "", status, phase, NOW - created_ago, started)


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


def test_a_running_job_without_a_start_has_neither_runtime_nor_pending_time() -> None:
    job = make_job(timedelta(days=3), None, Phase.RUNNING)
    assert job.runtime(NOW) is None
    assert job.pending(NOW) is None  # not "pending 3d": it is running
    assert job.age(NOW) == timedelta(days=3)
    assert job.time_problem(NOW) is None  # a missing start is not a bad record


def test_a_pending_job_that_records_a_start_has_no_pending_time() -> None:
    job = make_job(timedelta(days=3), timedelta(days=2), Phase.PENDING)
    assert job.pending(NOW) is None
    assert job.runtime(NOW) is None  # pending phase: not started as far as reaper can tell


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("created", "started", "problem"),
    [
        (NOW - timedelta(days=3), EPOCH, "started_at"),  # startedAt 0
        (NOW - timedelta(days=3), EPOCH + timedelta(days=20_000), "started_at"),  # seconds as ms
        (NOW - timedelta(days=3), NOW + timedelta(hours=1), "started_at"),  # in the future
        (NOW - timedelta(days=3), NOW - timedelta(days=4), "before created_at"),
        (EPOCH, NOW - timedelta(hours=5), "created_at"),
        (NOW + timedelta(days=1), None, "created_at"),
    ],
)
def test_implausible_times_support_no_time_fact(
    created: datetime, started: datetime | None, problem: str
) -> None:
    phase = Phase.PENDING if started is None else Phase.RUNNING
    job = Job("b", "aws_batch", "j", "n", "q", "RUNNING", phase, created, started)
    assert job.runtime(NOW) is None
    assert job.pending(NOW) is None
    problem_text = job.time_problem(NOW)
    assert problem_text is not None and problem in problem_text


def test_times_within_the_tolerance_are_believed() -> None:
    created = NOW - timedelta(hours=2)
    job = Job("b", "aws_batch", "j", "n", "q", "RUNNING", Phase.RUNNING, created,
              created - timedelta(minutes=1))  # fmt: skip
    assert job.runtime(NOW) == timedelta(hours=2, minutes=1)
    assert job.time_problem(NOW) is None


def test_a_finishing_job_has_a_runtime_but_is_in_no_group() -> None:
    job = Job("b", "tapis", "j", "n", "q", "ARCHIVING", Phase.FINISHING,
              NOW - timedelta(hours=9), NOW - timedelta(hours=8))  # fmt: skip
    assert job.runtime(NOW) == timedelta(hours=8)
    assert "ARCHIVING" not in statuses_in_group("tapis", "running")
