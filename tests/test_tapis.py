"""Tapis backend behaviour beyond the shared contract: record mapping, the search it sends,
the reason recorded before the cancel, asynchronous cancels, both answer dialects, and building
the backend from its reaper.yaml section."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from reaper.backends import create_backend
from reaper.backends.base import Backend, CancelOutcome
from reaper.backends.records.tapis import parse_tags, parse_time
from reaper.backends.tapis import EVENT_DETAIL, TapisBackend
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.tapis import Dialect, TapisEmulator
from reaper.errors import BackendError
from reaper.jobs import BadRecord, Job, Phase, active_statuses
from tests.harness_tapis import make_backend, start_emulator

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC).timestamp()


class Clock:
    """A hand-driven clock for the emulator: cancel delays pass without sleeping."""

    def __init__(self, now: float = T0 + 7200) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def emulator(clock: Clock) -> Iterator[TapisEmulator]:
    emu = start_emulator(Knobs(page_size=2), clock=clock, record_exchanges=True)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def backend(emulator: TapisEmulator) -> Iterator[TapisBackend]:
    b = make_backend(emulator, "tacc")
    try:
        yield b
    finally:
        b.close()


def seed(emulator: TapisEmulator, status: str = "RUNNING", **kw: Any) -> str:
    kw.setdefault("started_at", T0 + 600 if status in ("RUNNING", "BLOCKED") else None)
    return emulator.add_job(
        JobSpec(name=kw.pop("name", "sim"), status=status, created_at=T0, queue="skx", **kw)
    )


def listed(backend: TapisBackend) -> list[Any]:
    return [job for page in backend.list_active() for job in page]


def test_maps_a_job_record(emulator: TapisEmulator, backend: TapisBackend) -> None:
    job_id = seed(emulator, tags={"team": "ml", "expr": "a=b", "reaper:keep": ""}, name="sim-7")
    (job,) = listed(backend)
    assert (job.id, job.name, job.queue, job.owner) == (job_id, "sim-7", "skx", "reaper")
    assert (job.type, job.status, job.phase, job.detailed) == ("tapis", "RUNNING", "running", True)
    assert job.created_at == datetime.fromtimestamp(T0, UTC)
    assert job.started_at == datetime.fromtimestamp(T0 + 600, UTC)
    assert job.tags == {"team": "ml", "expr": "a=b", "reaper:keep": ""}
    assert job.raw["execSystemLogicalQueue"] == "skx" and job.raw["uuid"] == job_id
    json.dumps(dict(job.raw))  # plain data: no tapipy objects left inside
    assert backend.enrich([job]) == [job]


def test_a_blocked_job_is_pending_and_keeps_its_start(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    seed(emulator, "BLOCKED")
    (job,) = listed(backend)
    assert job.phase == Phase.PENDING and job.started_at is not None


def test_search_asks_for_active_jobs_with_every_attribute(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    for _ in range(3):
        seed(emulator)
    seed(emulator, "FAILED")
    assert len(listed(backend)) == 3
    searches = [e.request for e in emulator.exchanges if e.operation == "searchJobs"]
    # Pages of 2 (the server's cap on `limit`), ending at the first short one.
    assert [s.arg("skip") for s in searches] == ["0", "2"]
    first = searches[0]
    assert first.arg("status.in", "").split(",") == active_statuses("tapis")
    assert first.arg("select") == "allAttributes"
    assert first.arg("orderBy") == "created(asc),uuid(asc)"
    assert first.headers["x-tapis-token"] == emulator.token


def test_lists_answers_shaped_as_the_service_sends_them(clock: Clock) -> None:
    with TapisEmulator(Knobs(page_size=2), clock, dialect=Dialect.SERVER) as emulator:
        assert isinstance(emulator, TapisEmulator)
        ids = {seed(emulator) for _ in range(3)}
        backend = make_backend(emulator, "tacc")
        assert {job.id for job in listed(backend)} == ids
        job = listed(backend)[0]
        assert backend.cancel(job, "server dialect").outcome == CancelOutcome.CANCELLED
        assert emulator.reason_of(job.id) == "server dialect"


def test_reason_is_recorded_before_the_cancel(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    seed(emulator)
    (job,) = listed(backend)
    assert backend.cancel(job, "ran 13h on skx; capped at 12h").outcome == CancelOutcome.CANCELLED
    mutating = [e.operation for e in emulator.exchanges if e.operation != "searchJobs"]
    assert mutating == ["sendEvent", "cancelJob"]
    (event,) = emulator.events_of(job.id)
    assert event["eventData"] == "ran 13h on skx; capped at 12h"
    assert event["eventDetail"] == EVENT_DETAIL


def test_a_blank_reason_still_sends_an_event(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    seed(emulator)
    (job,) = listed(backend)
    assert backend.cancel(job, "  ").outcome == CancelOutcome.CANCELLED
    assert emulator.reason_of(job.id) == "cancelled by reaper"


def test_a_long_reason_is_cut(emulator: TapisEmulator, backend: TapisBackend) -> None:
    seed(emulator)
    (job,) = listed(backend)
    backend.cancel(job, "x" * 5000)
    reason = emulator.reason_of(job.id)
    assert reason is not None and len(reason) == 1024 and reason.endswith("…")


def test_cancel_is_asynchronous(clock: Clock) -> None:
    with TapisEmulator(Knobs(cancel_delay_s=30), clock) as emulator:
        assert isinstance(emulator, TapisEmulator)
        job_id = seed(emulator)
        backend = make_backend(emulator, "tacc")
        (job,) = listed(backend)
        assert backend.cancel(job, "stop").outcome == CancelOutcome.CANCELLED
        assert emulator.status_of(job_id) == "RUNNING"
        assert backend.cancel(job, "again").outcome == CancelOutcome.CANCELLED  # still accepted
        clock.now += 30
        fresh = backend.refresh(job)
        assert fresh is not None and fresh.status == "CANCELLED" and fresh.phase == Phase.TERMINAL
        assert fresh.raw["condition"] == "CANCELLED_BY_USER"
        assert listed(backend) == []
        assert backend.cancel(job, "late").outcome == CancelOutcome.ALREADY_TERMINAL


def test_refresh_reports_a_job_that_started(emulator: TapisEmulator, backend: TapisBackend) -> None:
    job_id = seed(emulator, "QUEUED")
    (job,) = listed(backend)
    assert job.started_at is None
    emulator.set_status(job_id, "RUNNING")
    fresh = backend.refresh(job)
    assert fresh is not None and fresh.started_at is not None and fresh.phase == Phase.RUNNING


class SkipIgnoringEmulator(TapisEmulator):
    """A server that always answers the first page, whatever `skip` says."""

    def dispatch(self, request: Any) -> Any:
        request.query.pop("skip", None)
        return super().dispatch(request)


def test_a_listing_that_does_not_advance_is_an_error(clock: Clock) -> None:
    with SkipIgnoringEmulator(Knobs(page_size=2), clock) as emulator:
        assert isinstance(emulator, TapisEmulator)
        for _ in range(3):
            seed(emulator)
        pages = make_backend(emulator, "tacc").list_active()
        assert len(next(pages)) == 2
        with pytest.raises(BackendError, match="added no new job id"):
            next(pages)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"created": "yesterday"}, "not an ISO 8601 time"),
        ({"tags": "team=ml"}, "tags must be a list"),
        ({"uuid": 7}, "uuid"),
    ],
)
def test_an_unreadable_record_is_a_bad_record_not_a_failed_listing(
    emulator: TapisEmulator, backend: TapisBackend, extra: dict[str, Any], problem: str
) -> None:
    good = seed(emulator)
    seed(emulator, extra=extra)
    items = [item for page in backend.list_active() for item in page]
    assert [item.id for item in items if isinstance(item, Job)] == [good]
    (bad,) = [item for item in items if isinstance(item, BadRecord)]
    assert problem in f"{bad.field}: {bad.problem}"


def test_parsers() -> None:
    assert parse_tags(["a=b=c", "flag", "k="]) == {"a": "b=c", "flag": "", "k": ""}
    assert parse_tags(None) == {}
    assert parse_time("2025-03-01T12:00:00.5Z") == datetime(2025, 3, 1, 12, 0, 0, 500000, UTC)
    assert parse_time("2025-03-01T13:00:00+01:00") == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time("2025-03-01T12:00:00") == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    assert parse_time(None) is None


def _get(emulator: TapisEmulator, path: str, token: str | None = None) -> requests.Response:
    headers = {"X-Tapis-Token": token} if token else {}
    return requests.get(emulator.url + path, headers=headers, timeout=5)


def test_emulator_speaks_tapis_errors(emulator: TapisEmulator) -> None:
    assert _get(emulator, "/v3/jobs/search").status_code == 401
    bad = _get(emulator, "/v3/jobs/search?status.between=A,B", emulator.token)
    assert bad.status_code == 400 and bad.json()["status"] == "error"
    missing = _get(emulator, "/v3/jobs/nope-007", emulator.token)
    assert missing.status_code == 404 and missing.json()["result"] == {"name": "nope-007"}
    assert _get(emulator, "/v3/systems", emulator.token).status_code == 404


def test_emulator_filters_and_orders(emulator: TapisEmulator) -> None:
    for name, status in (("b", "RUNNING"), ("a", "QUEUED"), ("c", "FINISHED")):
        seed(emulator, status, name=name)
    query = "/v3/jobs/search?status.nin=FINISHED&name.like=*&orderBy=name(desc)&computeTotal=true"
    body = _get(emulator, query, emulator.token).json()
    assert [j["name"] for j in body["result"]] == ["b", "a"]
    assert set(body["result"][0]) <= {"uuid", "name", "owner", "appId", "created", "status",
                                      "condition", "remoteStarted", "ended", "tenant",
                                      "execSystemId", "archiveSystemId", "appVersion",
                                      "lastUpdated"}  # fmt: skip
    assert body["metadata"]["totalCount"] == 2


# -- from_config --------------------------------------------------------------------------------
def _section(emulator: TapisEmulator, **kw: Any) -> dict[str, Any]:
    return {"type": "tapis", "base_url": emulator.url, **kw}


def test_from_config_with_token_env(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAPIS_TOKEN", f"  {emulator.token}\n")
    backend = create_backend("tacc", _section(emulator, token_env="TAPIS_TOKEN"), tmp_path)
    assert isinstance(backend, TapisBackend) and isinstance(backend, Backend)
    assert backend._client.tenant_id == emulator.tenant  # from the token's claims, offline
    section = _section(emulator, token_env="TAPIS_TOKEN", tenant="tacc")
    assert TapisBackend.from_config("tacc", section, tmp_path)._client.tenant_id == "tacc"
    seed(emulator)
    assert len(listed(backend)) == 1


def test_from_config_with_token_file(emulator: TapisEmulator, tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "tapis-token").write_text(emulator.token + "\n")
    section = _section(emulator, token_file="creds/tapis-token")
    backend = TapisBackend.from_config("tacc", section, tmp_path)
    seed(emulator)
    assert len(listed(backend)) == 1


def test_from_config_with_username_and_password(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TAPIS_USER", emulator.username)
    monkeypatch.setenv("TAPIS_PASSWORD", emulator.password)
    section = _section(emulator, username_env="TAPIS_USER", password_env="TAPIS_PASSWORD")
    backend = TapisBackend.from_config("tacc", section, tmp_path)
    seed(emulator)
    assert len(listed(backend)) == 1
    assert emulator.calls["createToken"] == 1


BAD_CREDENTIALS = {
    "nothing configured": ({}, {}, "no credentials"),
    "token_env unset": ({"token_env": "NOPE"}, {}, "NOPE"),
    "token_file missing": ({"token_file": "missing"}, {}, "cannot read token_file"),
    "password unset": ({"username_env": "U", "password_env": "P"}, {"U": "reaper"}, "U/P"),
    "wrong password": (
        {"username_env": "U", "password_env": "P"},
        {"U": "reaper", "P": "wrong"},
        "HTTP 401",
    ),
    "not a JWT": ({"token_env": "T"}, {"T": "not-a-jwt"}, "not a well-formed Tapis JWT"),
}


@pytest.mark.parametrize("case", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_from_config_refuses_missing_or_bad_credentials(
    emulator: TapisEmulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: tuple[dict[str, str], dict[str, str], str],
) -> None:
    section, env, problem = case
    monkeypatch.delenv("NOPE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(BackendError, match=problem) as raised:
        TapisBackend.from_config("tacc", _section(emulator, **section), tmp_path)
    assert "not-a-jwt" not in str(raised.value) and "wrong" not in str(raised.value)


def test_from_config_needs_a_base_url(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="base_url"):
        TapisBackend.from_config("tacc", {"type": "tapis", "token_env": "X"}, tmp_path)


# --- the sweep's bulk re-check (reaper.engine.sweep.BulkBackend) --------------------------------
def test_the_re_check_reads_many_jobs_with_one_search(clock: Clock) -> None:
    with TapisEmulator(Knobs(page_size=100), clock, record_exchanges=True) as emulator:
        assert isinstance(emulator, TapisEmulator)
        for i in range(3):
            seed(emulator, name=f"sim-{i}")
        backend = make_backend(emulator, "tacc")
        jobs = listed(backend)[::-1]  # any order: the answer follows the question
        ids = [job.id for job in jobs]
        emulator.set_status(ids[1], "FINISHED")  # ended between the listing and the re-check
        emulator.exchanges.clear()
        fresh = backend.refresh_many(jobs)
        assert [job.id if job else None for job in fresh] == ids
        assert [job.status for job in fresh if job] == ["RUNNING", "FINISHED", "RUNNING"]
        assert all(job is not None and job.detailed and job.raw for job in fresh)
        (search,) = [e.request for e in emulator.exchanges if not e.request.arg("status.in")]
        assert search.path.endswith("/jobs/search")
        assert search.arg("uuid.in", "").split(",") == ids
        assert search.arg("status.in") is None  # any status: an ended job must show as ended
        assert search.arg("listType") == "ALL_JOBS" and search.arg("select") == "allAttributes"


def test_the_re_check_asks_getjob_for_what_the_search_left_out(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    """This server caps `limit` at 2: the third job is not in the search's answer, which does
    not make it gone; a job the service no longer knows is None (getJob's 404)."""
    gone = seed(emulator, name="gone")
    for i in range(3):
        seed(emulator, name=f"sim-{i}")
    jobs = sorted(listed(backend), key=lambda job: job.id != gone)  # the gone one first
    ids = [job.id for job in jobs]
    emulator.remove_job(gone)
    emulator.exchanges.clear()
    fresh = backend.refresh_many(jobs)
    assert [job.id if job else None for job in fresh] == [None, *ids[1:]]
    # One search for all four, answered with two (the cap); getJob for the two it left out.
    # (The listing's read-ahead searches, `status.in`, may still be arriving: not counted.)
    operations = [e.operation for e in emulator.exchanges if not e.request.arg("status.in")]
    assert operations == ["searchJobs", "getJob", "getJob"]


def test_a_re_check_record_that_does_not_read_fails_the_re_check(
    emulator: TapisEmulator, backend: TapisBackend
) -> None:
    job_id = seed(emulator)
    (job,) = listed(backend)
    emulator.table.current(job_id).record["created"] = "yesterday"  # type: ignore[union-attr]
    with pytest.raises(BackendError, match="malformed"):
        backend.refresh_many([job])
