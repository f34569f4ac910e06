"""A realistic mix of jobs for `reaper demo` and the benchmarks: runaway GPU training, stale dev
jobs stuck in queues, protected and nightly jobs that must survive, healthy short jobs, finished
jobs, and expensive Sutro inference batches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

from reaper.emulators.base import EmulatorServer, JobSpec

HOUR = 3600.0
DAY = 24 * HOUR


def aws_batch_jobs(now: float) -> Iterator[JobSpec]:
    """gpu-a/gpu-b/cpu queues: 3 runaway trainings, 1 protected runaway, healthy work."""
    for i, hours in enumerate((13, 20, 30)):
        yield JobSpec(f"train-llm-{i}", "RUNNING", now - hours * HOUR - 600, now - hours * HOUR,
                      queue="gpu-a", tags={"team": "ml"})  # fmt: skip
    yield JobSpec("train-baseline", "RUNNING", now - 40 * HOUR, now - 39 * HOUR, queue="gpu-b",
                  tags={"team": "ml", "reaper:keep": "thesis deadline"})  # fmt: skip
    for i in range(6):
        yield JobSpec(f"train-sweep-{i}", "RUNNING", now - 3 * HOUR, now - 2 * HOUR,
                      queue="gpu-b", tags={"team": "ml"})  # fmt: skip
    yield JobSpec("etl-dev-1", "RUNNABLE", now - 3 * DAY, queue="cpu", tags={"env": "dev"})
    yield JobSpec("etl-dev-nightly", "RUNNABLE", now - 4 * DAY, queue="cpu", tags={"env": "dev"})
    for i in range(8):
        yield JobSpec(f"etl-prod-{i}", "RUNNABLE", now - 600, queue="cpu", tags={"env": "prod"})
    for i in range(4):
        yield JobSpec(f"report-{i}", "SUCCEEDED", now - 2 * DAY, now - 2 * DAY, queue="cpu")


def tapis_jobs(now: float) -> Iterator[JobSpec]:
    """An HPC centre: one simulation far past its cap, stale dev jobs, a paused job."""
    yield JobSpec("train-cfd-mesh", "RUNNING", now - 16 * HOUR, now - 15 * HOUR, queue="gpu-a100",
                  tags={"team": "ml"})  # fmt: skip
    yield JobSpec("dev-notebook", "QUEUED", now - 3 * DAY, queue="development", tags={"env": "dev"})
    yield JobSpec("dev-scaling-test", "PENDING", now - 5 * DAY, queue="development",
                  tags={"env": "dev"})  # fmt: skip
    yield JobSpec("dev-kept", "QUEUED", now - 6 * DAY, queue="development",
                  tags={"env": "dev", "reaper:keep": ""})  # fmt: skip
    for i in range(6):
        yield JobSpec(f"md-run-{i}", "RUNNING", now - 5 * HOUR, now - 4 * HOUR, queue="normal",
                      tags={"team": "chem"})  # fmt: skip
    yield JobSpec("archive-1", "FINISHED", now - 3 * DAY, now - 3 * DAY, queue="normal")


def sutro_jobs(now: float) -> Iterator[JobSpec]:
    """Batch inference: two expensive llama batches past 6h, cheap and young ones untouched.
    Ids are new on every call, as a service never reuses one: the emulator's own counter starts
    at job-000001 in every world, and `reaper demo --dir D` keeps D's audit log, whose re-cancel
    window would then hold the new world's jobs (the AWS and Tapis emulators draw uuids)."""
    for spec in _sutro_mix(now):
        yield replace(spec, id=f"job-{uuid.uuid4()}")


def _sutro_mix(now: float) -> Iterator[JobSpec]:
    yield JobSpec("summaries-q3", "RUNNING", now - 9 * HOUR, now - 8 * HOUR,
                  extra={"model": "llama-3.1-70b", "job_cost": 120.0})  # fmt: skip
    yield JobSpec("embeddings-full", "QUEUED", now - 7 * HOUR,
                  extra={"model": "llama-3.1-8b", "job_cost": 75.5})  # fmt: skip
    yield JobSpec("classify-small", "RUNNING", now - 10 * HOUR, now - 9 * HOUR,
                  extra={"model": "qwen-3-4b", "job_cost": 80.0})  # fmt: skip
    for i in range(5):
        yield JobSpec(f"eval-{i}", "RUNNING", now - HOUR, now - 0.5 * HOUR,
                      extra={"model": "llama-3.1-8b", "job_cost": 3.0})  # fmt: skip
    yield JobSpec("done-batch", "SUCCEEDED", now - DAY, now - DAY,
                  extra={"model": "llama-3.1-8b", "job_cost": 12.0})  # fmt: skip


SEEDS = {"aws_batch": aws_batch_jobs, "tapis": tapis_jobs, "sutro": sutro_jobs}


def seed(emulator: EmulatorServer, backend_type: str, now: float) -> list[str]:
    """Seed the demo mix of `backend_type` into `emulator`; returns the job ids."""
    return [emulator.add_job(spec) for spec in SEEDS[backend_type](now)]
