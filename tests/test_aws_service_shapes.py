"""The AWS Batch emulator's answers checked against botocore's own service model, so that the
emulator cannot drift into the backend's beliefs: each raw answer body (as sent on the wire) is
handed to `botocore.stub.Stubber.add_response`, which validates it against the operation's
output shape (unknown members, missing required members, wrong types) and raises
ParamValidationError otherwise. One known deviation of the model from the service is allowed,
and only it: the model calls `startedAt` of JobDetail (and of DescribeServiceJob) required, while
the service leaves it out until the job starts (https://github.com/brendanhay/amazonka/pull/561).
Also: reaper's status and queue-type tables against the model's enums, so that a botocore
release that adds one fails here."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import Stubber

from reaper.backends.aws_kinds import API, QUEUE_KINDS
from reaper.backends.records.aws_batch import STATUSES
from reaper.emulators.aws_batch import REGION, SERVICE_QUEUE, AwsBatchEmulator
from reaper.emulators.base import JobSpec, Knobs
from reaper.jobs import JobKind
from tests.harness_aws_batch import make_client

HOUR = 3600.0
# Statuses of a job that may not have started, which then has no `startedAt` (see above): not
# yet, or never (FAILED: a job terminated while it waited).
NOT_STARTED = frozenset(("SUBMITTED", "PENDING", "RUNNABLE", "SCHEDULED", "FAILED"))


class Answers:
    """The raw body of every answer a client received, by operation name (botocore's
    `after-call` event hands over the HTTP response before parsing loses anything)."""

    def __init__(self, client: Any) -> None:
        self.bodies: dict[str, list[Any]] = {}
        client.meta.events.register("after-call.batch", self._keep)

    def _keep(self, http_response: Any, model: Any, **_: Any) -> None:
        if http_response.status_code == 200:
            self.bodies.setdefault(model.name, []).append(json.loads(http_response.content))


@pytest.fixture
def emulator() -> Iterator[AwsBatchEmulator]:
    emu = AwsBatchEmulator(Knobs(page_size=2))
    emu.start()
    now = time.time()
    emu.add_queue("train", SERVICE_QUEUE)
    statuses = ("SCHEDULED", "RUNNABLE", "RUNNING", "RUNNING", "STARTING", "RUNNING")
    for index, status in enumerate(statuses):
        started = now - HOUR if status in ("RUNNING", "STARTING") else None
        emu.add_job(JobSpec(f"train-{index}", status, now - 2 * HOUR, started, queue="train",
                            tags={"team": "ml"}, id=f"svc-{index}"))  # fmt: skip
    for index, status in enumerate(("RUNNABLE", "RUNNING", "RUNNING", "RUNNING")):
        started = now - HOUR if status == "RUNNING" else None
        emu.add_job(JobSpec(f"sim-{index}", status, now - 2 * HOUR, started, queue="gpu",
                            tags={"team": "sim"}, id=f"ctr-{index}"))  # fmt: skip
    emu.job_errors["svc-4"] = ("AccessDenied", "not allowed")
    try:
        yield emu
    finally:
        emu.stop()


def collect_answers(emulator: AwsBatchEmulator) -> dict[str, list[Any]]:
    """Drive every operation reaper uses through a real client, keeping the raw answers."""
    client = make_client(emulator)
    answers = Answers(client)
    client.describe_job_queues()
    for queue, kind in (("train", JobKind.SERVICE), ("gpu", JobKind.CONTAINER)):
        method = getattr(client, botocore.xform_name(API[kind].list_op))
        for status in (
            "RUNNABLE",
            "RUNNING",
            "SCHEDULED" if kind is JobKind.SERVICE else "PENDING",
        ):
            token = None
            while True:  # page size 2: three RUNNING jobs take two pages, with nextToken
                extra = {"nextToken": token} if token else {}
                page = method(jobQueue=queue, jobStatus=status, maxResults=2, **extra)
                token = page.get("nextToken")
                if not token:
                    break
    for job_id in ("svc-0", "svc-2"):
        client.describe_service_job(jobId=job_id)
    client.describe_jobs(jobs=["ctr-0", "ctr-1", "nope"])
    client.terminate_service_job(jobId="svc-1", reason="over its limit")
    client.terminate_service_jobs(jobs=["svc-2", "svc-4", "gone"], reason="over its limit")
    client.describe_service_job(jobId="svc-2")  # terminated: statusReason, isTerminated
    client.terminate_job(jobId="ctr-0", reason="over its limit")
    client.terminate_jobs(jobs=["ctr-1"], reason="over its limit")
    client.describe_jobs(jobs=["ctr-0"])
    return answers.bodies


def with_known_deviation(operation: str, body: Any) -> Any:
    """`body` with a placeholder `startedAt` where the service rightly has none: a job of a
    DescribeJobs / DescribeServiceJob answer that has not started. Any other missing member, and
    `startedAt` missing from a job that has started, still fails the validation."""

    def placeholder(record: Any) -> Any:
        if (
            isinstance(record, dict)
            and "startedAt" not in record
            and (record.get("status") in NOT_STARTED)
        ):
            return {**record, "startedAt": 1}
        return record

    if operation == "DescribeJobs":
        return {**body, "jobs": [placeholder(job) for job in body["jobs"]]}
    if operation == "DescribeServiceJob":
        return placeholder(body)
    return body


def stubbed_client() -> Any:
    return boto3.Session().client(
        "batch", region_name=REGION, aws_access_key_id="AKIAEXAMPLE0000000000",
        aws_secret_access_key="example",
    )  # fmt: skip


def test_every_answer_is_valid_against_botocores_output_shapes(emulator) -> None:
    bodies = collect_answers(emulator)
    expected = {
        "DescribeJobQueues", "ListServiceJobs", "ListJobs", "DescribeServiceJob", "DescribeJobs",
        "TerminateServiceJob", "TerminateServiceJobs", "TerminateJob", "TerminateJobs",
    }  # fmt: skip
    assert set(bodies) == expected
    client = stubbed_client()
    with Stubber(client) as stubber:
        for operation, answers in bodies.items():
            for body in answers:
                # add_response validates the answer against the operation's output shape
                stubber.add_response(
                    botocore.xform_name(operation), with_known_deviation(operation, body)
                )
    # What the answers hold, beyond their shape: the queue types, paging, service statuses.
    queues = {
        q["jobQueueName"]: q["jobQueueType"] for q in bodies["DescribeJobQueues"][0]["jobQueues"]
    }
    assert queues == {"train": "SAGEMAKER_TRAINING", "gpu": "ECS"}
    assert any("nextToken" in page for page in bodies["ListServiceJobs"])
    listed = {s["status"] for page in bodies["ListServiceJobs"] for s in page["jobSummaryList"]}
    assert "SCHEDULED" in listed
    terminated = bodies["DescribeServiceJob"][-1]
    assert terminated["statusReason"] == "over its limit" and terminated["isTerminated"] is True
    errors = bodies["TerminateServiceJobs"][0]["errors"]
    assert [e["job"] for e in errors] == ["svc-4"]


BROKEN = [
    # (operation, answer, why it is not the service's shape)
    ("list_service_jobs", {"jobSummaryList": [{"jobId": "a", "jobName": "n"}]},
     "a ServiceJobSummary without its required serviceJobType"),
    ("list_service_jobs", {"jobSummaryList": [{"jobId": "a", "jobName": "n",
                                               "serviceJobType": "SAGEMAKER_TRAINING",
                                               "startedAt": "yesterday"}]},
     "a startedAt that is not a number"),
    ("describe_service_job", {"jobId": "a", "jobName": "n", "status": "RUNNING"},
     "DescribeServiceJob without jobQueue, serviceJobType and startedAt"),
    ("describe_service_job", with_known_deviation("DescribeServiceJob", {
        "jobId": "a", "jobName": "n", "jobQueue": "q", "serviceJobType": "SAGEMAKER_TRAINING",
        "status": "RUNNING"}),
     "a started service job without startedAt is not the known deviation"),
    ("describe_job_queues", {"jobQueues": [{"jobQueueName": "q", "jobQueueType": "SAGEMAKER"}]},
     "a JobQueueDetail without its required members"),
    ("terminate_service_jobs", {"successful": ["a"]}, "no errors list"),
    ("list_jobs", {"jobSummaryList": [{"jobId": "a", "jobName": "n", "tags": {}}]},
     "tags are not a JobSummary member"),
]  # fmt: skip


@pytest.mark.parametrize(("operation", "answer", "why"), BROKEN, ids=[b[2] for b in BROKEN])
def test_the_stubber_rejects_answers_of_the_wrong_shape(operation, answer, why) -> None:
    with Stubber(stubbed_client()) as stubber, pytest.raises(ParamValidationError):
        stubber.add_response(operation, answer)


def _model_enum(shape: str) -> list[str]:
    model = boto3.Session().client("batch", region_name=REGION).meta.service_model
    return list(model.shape_for(shape).enum)


def test_status_tables_are_botocores_enums_in_order() -> None:
    assert list(STATUSES[JobKind.CONTAINER]) == _model_enum("JobStatus")
    assert list(STATUSES[JobKind.SERVICE]) == _model_enum("ServiceJobStatus")


def test_every_queue_type_botocore_knows_has_a_kind() -> None:
    assert set(QUEUE_KINDS) == set(_model_enum("JobQueueType"))
    assert [t for t, kind in QUEUE_KINDS.items() if kind is JobKind.SERVICE] == [SERVICE_QUEUE]


def test_the_service_job_operations_exist_in_the_installed_model() -> None:
    model = boto3.Session().client("batch", region_name=REGION).meta.service_model
    for api in API.values():
        for operation in (api.list_op, api.describe_op, api.terminate_one, api.terminate_many):
            assert operation in model.operation_names
