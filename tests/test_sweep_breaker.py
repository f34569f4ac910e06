"""A backend that stops answering part-way through a sweep's cancels (reaper.engine.breaker): after
FAILING_AFTER calls in a row without an answer the sweep makes no further call on it, records the
jobs left as skipped (`backend_failing`), fails the backend (exit 1) and leaves the other
backends alone; a cancel refused for one job is an answer and never counts."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from reaper.audit.writer import AuditLog, read_audit, verify_audit
from reaper.backends.base import Backend, CancelOutcome, CancelResult
from reaper.backends.memory import MemoryBackend
from reaper.backends.retry import LostAnswerError, RetryPolicy, cancel_honestly
from reaper.emulators.base import JobSpec, Knobs
from reaper.engine.breaker import FAILING_AFTER, Breaker
from reaper.engine.decide import Guards
from reaper.engine.sweep import DEFAULT_CONCURRENCY, SweepEnv, SweepReport, run_sweep
from reaper.errors import ExitCode
from reaper.jobs import Job, Phase
from reaper.policy.model import PolicySet, PolicySource, compile_policy
from tests import harness_sutro

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
# At the trip, the calls already in flight still finish: at most the concurrency minus one more.
MOST_CALLED = FAILING_AFTER + DEFAULT_CONCURRENCY - 1


def no_sleep(seconds: float) -> None:
    """Backoff without waiting."""


def job(backend: str, i: int) -> Job:
    return Job(backend=backend, type="aws_batch", id=f"{backend}-{i:03d}", name=f"train-{i}",
               queue="q", status="RUNNING", phase=Phase.RUNNING,
               created_at=NOW - timedelta(hours=3),
               started_at=NOW - timedelta(hours=2))  # fmt: skip


class SilentBackend(MemoryBackend):
    """Answers its listing and re-checks, then never a cancel (as `cancel_honestly` reports a
    service that timed out or answered 5xx to every attempt)."""

    def cancel(self, job: Job, reason: str) -> CancelResult:
        with self._lock:
            self.calls["cancel"] += 1
        return CancelResult(CancelOutcome.FAILED, "no answer within 30 s", unanswered=True)


def sweep(tmp_path: Path, backends: dict[str, Backend], clock: bool = True) -> SweepReport:
    source = PolicySource("p.yaml", "0" * 64, None, 0)
    policy = compile_policy({"name": "cap", "max_runtime": "1h"}, source, {"aws_batch", "sutro"})
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        env = SweepEnv(
            policies=PolicySet.of([policy]), backends=backends, audit=audit, audit_path=path,
            guards=Guards(max_cancels_per_sweep=None, max_match_fraction=None, dry_run=False),
            clock=(lambda: NOW) if clock else (lambda: datetime.now(UTC)),
        )  # fmt: skip
        return run_sweep(env)


def records_per_job(path: Path, backend: str) -> Counter[str]:
    """For each job of `backend`: the last record the sweep wrote about it, by kind."""
    last: dict[str, str] = {}
    for record in read_audit(path).records:
        if record.get("backend") == backend and "job_id" in record and record["event"] != "intent":
            last[record["job_id"]] = record.get("cause") or record.get("outcome") or ""
    return Counter(last.values())


# -- the count ------------------------------------------------------------------------------------
@given(st.lists(st.booleans(), max_size=40))
def test_a_backend_is_given_up_on_exactly_after_a_run_of_unanswered_calls(
    calls: list[bool],
) -> None:
    breaker = Breaker()
    run, expected = 0, False
    for answered in calls:
        if answered:
            breaker.answered("b", "cancel")
            run = 0
        else:
            breaker.unanswered("b", "cancel", "timeout")
            run += 1
        expected = expected or run >= FAILING_AFTER
        assert (breaker.tripped("b") is not None) == expected  # and once given up, it stays
    assert breaker.tripped("other") is None


def test_only_the_call_that_trips_reports_it() -> None:
    breaker = Breaker(limit=2)
    assert [breaker.unanswered("b", "cancel", f"e{i}") for i in range(4)] == [False, True] + [
        False
    ] * 2
    why = breaker.tripped("b") or ""
    assert "2 cancels in a row" in why and "e1" in why


def test_an_answered_read_does_not_vouch_for_the_cancels() -> None:
    breaker = Breaker(limit=3)
    for _ in range(3):
        breaker.answered("b", "re-check")
        breaker.unanswered("b", "cancel", "HTTP 503")
    assert breaker.tripped("b") is not None


def test_a_cancel_that_got_no_answer_to_any_attempt_is_unanswered() -> None:
    active = job("b", 1)
    policy = RetryPolicy(attempts=3, sleep=no_sleep)

    def lost() -> CancelResult:
        raise LostAnswerError("HTTP 503")

    result = cancel_honestly(lost, lambda: active, policy)
    assert (result.outcome, result.unanswered) == (CancelOutcome.FAILED, True)
    refused = CancelResult(CancelOutcome.FAILED, "HTTP 400: job is not cancellable")
    assert cancel_honestly(lambda: refused, lambda: active, policy).unanswered is False


# -- the sweep ------------------------------------------------------------------------------------
def test_a_silent_backend_is_given_up_on_and_the_others_go_on(tmp_path: Path) -> None:
    silent = SilentBackend("silent", "aws_batch", [job("silent", i) for i in range(60)],
                           clock=lambda: NOW)  # fmt: skip
    healthy = MemoryBackend("healthy", "aws_batch", [job("healthy", i) for i in range(20)],
                            clock=lambda: NOW)  # fmt: skip
    report = sweep(tmp_path, {"silent": silent, "healthy": healthy})
    sick = report.backends["silent"]
    assert FAILING_AFTER <= silent.calls["cancel"] <= MOST_CALLED
    assert sick.outcomes == {"failed": silent.calls["cancel"]}
    assert sick.skipped == {"backend_failing": 60 - silent.calls["cancel"]}
    assert sick.error is not None and f"after {FAILING_AFTER} cancels in a row" in sick.error
    assert report.backends["healthy"].outcomes == {"cancelled": 20}
    assert report.backends["healthy"].error is None
    assert report.exit_code is ExitCode.FAILED
    # Every job of the silent backend has its one true record: a failed result or the skip.
    path = tmp_path / "audit.jsonl"
    assert records_per_job(path, "silent") == sick.outcomes + sick.skipped
    assert verify_audit(path).ok


def test_cancels_refused_one_job_at_a_time_never_stop_the_rest(tmp_path: Path) -> None:
    backend = MemoryBackend("b", "aws_batch", [job("b", i) for i in range(40)], clock=lambda: NOW)
    backend.fail_cancel_ids = {f"b-{i:03d}" for i in range(30)}  # answered: refused
    report = sweep(tmp_path, {"b": backend})
    assert backend.calls["cancel"] == 40
    assert report.backends["b"].outcomes == {"failed": 30, "cancelled": 10}
    assert "backend_failing" not in report.backends["b"].skipped


def test_a_sutro_service_answering_5xx_to_every_cancel_is_given_up_on(tmp_path: Path) -> None:
    """The whole chain on the real client: job-cancel answers 503 (not applied), the re-read
    shows the job still running, the retries are spent: `unanswered`, and the sweep gives up."""
    emulator = harness_sutro.start_emulator(Knobs(fail_cancels=10_000))
    now = time.time()
    ids = [emulator.add_job(JobSpec(f"batch-{i}", "RUNNING", now - 7200, now - 3600))
           for i in range(40)]  # fmt: skip
    backend = harness_sutro.make_backend(
        emulator, "inference", retry=RetryPolicy(attempts=2, sleep=no_sleep)
    )
    try:
        report = sweep(tmp_path, {"inference": backend}, clock=False)
    finally:
        backend.close()
        emulator.stop()
    sick = report.backends["inference"]
    assert report.exit_code is ExitCode.FAILED
    assert FAILING_AFTER <= sick.outcomes["failed"] <= MOST_CALLED
    assert sick.outcomes["failed"] + sick.skipped["backend_failing"] == 40
    assert emulator.calls["CancelJob"] <= 2 * MOST_CALLED  # two attempts per job tried
    assert {emulator.status_of(job_id) for job_id in ids} == {"RUNNING"}  # none was applied
