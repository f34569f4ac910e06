"""AwsBatchBackend against the AWS Batch emulator, through a real boto3 client: listing and paging,
enrichment, cancel outcomes, bulk terminate, client construction, and listing at scale."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reaper.backends import create_backend
from reaper.backends.aws_batch import AwsBatchBackend, client_config
from reaper.backends.base import Backend, CancelOutcome
from reaper.emulators.aws_batch import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, AwsBatchEmulator
from reaper.emulators.base import JobSpec, Knobs
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase
from tests.harness_aws_batch import FakeClock, make_backend, make_client


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[AwsBatchEmulator]:
    emu = AwsBatchEmulator(Knobs(page_size=3), clock=clock).start()
    try:
        yield emu  # type: ignore[misc]
    finally:
        emu.stop()


@pytest.fixture
def backend(emulator: AwsBatchEmulator) -> Iterator[AwsBatchBackend]:
    b = make_backend(emulator, "batch-test", queues=["q1", "q2"])
    try:
        yield b
    finally:
        b.close()


def listed(backend: AwsBatchBackend) -> list:
    return [job for page in backend.list_active() for job in page]


# -- listing ------------------------------------------------------------------------------------
def test_lists_each_queue_and_active_status_following_next_token(emulator, backend) -> None:
    running = emulator.seed_jobs("q1", "RUNNING", 7)
    runnable = emulator.seed_jobs("q1", "RUNNABLE", 5)
    other = emulator.seed_jobs("q2", "STARTING", 2)
    emulator.seed_jobs("q1", "SUCCEEDED", 4)
    emulator.seed_jobs("q1", "FAILED", 1)
    pages = list(backend.list_active())
    jobs = [job for page in pages for job in page]
    assert sorted(j.id for j in jobs) == sorted(running + runnable + other)
    assert all(len(page) <= 3 for page in pages)
    # q1: SUBMITTED, PENDING, STARTING 1 call each; RUNNABLE 2; RUNNING 3. q2: 1 per status.
    assert emulator.calls["ListJobs"] == 3 + 2 + 3 + 5
    assert {j.queue for j in jobs if j.id in other} == {"q2"}
    assert {j.queue for j in jobs if j.id not in other} == {"q1"}
    assert not any(j.detailed for j in jobs) and all(j.tags == {} for j in jobs)
    assert emulator.calls["DescribeJobs"] == 0


def test_job_fields_come_from_the_summary(clock, emulator, backend) -> None:
    spec = JobSpec(
        "train-1",
        "RUNNING",
        created_at=1_700_000_000.5,
        started_at=1_700_000_060.25,
        queue="q1",
        tags={"team": "ml"},
    )
    job_id = emulator.add_job(spec)
    (job,) = listed(backend)
    assert (job.id, job.name, job.status, job.phase) == (
        job_id,
        "train-1",
        "RUNNING",
        Phase.RUNNING,
    )
    assert (job.backend, job.type) == ("batch-test", "aws_batch")
    assert job.created_at == datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)
    assert job.started_at == datetime(2023, 11, 14, 22, 14, 20, 250000, tzinfo=UTC)
    assert job.raw["jobId"] == job_id and "tags" not in job.raw  # ListJobs has no tags


def test_a_job_without_a_creation_time_is_a_bad_record(emulator, backend) -> None:
    """A job whose age is unknown must never look old enough to match a policy; the rest of
    the listing goes on (one bad record is one skipped job)."""
    good = emulator.seed_jobs("q1", "RUNNING", 2)
    emulator.add_job(JobSpec("odd", "RUNNING", 0, queue="q1", id="odd", extra={"createdAt": None}))
    items = listed(backend)
    assert [j.id for j in items if isinstance(j, Job)] == good
    (bad,) = [j for j in items if isinstance(j, BadRecord)]
    assert bad.job_id == "odd" and "createdAt" in bad.problem


def test_discovers_queues_when_none_are_configured(emulator) -> None:
    emulator.knobs.page_size = 1  # DescribeJobQueues pages too
    ids = [emulator.seed_jobs(q, "RUNNING", 1)[0] for q in ("a", "b", "c")]
    backend = AwsBatchBackend("b", make_client(emulator), queues=None)
    jobs = listed(backend)
    assert sorted(j.id for j in jobs) == sorted(ids)
    assert {j.queue for j in jobs} == {"a", "b", "c"}
    assert emulator.calls["DescribeJobQueues"] == 3


def test_a_job_that_moves_on_between_status_calls_is_listed_again(emulator, backend) -> None:
    (job_id,) = emulator.seed_jobs("q1", "SUBMITTED", 1)
    seen = []
    for page in backend.list_active():
        seen.extend((j.id, j.status) for j in page)
        emulator.set_status(job_id, "RUNNING")  # after the SUBMITTED page was read
    # Both records reach the sweep, which keeps the last (reaper.engine.scan): the job is
    # running, not pending since its submission.
    assert seen == [(job_id, "SUBMITTED"), (job_id, "RUNNING")]


# -- details ------------------------------------------------------------------------------------
def test_enrich_describes_in_chunks_of_100_and_drops_vanished_jobs(emulator, backend) -> None:
    ids = emulator.seed_jobs("q1", "RUNNING", 250, tags={"env": "dev"})
    jobs = listed(backend)
    emulator.remove_job(ids[10])
    emulator.set_status(ids[20], "SUCCEEDED")
    detailed = backend.enrich(jobs)
    assert [j.id for j in detailed] == [j.id for j in jobs if j.id != ids[10]]
    assert all(j.detailed and j.tags == {"env": "dev"} for j in detailed)
    assert {j.queue for j in detailed} == {"q1"}  # the listed name, not JobDetail's ARN
    assert next(j for j in detailed if j.id == ids[20]).phase == Phase.TERMINAL
    assert emulator.calls["DescribeJobs"] == 3


def test_refresh_of_a_vanished_job_is_none(emulator, backend) -> None:
    (job_id,) = emulator.seed_jobs("q1", "RUNNING", 1)
    (job,) = listed(backend)
    emulator.remove_job(job_id)
    assert backend.refresh(job) is None


# -- cancel -------------------------------------------------------------------------------------
def test_cancel_terminates_and_never_uses_cancel_job(emulator, backend) -> None:
    (job_id,) = emulator.seed_jobs("q1", "RUNNING", 1)
    (job,) = listed(backend)
    assert backend.cancel(job, "too long").outcome == CancelOutcome.CANCELLED
    assert (emulator.calls["TerminateJob"], emulator.calls["CancelJob"]) == (1, 0)
    assert emulator.status_of(job_id) == "FAILED"


def test_cancel_cuts_the_reason_to_1024_characters(emulator, backend) -> None:
    (job_id,) = emulator.seed_jobs("q1", "RUNNABLE", 1)
    (job,) = listed(backend)
    assert backend.cancel(job, "x" * 5000).outcome == CancelOutcome.CANCELLED
    reason = emulator.reason_of(job_id)
    assert reason is not None and len(reason) == 1024 and reason.endswith("…")


def test_a_terminated_running_job_stays_running_for_the_cancel_delay(
    clock, emulator, backend
) -> None:
    emulator.knobs.cancel_delay_s = 30
    emulator.seed_jobs("q1", "RUNNING", 1)
    (job,) = listed(backend)
    assert backend.cancel(job, "stop").outcome == CancelOutcome.CANCELLED
    fresh = backend.refresh(job)
    assert fresh is not None and fresh.status == "RUNNING" and fresh.raw["statusReason"] == "stop"
    clock.now += 31
    assert backend.refresh(job).status == "FAILED"  # type: ignore[union-attr]
    assert backend.cancel(job, "again").outcome == CancelOutcome.ALREADY_TERMINAL


def test_emulated_cancel_job_does_nothing_to_a_running_job(emulator) -> None:
    """The trap the backend avoids: CancelJob answers 200 and leaves RUNNING jobs running."""
    (running,) = emulator.seed_jobs("q1", "RUNNING", 1)
    (waiting,) = emulator.seed_jobs("q1", "RUNNABLE", 1)
    client = make_client(emulator)
    client.cancel_job(jobId=running, reason="r")
    client.cancel_job(jobId=waiting, reason="r")
    client.terminate_job(jobId="no-such-job", reason="r")  # the real API answers 200 too
    assert (emulator.status_of(running), emulator.reason_of(running)) == ("RUNNING", None)
    assert (emulator.status_of(waiting), emulator.reason_of(waiting)) == ("FAILED", "r")


def test_cancel_many_uses_terminate_jobs_in_chunks_of_50(emulator, backend) -> None:
    ids = emulator.seed_jobs("q1", "RUNNING", 60)
    jobs = listed(backend)
    (done,) = emulator.seed_jobs("q1", "SUCCEEDED", 1)
    emulator.remove_job(ids[0])
    finished = dataclasses.replace(jobs[1], id=done)
    results = backend.cancel_many([*jobs, finished], "bulk reason")
    outcomes = {job.id: r.outcome for job, r in zip([*jobs, finished], results, strict=True)}
    assert outcomes[ids[0]] == CancelOutcome.NOT_FOUND
    assert outcomes[done] == CancelOutcome.ALREADY_TERMINAL
    assert {outcomes[i] for i in ids[1:]} == {CancelOutcome.CANCELLED}
    assert {emulator.reason_of(i) for i in ids[1:]} == {"bulk reason"}
    assert emulator.calls["TerminateJobs"] == 2 and emulator.calls["TerminateJob"] == 0
    assert emulator.calls["DescribeJobs"] == 1  # 61 ids: one call decides not_found/terminal


def test_cancel_many_reports_per_job_errors(emulator, backend) -> None:
    ids = emulator.seed_jobs("q1", "RUNNING", 3)
    jobs = listed(backend)
    emulator.job_errors = {
        ids[0]: ("AccessDenied", "not authorized to terminate this job"),
        ids[1]: ("ThrottlingException", "slow down"),  # retried once through TerminateJob
    }
    results = dict(zip([j.id for j in jobs], backend.cancel_many(jobs, "r"), strict=True))
    assert results[ids[0]].outcome == CancelOutcome.FAILED
    assert "AccessDenied" in (results[ids[0]].error or "")
    assert results[ids[1]].outcome == CancelOutcome.CANCELLED
    assert results[ids[2]].outcome == CancelOutcome.CANCELLED
    assert emulator.status_of(ids[0]) == "RUNNING" and emulator.calls["TerminateJob"] == 1


def test_cancel_many_falls_back_where_the_service_lacks_terminate_jobs(emulator, backend) -> None:
    emulator.bulk_terminate = False
    ids = emulator.seed_jobs("q1", "RUNNING", 4)
    jobs = listed(backend)
    first = backend.cancel_many(jobs[:2], "r1")
    second = backend.cancel_many(jobs[2:], "r2")
    assert {r.outcome for r in first + second} == {CancelOutcome.CANCELLED}
    assert [emulator.reason_of(i) for i in ids] == ["r1", "r1", "r2", "r2"]
    assert emulator.calls["Unknown"] == 1  # tried once, then TerminateJob one by one
    assert emulator.calls["TerminateJob"] == 4


# -- construction -------------------------------------------------------------------------------
@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Credentials from the environment only: no host profile or config file plays a part."""
    for var in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    return monkeypatch


