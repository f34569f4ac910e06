"""AWS Batch array jobs (issue 10, case 4), through `reaper run --once`: on the emulator and on
moto's server. A parent stays PENDING while its children run (botocore's ListJobs
documentation), so as listed it looks pending since its submission; reaper takes its phase and
start from its children and never cancels it as "pending" while a child runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml

from reaper.backends.aws_batch import parent_key
from reaper.emulators.base import JobSpec
from reaper.errors import ExitCode
from tests.e2e_support import (
    DAY,
    HOUR,
    NAMES,
    audit_records,
    job_keys,
    last_sweep,
    pending,
    run_cli,
    run_once,
    running,
    standard_world,
)

POLICIES = """\
policies:
  - name: stale-queue
    names: ["stale-*"]
    max_pending: 2d
  - name: runtime-cap
    names: ["long-*"]
    max_runtime: 2h
"""


def array(
    emulator: Any, name: str, created: float, children: list[tuple[str, float | None]]
) -> str:
    spec = JobSpec(name, "PENDING", created, None, queue="gpu", id=f"batch-{name}")
    return str(emulator.add_array(spec, children))


def test_case4_array_parent_is_running_while_a_child_runs(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: [pending(b, "stale-1", 3 * 24, now),
                 *(running(b, f"other-{i}", 9, now) for i in range(6))] for b in NAMES}  # fmt: skip
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        batch = world.emulators["batch"]
        # Submitted 3 days ago; two children have run for 2 days, three still queue.
        busy = array(
            batch,
            "stale-array",
            now - 3 * DAY,
            [("RUNNING", now - 2 * DAY)] * 2 + [("RUNNABLE", None)] * 3,
        )
        # Submitted 3 days ago and none of its children has started: pending indeed.
        queued = array(batch, "stale-array-queued", now - 3 * DAY, [("RUNNABLE", None)] * 3)
        # Children started 5 hours ago, one finished: runtime from the first start.
        long = array(batch, "long-array", now - 6 * HOUR,
                     [("SUCCEEDED", now - 5 * HOUR), ("RUNNING", now - 4 * HOUR)])  # fmt: skip
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        sweep = last_sweep(audit_records(world))
        cancelled = job_keys(sweep, "result", outcome="cancelled")
        assert ("batch", busy) not in cancelled
        assert batch.status_of(busy) == "PENDING"
        assert {f"{busy}:{i}" for i in range(5)} <= set(batch.table)  # children untouched
        assert all(batch.status_of(f"{busy}:{i}") in ("RUNNING", "RUNNABLE") for i in range(5))
        assert ("batch", queued) in cancelled
        (long_result,) = [r for r in sweep if r["event"] == "result" and r["job_id"] == long]
        assert long_result["facts"][0].startswith("runtime 5h00m")
        # The rest of the sweep as usual.
        assert {("hpc", "hpc-stale-1"), ("inference", "inference-stale-1"),
                ("batch", "batch-stale-1")} <= cancelled  # fmt: skip


def test_parent_key_names_the_children_listing() -> None:
    assert parent_key({"arrayProperties": {"size": 3}}) == "arrayJobId"
    assert parent_key({"arrayProperties": {"index": 1, "size": 3}}) is None  # a child
    main = {"jobId": "j", "nodeProperties": {"numNodes": 4, "isMainNode": True}}
    assert parent_key(main) == "multiNodeJobId"
    assert parent_key({"jobId": "j#1", "nodeProperties": {"numNodes": 4, "nodeIndex": 1}}) is None
    assert parent_key({"jobId": "j"}) is None


# -- the same case against moto's server ---------------------------------------------------------
moto = pytest.importorskip("moto")
from moto.backends import get_backend  # noqa: E402 (after the importorskip)
from moto.server import ThreadedMotoServer  # noqa: E402

REGION, ACCOUNT = "us-east-1", "123456789012"
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    before = requests.get(f"{url}/moto-api/config", timeout=5).json()["batch"]
    requests.post(f"{url}/moto-api/config", json={"batch": {"use_docker": False}}, timeout=5)
    requests.post(f"{url}/moto-api/reset", timeout=5)
    try:
        yield url
    finally:
        requests.post(f"{url}/moto-api/config", json={"batch": before}, timeout=5)
        server.stop()


def moto_job(job_id: str) -> Any:
    return get_backend("batch")[ACCOUNT][REGION]._jobs[job_id]


def put(job_id: str, status: str, created: datetime, started: datetime | None = None) -> None:
    """Set a job's state inside moto, as tests/test_aws_batch_moto.py does."""
    job = moto_job(job_id)
    job.status, job._tick, job.job_stopped = status, 0, status in ("SUCCEEDED", "FAILED")
    job.job_created_at = created
    if started is not None:
        job.job_started_at = started


