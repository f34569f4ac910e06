"""AWS Batch service jobs (SageMaker Training through Batch) against the emulator, through a real
boto3 client: queue discovery by jobQueueType, ListServiceJobs paging and statuses,
DescribeServiceJob for tags, TerminateServiceJob(s) with the reason, honest outcomes, and
`job_kinds` (docs/backends.md, "Service jobs")."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reaper.backends.aws_batch import AwsBatchBackend
from reaper.backends.base import CancelOutcome
from reaper.emulators.aws_batch import SERVICE_QUEUE, AwsBatchEmulator
from reaper.emulators.base import JobSpec, Knobs, LostAnswer
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, JobKind, Phase
from tests.harness_aws_batch import FakeClock, make_client

HOUR = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def emulator(clock: FakeClock) -> Iterator[AwsBatchEmulator]:
    emu = AwsBatchEmulator(Knobs(page_size=3), clock=clock)
    emu.start()
    emu.add_queue("train", SERVICE_QUEUE)
    emu.add_queue("gpu")
    try:
        yield emu
    finally:
        emu.stop()


def backend_for(emulator: AwsBatchEmulator, **kwargs: object) -> AwsBatchBackend:
    return AwsBatchBackend("batch", make_client(emulator), **kwargs)  # type: ignore[arg-type]


def listed(backend: AwsBatchBackend) -> list[Job | BadRecord]:
    return [item for page in backend.list_active() for item in page]


def seed(emulator: AwsBatchEmulator, queue: str, name: str, status: str, hours: float, *,
         clock: FakeClock, **tags: str) -> str:  # fmt: skip
    started = clock.now - hours * HOUR if status in ("STARTING", "RUNNING") else None
    created = clock.now - hours * HOUR - 600
    spec = JobSpec(name, status, created, started, queue=queue, tags=dict(tags), id=name)
    return emulator.add_job(spec)


def test_each_queue_goes_to_the_calls_of_its_type(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock)
    seed(emulator, "gpu", "ctr-1", "RUNNING", 3, clock=clock)
    jobs = {job.id: job for job in listed(backend_for(emulator)) if isinstance(job, Job)}
    assert {job_id: job.kind for job_id, job in jobs.items()} == {
        "svc-1": JobKind.SERVICE, "ctr-1": JobKind.CONTAINER,
    }  # fmt: skip
    calls = set(emulator.list_requests)
    assert ("ListJobs", "train") not in calls
    assert ("ListServiceJobs", "gpu") not in calls
    assert ("ListServiceJobs", "train") in calls and ("ListJobs", "gpu") in calls


def test_configured_queues_are_classified_too(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNABLE", 3, clock=clock)
    arn = "arn:aws:batch:us-east-1:123456789012:job-queue/train"
    jobs = [job for job in listed(backend_for(emulator, queues=[arn])) if isinstance(job, Job)]
    assert [(job.id, job.kind, job.queue) for job in jobs] == [("svc-1", JobKind.SERVICE, arn)]
    assert all(op == "ListServiceJobs" for op, _ in emulator.list_requests)


def test_every_active_service_status_is_listed_with_next_token(emulator, clock) -> None:
    for index, status in enumerate(("SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED")):
        for copy in range(4):  # more than a page (3) of each
            seed(emulator, "train", f"p{index}-{copy}", status, 1, clock=clock)
    seed(emulator, "train", "run", "RUNNING", 1, clock=clock)
    seed(emulator, "train", "start", "STARTING", 1, clock=clock)
    seed(emulator, "train", "done", "SUCCEEDED", 1, clock=clock)
    jobs = [job for job in listed(backend_for(emulator)) if isinstance(job, Job)]
    assert len(jobs) == 18 and "done" not in {job.id for job in jobs}
    scheduled = [job for job in jobs if job.status == "SCHEDULED"]
    assert len(scheduled) == 4 and all(job.phase is Phase.PENDING for job in scheduled)
    assert all(job.started_at is None for job in scheduled)
    statuses = {job.status for job in jobs}
    assert statuses == {"SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "STARTING", "RUNNING"}


def test_job_kinds_container_never_lists_service_queues(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock)
    seed(emulator, "gpu", "ctr-1", "RUNNING", 3, clock=clock)
    backend = backend_for(emulator, job_kinds=[JobKind.CONTAINER])
    assert [job.id for job in listed(backend) if isinstance(job, Job)] == ["ctr-1"]
    assert all(queue != "train" for _, queue in emulator.list_requests)
    (service_job,) = backend_for(emulator).refresh_many([_stub("svc-1", JobKind.SERVICE)])
    assert service_job is not None
    assert backend.why_unlisted(service_job) == "this backend's job_kinds leaves out service jobs"


def test_a_queue_of_an_unknown_type_is_not_listed(emulator, clock) -> None:
    emulator.add_queue("future", "SAGEMAKER_SOMETHING_NEW")
    seed(emulator, "future", "odd-1", "RUNNING", 3, clock=clock)
    assert listed(backend_for(emulator)) == []
    assert all(queue != "future" for _, queue in emulator.list_requests)


def test_enrich_reads_tags_with_describe_service_job(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock, team="ml")
    backend = backend_for(emulator)
    (job,) = listed(backend)
    assert isinstance(job, Job) and not job.detailed and job.tags == {}
    (detailed,) = backend.enrich([job])
    assert isinstance(detailed, Job) and detailed.detailed
    assert detailed.tags == {"team": "ml"} and detailed.kind is JobKind.SERVICE
    assert detailed.queue == "train"  # as listed, not the ARN DescribeServiceJob gives
    assert emulator.calls["DescribeServiceJob"] == 1 and emulator.calls["DescribeJobs"] == 0


def test_enrich_of_many_service_jobs_reads_each_once(emulator, clock) -> None:
    for index in range(20):
        seed(emulator, "train", f"svc-{index}", "RUNNING", 3, clock=clock)
    backend = backend_for(emulator)
    jobs = [job for job in listed(backend) if isinstance(job, Job)]
    emulator.remove_job("svc-7")
    detailed = backend.enrich(jobs)
    assert len(detailed) == 19 and "svc-7" not in {
        job.id for job in detailed if isinstance(job, Job)
    }
    assert emulator.calls["DescribeServiceJob"] == 20


def test_cancel_terminates_a_service_job_with_the_reason(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    assert isinstance(job, Job)
    assert backend.cancel(job, "over its limit").outcome is CancelOutcome.CANCELLED
    assert emulator.reason_of("svc-1") == "over its limit"
    assert emulator.calls["TerminateServiceJob"] == 1 and emulator.calls["TerminateJob"] == 0
    clock.now += 3600  # past the emulator's cancel delay
    assert emulator.status_of("svc-1") == "FAILED"
    assert backend.cancel(job, "again").outcome is CancelOutcome.ALREADY_TERMINAL
    emulator.remove_job("svc-1")
    assert backend.cancel(job, "again").outcome is CancelOutcome.NOT_FOUND
    assert backend.refresh(job) is None


def test_cancel_checked_sends_each_kind_to_its_bulk_call(emulator, clock) -> None:
    for index in range(3):
        seed(emulator, "train", f"svc-{index}", "RUNNING", 3, clock=clock)
        seed(emulator, "gpu", f"ctr-{index}", "RUNNING", 3, clock=clock)
    backend = backend_for(emulator)
    jobs = [job for job in listed(backend) if isinstance(job, Job)]
    fresh = [job for job in backend.refresh_many(jobs) if job is not None]
    assert len(fresh) == 6
    results = backend.cancel_checked(fresh, "cap")
    assert [r.outcome for r in results] == [CancelOutcome.CANCELLED] * 6
    assert emulator.calls["TerminateServiceJobs"] == 1 and emulator.calls["TerminateJobs"] == 1
    assert all(emulator.reason_of(job.id) == "cap" for job in fresh)


def test_terminate_service_jobs_errors_are_per_job(emulator, clock) -> None:
    for index in range(2):
        seed(emulator, "train", f"svc-{index}", "RUNNING", 3, clock=clock)
    emulator.job_errors["svc-1"] = ("AccessDenied", "not allowed")
    backend = backend_for(emulator)
    jobs = [job for job in listed(backend) if isinstance(job, Job)]
    results = backend.cancel_many(jobs, "cap")
    assert [r.outcome for r in results] == [CancelOutcome.CANCELLED, CancelOutcome.FAILED]
    assert "TerminateServiceJobs: AccessDenied" in str(results[1].error)


def test_a_lost_terminate_answer_is_re_read_with_describe_service_job(emulator, clock) -> None:
    seed(emulator, "train", "svc-0", "RUNNABLE", 3, clock=clock)
    emulator.knobs.lose_cancel_answers = 100  # every answer lost, also botocore's retries'
    emulator.knobs.lost_answer = LostAnswer.ERROR
    backend = backend_for(emulator)
    (job,) = listed(backend)
    assert isinstance(job, Job)
    (result,) = backend.cancel_checked([job], "cap")
    # Applied (a pending job fails at once) and its answer lost: the re-read tells.
    assert result.outcome is CancelOutcome.CANCELLED, result
    assert "has ended since the call" in str(result.error)
    assert emulator.calls["DescribeServiceJob"] >= 1


def test_read_job_finds_a_service_job_by_id(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock, team="ml")
    job = backend_for(emulator).read_job("svc-1")
    assert job is not None and job.kind is JobKind.SERVICE and job.queue == "train"
    assert backend_for(emulator).read_job("nope") is None
    containers_only = backend_for(emulator, job_kinds=[JobKind.CONTAINER])
    job = containers_only.read_job("svc-1")  # found, and then explained as not swept
    assert job is not None and containers_only.why_unlisted(job) is not None


def test_a_malformed_describe_service_job_answer_is_a_backend_error(emulator, clock) -> None:
    seed(emulator, "train", "svc-1", "RUNNING", 3, clock=clock)
    backend = backend_for(emulator)
    (job,) = listed(backend)
    emulator.knobs.malformed = True
    with pytest.raises(BackendError):
        backend.refresh(job)  # type: ignore[arg-type]


def _stub(job_id: str, kind: JobKind) -> Job:
    from datetime import UTC, datetime

    return Job(backend="batch", type="aws_batch", id=job_id, name="", queue="train",
               status="", phase=Phase.UNKNOWN, created_at=datetime.fromtimestamp(0, UTC),
               detailed=False, kind=kind)  # fmt: skip