def test_from_config_sets_timeouts_and_the_standard_retry_mode(aws_env, emulator) -> None:
    section = {
        "type": "aws_batch",
        "region": REGION,
        "endpoint_url": emulator.url,
        "queues": ["q1"],
    }
    backend = create_backend("batch-prod", section, Path("."))
    assert isinstance(backend, AwsBatchBackend) and isinstance(backend, Backend)
    config = backend.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert config.retries == {"mode": "standard", "total_max_attempts": 6}
    assert backend.client.meta.region_name == REGION
    ids = emulator.seed_jobs("q1", "PENDING", 2)
    assert sorted(j.id for j in listed(backend)) == sorted(ids)  # type: ignore[arg-type]


def test_from_config_with_an_unknown_profile_is_a_backend_error(aws_env) -> None:
    with pytest.raises(BackendError, match="ProfileNotFound"):
        AwsBatchBackend.from_config("b", {"region": REGION, "profile": "nope"}, Path("."))


def test_client_config_defaults() -> None:
    config = client_config()
    assert (config.connect_timeout, config.read_timeout) == (5, 30)
    assert config.retries == {"mode": "standard", "max_attempts": 5}


# -- scale --------------------------------------------------------------------------------------
def test_listing_10000_jobs_takes_few_calls_and_no_describe(emulator) -> None:
    emulator.knobs.page_size = 1000  # the real service's ListJobs maximum
    counts = {"RUNNING": 4500, "RUNNABLE": 3000, "SUBMITTED": 2500}
    for status, n in counts.items():
        emulator.seed_jobs("big", status, n)
    backend = make_backend(emulator, "b", queues=["big"])
    jobs = listed(backend)
    assert len(jobs) == len({j.id for j in jobs}) == 10_000
    per_status = {
        s: max(1, math.ceil(counts.get(s, 0) / 1000))
        for s in ("SUBMITTED", "PENDING", "RUNNABLE", "STARTING", "RUNNING")
    }
    assert max(per_status.values()) <= 10
    assert emulator.calls["ListJobs"] == sum(per_status.values())
    assert emulator.calls["DescribeJobs"] == 0
