"""The acting part of a sweep (reaper.engine.sweep._Actor): re-check lane and cancel lane, bulk
backends (refresh_many / cancel_checked), and the guarantees that survive batching: an intent is
durable before the call that cancels its job, a result follows it, the re-check decides, dry run
makes no call, and a failed audit write stops every later cancel call."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from reaper.audit.writer import AuditLog, AuditWriteError, read_audit
from reaper.backends.base import CancelResult
from reaper.backends.memory import MemoryBackend
from reaper.engine.decide import Guards
from reaper.engine.sweep import BulkBackend, SweepEnv, SweepReport, run_sweep
from reaper.jobs import Job, Phase
from reaper.policy.model import Policy, PolicySet, PolicySource, compile_policy

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
TYPES = {"aws_batch", "tapis", "sutro"}


def policy(name: str, position: int = 0, **extra: Any) -> Policy:
    raw = {"name": name, "max_runtime": "1h", **extra}
    return compile_policy(raw, PolicySource("p.yaml", "0" * 64, None, position), TYPES)


def job(i: int, name: str = "train", tags: dict[str, str] | None = None) -> Job:
    return Job(backend="b", type="aws_batch", id=f"j{i:03d}", name=f"{name}-{i}", queue="q",
               status="RUNNING", phase=Phase.RUNNING, created_at=NOW - timedelta(hours=3),
               started_at=NOW - timedelta(hours=2), tags=tags or {})  # fmt: skip


class Journal:
    """One ordered log of durable audit records and backend calls, shared by both fakes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []  # (what, job id)

    def add(self, what: str, job_ids: Sequence[str]) -> None:
        with self.lock:
            self.entries.extend((what, job_id) for job_id in job_ids)

    def index(self, what: str, job_id: str) -> int:
        return self.entries.index((what, job_id))

    def ids(self, what: str) -> list[str]:
        return [job_id for kind, job_id in self.entries if kind == what]

    def open_intents(self) -> int:
        """Jobs announced whose result is not written yet."""
        with self.lock:
            kinds = [kind for kind, _ in self.entries]
        return kinds.count("intent") - kinds.count("result")


class JournalAudit(AuditLog):
    """A real audit log that notes each job record in the journal once it is durable, and can
    be told to fail from the n-th intent on."""

    def __init__(self, path: Path, journal: Journal, fail_at_intent: int | None = None) -> None:
        super().__init__(path)
        self.journal, self.fail_at_intent, self.intents = journal, fail_at_intent, 0

    def append_many(self, entries: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
        self.intents += sum(1 for event, _ in entries if event == "intent")
        if self.fail_at_intent is not None and self.intents >= self.fail_at_intent:
            raise AuditWriteError("disk full (injected)")  # the whole write fails
        records = super().append_many(entries)
        for event, fields in entries:
            if "job_id" in fields:
                self.journal.add(event, [fields["job_id"]])
        return records


class JournalBackend(MemoryBackend):
    """A one-job-per-call backend that notes its cancel calls and counts those in flight."""

    def __init__(self, journal: Journal, jobs: Sequence[Job]) -> None:
        super().__init__("b", "aws_batch", jobs, clock=lambda: NOW)
        self.journal = journal
        self.in_flight = self.most_in_flight = self.most_open = 0
        self.gauge = threading.Lock()
        self.after_listing: list[tuple[str, str]] = []  # (job id, status) applied after listing
        self.protect_after_listing: list[str] = []
        self.remove_after_listing: list[str] = []
        self.cancel_calls: list[tuple[list[str], str]] = []  # (job ids, reason) per call

    def list_active(self) -> Iterator[list[Job]]:
        yield from super().list_active()
        for job_id, status in self.after_listing:
            self.set_status(job_id, status)
        for job_id in self.protect_after_listing:
            self.add(replace(self._jobs[job_id], tags={"reaper:keep": "yes"}))
        for job_id in self.remove_after_listing:
            self.remove(job_id)

    def cancel(self, job: Job, reason: str) -> CancelResult:
        return self.cancel_checked([job], reason)[0]

    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        with self.gauge:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.cancel_calls.append(([j.id for j in jobs], reason))
            self.most_open = max(self.most_open, self.journal.open_intents())
        self.journal.add("call", [j.id for j in jobs])
        try:
            return [MemoryBackend.cancel(self, j, reason) for j in jobs]
        finally:
            with self.gauge:
                self.in_flight -= 1


class BulkJournalBackend(JournalBackend):
    """The same, with the bulk calls of AWS Batch: 100 jobs per read, 50 per cancel call."""

    refresh_batch = 100
    cancel_batch = 50

    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]:
        self.calls["refresh_many"] += 1
        assert len(jobs) <= self.refresh_batch
        return [self.refresh(j) for j in jobs]


