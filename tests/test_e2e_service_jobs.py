"""End to end through the CLI: AWS Batch service jobs (SageMaker Training through Batch) on a
SAGEMAKER_TRAINING queue, beside container jobs, swept by `reaper run --once` against the
emulator with the real boto3 client (docs/backends.md, "Service jobs")."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from reaper.emulators.aws_batch import SERVICE_QUEUE, AwsBatchEmulator
from reaper.emulators.base import JobSpec
from reaper.emulators.world import World
from reaper.errors import ExitCode
from tests.e2e_support import HOUR, audit_records, edit_config, last_sweep, run_cli, run_once

SERVICE_POLICY = """\
policies:
  - name: training-cap
    description: SageMaker training through Batch may not run longer than 2 hours
    kinds: [service]
    max_runtime: 2h
    reason: "{policy}: {job_name} ran {runtime} on {queue}, the cap is {max_runtime}"
"""
# No kind named: it would match the long training job wherever it is listed.
NAME_POLICY = """\
policies:
  - name: long-cap
    names: ["*-long"]
    max_runtime: 2h
"""


def spec(name: str, status: str, hours: float, queue: str) -> JobSpec:
    now = time.time()
    started = now - hours * HOUR if status in ("STARTING", "RUNNING") else None
    return JobSpec(name, status, now - hours * HOUR - 600, started, queue=queue, id=name)


@contextmanager
def training_world(folder: Path, policies: str) -> Iterator[World]:
    from reaper.emulators.world import emulated_world

    with emulated_world(folder, seeds={}, policies_yaml=policies) as world:
        batch: AwsBatchEmulator = world.emulators["batch"]  # type: ignore[assignment]
        batch.add_queue("train", SERVICE_QUEUE)
        for job in (
            spec("train-long", "RUNNING", 5, "train"),  # over the cap
            spec("train-young", "RUNNING", 1, "train"),
            spec("train-waiting", "SCHEDULED", 3, "train"),
            spec("sim-long", "RUNNING", 5, "gpu"),  # a container job over the cap
            spec("sim-young", "RUNNING", 1, "gpu"),
            spec("sim-waiting", "RUNNABLE", 3, "gpu"),
        ):
            batch.add_job(job)
        yield world


def batch_of(world: World) -> AwsBatchEmulator:
    return world.emulators["batch"]  # type: ignore[return-value]


def job_records(records: list[dict[str, Any]], event: str) -> dict[str, dict[str, Any]]:
    return {r["job_id"]: r for r in last_sweep(records) if r["event"] == event}


def test_a_service_job_over_its_limit_is_terminated_with_the_reason(tmp_path: Path) -> None:
    with training_world(tmp_path, SERVICE_POLICY) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        batch = batch_of(world)
        records = audit_records(world)
        intents, results = job_records(records, "intent"), job_records(records, "result")
        assert set(intents) == set(results) == {"train-long"}
        done = results["train-long"]
        assert (done["outcome"], done["kind"], done["type"]) == (
            "cancelled",
            "service",
            "aws_batch",
        )
        assert intents["train-long"]["kind"] == "service"
        assert done["reason"].startswith("training-cap: train-long ran 5h")
        assert done["reason"].endswith("on train, the cap is 2h")
        assert batch.reason_of("train-long") == done["reason"]  # what TerminateServiceJob got
        assert batch.calls["TerminateServiceJob"] + batch.calls["TerminateServiceJobs"] == 1
        assert batch.calls["TerminateJob"] + batch.calls["TerminateJobs"] == 0
        # The container job over the same cap is not a service job: untouched.
        assert batch.status_of("sim-long") == "RUNNING"
        assert batch.status_of("train-young") == "RUNNING"
        # Container listing never asked ListJobs about the SAGEMAKER_TRAINING queue.
        assert ("ListJobs", "train") not in batch.list_requests
        assert ("ListServiceJobs", "train") in batch.list_requests
        assert ("ListJobs", "gpu") in batch.list_requests


def test_the_cancel_is_confirmed_through_describe_service_job(tmp_path: Path) -> None:
    with training_world(tmp_path, SERVICE_POLICY) as world:
        assert run_once(world).code == ExitCode.OK
        batch = batch_of(world)
        batch.knobs.cancel_delay_s = 0
        batch.set_status("train-long", "FAILED")  # the training job has stopped
        before = batch.calls["DescribeServiceJob"]
        assert run_once(world).code == ExitCode.OK
        confirmed = [r for r in audit_records(world) if r["event"] == "confirmed"]
        assert [(r["job_id"], r["kind"], r["status"]) for r in confirmed] == [
            ("train-long", "service", "FAILED")
        ]
        assert batch.calls["DescribeServiceJob"] > before


def test_job_kinds_container_leaves_service_jobs_alone(tmp_path: Path) -> None:
    with training_world(tmp_path, NAME_POLICY) as world:
        edit_config(world, lambda data: data["backends"]["batch"].update(job_kinds=["container"]))
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        batch = batch_of(world)
        assert batch.status_of("train-long") == "RUNNING"
        assert batch.reason_of("train-long") is None
        assert batch.status_of("sim-long") == "FAILED"  # the container job is swept as before
        assert all(queue != "train" for _, queue in batch.list_requests)
        assert batch.calls["ListServiceJobs"] == 0
        assert set(job_records(audit_records(world), "result")) == {"sim-long"}


def test_a_kinds_selector_no_backend_sweeps_is_a_validation_error(tmp_path: Path) -> None:
    with training_world(tmp_path, SERVICE_POLICY) as world:
        edit_config(world, lambda data: data["backends"]["batch"].update(job_kinds=["container"]))
        result = run_cli("validate", "--config", str(world.config_path))
        assert result.code == ExitCode.CONFIG, result.out + result.err
        assert "policies.yaml:4:12: no backend it targets sweeps service jobs" in result.err
        assert batch_of(world).calls["ListServiceJobs"] == 0


def test_explain_shows_the_kind_and_the_kinds_clause(tmp_path: Path) -> None:
    with training_world(tmp_path, SERVICE_POLICY) as world:
        config = str(world.config_path)
        service = run_cli("explain", "batch", "train-long", "--config", config)
        assert "status RUNNING (running), service job" in service.out, service.out + service.err
        assert "MATCHES" in service.out
        container = run_cli("explain", "batch", "sim-long", "--config", config, "--json")
        data = json.loads(container.out)
        assert data["job"]["kind"] == "container"
        (policy,) = data["policies"]
        assert policy["matches"] is False
        assert batch_of(world).calls["TerminateServiceJob"] == 0  # explain never cancels
