"""reaper's Sutro backend and emulator against the official SDK (`sutro` on PyPI), a test-only
reference: the SDK's URL rule, its status set and terminal statuses, and its own client run
against the emulator. A new SDK release that changes any of them fails here first.

The SDK's client checks PyPI for a newer release when it is built (`check_version`); the tests
turn that off, so they make no call outside this machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reaper import cli
from reaper.backends.sutro_url import SutroUrlError, normalize_api_url
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.sutro import SutroEmulator
from reaper.jobs import PHASES, Phase
from tests.harness_sutro import make_backend, start_emulator

sutro_sdk = pytest.importorskip("sutro.sdk", reason="the Sutro SDK is a test dependency")
sutro_validation = pytest.importorskip("sutro.validation")
sutro_interfaces = pytest.importorskip("sutro.interfaces")

NOW = 1_764_590_400.0  # 2025-12-01T12:00:00Z


def sdk_normalize(url: str) -> str | None:
    try:
        return str(sutro_validation.normalize_api_url(url))
    except ValueError:
        return None


def reaper_normalize(url: str) -> str | None:
    try:
        return normalize_api_url(url)
    except SutroUrlError:
        return None


EXAMPLES = [
    "https://sutro.example.com",
    "https://sutro.example.com/",
    "https://sutro.example.com/v1",
    "https://sutro.example.com/v1/",
    "https://Sutro.Example.com:8443/v1",
    "  https://sutro.example.com  ",
    "http://localhost:8080",
    "http://127.0.0.1:9/v1",
    "http://[::1]:9",
    "http://sutro.example.com",  # plain http off loopback
    "https://api.sutro.sh",
    "https://api.sutro.sh/v1",
    "https://API.SUTRO.SH.",
    "https://eu.api.sutro.sh",
    "https://serve.sutro.sh",
    "https://api.materialized.dev",
    "https://x--tensor-factory-fastapi-app.modal.run",
    "https://notapi.sutro.sh.example.com",
    "https://sutro.example.com/v2",
    "https://sutro.example.com/api/v1",
    "https://sutro.example.com/v1?x=1",
    "https://sutro.example.com#frag",
    "https://user:pw@sutro.example.com",
    "ftp://sutro.example.com",
    "sutro.example.com",
    "",
    "   ",
]


@pytest.mark.parametrize("url", EXAMPLES)
def test_api_url_is_normalised_exactly_as_the_sdk_does(url: str) -> None:
    assert reaper_normalize(url) == sdk_normalize(url)


HOSTS = st.sampled_from(
    ["sutro.example.com", "api.sutro.sh", "eu.api.sutro.sh", "localhost", "127.0.0.1",
     "serve.sutro.sh", "deploy.internal", "API.Sutro.SH", "10.0.0.1", "[::1]"]
)  # fmt: skip
URLS = st.builds(
    lambda scheme, host, port, path, tail: f"{scheme}://{host}{port}{path}{tail}",
    st.sampled_from(["http", "https", "HTTPS", "ftp"]),
    HOSTS,
    st.sampled_from(["", ":443", ":8080"]),
    st.sampled_from(["", "/", "/v1", "/v1/", "/v1//", "/v2", "/x/v1"]),
    st.sampled_from(["", "?q=1", "#f"]),
)


@settings(max_examples=300, deadline=None)
@given(URLS)
def test_generated_urls_agree_with_the_sdk(url: str) -> None:
    assert reaper_normalize(url) == sdk_normalize(url)


def test_the_status_set_is_the_sdks() -> None:
    sdk_statuses = {status.value for status in sutro_interfaces.JobStatus}
    assert sdk_statuses == set(PHASES["sutro"])


def test_the_terminal_statuses_are_the_sdks() -> None:
    sdk_terminal = {status.value for status in sutro_interfaces.JobStatus.terminal_statuses()}
    ours = {status for status, phase in PHASES["sutro"].items() if phase == Phase.TERMINAL}
    assert ours == sdk_terminal


def test_the_sdk_does_not_know_a_phase_we_would_act_on() -> None:
    # UNKNOWN is the SDK's "no answer"; reaper must never act on it.
    assert PHASES["sutro"]["UNKNOWN"] == Phase.UNKNOWN


# -- the SDK's client against the emulator -------------------------------------------------------
@pytest.fixture
def emulator() -> Iterator[SutroEmulator]:
    emu = start_emulator(Knobs())
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def sdk_client(emulator: SutroEmulator, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(sutro_sdk, "check_version", lambda package: None)  # no PyPI look-up
    monkeypatch.delenv("SUTRO_API_URL", raising=False)
    monkeypatch.delenv("SUTRO_API_KEY", raising=False)
    return sutro_sdk.Sutro(api_key=emulator.api_key, api_url=emulator.url)


def seed_running(emulator: SutroEmulator, name: str) -> str:
    return emulator.add_job(JobSpec(name, "RUNNING", NOW - 7200, NOW - 3600))


def test_the_sdk_lists_the_emulators_jobs(emulator: SutroEmulator, sdk_client: Any) -> None:
    ids = {seed_running(emulator, f"job-{i}") for i in range(3)}
    jobs = sdk_client.list_jobs()
    assert {job["job_id"] for job in jobs} == ids
    assert ("ListJobs", "GET", "/v1/list-jobs") in emulator.recent


def test_the_sdk_and_reaper_cancel_the_same_way(emulator: SutroEmulator, sdk_client: Any) -> None:
    by_sdk, by_reaper = seed_running(emulator, "a"), seed_running(emulator, "b")
    answer = sdk_client.cancel_job(by_sdk)
    assert answer["cancelled"] is True
    backend = make_backend(emulator, "inference")
    try:
        (job,) = [j for page in backend.list_active() for j in page if j.id == by_reaper]
        assert backend.cancel(job, "policy").outcome == "cancelled"
    finally:
        backend.close()
    cancels = [(m, p) for op, m, p in emulator.recent if op == "CancelJob"]
    assert cancels == [("GET", f"/v1/job-cancel/{by_sdk}"), ("GET", f"/v1/job-cancel/{by_reaper}")]
    assert {emulator.status_of(by_sdk), emulator.status_of(by_reaper)} == {"CANCELLED"}


def test_the_sdk_refuses_the_retired_central_api() -> None:
    with pytest.raises(ValueError, match="no longer supported"):
        sutro_validation.normalize_api_url("https://api.sutro.sh")


# -- through the CLI -------------------------------------------------------------------------------
def write_config(tmp_path: Path, api_url: str) -> Path:
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(
        "policies:\n  - name: cap\n    max_runtime: 30m\n    reason: 'ran {runtime}'\n"
    )
    config = tmp_path / "reaper.yaml"
    config.write_text(
        f"policies: policies/\naudit_log: {tmp_path / 'audit.jsonl'}\ndry_run: false\n"
        f"backends:\n  llm:\n    type: sutro\n    api_url: {api_url}\n    api_key_env: SUTRO_KEY\n"
    )
    return config


def test_a_bare_origin_reaches_v1(
    tmp_path: Path, emulator: SutroEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = emulator.add_job(JobSpec("long", "RUNNING", NOW - 7200, NOW - 3600))
    monkeypatch.setenv("SUTRO_KEY", emulator.api_key)
    config = write_config(tmp_path, emulator.url)  # the origin, no /v1
    assert cli.main(["run", "--once", "--config", str(config)]) == 0
    paths = [(op, method, path) for op, method, path in emulator.recent]
    assert ("ListJobs", "GET", "/v1/list-jobs") in paths
    assert ("CancelJob", "GET", f"/v1/job-cancel/{job_id}") in paths
    assert all(path.startswith("/v1/") for _, _, path in paths)
    assert emulator.status_of(job_id) == "CANCELLED"


@pytest.mark.parametrize("url", ["https://api.sutro.sh", "https://api.sutro.sh/v1"])
def test_the_retired_central_api_fails_validate(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, url)
    assert cli.main(["validate", "--config", str(config)]) == 78
    err = capsys.readouterr().err
    assert f"{config}:7:14: " in err and "no longer supported" in err
    assert "YOUR-SUTRO-DEPLOYMENT" in err


def test_a_sutro_backend_needs_an_api_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "https://sutro.example.com")
    config.write_text(config.read_text().replace("    api_url: https://sutro.example.com\n", ""))
    assert cli.main(["validate", "--config", str(config)]) == 78
    assert "api_url" in capsys.readouterr().err
