"""The script a user would write instead of reaper: list every active job with the official
clients, then cancel the ones over their limits one call at a time. No policies file, no audit
log, no re-check, no reason sent to Tapis: the rules of benchmarks/common.py POLICIES_YAML are
written out in Python. It is the baseline (b) of bench_sweep.py, kept honest rather than slow:
boto3's paginator, DescribeJobs 100 ids at a time where tags are needed, a Tapis listing that
stops at the first short page.

    python benchmarks/serial_script.py --aws-url URL --tapis-url URL --sutro-url URL

Credentials come from the environment: the AWS variables, REAPER_DEMO_TAPIS_TOKEN and
REAPER_DEMO_SUTRO_KEY (what the emulated world hands a child process). Prints one JSON object:
jobs listed and cancelled per backend, and the seconds spent setting up and sweeping."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

started = time.perf_counter()

import boto3  # noqa: E402
import requests  # noqa: E402
from tapipy.tapis import Tapis  # noqa: E402

NOW = datetime.now(UTC)
GPU_MAX_RUNTIME = timedelta(hours=12)
DEV_MAX_PENDING = timedelta(days=2)
SUTRO_MAX_AGE = timedelta(hours=6)
GPU_REASON = "GPU jobs are capped at 12h"
DEV_REASON = "dev jobs may wait at most 2d in a queue"

AWS_PENDING = ("SUBMITTED", "PENDING", "RUNNABLE")
AWS_RUNNING = ("STARTING", "RUNNING")
TAPIS_PENDING = ("PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGING_JOB",
                 "SUBMITTING_JOB", "QUEUED", "BLOCKED", "PAUSED")  # fmt: skip
TAPIS_RUNNING = ("RUNNING", "ARCHIVING")


def ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- AWS Batch --------------------------------------------------------------------------------
def sweep_aws(batch: Any) -> tuple[int, int]:
    queues = [
        q["jobQueueName"]
        for page in batch.get_paginator("describe_job_queues").paginate()
        for q in page["jobQueues"]
    ]
    listed, doomed, maybe_dev = 0, [], []
    for queue in queues:
        for status in AWS_PENDING + AWS_RUNNING:
            pages = batch.get_paginator("list_jobs").paginate(jobQueue=queue, jobStatus=status)
            for page in pages:
                for job in page["jobSummaryList"]:
                    listed += 1
                    if status in AWS_RUNNING and is_gpu_runaway(queue, job):
                        doomed.append((job["jobId"], GPU_REASON))
                    elif status in AWS_PENDING and NOW - ms(job["createdAt"]) > DEV_MAX_PENDING:
                        maybe_dev.append(job["jobId"])  # ListJobs has no tags: look them up
    for start in range(0, len(maybe_dev), 100):
        for job in batch.describe_jobs(jobs=maybe_dev[start : start + 100])["jobs"]:
            if job.get("tags", {}).get("env") == "dev" and not job["jobName"].endswith("-nightly"):
                doomed.append((job["jobId"], DEV_REASON))
    for job_id, reason in doomed:
        batch.terminate_job(jobId=job_id, reason=reason)
    return listed, len(doomed)


def is_gpu_runaway(queue: str, job: dict[str, Any]) -> bool:
    return (
        queue.startswith("gpu-")
        and job["jobName"].startswith("train-")
        and "startedAt" in job
        and NOW - ms(job["startedAt"]) > GPU_MAX_RUNTIME
    )


# -- Tapis ------------------------------------------------------------------------------------
def sweep_tapis(tapis: Any) -> tuple[int, int]:
    statuses = ",".join(TAPIS_PENDING + TAPIS_RUNNING)
    listed, doomed, skip = 0, [], 0
    while True:
        page = tapis.jobs.getJobSearchList(
            limit=100, skip=skip, orderBy="created(asc),uuid(asc)", select="allAttributes",
            _tapis_query_parameters={"status.in": statuses},
        )  # fmt: skip
        for job in page:
            listed += 1
            if is_tapis_over(job):
                doomed.append(job.uuid)
        if len(page) < 100:
            break
        skip += len(page)
    for uuid in doomed:
        tapis.jobs.cancelJob(jobUuid=uuid)
    return listed, len(doomed)


def is_tapis_over(job: Any) -> bool:
    queue, name, tags = job.execSystemLogicalQueue or "", job.name or "", job.tags or []
    if job.status in TAPIS_RUNNING:
        started = getattr(job, "remoteStarted", None)
        return (
            queue.startswith("gpu-") and name.startswith("train-") and started is not None
            and NOW - iso(started) > GPU_MAX_RUNTIME
        )  # fmt: skip
    return (
        job.status in TAPIS_PENDING and "env=dev" in tags and not name.endswith("-nightly")
        and NOW - iso(job.created) > DEV_MAX_PENDING
    )  # fmt: skip


# -- Sutro ------------------------------------------------------------------------------------
def sweep_sutro(session: requests.Session, url: str) -> tuple[int, int]:
    url = url.rstrip("/") + "/v1"  # the API lives under the deployment's /v1 (docs.sutro.sh)
    listed, doomed, cursor = 0, [], None
    while True:
        params = {"limit": "100"} | ({"cursor": cursor} if cursor else {})
        body = session.get(f"{url}/list-jobs", params=params, timeout=30).json()
        for job in body["jobs"]:
            listed += 1
            if is_sutro_over(job):
                doomed.append(job["job_id"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
    for job_id in doomed:
        # GET, as the SDK's cancel_job sends it
        session.get(f"{url}/job-cancel/{job_id}", timeout=30).raise_for_status()
    return listed, len(doomed)


def is_sutro_over(job: dict[str, Any]) -> bool:
    return (
        job["status"].upper() in ("QUEUED", "STARTING", "RUNNING")
        and (job.get("job_cost") or 0) > 50
        and str(job.get("model", "")).startswith("llama-")
        and NOW - iso(job["datetime_created"]) > SUTRO_MAX_AGE
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--aws-url", required=True)
    parser.add_argument("--tapis-url", required=True)
    parser.add_argument("--sutro-url", required=True)
    args = parser.parse_args(argv)
    batch = boto3.client("batch", endpoint_url=args.aws_url, region_name="us-east-1")
    token = os.environ["REAPER_DEMO_TAPIS_TOKEN"]
    tapis = Tapis(base_url=args.tapis_url, access_token=token, tenant_id="emulated")
    sutro = requests.Session()
    sutro.headers["Authorization"] = f"Key {os.environ['REAPER_DEMO_SUTRO_KEY']}"
    sweep_started = time.perf_counter()
    results = {
        "aws_batch": sweep_aws(batch),
        "tapis": sweep_tapis(tapis),
        "sutro": sweep_sutro(sutro, args.sutro_url),
    }
    done = time.perf_counter()
    print(json.dumps({
        "listed": {name: listed for name, (listed, _) in results.items()},
        "cancelled": {name: cancelled for name, (_, cancelled) in results.items()},
        "setup_s": sweep_started - started,
        "sweep_s": done - sweep_started,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
