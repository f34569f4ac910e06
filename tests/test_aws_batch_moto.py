"""The AWS Batch listing and terminate tests again, against moto's server: an independent
implementation of the same wire protocol (docs/architecture.md).

moto's Batch runs jobs in Docker unless its config says `use_docker: false`; then a submitted job
is marked SUCCEEDED at once, so the tests put jobs into the state they need through moto's
in-process backend. moto (5.x) does not implement TerminateJobs (POST /v1/terminatejobs answers
a bare 404) nor ListJobs pagination, and keeps a terminated job's status unchanged."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from moto.backends import get_backend
from moto.server import ThreadedMotoServer

from reaper.backends.aws_batch import AwsBatchBackend, client_config
from reaper.backends.base import CancelOutcome
from reaper.jobs import Phase

pytestmark = pytest.mark.moto

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    before = requests.get(f"{url}/moto-api/config", timeout=5).json()["batch"]
    requests.post(f"{url}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=5)
    try:
        yield url
    finally:  # moto's config is process-wide: put it back
        requests.post(f"{url}/moto-api/config", json={"batch": before}, timeout=5)
        server.stop()


@pytest.fixture
def batch(moto_url: str) -> Iterator[Any]:
    requests.post(f"{moto_url}/moto-api/reset", timeout=5)
    client = boto3.Session().client("batch", region_name=REGION, endpoint_url=moto_url, **CREDS)
    _create_queue(
        client, boto3.Session().client("iam", region_name=REGION, endpoint_url=moto_url, **CREDS)
    )
    yield client
    client.close()


def _create_queue(client: Any, iam: Any) -> None:
    policy = json.dumps({"Version": "2012-10-17", "Statement": []})
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument=policy)["Role"]["Arn"]
    env = client.create_compute_environment(
        computeEnvironmentName="reaper-ce", type="UNMANAGED", serviceRole=role
    )["computeEnvironmentArn"]
    for queue in ("gpu-a", "cpu"):
        client.create_job_queue(
            jobQueueName=queue,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
        )
    client.register_job_definition(
        jobDefinitionName="train",
        type="container",
        containerProperties={"image": "busybox", "vcpus": 1, "memory": 128},
    )


def submit(client: Any, queue: str, status: str, n: int = 1, tags: dict | None = None) -> list[str]:
    """Submit jobs, then put them in `status` inside moto (which finishes them at once)."""
    ids = []
    for i in range(n):
        job_id = client.submit_job(
            jobName=f"job-{i}", jobQueue=queue, jobDefinition="train", tags=tags or {"team": "ml"}
        )["jobId"]
        set_status(job_id, status)
        ids.append(job_id)
    return ids


def set_status(job_id: str, status: str) -> None:
    job = get_backend("batch")[ACCOUNT][REGION]._jobs[job_id]
    job.status = status
    job._tick = 0  # moto's manual state progression: stay put
    job.job_stopped = status in ("SUCCEEDED", "FAILED")


def backend_for(moto_url: str, queues: list[str] | None = None) -> AwsBatchBackend:
    client = boto3.Session().client(
        "batch", region_name=REGION, endpoint_url=moto_url, config=client_config(), **CREDS
    )
    return AwsBatchBackend("moto", client, queues)


def listed(backend: AwsBatchBackend) -> list:
    return [job for page in backend.list_active() for job in page]


def test_lists_active_jobs_of_every_queue(moto_url, batch) -> None:
    running = submit(batch, "gpu-a", "RUNNING", 3)
    runnable = submit(batch, "cpu", "RUNNABLE", 2)
    submit(batch, "gpu-a", "SUCCEEDED", 2)
    jobs = listed(backend_for(moto_url))  # queues found through DescribeJobQueues
    assert sorted(j.id for j in jobs) == sorted(running + runnable)
    assert {j.queue for j in jobs if j.id in running} == {"gpu-a"}
    assert {j.phase for j in jobs if j.id in runnable} == {Phase.PENDING}
    assert all(j.started_at is not None for j in jobs if j.id in running)


def test_enrich_reads_tags(moto_url, batch) -> None:
    submit(batch, "gpu-a", "RUNNING", 1, tags={"team": "ml", "reaper:keep": "yes"})
    backend = backend_for(moto_url, ["gpu-a"])
    (job,) = backend.enrich(listed(backend))
    assert job.detailed and job.tags == {"team": "ml", "reaper:keep": "yes"}


def test_terminate_records_the_reason_moto_reads_back(moto_url, batch) -> None:
    (job_id,) = submit(batch, "gpu-a", "RUNNING")
    backend = backend_for(moto_url, ["gpu-a"])
    (job,) = listed(backend)
    reason = "ran 13h02m on gpu-a; GPU jobs are capped at 12h (policy gpu-runtime-cap)"
    assert backend.cancel(job, reason).outcome == CancelOutcome.CANCELLED
    (detail,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert detail["statusReason"] == reason


def test_a_long_reason_reaches_moto_cut_to_1024(moto_url, batch) -> None:
    (job_id,) = submit(batch, "gpu-a", "RUNNABLE")
    backend = backend_for(moto_url, ["gpu-a"])
    (job,) = listed(backend)
    backend.cancel(job, "why " * 1000)
    (detail,) = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert len(detail["statusReason"]) == 1024 and detail["statusReason"].startswith("why why")


def test_cancel_many_falls_back_to_terminate_job_on_moto(moto_url, batch) -> None:
    ids = submit(batch, "gpu-a", "RUNNING", 3)
    backend = backend_for(moto_url, ["gpu-a"])
    results = backend.cancel_many(listed(backend), "bulk reason")
    assert {r.outcome for r in results} == {CancelOutcome.CANCELLED}
    details = batch.describe_jobs(jobs=ids)["jobs"]
    assert {d["statusReason"] for d in details} == {"bulk reason"}


def test_finished_and_unknown_jobs(moto_url, batch) -> None:
    (job_id,) = submit(batch, "gpu-a", "RUNNING")
    backend = backend_for(moto_url, ["gpu-a"])
    (job,) = listed(backend)
    set_status(job_id, "SUCCEEDED")
    assert backend.refresh(job).phase == Phase.TERMINAL  # type: ignore[union-attr]
    assert backend.cancel(job, "late").outcome == CancelOutcome.ALREADY_TERMINAL
    gone = dataclasses.replace(job, id="no-such-job")
    assert backend.cancel(gone, "gone").outcome == CancelOutcome.NOT_FOUND
    assert backend.refresh(gone) is None


def test_from_config_assumes_a_role_through_sts(moto_url, batch, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDS["aws_secret_access_key"])
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto_url)  # botocore's per-service endpoint
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    (job_id,) = submit(batch, "gpu-a", "RUNNING")
    section = {
        "region": REGION,
        "endpoint_url": moto_url,
        "queues": ["gpu-a"],
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/reaper",
    }
    backend = AwsBatchBackend.from_config("moto", section, Path("."))
    assert [j.id for j in listed(backend)] == [job_id]
    # botocore offers no public accessor for a client's credentials; this test peeks to prove
    # that the batch calls were signed with the assumed role's keys, not the source keys.
    credentials = backend.client._request_signer._credentials.get_frozen_credentials()
    assert credentials.access_key != CREDS["aws_access_key_id"]  # the assumed role's keys
    assert credentials.token
