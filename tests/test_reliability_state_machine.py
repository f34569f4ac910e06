"""Reliability: a hypothesis state machine over `run_sweep` (docs/architecture.md, docs/audit.md).

Three in-memory backends of different types, a real hash-chained `AuditLog` in a temp folder and
an injected clock. Rules add jobs (random status, ages, tags including the protect tag, names,
queues, raw records), change them, advance the clock, inject faults (listing failing on page N,
enrichment, re-check and cancel failures, a job changing between listing and re-check), toggle
the pause file, change the limits and dry run, and sweep. After every sweep the outcome is
checked against a reference written here, independently of reaper's policy evaluation (fnmatch
for globs, plain comparisons for the rest, the phase tables copied from docs/backends.md):

- a cancel call is made only for a job that, at that moment, exists, is active, carries no
  protect tag, and matches (by the reference) the policy its `intent` record names; that intent
  is already in the audit file, not dry run, while not paused, and outside the re-cancel window;
- one real cancel call per non-dry-run intent, none in dry run or while paused;
- a backend whose listing (or enrichment) failed gets no cancel call, an error naming it, and
  the sweep exits 1;
- every job the reference matches on a backend that listed completely is decided once, by its
  first policy, and each skip has a cause the situation allows; no other job is decided;
- the limits (`max_cancels`, `max_cancels_per_sweep`) are never exceeded, and a `limit` skip
  only happens when one is reached;
- `verify_audit` stays ok.

Default profile: 200 examples of up to 25 steps (deterministic). The `slow` variant runs the
`slow` profile (10,000 examples): `HYPOTHESIS_PROFILE=slow python -m pytest -m slow <this file>`.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeGuard

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    multiple,
    rule,
    run_state_machine_as_test,
)

from reaper.audit.writer import AuditLog, verify_audit
from reaper.backends.base import CancelOutcome, CancelResult
from reaper.backends.memory import MemoryBackend
from reaper.engine.decide import Guards
from reaper.engine.sweep import SweepEnv, SweepReport, run_sweep
from reaper.errors import BackendError, ExitCode
from reaper.jobs import Job, Phase, SkipCause, has_ended
from reaper.policy.model import PolicySet, PolicySource, compile_policy

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
KEEP = "reaper:keep"
WINDOW = timedelta(minutes=10)  # docs/architecture.md, sweep step 3: no re-cancel within 10 minutes
# limits.confirm_within, set beyond any history here: a cancelled job is held until a sweep of
# its backend sees it ended (docs/audit.md, "Confirmation"); `stuck` has its own tests.
CONFIRM_WITHIN = timedelta(days=3650)
H, D, M = timedelta(hours=1), timedelta(days=1), timedelta(minutes=1)

# --- the reference: phases (docs/backends.md) -------------------------------------------------

_PENDING = {
    "aws_batch": {"SUBMITTED", "PENDING", "RUNNABLE"},
    "tapis": {"PENDING", "PROCESSING_INPUTS", "STAGING_INPUTS", "STAGING_JOB", "SUBMITTING_JOB",
              "QUEUED", "BLOCKED", "PAUSED"},
    "sutro": {"QUEUED", "STARTING"},
}  # fmt: skip
_RUNNING = {
    "aws_batch": {"STARTING", "RUNNING"},
    "tapis": {"RUNNING"},
    "sutro": {"RUNNING"},
}
# Active, in neither group: only a policy naming the status matches (reaper.jobs.Phase.FINISHING).
_FINISHING = {"aws_batch": set(), "tapis": {"ARCHIVING"}, "sutro": set()}
_TERMINAL = {
    "aws_batch": ["SUCCEEDED", "FAILED"],
    "tapis": ["FINISHED", "CANCELLED", "FAILED"],
    "sutro": ["SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED"],
}


def group_of(job: Job) -> str | None:
    """`pending`, `running`, `finishing`, or None for terminal and unknown statuses."""
    status = job.status.upper()
    if status in _PENDING[job.type]:
        return "pending"
    if status in _FINISHING[job.type]:
        return "finishing"
    return "running" if status in _RUNNING[job.type] else None


def statuses_of(backend_type: str) -> list[str]:
    """Every status worth trying on a backend type: active (often), terminal, unknown."""
    active = sorted(_PENDING[backend_type] | _RUNNING[backend_type] | _FINISHING[backend_type])
    return [*active, *active, *_TERMINAL[backend_type], "UNKNOWN", "running", "queued"]


# --- the reference: policies --------------------------------------------------------------------


def over(measured: timedelta | None, limit: timedelta) -> bool:
    return measured is not None and measured > limit


def runtime(job: Job, now: datetime) -> timedelta | None:
    if group_of(job) not in ("running", "finishing"):
        return None
    return None if job.started_at is None else now - job.started_at


def pending(job: Job, now: datetime) -> timedelta | None:
    if group_of(job) != "pending":
        return None
    return now - job.created_at if job.started_at is None else None


def tag_is(job: Job, key: str, glob: str) -> bool:
    return key in job.tags and fnmatchcase(job.tags[key], glob)


def is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def ref_gpu(job: Job, now: datetime) -> bool:
    return (
        job.backend in ("batch", "hpc") and fnmatchcase(job.queue, "gpu-*")
        and group_of(job) == "running" and fnmatchcase(job.name, "train-*")
        and tag_is(job, "team", "ml") and over(runtime(job, now), 12 * H)
    )  # fmt: skip


def ref_dev(job: Job, now: datetime) -> bool:
    return (
        over(pending(job, now), 2 * D) and tag_is(job, "env", "dev")
        and not fnmatchcase(job.name, "*-nightly")
    )  # fmt: skip


def ref_sutro(job: Job, now: datetime) -> bool:
    cost, model = job.raw.get("job_cost"), job.raw.get("model")
    return (
        job.backend == "inference" and now - job.created_at > 6 * H
        and is_number(cost) and cost > 50 and isinstance(model, str)
        and fnmatchcase(model, "llama-*")
    )  # fmt: skip


def ref_stale(job: Job, now: datetime) -> bool:
    return group_of(job) == "pending" and now - job.created_at > 3 * D and "team" not in job.tags


def ref_runaway(job: Job, now: datetime) -> bool:
    return (
        fnmatchcase(job.name, "runaway-?") and job.status.upper() in ("RUNNING", "ARCHIVING")
        and over(runtime(job, now), H) and not fnmatchcase(job.queue, "GPU-*")
    )  # fmt: skip


@dataclass(frozen=True)
class RefPolicy:
    file: str
    position: int
    mapping: Mapping[str, Any]
    holds: Callable[[Job, datetime], bool]

    @property
    def name(self) -> str:
        return str(self.mapping["name"])


def reference_policies(dev_max_cancels: int | None, stale_dry_run: bool) -> list[RefPolicy]:
    """The policies of one machine, in (file, position) order, each with its reference."""
    dev: dict[str, Any] = {"name": "dev-queue-expiry", "max_pending": "2d", "tags": {"env": "dev"},
                           "exclude": {"names": ["*-nightly"]}}  # fmt: skip
    if dev_max_cancels is not None:
        dev["max_cancels"] = dev_max_cancels
    return [
        RefPolicy("policies/10-a.yaml", 0, {
            "name": "gpu-runtime-cap", "backends": ["batch", "hpc"], "queues": ["gpu-*"],
            "statuses": ["running"], "names": ["train-*"], "tags": {"team": "ml"},
            "max_runtime": "12h", "reason": "ran {runtime} on {queue} (policy {policy})",
        }, ref_gpu),
        RefPolicy("policies/10-a.yaml", 1, dev, ref_dev),
        RefPolicy("policies/20-b.yaml", 0, {
            "name": "sutro-budget", "backends": ["inference"], "max_age": "6h",
            "where": {"job_cost": {"gt": 50}, "model": {"glob": "llama-*"}},
        }, ref_sutro),
        RefPolicy("policies/20-b.yaml", 1, {
            "name": "stale-pending", "statuses": ["pending"], "max_age": "3d",
            "exclude": {"tags": {"team": "*"}}, "dry_run": stale_dry_run,
        }, ref_stale),
        RefPolicy("policies/30-c.yaml", 0, {
            "name": "runaway", "names": ["runaway-?"], "statuses": ["RUNNING", "archiving"],
            "max_runtime": "1h", "exclude": {"queues": ["GPU-*"]},
        }, ref_runaway),
    ]  # fmt: skip


def compile_all(refs: Sequence[RefPolicy]) -> PolicySet:
    types = ("aws_batch", "tapis", "sutro")
    return PolicySet.of(
        compile_policy(r.mapping, PolicySource(r.file, "0" * 64, None, r.position), types)
        for r in refs
    )


def matching(refs: Sequence[RefPolicy], job: Job, now: datetime) -> list[RefPolicy]:
    """The policies the reference matches, in order; only active jobs are ever considered."""
    if group_of(job) is None:
        return []
    return [r for r in refs if r.holds(job, now)]


# --- jobs ---------------------------------------------------------------------------------------

BACKENDS = {"batch": "aws_batch", "hpc": "tapis", "inference": "sutro"}
NAMES = ["train-llm", "train-", "etl-dev", "etl-dev-nightly", "runaway-1", "runaway-12", "eval",
         "", "trâin-x"]  # fmt: skip
QUEUES = ["gpu-a", "gpu-", "GPU-a", "cpu", ""]
TAGS: list[dict[str, str]] = [
    {}, {"team": "ml"}, {"env": "dev"}, {"env": "dev", "team": "ml"}, {"env": "dev-x"},
    {"team": ""}, {KEEP: ""}, {KEEP: "no", "env": "dev"}, {"team": "ml", KEEP: "x"},
]  # fmt: skip
# The limits themselves are in the pools: "more than 12h" must not hold at exactly 12h.
AGES = [timedelta(0), 30 * M, 2 * H, 6 * H, 7 * H, 13 * H, 2 * D, 49 * H, 3 * D, 3 * D + M, 5 * D]
STARTED = [None, timedelta(0), 30 * M, H, 61 * M, 12 * H, 13 * H, 5 * D]
MODELS = [None, "llama-3", "llama-", "qwen", True]
COSTS = [None, 10, 50, 50.5, 120, "120", True]
STEPS = [M, 5 * M, 10 * M, 11 * M, H, 6 * H, 13 * H, D, 3 * D]
RACES = ["protect", "finish", "vanish", "young"]


@dataclass(frozen=True)
class Archetype:
    """A job shaped to match one policy; each field is then kept or replaced at random, so
    that near misses (one selector off) are common."""

    status: str
    name: str
    queue: str
    tags: dict[str, str]
    created_ago: timedelta
    started_ago: timedelta | None
    raw: dict[str, Any]


ARCHETYPES = [
    Archetype("RUNNING", "train-llm", "gpu-a", {"team": "ml"}, 14 * H, 13 * H, {}),
    Archetype("pending", "etl-dev", "cpu", {"env": "dev"}, 49 * H, None, {}),
    Archetype("QUEUED", "summaries", "", {}, 7 * H, None, {"model": "llama-3", "job_cost": 120}),
    Archetype("pending", "eval", "cpu", {}, 5 * D, None, {}),
    Archetype("RUNNING", "runaway-1", "cpu", {}, 2 * H, 61 * M, {}),
]


STATUSES = {kind: st.sampled_from(statuses_of(kind)) for kind in _PENDING}
PENDING_STATUSES = {kind: st.sampled_from(sorted(statuses)) for kind, statuses in _PENDING.items()}
RAW_RECORDS = st.fixed_dictionaries(
    {}, optional={"model": st.sampled_from(MODELS[1:]), "job_cost": st.sampled_from(COSTS[1:])}
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(NAMES), "queue": st.sampled_from(QUEUES), "tags": st.sampled_from(TAGS),
    "created_ago": st.sampled_from(AGES), "started_ago": st.sampled_from(STARTED),
    "raw": RAW_RECORDS,
}  # fmt: skip
KEEP_ODDS = st.integers(0, 3)  # 0: replace the archetype's value by a random one


@st.composite
def new_jobs(draw: st.DrawFn, backend: str, job_id: str, now: datetime) -> Job:
    kind = BACKENDS[backend]
    shape = draw(st.sampled_from(ARCHETYPES))

    def pick(field: str, value: Any, pool: st.SearchStrategy[Any]) -> Any:
        return value if draw(KEEP_ODDS) else draw(pool)

    values = {f: pick(f, getattr(shape, f), pool) for f, pool in FIELDS.items()}
    status = draw(PENDING_STATUSES[kind]) if shape.status == "pending" else shape.status
    created_ago, started_ago = values["created_ago"], values["started_ago"]
    return Job(
        backend=backend, type=kind, id=job_id, name=values["name"], queue=values["queue"],
        status=pick("status", status, STATUSES[kind]), phase=Phase.UNKNOWN,
        created_at=now - created_ago,
        started_at=None if started_ago is None else now - min(started_ago, created_ago),
        tags=values["tags"], raw=values["raw"],
    )  # fmt: skip


# --- the backend under watch --------------------------------------------------------------------


@dataclass
class Intent:
    policy: str
    dry_run: bool


def read_records(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    """The complete records of the audit file from byte `offset` on (a line still being written
    by another thread is left out)."""
    with path.open("rb") as file:
        file.seek(offset)
        lines = file.read().split(b"\n")[:-1]
    return [json.loads(line) for line in lines if line]


class WatchedBackend:
    """A MemoryBackend seen through the checks: at each cancel call it checks the job and the
    audit file at that moment; it notes listing failures and applies the scheduled races."""

    def __init__(self, inner: MemoryBackend, machine: SweepMachine) -> None:
        self.inner, self.machine = inner, machine
        self.name, self.type = inner.name, inner.type
        self.races: dict[str, str] = {}  # job id → what happens to it before its re-check
        self.raced: set[str] = set()
        self.listed = False  # the follow-up of earlier cancels reads jobs before the listing
        self.listing_failed = self.refresh_failed = False
        self.cancels: list[tuple[str, CancelOutcome]] = []
        self.mutating_before = 0

    def start_sweep(self) -> None:
        self.listing_failed = self.refresh_failed = False
        self.cancels, self.raced, self.listed = [], set(), False
        self.mutating_before = self.inner.mutating_calls

    def list_active(self) -> Iterator[list[Job]]:
        self.listed = True
        try:
            yield from self.inner.list_active()
        except BackendError:
            self.listing_failed = True
            raise

    def enrich(self, jobs: Sequence[Job]) -> list[Job]:
        try:
            return self.inner.enrich(jobs)
        except BackendError:
            self.listing_failed = True
            raise

    def refresh(self, job: Job) -> Job | None:
        race = self.races.pop(job.id, None) if self.listed else None  # a re-check, not a follow-up
        if race is not None:
            self.raced.add(job.id)
            self.machine.apply_race(self.inner, job.id, race)
        try:
            return self.inner.refresh(job)
        except BackendError:
            self.refresh_failed = self.refresh_failed or self.listed
            raise

    def cancel(self, job: Job, reason: str) -> CancelResult:
        self.machine.check_cancel_call(self, job.id)
        result = self.inner.cancel(job, reason)
        self.cancels.append((job.id, result.outcome))
        return result

    def close(self) -> None:
        self.inner.close()


# --- the machine --------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class SweepMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        # tmpfs where there is one: the audit log fsyncs every record, thousands per run.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.folder = tempfile.TemporaryDirectory(prefix="reaper-reliab-", dir=where)
        root = Path(self.folder.name)
        self.audit_path, self.pause_file = root / "audit.jsonl", root / "PAUSE"
        self.clock = Clock()
        self.audit = AuditLog(self.audit_path, host="test", clock=self.clock)
        self.guards = Guards(protect_tag=KEEP, max_cancels_per_sweep=None,
                             max_match_fraction=None, dry_run=False)  # fmt: skip
        self.refs = reference_policies(None, False)
        self.policies = compile_all(self.refs)
        self.backends: dict[str, WatchedBackend] = {}
        self.cancelled_at: dict[tuple[str, str], datetime] = {}  # last accepted cancel call
        self.confirmed: set[tuple[str, str]] = set()  # cancelled jobs a sweep has seen ended
        self.recent: set[tuple[str, str]] = set()
        self.tags_before: dict[tuple[str, str], Mapping[str, str]] = {}
        self.violations: list[str] = []
        self.audit_start = 0  # size of the audit file when the current sweep started
        self.count = 0

    def teardown(self) -> None:
        self.audit.close()
        self.folder.cleanup()

    @initialize(
        dev_max_cancels=st.sampled_from([None, None, 0, 1, 2]),
        stale_dry_run=st.booleans(),
        batch_delay=st.sampled_from([timedelta(0), 5 * M, 15 * M]),
        page_sizes=st.tuples(*[st.integers(1, 3)] * 3),
    )
    def set_up(
        self,
        dev_max_cancels: int | None,
        stale_dry_run: bool,
        batch_delay: timedelta,
        page_sizes: tuple[int, int, int],
    ) -> None:
        self.refs = reference_policies(dev_max_cancels, stale_dry_run)
        self.policies = compile_all(self.refs)
        for (name, kind), size in zip(BACKENDS.items(), page_sizes, strict=True):
            aws = kind == "aws_batch"  # AWS lists without tags: the sweep must enrich
            inner = MemoryBackend(
                name, kind, page_size=size, clock=self.clock, listing_detailed=not aws,
                cancel_delay=batch_delay if aws else 2 * M,
            )  # fmt: skip
            self.backends[name] = WatchedBackend(inner, self)

    # -- the world changes ----------------------------------------------------------------------

    @rule(target=jobs, backend=st.sampled_from(sorted(BACKENDS)), n=st.integers(1, 4),
          data=st.data())  # fmt: skip
    def add_jobs(self, backend: str, n: int, data: st.DataObject) -> MultipleResults[Any]:
        keys = []
        for _ in range(n):
            self.count += 1
            job = data.draw(new_jobs(backend, f"j{self.count}", self.clock.now))
            self.backends[backend].inner.add(job)
            keys.append((backend, job.id))
        return multiple(*keys)

    @rule(key=jobs, change=st.sampled_from(["status", "tags", "remove"]), data=st.data())
    def change_job(self, key: tuple[str, str], change: str, data: st.DataObject) -> None:
        """The backend moves on by itself: a job starts, ends, is retagged or purged."""
        inner = self.backends[key[0]].inner
        job = inner.job(key[1])
        if job is None:
            return
        if change == "status":
            inner.set_status(job.id, data.draw(STATUSES[inner.type]))
        elif change == "tags":
            inner.add(replace(job, tags=data.draw(st.sampled_from(TAGS))))
        else:
            inner.remove(job.id)

    @rule(key=jobs, race=st.sampled_from(RACES))
    def change_before_recheck(self, key: tuple[str, str], race: str) -> None:
        """The job changes between the listing and the re-check of the next sweep."""
        self.backends[key[0]].races[key[1]] = race

    def apply_race(self, inner: MemoryBackend, job_id: str, race: str) -> None:
        job = inner.job(job_id)
        if job is None:
            return
        if race == "protect":
            inner.add(replace(job, tags={**job.tags, KEEP: "now"}))
        elif race == "finish":
            inner.set_status(job_id, _TERMINAL[inner.type][0])
        elif race == "vanish":
            inner.remove(job_id)
        else:
            inner.add(replace(job, created_at=self.clock.now, started_at=self.clock.now))

    # -- faults ---------------------------------------------------------------------------------

    @rule(
        backend=st.sampled_from(sorted(BACKENDS)),
        list_page=st.sampled_from([None, None, None, 1, 2, 3]),
        enrich=st.sampled_from([False, False, True]),
        refresh=st.sampled_from([False, False, True]),
    )
    def set_faults(self, backend: str, list_page: int | None, enrich: bool, refresh: bool) -> None:
        inner = self.backends[backend].inner
        inner.fail_list_on_page, inner.fail_enrich, inner.fail_refresh = list_page, enrich, refresh

    @rule(key=jobs, fail=st.booleans())
    def fail_cancel(self, key: tuple[str, str], fail: bool) -> None:
        ids = self.backends[key[0]].inner.fail_cancel_ids
        if fail:
            ids.add(key[1])
        else:
            ids.discard(key[1])

    # -- the operator ---------------------------------------------------------------------------

    @rule(
        paused=st.sampled_from([False, False, False, True]),
        per_sweep=st.sampled_from([None, None, 0, 1, 2, 100]),
        fraction=st.sampled_from([None, None, 0.2, 0.5, 1.0]),
        floor=st.sampled_from([0, 3]),
        dry_run=st.sampled_from([False, False, False, True]),
    )
    def operate(
        self, paused: bool, per_sweep: int | None, fraction: float | None, floor: int,
        dry_run: bool,
    ) -> None:  # fmt: skip
        """The pause file, the limits and dry run, as an operator would change them."""
        if paused:
            self.pause_file.touch()
        else:
            self.pause_file.unlink(missing_ok=True)
        self.guards = Guards(KEEP, per_sweep, fraction, floor, dry_run)

    @rule(step=st.sampled_from(STEPS))
    def tick(self, step: timedelta) -> None:
        """Time passes, then the scheduled sweep of every backend runs."""
        self.clock.now += step
        self.sweep(None)

    # -- the sweep and its invariants -----------------------------------------------------------

    @rule(subset=st.none() | st.sets(st.sampled_from(sorted(BACKENDS)), min_size=1))
    def sweep_now(self, subset: set[str] | None) -> None:
        """A sweep at once (`reaper run --once`, maybe with --backend)."""
        self.sweep(subset)

    def sweep(self, subset: set[str] | None) -> None:
        names = sorted(subset) if subset else sorted(BACKENDS)
        now = self.clock.now
        self.confirm(names)
        self.recent = {
            k
            for k, at in self.cancelled_at.items()
            if now - at <= WINDOW or k not in self.confirmed
        }
        expected = {n: self.expected_decisions(n, now) for n in names}
        refusals = self.expected_refusals(names, now)
        self.tags_before = {(n, j.id): j.tags for n in names for j in self.stored_jobs(n)}
        paused = self.pause_file.exists()
        for backend in self.backends.values():
            backend.start_sweep()
        self.violations = []
        self.audit_start = self.audit_path.stat().st_size
        env = SweepEnv(self.policies, self.backends, self.audit, self.audit_path, self.guards,
                       self.clock, self.pause_file, confirm_within=CONFIRM_WITHIN)  # fmt: skip
        report = run_sweep(env, names)
        records = read_records(self.audit_path, self.audit_start)
        assert {r["sweep_id"] for r in records} == {report.sweep_id}
        assert not self.violations, self.violations
        for name in names:
            self.check_backend(
                name, report=report, records=records, expected=expected[name],
                refusals=refusals, paused=paused,
            )  # fmt: skip
        self.check_limits(report)
        self.check_exit_code(report, names)
        assert verify_audit(self.audit_path).ok
        for backend in self.backends.values():
            for job_id, outcome in backend.cancels:
                if outcome is CancelOutcome.CANCELLED:
                    self.cancelled_at[(backend.name, job_id)] = now
                    self.confirmed.discard((backend.name, job_id))

    def confirm(self, names: list[str]) -> None:
        """The sweep's follow-up, as the reference sees it: a cancelled job of a swept backend
        that has ended (or is gone) is confirmed, when the backend can be read."""
        for key in self.cancelled_at:
            inner = self.backends[key[0]].inner
            if key[0] not in names or key in self.confirmed or inner.fail_refresh:
                continue
            job = inner.job(key[1])
            if job is None or has_ended(job):
                self.confirmed.add(key)

    def expected_decisions(self, name: str, now: datetime) -> dict[str, RefPolicy]:
        """Job id → its first matching policy, for every job the reference matches now."""
        found = {}
        for job in self.stored_jobs(name):
            if policies := matching(self.refs, job, now):
                found[job.id] = policies[0]
        return found

    def stored_jobs(self, name: str) -> list[Job]:
        inner = self.backends[name].inner
        return [j for n in range(1, self.count + 1) if (j := inner.job(f"j{n}")) is not None]

    def expected_refusals(self, names: Sequence[str], now: datetime) -> set[tuple[str, str]]:
        """(policy, backend) pairs the fraction guard must refuse (docs/config.md limits)."""
        fraction, floor = self.guards.max_match_fraction, self.guards.fraction_guard_floor
        if fraction is None:
            return set()
        refused = set()
        for name in names:
            jobs = self.stored_jobs(name)
            active = sum(1 for j in jobs if group_of(j) is not None)
            counts = Counter(r.name for j in jobs for r in matching(self.refs, j, now))
            refused |= {(p, name) for p, c in counts.items() if c > floor and c > fraction * active}
        return refused

    def check_cancel_call(self, backend: WatchedBackend, job_id: str) -> None:
        """At the moment of a cancel call: the job and the audit file must allow it."""
        problems = []
        key = (backend.name, job_id)
        about = [r for r in read_records(self.audit_path, self.audit_start)
                 if r.get("backend") == backend.name and r.get("job_id") == job_id]  # fmt: skip
        intent = about[-1] if about else {}
        if intent.get("event") != "intent" or intent.get("dry_run") is not False:
            problems.append(f"cancel of {key} without a real intent before it: {intent}")
        job = backend.inner.job(job_id)
        now = self.clock.now
        if job is None or group_of(job) is None or KEEP in job.tags:
            problems.append(f"cancel of {key}: gone, terminal or protected: {job}")
        elif intent.get("policy") not in {r.name for r in matching(self.refs, job, now)}:
            problems.append(f"cancel of {key} by {intent.get('policy')}, which does not match")
        if self.pause_file.exists() or self.guards.dry_run or key in self.recent:
            problems.append(f"cancel of {key} while paused, in dry run, or recently cancelled")
        self.violations.extend(problems)

    def check_backend(
        self,
        name: str,
        *,
        report: SweepReport,
        records: list[dict[str, Any]],
        expected: dict[str, RefPolicy],
        refusals: set[tuple[str, str]],
        paused: bool,
    ) -> None:
        backend = self.backends[name]
        mine = [r for r in records if r.get("backend") == name]
        decided = [r for r in mine if r["event"] in ("intent", "skipped")]
        ids = [r["job_id"] for r in decided]
        assert len(ids) == len(set(ids)), f"a job decided twice on {name}: {ids}"
        real = [r for r in mine if r["event"] == "intent" and not r["dry_run"]]
        assert len(backend.cancels) == len(real), (backend.cancels, real)
        assert backend.inner.mutating_calls - backend.mutating_before == len(backend.cancels)
        if paused or self.guards.dry_run:
            assert backend.cancels == [], f"cancel calls on {name} in dry run or while paused"
        if backend.listing_failed:
            assert backend.cancels == [], f"cancel calls on {name} after a failed listing"
            assert name in (report.backends[name].error or "")
            assert set(ids) <= set(expected)
            assert {r["cause"] for r in decided} <= {"protected", "listing_incomplete"}
            return
        assert set(ids) == set(expected), (name, sorted(ids), sorted(expected))
        for record in decided:
            policy = expected[record["job_id"]]
            assert record["policy"] == policy.name, (record, policy.name)
            allowed = self.allowed_outcomes(name, record, policy, refusals, paused)
            outcome = record.get("cause", "intent")
            assert outcome in allowed, (record["job_id"], outcome, allowed)

    def allowed_outcomes(
        self,
        name: str,
        record: dict[str, Any],
        policy: RefPolicy,
        refusals: set[tuple[str, str]],
        paused: bool,
    ) -> set[str]:
        """What may become of a job the reference matches, in decide()'s rule order."""
        backend, job_id = self.backends[name], record["job_id"]
        listed = self.listed_tags(record)
        if KEEP in listed:
            return {"protected"}
        if (policy.name, name) in refusals:
            return {"fraction_guard"}
        if (name, job_id) in self.recent:
            return {"recently_cancelled"}
        allowed = {"paused"} if paused else {"intent"}
        if self.guards.max_cancels_per_sweep is not None or "max_cancels" in policy.mapping:
            allowed.add("limit")
        if not paused and backend.inner.fail_refresh:
            allowed = (allowed - {"intent"}) | {"recheck_failed"}
        if not paused and job_id in backend.raced:
            allowed |= {"changed", "protected"}
        return allowed

    def listed_tags(self, record: dict[str, Any]) -> Mapping[str, str]:
        """The job's tags as listed this sweep: the skip cause `protected` comes from them."""
        return self.tags_before.get((record["backend"], record["job_id"]), {})

    def check_limits(self, report: SweepReport) -> None:
        # The pause file holds would-be cancels after the limits have counted them (decide rule 6).
        cancels = report.plan.cancels() + report.plan.skips(SkipCause.PAUSED)
        per_policy = Counter(d.policy.name for d in cancels)
        maximum = self.guards.max_cancels_per_sweep
        calls = sum(len(backend.cancels) for backend in self.backends.values())
        assert maximum is None or len(cancels) <= maximum
        assert maximum is None or calls <= maximum
        for policy in self.policies:
            assert policy.max_cancels is None or per_policy[policy.name] <= policy.max_cancels
        for decision in report.plan.skips(SkipCause.LIMIT):
            cap = decision.policy.max_cancels
            assert (cap is not None and per_policy[decision.policy.name] == cap) or (
                maximum is not None and len(cancels) == maximum
            ), f"{decision.job.id} skipped for a limit that was not reached"

    def check_exit_code(self, report: SweepReport, names: Sequence[str]) -> None:
        """1 when a listing, a re-check or a cancel failed; else 3 when a guard refused."""
        failed = [n for n in names if self.backends[n].listing_failed]
        failed += [n for n in names if self.backends[n].refresh_failed]
        for name in failed:
            assert name in (report.backends[name].error or ""), report.backends[name]
        outcomes = [outcome for b in self.backends.values() for _, outcome in b.cancels]
        cancel_failed = CancelOutcome.FAILED in outcomes
        if failed or cancel_failed:
            assert report.exit_code is ExitCode.FAILED, (failed, report.exit_code)
        else:
            refused = ExitCode.REFUSED if report.plan.refused else ExitCode.OK
            assert report.exit_code is refused, report.exit_code


