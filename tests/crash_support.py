"""Support for tests/test_crash_sweep.py: a world of jobs to reap, a spy that checks the audit log
at the moment each cancel call reaches an emulator, and a `reaper run --once` child killed with
SIGKILL at a chosen moment.

The spy is the strongest form of the operators' invariant "no job is cancelled without an
`intent` record before it": the emulators run in the test process, so when a mutating request
arrives, the spy reads the audit file as it is at that instant and notes whether the intent
was already there. The child writes and fsyncs the intent before it sends the request, so the
intent must be visible.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from reaper.audit.reader import Record, decode_line, unresolved_intents
from reaper.emulators.base import JobSpec, Request, Response
from reaper.emulators.world import BACKENDS, World, child_environ
from reaper.jobs import Phase, phase_of

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600.0

# `doomed-*` jobs run past the cap and must be cancelled; `watched-*` jobs match only a dry-run
# policy and `healthy-*` jobs match nothing: neither may ever be touched.
POLICIES_YAML = """\
policies:
  - name: crash-runtime-cap
    description: crash-test jobs may not run longer than an hour
    names: ["doomed-*"]
    max_runtime: 1h
    dry_run: false
  - name: crash-observe
    description: only observed, never cancelled
    names: ["watched-*"]
    max_runtime: 1h
    dry_run: true
"""
QUEUES = {"batch": "cpu", "hpc": "normal", "inference": ""}
DOOMED_ACTIVE = 15  # per backend, topped up before each round: 45 cancels per full sweep
HEALTHY = 20  # per backend; keeps the doomed under the fraction guard's 0.5
WATCHED = 2  # per backend

# Requests that change a job, per backend name (the emulators' `mutating_calls`), and the subset
# that ends it: Tapis' sendEvent only records the reason on the job.
MUTATING = {
    "batch": frozenset({"TerminateJob", "CancelJob", "TerminateJobs"}),
    "hpc": frozenset({"cancelJob", "sendEvent"}),
    "inference": frozenset({"CancelJob"}),
}
ENDING = {**MUTATING, "hpc": frozenset({"cancelJob"})}


class AuditTail:
    """The audit file as it grows, read incrementally: each line's record (None for a fragment),
    and the (backend, job_id) of every non-dry-run intent so far. Thread-safe: the emulators'
    handler threads and the test read it concurrently."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines: list[Record | None] = []  # index = line number - 1
        self._intents: set[tuple[str, str]] = set()
        self._offset = 0
        self._carry = b""  # an unterminated last line, completed by a later read
        self._lock = threading.Lock()

    def refresh(self) -> int:
        """Read what was appended since the last call; returns the number of complete lines."""
        with self._lock:
            try:
                with self.path.open("rb") as file:
                    file.seek(self._offset)
                    data = file.read()
            except FileNotFoundError:
                return 0
            self._offset += len(data)
            *complete, self._carry = (self._carry + data).split(b"\n")
            for raw in complete:
                self._add(decode_line(raw))
            return len(self.lines)

    def _add(self, record: Record | None) -> None:
        self.lines.append(record)
        if record is not None and record.get("event") == "intent" and not record.get("dry_run"):
            self._intents.add((str(record.get("backend")), str(record.get("job_id"))))

    def has_intent(self, backend: str, job_id: str) -> bool:
        with self._lock:
            return (backend, job_id) in self._intents

    def records_since(self, line_count: int) -> list[Record]:
        """Records on the lines after the first `line_count` lines, fragments left out."""
        with self._lock:
            return [r for r in self.lines[line_count:] if r is not None]


@dataclass(frozen=True)
class CancelCall:
    """One mutating request as an emulator received it."""

    backend: str
    job_id: str
    operation: str
    line: int  # complete lines in the audit file when the request arrived
    announced: bool  # a non-dry-run intent for this job was in the file by then


def spy_on_cancels(world: World, tail: AuditTail) -> list[CancelCall]:
    """Wrap every emulator's `dispatch` so that each mutating request is recorded, with whether
    its intent was already in the audit file; returns the (growing) list of calls."""
    calls: list[CancelCall] = []
    for name, emulator in world.emulators.items():
        spied = _spy(name, emulator.route, emulator.dispatch, tail, calls)
        emulator.dispatch = spied  # type: ignore[method-assign,assignment]
    return calls


def _spy(
    name: str,
    route: Callable[[Request], tuple[str, Any]],
    dispatch: Callable[[Request], Response],
    tail: AuditTail,
    calls: list[CancelCall],
) -> Callable[[Request], Response]:
    def spy(request: Request) -> Response:
        operation = route(request)[0]
        if operation in MUTATING[name]:
            line = tail.refresh()
            for job_id in job_ids_of(name, request):
                announced = tail.has_intent(name, job_id)
                calls.append(CancelCall(name, job_id, operation, line, announced))
        return dispatch(request)

    return spy


def job_ids_of(backend: str, request: Request) -> list[str]:
    """The job ids a mutating request names: AWS in the JSON body (`jobId`, or `jobs` for
    TerminateJobs; a body cut short by the kill names none, and the emulator rejects it), Tapis
    and Sutro in the path."""
    if BACKENDS[backend] == "aws_batch":
        try:
            body = json.loads(request.body)
        except ValueError:
            return []
        ids = (body.get("jobs") or [body.get("jobId")]) if isinstance(body, dict) else []
        return [i for i in ids if isinstance(i, str)]
    parts = [unquote(p) for p in request.path.split("/") if p]
    return [parts[2]] if BACKENDS[backend] == "tapis" else [parts[-1]]


