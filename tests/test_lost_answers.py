"""Honest outcomes when a cancel's answer is lost (docs/audit.md, "Outcomes"): the server applies
the cancel and then answers 500, resets the connection or never answers. The backend re-reads the
job before any retry, and the outcome says what is known: `cancelled` (reaper's call ended the
job), never `already_terminal` (which the retry would otherwise see); `failed` only where the job
truly still runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reaper.backends.aws_batch import client_config
from reaper.backends.base import CancelOutcome, CancelResult
from reaper.backends.retry import RetryPolicy
from reaper.emulators.base import EmulatorServer, JobSpec, Knobs, LostAnswer
from reaper.jobs import Job
from tests import harness_aws_batch, harness_sutro, harness_tapis
from tests.e2e_support import run_once, same_knobs, standard_world

# The client gives up long before the emulator's held-back answer, and every other call (the job's
# refresh, the re-read before a retry) has two seconds: a loaded machine must not turn a slow
# answer into a lost one the test did not inject.
READ_TIMEOUT_S = 2.0
HELD_S = 30.0  # released early when the emulator stops
RUNNING = {"aws_batch": "RUNNING", "tapis": "RUNNING", "sutro": "RUNNING"}


def no_sleep(seconds: float) -> None:
    """Backoff without waiting."""


@dataclass
class Side:
    kind: str
    emulator: EmulatorServer
    backend: Any

    def job(self) -> Job:
        now = time.time()
        job_id = self.emulator.add_job(JobSpec("victim", RUNNING[self.kind], now - 7200,
                                               now - 3600, queue="gpu-a"))  # fmt: skip
        fresh = self.backend.refresh(Job(backend=self.backend.name, type=self.kind, id=job_id,
                                         name="victim", queue="gpu-a", status="RUNNING",
                                         phase=None, created_at=None))  # type: ignore[arg-type]  # fmt: skip
        assert fresh is not None
        return fresh

    def cancel(self, job: Job) -> CancelResult:
        """The call the sweep makes: AWS Batch's bulk path after the re-check, else cancel."""
        if self.kind == "aws_batch":
            (result,) = self.backend.cancel_checked([job], "lost answers")
            return result
        return self.backend.cancel(job, "lost answers")

    def cancel_calls(self) -> int:
        return sum(self.emulator.calls[op] for op in self.emulator.cancel_operations)


@pytest.fixture(params=["aws_batch", "tapis", "sutro"])
def side(request: pytest.FixtureRequest) -> Iterator[Side]:
    kind = request.param
    knobs = Knobs(lost_answer_wait_s=HELD_S)
    timeout = (2.0, READ_TIMEOUT_S)
    if kind == "aws_batch":
        emulator = harness_aws_batch.start_emulator(knobs)
        config = client_config(read_timeout_s=READ_TIMEOUT_S)
        client = harness_aws_batch.make_client(emulator, config)
        backend: Any = harness_aws_batch.AwsBatchBackend("batch", client, ["gpu-a"])
    elif kind == "tapis":
        emulator = harness_tapis.start_emulator(knobs)
        retry = RetryPolicy(sleep=no_sleep)
        backend = harness_tapis.make_backend(emulator, "hpc", retry=retry, timeout=timeout)
    else:
        emulator = harness_sutro.start_emulator(knobs)
        retry = RetryPolicy(sleep=no_sleep)
        backend = harness_sutro.make_backend(emulator, "inference", retry=retry, timeout=timeout)
    yield Side(kind, emulator, backend)
    backend.close()
    emulator.stop()


@pytest.mark.parametrize("lost", list(LostAnswer))
def test_an_applied_cancel_whose_answer_is_lost_is_cancelled(side: Side, lost: LostAnswer) -> None:
    job = side.job()
    side.emulator.knobs.lost_answer = lost
    side.emulator.knobs.lose_cancel_answers = 1
    result = side.cancel(job)
    assert result.outcome is CancelOutcome.CANCELLED, result
    assert side.emulator.status_of(job.id) != "RUNNING"


@pytest.mark.parametrize("lost", [LostAnswer.ERROR, LostAnswer.RESET])
def test_every_answer_lost_still_tells_the_truth(side: Side, lost: LostAnswer) -> None:
    """Not one answer arrives (botocore's own retries included): the re-read decides."""
    job = side.job()
    side.emulator.knobs.lost_answer = lost
    side.emulator.knobs.lose_cancel_answers = 100
    result = side.cancel(job)
    assert result.outcome is CancelOutcome.CANCELLED, result
    assert result.error is not None and "ended" in result.error


def test_a_cancel_refused_while_the_job_still_runs_is_failed(side: Side) -> None:
    job = side.job()
    side.emulator.knobs.fail_cancels = 100  # 5xx, nothing applied
    result = side.cancel(job)
    assert result.outcome is CancelOutcome.FAILED, result
    assert side.emulator.status_of(job.id) == "RUNNING"
    assert side.cancel_calls() >= 2  # retried after re-reading the job as unchanged


def test_a_late_cancel_is_cancelled_not_already_terminal(side: Side) -> None:
    """The first call's answer is lost; the job ends from it while the retry is sent, and the
    retry sees "already terminal": that is reaper's own kill."""
    job = side.job()
    side.emulator.knobs.cancel_delay_s = 0.3  # asynchronous: the re-read still sees it running
    side.emulator.knobs.lose_cancel_answers = 1
    result = side.cancel(job)
    assert result.outcome is CancelOutcome.CANCELLED, result


def test_through_the_cli_the_audit_says_cancelled_for_lost_answers(tmp_path: Any) -> None:
    knobs = same_knobs(lose_cancel_answers=2)
    knobs["batch"].lost_answer = LostAnswer.RESET
    with standard_world(tmp_path, config={"dry_run": False}, knobs=knobs) as world:
        result = run_once(world)
        assert result.code == 0, result.out + result.err
        records = [r for r in _records(world.audit_path) if r["event"] == "result"]
        assert records and {r["outcome"] for r in records} == {"cancelled"}


def _records(path: Any) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