def sweep(
    tmp_path: Path, backend: JournalBackend, policies: Sequence[Policy], **audit: Any
) -> SweepReport:
    path = tmp_path / "audit.jsonl"
    with JournalAudit(path, backend.journal, **audit) as log:
        env = SweepEnv(
            policies=PolicySet.of(policies),
            backends={"b": backend},
            audit=log,
            audit_path=path,
            guards=Guards(max_cancels_per_sweep=None, max_match_fraction=None, dry_run=False),
            clock=lambda: NOW,
        )
        return run_sweep(env)


@pytest.mark.parametrize("backend_class", [JournalBackend, BulkJournalBackend])
def test_each_intent_is_durable_before_the_call_and_each_result_follows(
    tmp_path: Path, backend_class: type[JournalBackend]
) -> None:
    journal = Journal()
    backend = backend_class(journal, [job(i) for i in range(60)])
    report = sweep(tmp_path, backend, [policy("cap")])
    assert report.backends["b"].outcomes["cancelled"] == 60
    for i in range(60):
        job_id = f"j{i:03d}"
        assert journal.index("intent", job_id) < journal.index("call", job_id)
        assert journal.index("call", job_id) < journal.index("result", job_id)


def test_a_bulk_backend_shares_calls_between_jobs_of_one_reason_only(tmp_path: Path) -> None:
    journal = Journal()
    jobs = [job(i, name="train" if i % 3 else "etl") for i in range(150)]
    backend = BulkJournalBackend(journal, jobs)
    policies = [
        policy("etl", 0, names=["etl-*"], reason="etl cap ({policy})"),
        policy("train", 1, names=["train-*"], reason="train cap ({policy})"),
    ]
    sweep(tmp_path, backend, policies)
    cancelled = [job_id for ids, _ in backend.cancel_calls for job_id in ids]
    assert sorted(cancelled) == sorted(j.id for j in jobs)
    for ids, reason in backend.cancel_calls:
        assert 1 <= len(ids) <= 50
        expected = "etl cap (etl)" if reason.startswith("etl") else "train cap (train)"
        assert reason == expected
        assert {int(i[1:]) % 3 == 0 for i in ids} == {reason.startswith("etl")}
    assert len(backend.cancel_calls) < 150 / 10  # batched, not one call per job
    assert backend.calls["refresh"] == 150 and backend.calls["refresh_many"] <= 10


def test_no_more_cancel_calls_in_flight_than_the_concurrency(tmp_path: Path) -> None:
    journal = Journal()
    backend = JournalBackend(journal, [job(i) for i in range(80)])
    sweep(tmp_path, backend, [policy("cap")])
    assert len(backend.cancel_calls) == 80
    assert 1 <= backend.most_in_flight <= 8
    assert backend.most_open <= 8  # an open intent is a call in flight: a crash leaves few