@pytest.mark.moto
def test_case4_array_parent_against_moto(moto_url: str, tmp_path: Path, monkeypatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
                       "AWS_EC2_METADATA_DISABLED": "true"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    client = boto3.Session().client("batch", region_name=REGION, endpoint_url=moto_url, **CREDS)
    iam = boto3.Session().client("iam", region_name=REGION, endpoint_url=moto_url, **CREDS)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": []}))["Role"]["Arn"]  # fmt: skip
    env = client.create_compute_environment(
        computeEnvironmentName="reaper-ce", type="UNMANAGED", serviceRole=role
    )["computeEnvironmentArn"]
    client.create_job_queue(
        jobQueueName="gpu",
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}],
    )
    client.register_job_definition(jobDefinitionName="d", type="container",
                                   containerProperties={"image": "busybox", "vcpus": 1,
                                                        "memory": 128})  # fmt: skip
    now = datetime.now()  # moto keeps naive local times
    three_days, two_days = now - timedelta(days=3), now - timedelta(days=2)

    def submit(name: str, size: int | None = None) -> str:
        extra = {"arrayProperties": {"size": size}} if size else {}
        return str(client.submit_job(jobName=name, jobQueue="gpu", jobDefinition="d",
                                     **extra)["jobId"])  # fmt: skip

    busy = submit("stale-array", 3)
    put(busy, "PENDING", three_days)
    put(f"{busy}:0", "RUNNING", three_days, two_days)
    put(f"{busy}:1", "RUNNABLE", three_days)
    put(f"{busy}:2", "RUNNABLE", three_days)
    plain = submit("stale-plain")
    put(plain, "RUNNABLE", three_days)
    for i in range(6):
        put(submit(f"other-{i}"), "RUNNING", now, now - timedelta(hours=1))
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(POLICIES, encoding="utf-8")
    config = {"policies": "policies/", "audit_log": "audit.jsonl", "dry_run": False,
              "limits": {"max_cancels_per_sweep": 100, "max_match_fraction": 0.5},
              "backends": {"batch": {"type": "aws_batch", "region": REGION,
                                     "endpoint_url": moto_url, "queues": ["gpu"]}}}  # fmt: skip
    (tmp_path / "reaper.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run_cli("run", "--once", "--config", str(tmp_path / "reaper.yaml"))
    assert result.code == ExitCode.OK, result.out + result.err
    lines = (tmp_path / "audit.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    cancelled = job_keys(last_sweep(records), "result", outcome="cancelled")
    # moto's queue listing returns the children too: each is a job of its own, so the two that
    # have queued for 3 days are cancelled, one by one; the parent (which would take the
    # running child with it) and the running child are left alone.
    assert cancelled == {("batch", plain), ("batch", f"{busy}:1"), ("batch", f"{busy}:2")}
    assert moto_job(busy).status == "PENDING"
    assert moto_job(f"{busy}:0").status == "RUNNING"
    assert ("batch", busy) not in job_keys(last_sweep(records), "intent")
