"""The backends' record parsers live in reaper.backends.records, SDK-free, and the live backends
use them (one parser per backend, shared with `reaper test`)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import pytest

from reaper.backends.records import parse_record
from reaper.jobs import Phase


def test_the_live_backends_use_the_shared_parsers() -> None:
    from reaper.backends import aws_batch, sutro, tapis
    from reaper.backends.records import aws_batch as aws_records
    from reaper.backends.records import sutro as sutro_records
    from reaper.backends.records import tapis as tapis_records

    assert aws_batch.job_from_record is aws_records.job_from_record
    assert tapis.job_from_record is tapis_records.job_from_record
    assert sutro.parse_job is sutro_records.parse_job


def test_importing_the_parsers_imports_no_sdk() -> None:
    code = (
        "import sys, reaper.backends.records as r; "
        "print(sorted(m for m in ('boto3', 'botocore', 'tapipy', 'requests', 'jwt') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_parse_record_dispatches_on_the_type() -> None:
    aws = parse_record(
        "aws_batch",
        "b",
        {"jobId": "j", "status": "RUNNING", "createdAt": 1764540000000, "tags": {"team": "ml"}},
        queue="gpu-a",
    )
    assert (aws.queue, aws.phase, aws.tags) == ("gpu-a", Phase.RUNNING, {"team": "ml"})
    assert aws.created_at == datetime(2025, 11, 30, 22, 0, tzinfo=UTC)
    summary = parse_record(
        "aws_batch", "b", {"jobId": "j", "status": "RUNNABLE", "createdAt": 0, "tags": {"a": "b"}},
        detailed=False,
    )  # fmt: skip
    assert (summary.detailed, summary.tags) == (False, {})
    tapis = parse_record(
        "tapis", "t", {"uuid": "u", "status": "QUEUED", "created": "2026-01-01T00:00:00Z",
                       "tags": ["reaper:keep", "env=dev"]},
    )  # fmt: skip
    assert tapis.tags == {"reaper:keep": "", "env": "dev"}
    sutro = parse_record(
        "sutro", "s", {"job_id": "s1", "status": "running", "datetime_created": "2026-01-01"}
    )
    assert (sutro.status, sutro.phase) == ("RUNNING", Phase.RUNNING)


def test_parse_record_refuses_what_the_backend_refuses() -> None:
    with pytest.raises(ValueError, match="createdAt"):
        parse_record("aws_batch", "b", {"jobId": "j", "status": "RUNNING"})
    with pytest.raises(KeyError):
        parse_record("slurm", "x", {})
