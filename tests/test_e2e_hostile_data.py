"""End to end, through `reaper run --once` on the emulators: the data real backends (and a bad
NTP day) produce must never cause a wrong cancel (issue 10's cases 1-3 and 5-8; the array jobs
of case 4 are in tests/test_aws_array_jobs.py, the clock step of case 9 in
tests/test_daemon_clock_step.py). In every test the job that must not go stays, while the other
jobs of the same sweep are handled normally."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import reaper.engine.runtime
from reaper.emulators.base import DROP, JobSpec, Knobs
from reaper.errors import ExitCode
from tests.e2e_support import (
    CANCELLED,
    DAY,
    HOUR,
    NAMES,
    PENDING,
    RUNNING,
    audit_records,
    job_id,
    job_keys,
    last_sweep,
    pending,
    run_once,
    running,
    standard_world,
    status_of,
)

POLICIES = """\
policies:
  - name: runtime-cap
    names: ["long-*", "odd-*"]
    max_runtime: 2h
  - name: stale-queue
    names: ["stale-*", "nostart-*"]
    max_pending: 2d
"""


def controls(backend: str, now: float) -> list[JobSpec]:
    """What every sweep must still do: cancel long-1 (runtime) and stale-1 (pending), leave
    the others alone; enough unmatched jobs that no policy nears the fraction guard."""
    return [
        running(backend, "long-1", 5, now),
        pending(backend, "stale-1", 3 * 24, now),
        *(running(backend, f"other-{i}", 9, now) for i in range(6)),
    ]


def cancelled(records: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return job_keys(last_sweep(records), "result", outcome="cancelled")


def control_keys(backends: tuple[str, ...] = NAMES) -> set[tuple[str, str]]:
    return {(b, job_id(b, n)) for b in backends for n in ("long-1", "stale-1")}


def odd(backend: str, name: str, status: str, created: float, **extra: Any) -> JobSpec:
    return JobSpec(name, status, created, None, queue="gpu", id=job_id(backend, name),
                   extra=dict(extra))  # fmt: skip


def acted_on(records: list[dict[str, Any]], backend: str, name: str) -> list[str]:
    """The events of the last sweep about one job that announce or record a cancel."""
    key = job_id(backend, name)
    return [
        r["event"]
        for r in last_sweep(records)
        if r.get("job_id") == key and r["event"] in ("intent", "result")
    ]


def assert_untouched(world: Any, backend: str, name: str, status: str) -> None:
    records = audit_records(world)
    assert acted_on(records, backend, name) == [], (backend, name)
    assert status_of(world, backend, name) == status, (backend, name)


# -- case 1 ----------------------------------------------------------------------------------
def test_case1_a_running_job_without_a_start_time_is_not_pending(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: [*controls(b, now), odd(b, "nostart-1", RUNNING[b], now - 3 * DAY)] for b in NAMES}
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        assert cancelled(audit_records(world)) == control_keys()
        for backend in NAMES:
            assert_untouched(world, backend, "nostart-1", RUNNING[backend])


# -- case 2 ----------------------------------------------------------------------------------
def test_case2_impossible_times_are_not_believed(tmp_path: Path) -> None:
    now = time.time()
    hour_ago = now - HOUR
    seeds = {b: controls(b, now) for b in NAMES}
    seeds["batch"] += [
        # startedAt in seconds instead of milliseconds (January 1970), and 0
        odd("batch", "odd-seconds", "RUNNING", hour_ago, startedAt=int(now - 1800)),
        odd("batch", "odd-zero", "RUNNING", hour_ago, startedAt=0),
    ]
    seeds["hpc"] += [
        # started three days before it was created
        odd("hpc", "odd-early", "RUNNING", hour_ago,
            remoteStarted=datetime.fromtimestamp(now - 3 * DAY, UTC).isoformat()),
    ]  # fmt: skip
    seeds["inference"] += [
        odd("inference", "odd-zero", "RUNNING", hour_ago, datetime_started=0),
        # milliseconds where seconds belong: tens of thousands of years from now
        odd("inference", "odd-ms", "RUNNING", hour_ago, datetime_started=now * 1000),
    ]
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        assert cancelled(audit_records(world)) == control_keys()
        for backend, name in [("batch", "odd-seconds"), ("batch", "odd-zero"),
                              ("hpc", "odd-early"), ("inference", "odd-zero"),
                              ("inference", "odd-ms")]:  # fmt: skip
            assert_untouched(world, backend, name, "RUNNING")
        assert "implausible" in result.err or "before created_at" in result.err


# -- case 3 ----------------------------------------------------------------------------------
def test_case3_one_odd_record_is_one_skipped_job(tmp_path: Path) -> None:
    now = time.time()
    started = now - 5 * HOUR
    seeds = {b: controls(b, now) for b in NAMES}
    seeds["inference"] += [
        odd("inference", "odd-inf", "RUNNING", started, datetime_started=math.inf),
        odd("inference", "odd-huge", "RUNNING", started, datetime_started=1e20),
        odd("inference", "odd-nan", "RUNNING", started, datetime_created=math.nan),
    ]
    seeds["batch"] += [odd("batch", "odd-nocreated", "RUNNING", started, createdAt=DROP,
                           startedAt=int(started * 1000))]  # fmt: skip
    seeds["hpc"] += [
        odd(
            "hpc",
            "odd-tags",
            "RUNNING",
            started,
            tags=[1, 2],
            remoteStarted=datetime.fromtimestamp(started, UTC).isoformat(),
        )
    ]
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        records = audit_records(world)
        sweep = last_sweep(records)
        assert sweep[-1]["event"] == "sweep_end"
        assert cancelled(records) == control_keys()
        bad = job_keys(sweep, "skipped", cause="bad_record")
        odd_jobs = [("inference", "odd-inf"), ("inference", "odd-huge"), ("inference", "odd-nan"),
                    ("batch", "odd-nocreated"), ("hpc", "odd-tags")]  # fmt: skip
        assert bad == {(b, job_id(b, n)) for b, n in odd_jobs}
        for backend, name in odd_jobs:
            assert_untouched(world, backend, name, "RUNNING")
        skipped = [r for r in sweep if r["event"] == "skipped" and r["cause"] == "bad_record"]
        assert all(r["field"] and r["value"] for r in skipped)
        assert all(len(r["value"]) <= 80 for r in skipped)
        # every intent has its result: nothing left open
        intents = job_keys(sweep, "intent")
        assert intents == job_keys(sweep, "result")
        # still counted as active: each bad record is one more active job in sweep_end
        assert sweep[-1]["backends"]["inference"]["active"] == 8 + 3


def test_case3_a_terminatejobs_answer_of_the_wrong_shape_closes_every_intent(
    tmp_path: Path,
) -> None:
    now = time.time()
    seeds = {b: controls(b, now) for b in NAMES}
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        # TerminateJobs answering strings where {job, code, message} objects belong
        world.emulators["batch"].raw_terminate_errors = ["boom", 7]  # type: ignore[attr-defined]
        run_once(world)
        # The answer cannot be read, so whether the calls applied is unknown: the jobs are re-read
        # (issue 11's honest outcomes) and each result says what the re-read showed — the
        # emulator applied the terminate, so `cancelled`; never an exception, never an open intent.
        sweep = last_sweep(audit_records(world))
        assert sweep[-1]["event"] == "sweep_end"
        assert job_keys(sweep, "intent") == job_keys(sweep, "result")
        batch = {(b, j) for b, j in control_keys(("batch",))}
        emulator = world.emulators["batch"]
        for outcome in ("cancelled", "failed"):
            for _, job in job_keys(sweep, "result", outcome=outcome) & batch:
                ended = emulator.status_of(job) in ("SUCCEEDED", "FAILED")
                assert ended == (outcome == "cancelled"), (job, outcome)
        assert {k for k in job_keys(sweep, "result") if k[0] == "batch"} == batch


# -- case 5 ----------------------------------------------------------------------------------
def test_case5_repeated_pages_do_not_get_past_the_fraction_guard(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: controls(b, now) for b in ("hpc", "inference")}
    # Two healthy jobs first in the table (the first page), then ten doomed ones.
    seeds["batch"] = [running("batch", f"other-{i}", 1, now) for i in range(2)]
    seeds["batch"] += [running("batch", f"long-{i}", 5, now) for i in range(10)]
    knobs = {"batch": Knobs(page_size=2, repeat_pages=9)}
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES, knobs=knobs) as world:
        result = run_once(world)
        assert result.code == ExitCode.FAILED, result.out + result.err
        records = audit_records(world)
        assert cancelled(records) == control_keys(("hpc", "inference"))
        for i in range(10):
            assert_untouched(world, "batch", f"long-{i}", "RUNNING")
        end = last_sweep(records)[-1]
        assert "no new job id" in end["backends"]["batch"]["error"]
        # Without the repeats, the same jobs are refused by the fraction guard (10 of 12).
        world.emulators["batch"].knobs.repeat_pages = 0
        result = run_once(world)
        assert result.code == ExitCode.REFUSED, result.out + result.err
        sweep = last_sweep(audit_records(world))
        assert len(job_keys(sweep, "skipped", cause="fraction_guard")) == 10
        assert sweep[-1]["backends"]["batch"]["active"] == 12


# -- case 6 ----------------------------------------------------------------------------------
def test_case6_listings_that_never_end_fail_and_stop(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: controls(b, now) for b in NAMES}
    knobs = {"batch": Knobs(page_size=3, endless_pages=True),
             "inference": Knobs(page_size=3, endless_pages=True)}  # fmt: skip
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES, knobs=knobs) as world:
        config = world.config_path.read_text(encoding="utf-8")
        # AWS list calls may answer empty pages with a nextToken: only max_pages ends them.
        world.config_path.write_text(
            config.replace("region: us-east-1", "region: us-east-1\n    max_pages: 40"),
            encoding="utf-8",
        )
        started = time.monotonic()
        result = run_once(world)
        assert time.monotonic() - started < 60
        assert result.code == ExitCode.FAILED, result.out + result.err
        records = audit_records(world)
        assert cancelled(records) == control_keys(("hpc",))
        for backend in ("batch", "inference"):
            assert_untouched(world, backend, "long-1", "RUNNING")
            assert_untouched(world, backend, "stale-1", PENDING[backend])
        sweep = last_sweep(records)
        errors = {b: sweep[-1]["backends"][b]["error"] for b in ("batch", "inference")}
        assert "max_pages=40" in errors["batch"]
        assert "empty page" in errors["inference"]
        # Sutro's real pages were read before the endless ones: their matches are skipped. AWS
        # failed in its first stream (SUBMITTED), before the jobs that would match were listed.
        assert job_keys(sweep, "skipped", cause="listing_incomplete") == {
            ("inference", job_id("inference", n)) for n in ("long-1", "stale-1")
        }


# -- case 7 ----------------------------------------------------------------------------------
def test_case7_a_server_clock_far_from_the_hosts_blocks_that_backend(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: controls(b, now) for b in NAMES}
    knobs = {"inference": Knobs(clock_offset_s=-13 * HOUR)}
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES, knobs=knobs) as world:
        result = run_once(world)
        assert result.code == ExitCode.FAILED, result.out + result.err
        records = audit_records(world)
        assert cancelled(records) == control_keys(("batch", "hpc"))
        sweep = last_sweep(records)
        assert job_keys(sweep, "skipped", cause="clock_skew") == {
            ("inference", job_id("inference", n)) for n in ("long-1", "stale-1")
        }
        error = sweep[-1]["backends"]["inference"]["error"]
        assert "13h00m behind" in error and "max_clock_skew 2m" in error
        assert "13h00m behind" in result.err
        assert abs(sweep[-1]["backends"]["inference"]["clock_skew_s"] + 13 * HOUR) < 60
        assert abs(sweep[-1]["backends"]["batch"]["clock_skew_s"]) < 60


def test_case7_a_host_clock_13h_ahead_cancels_nothing_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `faketime -f +13h reaper run --once` does, with the offset injected: every job ran
    for an hour, and by the host's clock for 14."""
    now = time.time()
    seeds = {b: [running(b, f"long-{i}", 1, now) for i in range(3)] for b in NAMES}
    for b in NAMES:
        seeds[b] += [running(b, f"other-{i}", 1, now) for i in range(6)]
    real = reaper.engine.runtime.utc_now
    # faketime moves every clock of the process: the sweep's and the host's
    for clock in ("utc_now", "host_now"):
        monkeypatch.setattr(reaper.engine.runtime, clock, lambda: real() + timedelta(hours=13))
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        result = run_once(world)
        assert result.code == ExitCode.FAILED, result.out + result.err
        records = audit_records(world)
        assert cancelled(records) == set()
        sweep = last_sweep(records)
        assert len(job_keys(sweep, "skipped", cause="clock_skew")) == 9
        for backend in NAMES:
            assert "ahead of" not in sweep[-1]["backends"][backend]["error"]
            assert "behind the host's" in sweep[-1]["backends"][backend]["error"]
            for i in range(3):
                assert status_of(world, backend, f"long-{i}") == "RUNNING"
        assert result.err.count("max_clock_skew") >= 3


# -- case 8 ----------------------------------------------------------------------------------
def test_case8_a_tapis_job_archiving_its_outputs_is_not_running(tmp_path: Path) -> None:
    now = time.time()
    seeds = {b: controls(b, now) for b in NAMES}
    archiving = running("hpc", "long-archiving", 5, now)
    seeds["hpc"].append(JobSpec(archiving.name, "ARCHIVING", archiving.created_at,
                                archiving.started_at, "gpu", id=archiving.id))  # fmt: skip
    with standard_world(tmp_path, seeds=seeds, policies_yaml=POLICIES) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        assert cancelled(audit_records(world)) == control_keys()
        assert_untouched(world, "hpc", "long-archiving", "ARCHIVING")
        assert status_of(world, "hpc", "long-1") == CANCELLED["hpc"]
        # It counts as active all the same.
        assert last_sweep(audit_records(world))[-1]["backends"]["hpc"]["active"] == 9