@dataclass
class JobPool:
    """The jobs of one world, by backend: doomed (ever more, topped up) and spared."""

    world: World
    doomed: dict[str, list[str]] = field(default_factory=dict)
    spared: dict[str, list[str]] = field(default_factory=dict)
    _serial: int = 0

    def seed_spared(self) -> None:
        now = time.time()
        for name in BACKENDS:
            specs = [_running(f"healthy-{i}", name, now, 0.5 * HOUR) for i in range(HEALTHY)]
            specs += [_running(f"watched-{i}", name, now, 2 * HOUR) for i in range(WATCHED)]
            self.spared[name] = [self.world.emulators[name].add_job(s) for s in specs]

    def top_up(self) -> None:
        """Add doomed jobs until each backend has DOOMED_ACTIVE active ones."""
        now = time.time()
        for name in BACKENDS:
            ids = self.doomed.setdefault(name, [])
            for _ in range(DOOMED_ACTIVE - sum(self.is_active(name, i) for i in ids)):
                self._serial += 1
                spec = _running(f"doomed-{self._serial}", name, now, 2 * HOUR)
                ids.append(self.world.emulators[name].add_job(spec))

    def is_active(self, backend: str, job_id: str) -> bool:
        status = self.world.emulators[backend].status_of(job_id)
        return status is not None and phase_of(BACKENDS[backend], status) is not Phase.TERMINAL


def _running(name: str, backend: str, now: float, runtime_s: float) -> JobSpec:
    return JobSpec(name, "RUNNING", now - runtime_s - 60, now - runtime_s, queue=QUEUES[backend])


class Anchor(StrEnum):
    """What the kill's delay counts from."""

    LAUNCH = "launch"  # imports, config, backends, reconciliation
    FIRST_RECORD = "first record"  # this child's first line: a reconciled result or sweep_start
    SWEEP_START = "sweep_start"  # listing and deciding
    INTENT = "intent"  # the intent → cancel → result window


# (anchor, weight, delay range in seconds): most kills aim at the cancel window.
KILL_PLAN: tuple[tuple[Anchor, float, tuple[float, float]], ...] = (
    (Anchor.LAUNCH, 2, (0.0, 1.2)),
    (Anchor.FIRST_RECORD, 1, (0.0, 0.05)),
    (Anchor.SWEEP_START, 2, (0.0, 0.2)),
    (Anchor.INTENT, 5, (0.0, 0.35)),
)


def pick_kill(rng: random.Random) -> tuple[Anchor, float]:
    """An anchor drawn by weight, and a delay drawn from its range."""
    anchor, _, (low, high) = rng.choices(KILL_PLAN, weights=[w for _, w, _ in KILL_PLAN])[0]
    return anchor, rng.uniform(low, high)


class KillPhase(StrEnum):
    """Where a kill landed, read from what the child had written."""

    STARTUP = "start-up, nothing written"
    RECONCILE = "reconciling, before sweep_start"
    LISTING = "after sweep_start, before any intent"
    WINDOW = "between an intent and its result"
    CANCELLING = "among the cancels, no intent open"
    NOT_KILLED = "finished before the kill"


@dataclass(frozen=True)
class Round:
    start_line: int  # complete lines in the audit file before the child started
    anchor: Anchor
    returncode: int
    written: list[Record]  # what the child wrote

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL

    @property
    def reached_sweep(self) -> bool:
        return any(r.get("event") == "sweep_start" for r in self.written)

    @property
    def phase(self) -> KillPhase:
        if not self.killed:
            return KillPhase.NOT_KILLED
        if unresolved_intents(self.written):
            return KillPhase.WINDOW
        if any(r.get("event") == "intent" for r in self.written):
            return KillPhase.CANCELLING
        if self.reached_sweep:
            return KillPhase.LISTING
        return KillPhase.RECONCILE if self.written else KillPhase.STARTUP


def run_argv(world: World) -> list[str]:
    return [sys.executable, "-m", "reaper", "run", "--once", "--config", str(world.config_path)]


def child_env(world: World) -> dict[str, str]:
    return child_environ(world) | {"PYTHONPATH": str(REPO)}


def run_and_kill(
    world: World, tail: AuditTail, anchor: Anchor, delay: float, stderr: Path
) -> Round:
    """Start `reaper run --once`, wait for `anchor` (or the child's exit), sleep `delay`, SIGKILL
    it if it still runs, and reap it."""
    start = tail.refresh()
    with stderr.open("wb") as err, _child(world, err) as child:
        if _wait_for(anchor, child, tail, start):
            time.sleep(delay)
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
        returncode = child.wait(timeout=60)
    tail.refresh()
    return Round(start, anchor, returncode, tail.records_since(start))


def _child(world: World, err: Any) -> subprocess.Popen[bytes]:
    argv, env = run_argv(world), child_env(world)
    return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)


def _wait_for(anchor: Anchor, child: subprocess.Popen[bytes], tail: AuditTail, start: int) -> bool:
    """True once `anchor` happened, False if the child exited first (or after 30 s, True)."""
    if anchor is Anchor.LAUNCH:
        return True
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        tail.refresh()
        if any(_is_anchor(anchor, r) for r in tail.records_since(start)):
            return True
        if child.poll() is not None:
            return False
        time.sleep(0.002)
    return True


def _is_anchor(anchor: Anchor, record: Mapping[str, Any]) -> bool:
    return anchor is Anchor.FIRST_RECORD or record.get("event") == str(anchor)


def run_to_completion(world: World) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        run_argv(world), env=child_env(world), capture_output=True, timeout=120, check=False
    )
