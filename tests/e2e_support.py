"""Shared helpers of the end-to-end tests: a small seeded world on the three emulators, the CLI
run in-process with its output captured, and readers of the audit log and the emulators' state.

Job ids are readable (`batch-long-1`): the emulators accept any id, and a failing assertion then
names the job. The same names are seeded on every backend, with that backend's native statuses."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reaper.backends.base import Backend, CancelResult
from reaper.cli import main
from reaper.emulators.base import EmulatorServer, JobSpec, Knobs, Request, Route
from reaper.emulators.world import World, child_environ, emulated_world
from reaper.jobs import Job

REPO_ROOT = Path(__file__).resolve().parent.parent
HOUR = 3600.0
DAY = 24 * HOUR
NAMES = ("batch", "hpc", "inference")  # the backends of `emulated_world`
TAGGED = ("batch", "hpc")  # Sutro jobs carry no tags, so nothing there can be protected

# Native statuses per backend name.
RUNNING = {"batch": "RUNNING", "hpc": "RUNNING", "inference": "RUNNING"}
PENDING = {"batch": "RUNNABLE", "hpc": "QUEUED", "inference": "QUEUED"}
FINISHED = {"batch": "SUCCEEDED", "hpc": "FINISHED", "inference": "SUCCEEDED"}
# What a cancelled job ends as: AWS Batch marks terminated jobs FAILED.
CANCELLED = {"batch": "FAILED", "hpc": "CANCELLED", "inference": "CANCELLED"}

POLICIES = """\
policies:
  - name: runtime-cap
    description: long jobs may not run longer than 2 hours
    names: ["long-*"]
    statuses: [running]
    max_runtime: 2h
    exclude:
      names: ["*-nightly"]
    reason: "{policy}: {job_name} ran {runtime} on {backend}, the cap is {max_runtime}"

  - name: stale-queue
    description: stale jobs may not wait longer than 2 days
    names: ["stale-*"]
    max_pending: 2d
"""

# The standard mix, per backend: what the policies above must cancel, protect and leave alone.
TO_CANCEL = ("long-1", "long-2", "stale-1")
PROTECTED = ("long-kept",)  # on TAGGED backends only
UNTOUCHED = ("long-nightly", "long-young", "long-done", "stale-young", "other-1", "other-2")


def job_id(backend: str, name: str) -> str:
    return f"{backend}-{name}"


def running(backend: str, name: str, hours: float, now: float, **tags: str) -> JobSpec:
    """A job of `backend` running for `hours` (submitted ten minutes before it started)."""
    started = now - hours * HOUR
    return JobSpec(name, RUNNING[backend], started - 600, started, queue="gpu",
                   tags=dict(tags), id=job_id(backend, name))  # fmt: skip


def pending(backend: str, name: str, hours: float, now: float) -> JobSpec:
    return JobSpec(name, PENDING[backend], now - hours * HOUR, queue="cpu",
                   id=job_id(backend, name))  # fmt: skip


def finished(backend: str, name: str, hours: float, now: float) -> JobSpec:
    started = now - hours * HOUR
    return JobSpec(name, FINISHED[backend], started - 600, started, queue="gpu",
                   id=job_id(backend, name))  # fmt: skip


def standard_jobs(backend: str, now: float) -> list[JobSpec]:
    """The mix of TO_CANCEL, PROTECTED and UNTOUCHED jobs of one backend."""
    jobs = [
        running(backend, "long-1", 5, now),
        running(backend, "long-2", 3, now),
        running(backend, "long-nightly", 6, now),  # excluded by name
        running(backend, "long-young", 1, now),  # under max_runtime
        finished(backend, "long-done", 8, now),  # terminal
        pending(backend, "stale-1", 3 * 24, now),
        pending(backend, "stale-young", 2, now),
        running(backend, "other-1", 9, now),  # no policy names it
        running(backend, "other-2", 9, now),
    ]
    if backend in TAGGED:
        jobs.append(running(backend, "long-kept", 6, now, **{"reaper:keep": "until friday"}))
    return jobs


def standard_seeds(now: float | None = None) -> dict[str, list[JobSpec]]:
    moment = time.time() if now is None else now
    return {backend: standard_jobs(backend, moment) for backend in NAMES}


def same_knobs(**overrides: Any) -> dict[str, Knobs]:
    """The same knobs (default: none) on every emulator."""
    return {backend: Knobs(**overrides) for backend in NAMES}


@contextmanager
def standard_world(
    folder: Path,
    *,
    seeds: Mapping[str, list[JobSpec]] | None = None,
    policies_yaml: str = POLICIES,
    config: Mapping[str, Any] | None = None,
    knobs: Mapping[str, Knobs] | None = None,
) -> Iterator[World]:
    """`emulated_world` with the standard mix and policies unless told otherwise."""
    with emulated_world(
        folder,
        seeds=standard_seeds() if seeds is None else seeds,
        policies_yaml=policies_yaml,
        config=config,
        knobs=knobs,
    ) as world:
        yield world


# -- running the CLI ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """`reaper.cli.main(argv)` in this process, with stdout and stderr captured."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return CliResult(code, out.getvalue(), err.getvalue())


