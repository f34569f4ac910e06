"""The two kinds of AWS Batch job and the calls each takes (docs/backends.md, "Service jobs").

A job queue holds one kind, told by DescribeJobQueues' `jobQueueType` (botocore's batch model,
JobQueueDetail): "For service jobs that run on SageMaker Training, this value is
SAGEMAKER_TRAINING. For regular container jobs, this value is EKS, ECS, or ECS_FARGATE"
(ECS_MANAGED_INSTANCES too). Container jobs are listed with ListJobs and ended with
TerminateJob(s); service jobs with ListServiceJobs, DescribeServiceJob and
TerminateServiceJob(s), which need their own IAM action, batch:TerminateServiceJob."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reaper.jobs import JobKind

# jobQueueType → the kind of job the queue holds. tests/test_aws_service_shapes.py checks the
# keys against the installed botocore model's JobQueueType enum, so a new type fails the build
# instead of being listed with the wrong calls.
QUEUE_KINDS: Mapping[str, JobKind] = {
    "EKS": JobKind.CONTAINER,
    "ECS": JobKind.CONTAINER,
    "ECS_FARGATE": JobKind.CONTAINER,
    "ECS_MANAGED_INSTANCES": JobKind.CONTAINER,
    "SAGEMAKER_TRAINING": JobKind.SERVICE,
}


@dataclass(frozen=True, slots=True)
class KindApi:
    """The operations of one kind of job, and the largest page its list call returns."""

    list_op: str
    page_size: int
    describe_op: str
    terminate_one: str
    terminate_many: str


API: Mapping[JobKind, KindApi] = {
    # ListJobs: maxResults up to 1000 with jobStatus (API_ListJobs.html).
    JobKind.CONTAINER: KindApi("ListJobs", 1000, "DescribeJobs", "TerminateJob", "TerminateJobs"),
    # ListServiceJobs: "This value can be between 1 and 100" (API_ListServiceJobs.html).
    JobKind.SERVICE: KindApi(
        "ListServiceJobs", 100, "DescribeServiceJob", "TerminateServiceJob", "TerminateServiceJobs"
    ),
}


def queue_kind(detail: Mapping[str, Any]) -> JobKind | None:
    """The kind of job a JobQueueDetail's queue holds: by `jobQueueType`, CONTAINER when it has
    none (endpoints that predate service jobs), None for a type reaper does not know (such a
    queue is left unlisted rather than handed to calls meant for another kind)."""
    queue_type = detail.get("jobQueueType")
    if queue_type is None:
        return JobKind.CONTAINER
    return QUEUE_KINDS.get(str(queue_type))


def job_kind(value: JobKind | None) -> JobKind:
    """A Job's kind, CONTAINER for a job that names none (audit records written before kinds)."""
    return value or JobKind.CONTAINER
