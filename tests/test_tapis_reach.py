"""Tapis reach: which jobs reaper's identity sees and cancels, per `list_type`, through the CLI
against the Tapis emulator. The service's search defaults to listType=MY_JOBS (owner == caller);
jobs shared with the caller need SHARED_JOBS or ALL_JOBS, and no list type shows a job its owner
has hidden (tapis-jobs JobSearchResource, JobsDao; reaper/emulators/tapis.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from tapipy.errors import BaseTapyException

from reaper.emulators.base import JobSpec
from reaper.emulators.tapis import TapisEmulator
from reaper.emulators.world import World
from reaper.errors import ExitCode
from tests.e2e_support import (
    HOUR,
    audit_records,
    edit_config,
    job_keys,
    run_cli,
    run_once,
    standard_world,
)
from tests.harness_tapis import make_backend

POLICY = """\
policies:
  - name: runtime-cap
    names: ["long-*"]
    max_runtime: 2h
"""


def long_job(job_id: str, now: float, **extra: Any) -> JobSpec:
    started = now - 5 * HOUR
    return JobSpec(job_id, "RUNNING", started - 600, started, queue="normal", id=job_id,
                   extra=extra)  # fmt: skip


def short_job(job_id: str, now: float) -> JobSpec:
    return JobSpec(job_id, "RUNNING", now - 700, now - 600, queue="normal", id=job_id)


@contextmanager
def reach_world(folder: Path, list_type: str | None) -> Iterator[World]:
    """One Tapis backend `hpc`: reaper's own long job, a long job of alice's shared with reaper,
    one of alice's that is not shared, one hidden by its owner; short jobs keep the fraction
    guard quiet."""
    now = time.time()
    seeds = [
        long_job("long-own", now),
        long_job("long-shared", now, owner="alice"),
        long_job("long-foreign", now, owner="alice"),
        long_job("long-hidden", now, owner="alice", visible=False),
        *(short_job(f"short-{i}", now) for i in range(6)),
    ]
    with standard_world(folder, seeds={"hpc": seeds}, policies_yaml=POLICY) as world:
        emulator = world.emulators["hpc"]
        assert isinstance(emulator, TapisEmulator)
        emulator.share("long-shared")
        emulator.share("long-hidden")
        section: dict[str, Any] = {"type": "tapis", "base_url": emulator.url,
                                   "token_env": "REAPER_DEMO_TAPIS_TOKEN"}  # fmt: skip
        if list_type is not None:
            section["list_type"] = list_type
        edit_config(world, lambda c: c.update(backends={"hpc": section}))
        yield world


def cancelled_ids(world: World) -> set[str]:
    return {job for _, job in job_keys(audit_records(world), "result", outcome="cancelled")}


def statuses(world: World) -> dict[str, str | None]:
    emulator = world.emulators["hpc"]
    return {j: emulator.status_of(j) for j in emulator.table}


@pytest.mark.parametrize(
    ("list_type", "expected"),
    [
        (None, {"long-own", "long-shared"}),  # the default: all_jobs
        ("all_jobs", {"long-own", "long-shared"}),
        ("my_jobs", {"long-own"}),
        ("shared_jobs", {"long-shared"}),
    ],
)
def test_list_type_decides_which_jobs_are_listed_and_cancelled(
    tmp_path: Path, list_type: str | None, expected: set[str]
) -> None:
    with reach_world(tmp_path, list_type) as world:
        result = run_once(world)
        assert result.code == ExitCode.OK, result.out + result.err
        assert cancelled_ids(world) == expected
        after = statuses(world)
        assert {j for j, s in after.items() if s == "CANCELLED"} == expected
        # Never listed, so never touched: alice's unshared job, and the hidden one.
        assert after["long-foreign"] == after["long-hidden"] == "RUNNING"
        named = {r.get("job_id") for r in audit_records(world)}
        assert not {"long-foreign", "long-hidden"} & named


def test_the_search_sends_list_type_upper_cased(tmp_path: Path) -> None:
    with reach_world(tmp_path, "shared_jobs") as world:
        emulator = world.emulators["hpc"]
        assert isinstance(emulator, TapisEmulator)
        emulator.record_exchanges = True
        assert run_cli("plan", "--config", str(world.config_path)).code == ExitCode.OK
        searches = [e for e in emulator.exchanges if e.operation == "searchJobs"]
        assert searches
        assert all(e.request.arg("listType") == "SHARED_JOBS" for e in searches)


def test_an_unknown_list_type_fails_validation(tmp_path: Path) -> None:
    with reach_world(tmp_path, "everything") as world:
        result = run_cli("validate", "--config", str(world.config_path))
        assert result.code == ExitCode.CONFIG, result.out + result.err
        assert "list_type" in result.out + result.err


# -- the emulator's model of reach --------------------------------------------------------------
@pytest.fixture
def emulator() -> Iterator[TapisEmulator]:
    with TapisEmulator() as server:
        assert isinstance(server, TapisEmulator)
        yield server


def search(emulator: TapisEmulator, **params: Any) -> list[str]:
    client = make_backend(emulator, "hpc")._client
    result = client.jobs.getJobSearchList(orderBy="name(asc)", **params)
    return [item.uuid for item in result]


def test_emulator_defaults_to_my_jobs_and_pages_all_jobs_owned_first(
    emulator: TapisEmulator,
) -> None:
    now = time.time()
    for name, owner in (("a-shared", "alice"), ("b-own", "reaper"), ("c-shared", "bob")):
        emulator.add_job(long_job(name, now, owner=owner))
    emulator.add_job(long_job("d-own", now))
    emulator.share("a-shared")
    emulator.share("c-shared")
    assert search(emulator) == ["b-own", "d-own"]  # no listType: the service's MY_JOBS
    assert search(emulator, listType="SHARED_JOBS") == ["a-shared", "c-shared"]
    everything = ["b-own", "d-own", "a-shared", "c-shared"]
    assert search(emulator, listType="ALL_JOBS") == everything
    pages = [search(emulator, listType="ALL_JOBS", limit=3, skip=s) for s in (0, 3)]
    assert pages[0] + pages[1] == everything
    emulator.hide("b-own")
    emulator.hide("c-shared")
    assert search(emulator, listType="ALL_JOBS") == ["d-own", "a-shared"]


def test_emulator_rejects_an_unknown_list_type_and_unreachable_jobs(
    emulator: TapisEmulator,
) -> None:
    emulator.add_job(long_job("foreign", time.time(), owner="alice"))
    client = make_backend(emulator, "hpc")._client
    with pytest.raises(BaseTapyException) as bad_type:
        client.jobs.getJobSearchList(listType="my_jobs")  # the service's enum is upper case
    assert bad_type.value.response.status_code == 400
    with pytest.raises(BaseTapyException) as forbidden:
        client.jobs.cancelJob(jobUuid="foreign")
    assert forbidden.value.response.status_code == 403
    assert emulator.status_of("foreign") == "RUNNING"