def run_once(world: World, *extra: str) -> CliResult:
    return run_cli("run", "--once", "--config", str(world.config_path), *extra)


def run_subprocess(world: World, *argv: str) -> CliResult:
    """`python -m reaper ARGV` in a child process that has only the world's credentials."""
    env = child_environ(world)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "reaper", *argv],
        env=env,
        cwd=world.folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def edit_config(world: World, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrite the world's reaper.yaml through `change` (e.g. to delete a key)."""
    data = yaml.safe_load(world.config_path.read_text(encoding="utf-8"))
    change(data)
    world.config_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


# -- reading the results --------------------------------------------------------------------------
def audit_records(world: World) -> list[dict[str, Any]]:
    if not world.audit_path.exists():
        return []
    lines = world.audit_path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def last_sweep(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the newest sweep."""
    sweep_id = next(r["sweep_id"] for r in reversed(records) if r["event"] == "sweep_start")
    return [r for r in records if r.get("sweep_id") == sweep_id]


def job_keys(records: Sequence[dict[str, Any]], event: str, **where: Any) -> set[tuple[str, str]]:
    """(backend, job_id) of the `event` records whose fields equal `where`."""
    return {
        (r["backend"], r["job_id"])
        for r in records
        if r["event"] == event and all(r.get(k) == v for k, v in where.items())
    }


def keys(names: Sequence[str], backends: Sequence[str] = NAMES) -> set[tuple[str, str]]:
    """(backend, job_id) of the standard job `names` on `backends`."""
    return {(b, job_id(b, n)) for b in backends for n in names}


def expected_cancels(backends: Sequence[str] = NAMES) -> set[tuple[str, str]]:
    return keys(TO_CANCEL, backends)


def expected_protected(backends: Sequence[str] = NAMES) -> set[tuple[str, str]]:
    return keys(PROTECTED, [b for b in backends if b in TAGGED])


def mutating_calls(world: World) -> dict[str, int]:
    return {name: emulator.mutating_calls() for name, emulator in world.emulators.items()}


def status_of(world: World, backend: str, name: str) -> str | None:
    return world.emulators[backend].status_of(job_id(backend, name))


def seeded_statuses(world: World, seeds: Mapping[str, list[JobSpec]]) -> dict[str, str | None]:
    """Job id → current status, for every seeded job."""
    return {
        str(spec.id): world.emulators[backend].status_of(str(spec.id))
        for backend, specs in seeds.items()
        for spec in specs
    }


# -- a deterministic seam between plan and act ----------------------------------------------------
class FinishBeforeRecheck:
    """A backend wrapper: the first time the sweep re-checks `target`, the job is first set to
    `status` on its emulator, as if it had finished between listing and acting. Everything else
    goes to the real backend, which then reads the new state through the real client."""

    def __init__(self, inner: Backend, emulator: EmulatorServer, target: str, status: str) -> None:
        self.inner, self.emulator, self.target, self.status = inner, emulator, target, status
        self.name, self.type = inner.name, inner.type
        self.fired = False

    def refresh(self, job: Job) -> Job | None:
        self._finish_first(job)
        return self.inner.refresh(job)

    def refresh_many(self, jobs: Sequence[Job]) -> list[Job | None]:
        """The bulk re-check (reaper.engine.sweep.BulkBackend), where the inner backend has one."""
        for job in jobs:
            self._finish_first(job)
        return self.inner.refresh_many(jobs)  # type: ignore[no-any-return]

    def _finish_first(self, job: Job) -> None:
        if job.id == self.target and not self.fired:
            self.fired = True
            self.emulator.set_status(job.id, self.status)

    def cancel(self, job: Job, reason: str) -> CancelResult:
        return self.inner.cancel(job, reason)

    def __getattr__(self, name: str) -> Any:  # list_active, enrich, close
        return getattr(self.inner, name)


@contextmanager
def failing_requests(emulator: EmulatorServer, operation: str, job: str) -> Iterator[None]:
    """While open, every `operation` request about `job` (named in its path) gets a 5xx, as
    many times as it is retried; every other request is served as usual."""
    route = emulator.route

    def failing_route(request: Request) -> Route:
        name, handler = route(request)
        if name == operation and job in request.path:
            return name, emulator.error_response
        return name, handler

    emulator.route = failing_route  # type: ignore[method-assign]
    try:
        yield
    finally:
        del emulator.route