@pytest.fixture
def quiet_reaper(caplog: pytest.LogCaptureFixture) -> None:
    """The injected failures are logged at ERROR thousands of times; keep them out of memory."""
    caplog.set_level(logging.CRITICAL, logger="reaper")


@pytest.mark.usefixtures("quiet_reaper")
def test_sweep_invariants_hold_over_any_history() -> None:
    run_state_machine_as_test(
        SweepMachine, settings=settings(settings.default, stateful_step_count=25)
    )


@pytest.mark.slow
@pytest.mark.usefixtures("slow_run", "quiet_reaper")
def test_sweep_invariants_hold_over_any_history_slow() -> None:
    run_state_machine_as_test(
        SweepMachine, settings=settings(settings.get_profile("slow"), stateful_step_count=25)
    )


def test_memory_backend_takes_concurrent_cancels() -> None:
    """The sweep cancels up to 8 jobs of one backend at once. MemoryBackend used to land two
    cancels in two threads at once and raise KeyError from the second; a tiny thread switch
    interval makes that interleaving likely within a few rounds."""
    jobs = [Job("m", "tapis", f"j{i}", "n", "q", "RUNNING", Phase.UNKNOWN, T0) for i in range(64)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(50):
            backend = MemoryBackend("m", "tapis", jobs, clock=lambda: T0)
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(backend.cancel, jobs, itertools.repeat("r")))
            assert {r.outcome for r in results} == {CancelOutcome.CANCELLED}
            assert backend.mutating_calls == len(jobs)
    finally:
        sys.setswitchinterval(interval)
