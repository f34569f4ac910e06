"""Tapis tokens while the backend lives: a `token_file` re-read when it changes and once on a
401, a password login renewed before `exp` and on a 401, and the CA bundle reaching every
request tapipy makes. Against the Tapis emulator, which rejects an expired JWT with 401."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from reaper.backends.tapis import TapisBackend, TimeoutAdapter, make_client
from reaper.emulators.base import JobSpec
from reaper.emulators.tapis import TapisEmulator
from reaper.emulators.world import emulated_world
from reaper.errors import BackendError
from tests.daemon_support import daemon_process, events, free_port, wait_for
from tests.harness_tapis import make_backend

HOUR = 3600.0


@pytest.fixture
def emulator() -> Iterator[TapisEmulator]:
    with TapisEmulator() as server:
        assert isinstance(server, TapisEmulator)
        server.add_job(JobSpec("job-1", "RUNNING", time.time() - 60, time.time() - 30, id="job-1"))
        yield server


def file_backend(emulator: TapisEmulator, folder: Path) -> TapisBackend:
    (folder / "token").write_text(emulator.token + "\n", encoding="utf-8")
    section = {"type": "tapis", "base_url": emulator.url, "token_file": "token"}
    return TapisBackend.from_config("hpc", section, folder)


def listed(backend: TapisBackend) -> list[str]:
    return [job.id for page in backend.list_active() for job in page]


def test_an_expired_token_is_refused_with_401(emulator: TapisEmulator) -> None:
    backend = make_backend(emulator, "hpc")
    emulator.expire_token()
    with pytest.raises(BackendError, match="HTTP 401"):
        listed(backend)


def test_a_rotated_token_file_is_read_before_the_next_call(
    emulator: TapisEmulator, tmp_path: Path
) -> None:
    backend = file_backend(emulator, tmp_path)
    assert listed(backend) == ["job-1"]
    emulator.expire_token()
    (tmp_path / "token.new").write_text(emulator.issue_token(), encoding="utf-8")
    os.replace(tmp_path / "token.new", tmp_path / "token")  # as an agent rotates it
    emulator.record_exchanges = True
    assert listed(backend) == ["job-1"]
    assert all(e.response.status == 200 for e in emulator.exchanges)  # read before, no 401


def test_a_401_rereads_the_token_file_once(emulator: TapisEmulator, tmp_path: Path) -> None:
    backend = file_backend(emulator, tmp_path)
    path = tmp_path / "token"
    before = os.stat(path)
    emulator.expire_token()
    fresh = emulator.issue_token()
    assert len(fresh) == before.st_size - 1  # same size with the newline: no change seen
    path.write_text(fresh + "\n", encoding="utf-8")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # the change is invisible
    emulator.record_exchanges = True
    assert listed(backend) == ["job-1"]
    assert [e.response.status for e in emulator.exchanges][:2] == [401, 200]


def test_a_token_file_that_stays_stale_fails_after_one_reread(
    emulator: TapisEmulator, tmp_path: Path
) -> None:
    backend = file_backend(emulator, tmp_path)
    emulator.expire_token()
    emulator.issue_token()  # the service moved on, the file did not
    emulator.record_exchanges = True
    with pytest.raises(BackendError, match="HTTP 401"):
        listed(backend)
    assert [e.response.status for e in emulator.exchanges] == [401]


def test_a_token_file_replaced_by_a_fifo_keeps_the_old_token(
    emulator: TapisEmulator, tmp_path: Path
) -> None:
    backend = file_backend(emulator, tmp_path)
    (tmp_path / "token").unlink()
    os.mkfifo(tmp_path / "token")  # reading it would block forever
    assert listed(backend) == ["job-1"]


def login_backend(emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch) -> TapisBackend:
    monkeypatch.setenv("TAPIS_USER", emulator.username)
    monkeypatch.setenv("TAPIS_PASSWORD", emulator.password)
    section = {"type": "tapis", "base_url": emulator.url, "username_env": "TAPIS_USER",
               "password_env": "TAPIS_PASSWORD"}  # fmt: skip
    return TapisBackend.from_config("hpc", section, Path("."))


def test_a_password_login_logs_in_again_after_expiry(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = login_backend(emulator, monkeypatch)
    assert listed(backend) == ["job-1"]
    assert emulator.calls["createToken"] == 1
    emulator.expire_token()
    assert listed(backend) == ["job-1"]  # 401, log in again, the same call once more
    assert emulator.calls["createToken"] == 2
    assert emulator.calls["searchJobs"] == 2 + 3  # a page and the empty end; then 401, both


def test_a_password_login_renews_before_exp(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.token_ttl_s = 30  # under the 60 s renewal margin
    emulator.expire_token()  # the next login hands out a 30 s token
    backend = login_backend(emulator, monkeypatch)
    emulator.record_exchanges = True
    assert listed(backend) == ["job-1"]
    assert emulator.calls["createToken"] >= 2  # logged in again before the call
    assert all(e.response.status != 401 for e in emulator.exchanges)


def client_backend(
    emulator: TapisEmulator,
    monkeypatch: pytest.MonkeyPatch,
    folder: Path,
    key: str = "k3y-0f-the-client",
) -> TapisBackend:
    """A password login with the OAuth client `reaper-client`, its key in a file."""
    emulator.client_id, emulator.client_key = "reaper-client", "k3y-0f-the-client"
    monkeypatch.setenv("TAPIS_USER", emulator.username)
    monkeypatch.setenv("TAPIS_PASSWORD", emulator.password)
    (folder / "client-key").write_text(key + "\n", encoding="utf-8")
    section = {"type": "tapis", "base_url": emulator.url, "username_env": "TAPIS_USER",
               "password_env": "TAPIS_PASSWORD", "client_id": "reaper-client",
               "client_key_file": "client-key"}  # fmt: skip
    return TapisBackend.from_config("hpc", section, folder)


def test_client_credentials_let_tapipy_refresh_instead_of_logging_in(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    emulator.token_ttl_s = 30  # under the 60 s renewal margin: every call renews first
    emulator.expire_token()
    backend = client_backend(emulator, monkeypatch, tmp_path)
    assert emulator.grants == ["password"]  # the login, which also gave a refresh token
    emulator.record_exchanges = True
    assert listed(backend) == ["job-1"]
    assert emulator.grants[0] == "password" and set(emulator.grants[1:]) == {"refresh_token"}
    assert all(e.response.status != 401 for e in emulator.exchanges)
    emulator.token_ttl_s = 3600
    emulator.expire_token()  # a 401: renewed through the refresh token, not the password
    grants = len(emulator.grants)
    assert listed(backend) == ["job-1"]
    assert emulator.grants[grants:] == ["refresh_token"]


def test_a_refused_refresh_falls_back_to_the_password_login(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    backend = client_backend(emulator, monkeypatch, tmp_path)
    emulator.refresh_tokens.clear()  # revoked
    emulator.expire_token()
    assert listed(backend) == ["job-1"]
    assert emulator.grants == ["password", "refresh_token", "password"]


def test_wrong_client_credentials_fail_the_backend_without_quoting_the_key(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(BackendError, match="HTTP 401") as caught:
        client_backend(emulator, monkeypatch, tmp_path, key="not-the-client-key")
    assert "not-the-client-key" not in str(caught.value)


def test_the_client_key_and_the_refresh_token_are_registered_for_redaction(
    emulator: TapisEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    registered: list[str] = []
    for module in ("reaper.backends.credentials", "reaper.backends.tapis_tokens"):
        monkeypatch.setattr(f"{module}.register_secret", registered.append)
    client_backend(emulator, monkeypatch, tmp_path)
    assert "k3y-0f-the-client" in registered
    assert set(emulator.refresh_tokens) <= set(registered) and emulator.refresh_tokens


class RecordingAdapter(TimeoutAdapter):
    def __init__(self) -> None:
        super().__init__((2.0, 5.0))
        self.verify: list[Any] = []

    def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
        self.verify.append(kwargs.get("verify"))
        return super().send(request, *args, **kwargs)


def test_the_ca_bundle_reaches_every_request(
    emulator: TapisEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not used over plain http\n", encoding="utf-8")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    client = make_client(emulator.url, access_token=emulator.token)
    adapter = RecordingAdapter()
    client.requests_session.mount("http://", adapter)
    backend = TapisBackend("hpc", client)
    (job,) = [job for page in backend.list_active() for job in page]
    backend.refresh(job)
    assert adapter.verify and set(adapter.verify) == {str(bundle)}  # tapipy sent verify=True


def test_daemon_picks_up_a_rotated_token_file_without_a_reload(tmp_path: Path) -> None:
    """Acceptance: the token expires; a new one is written to token_file; the next sweep
    lists and cancels, with no SIGHUP."""
    now = time.time()
    policy = "policies:\n  - name: cap\n    names: ['long-*']\n    max_runtime: 2h\n"
    seeds = {"hpc": [JobSpec(f"short-{i}", "RUNNING", now - 700, now - 600, id=f"short-{i}")
                     for i in range(3)]}  # fmt: skip
    config = {"schedule": {"every": "1s"}, "metrics": {"listen": f"127.0.0.1:{free_port()}"}}
    with emulated_world(tmp_path, seeds=seeds, policies_yaml=policy, config=config) as world:
        emulator = world.emulators["hpc"]
        assert isinstance(emulator, TapisEmulator)
        (tmp_path / "tapis-token").write_text(emulator.token, encoding="utf-8")
        section = {"type": "tapis", "base_url": emulator.url, "token_file": "tapis-token"}
        text = world.config_path.read_text(encoding="utf-8")
        data = yaml.safe_load(text)
        data["backends"] = {"hpc": section}
        world.config_path.write_text(yaml.safe_dump(data), encoding="utf-8")
        with daemon_process(world, tmp_path / "daemon.log") as daemon:
            wait_for(lambda: events(world.audit_path, "sweep_end"), 30, "a first sweep")
            emulator.expire_token()
            wait_for(lambda: emulator.calls["searchJobs"] and _saw_401(world), 15, "a 401")
            started = now - 5 * HOUR
            emulator.add_job(JobSpec("long-1", "RUNNING", started - 60, started, id="long-1"))
            (tmp_path / "token.new").write_text(emulator.issue_token(), encoding="utf-8")
            os.replace(tmp_path / "token.new", tmp_path / "tapis-token")
            done = wait_for(lambda: events(world.audit_path, "result", job_id="long-1"), 20,
                            "long-1 cancelled")  # fmt: skip
            assert done[0]["outcome"] == "cancelled"
            assert emulator.status_of("long-1") == "CANCELLED"
            assert not events(world.audit_path, "reload")
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)


def _saw_401(world: Any) -> bool:
    log = (world.folder / "daemon.log").read_text(encoding="utf-8", errors="replace")
    return "401" in log