@pytest.mark.parametrize("backend_class", [JournalBackend, BulkJournalBackend])
def test_the_recheck_decides_changed_and_protected_jobs_are_skipped(
    tmp_path: Path, backend_class: type[JournalBackend]
) -> None:
    journal = Journal()
    backend = backend_class(journal, [job(i) for i in range(10)])
    backend.after_listing = [("j001", "SUCCEEDED")]
    backend.protect_after_listing = ["j002"]
    backend.remove_after_listing = ["j003"]
    report = sweep(tmp_path, backend, [policy("cap")])
    assert not {"j001", "j002", "j003"} & set(journal.ids("call"))
    assert report.backends["b"].skipped == {"changed": 2, "protected": 1}
    assert report.backends["b"].outcomes["cancelled"] == 7
    skipped = {r["job_id"]: r["cause"] for r in _records(tmp_path) if r["event"] == "skipped"}
    assert skipped == {"j001": "changed", "j002": "protected", "j003": "changed"}


@pytest.mark.parametrize("backend_class", [JournalBackend, BulkJournalBackend])
def test_dry_run_makes_no_call_and_records_dry_run(
    tmp_path: Path, backend_class: type[JournalBackend]
) -> None:
    journal = Journal()
    backend = backend_class(journal, [job(i) for i in range(20)])
    report = sweep(tmp_path, backend, [policy("cap", dry_run=True)])
    assert backend.cancel_calls == []
    assert report.backends["b"].outcomes == {"dry_run": 20}
    assert len(journal.ids("intent")) == len(journal.ids("result")) == 20


@pytest.mark.parametrize("backend_class", [JournalBackend, BulkJournalBackend])
def test_a_failed_audit_write_stops_every_later_cancel_call(
    tmp_path: Path, backend_class: type[JournalBackend]
) -> None:
    journal = Journal()
    backend = backend_class(journal, [job(i) for i in range(120)])
    report = sweep(tmp_path, backend, [policy("cap")], fail_at_intent=5)
    assert report.audit_error is not None and report.failed
    called = journal.ids("call")
    assert set(called) <= set(journal.ids("intent"))  # nothing called without a durable intent
    assert len(called) <= 4
    for ids, _ in backend.cancel_calls:  # a batch is called whole or not at all
        assert all(job_id in journal.ids("intent") for job_id in ids)


def test_the_bulk_protocol_is_recognised_structurally() -> None:
    assert isinstance(BulkJournalBackend(Journal(), []), BulkBackend)
    assert not isinstance(JournalBackend(Journal(), []), BulkBackend)


def _records(tmp_path: Path) -> list[dict[str, Any]]:
    return list(read_audit(tmp_path / "audit.jsonl").records)


class OverlapBackend(BulkJournalBackend):
    """A bulk backend whose cancel calls wait (up to 5 s) until two were in flight at once."""

    def __init__(self, journal: Journal, jobs: Sequence[Job]) -> None:
        super().__init__(journal, jobs)
        self.overlap = threading.Condition()

    def cancel_checked(self, jobs: Sequence[Job], reason: str) -> list[CancelResult]:
        with self.overlap:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.overlap.notify_all()
            self.overlap.wait_for(lambda: self.most_in_flight >= 2, timeout=5)
        try:
            return [MemoryBackend.cancel(self, j, reason) for j in jobs]
        finally:
            with self.overlap:
                self.in_flight -= 1


def test_a_bulk_backends_cancels_of_different_reasons_run_side_by_side(tmp_path: Path) -> None:
    """Six jobs, each its own reason (so no shared call), in one bulk re-check: their cancel
    calls must not queue behind each other in one worker (a hung service then cost one read
    timeout per job, one after the other)."""
    journal = Journal()
    backend = OverlapBackend(journal, [job(i) for i in range(6)])
    report = sweep(tmp_path, backend, [policy("cap", reason="cap {job_id}")])
    assert report.backends["b"].outcomes == {"cancelled": 6}
    assert backend.calls["refresh_many"] == 1  # one unit: the re-check is still shared
    assert backend.most_in_flight >= 2
