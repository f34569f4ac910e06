"""Per-backend call timeouts in reaper.yaml (`timeout`, `connect_timeout`, `read_timeout`):
validated as durations above zero, handed to the backends as seconds, and used by each client
(botocore's config, tapipy's session adapter, the Sutro client's requests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from reaper.backends import create_backend
from reaper.backends.base import DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S, call_timeouts
from reaper.errors import ConfigError
from reaper.policy.config import load_config

BASE = """\
policies: policies/
audit_log: audit.jsonl
backends:
  batch: {type: aws_batch, region: us-east-1, endpoint_url: "http://127.0.0.1:9"%s}
  hpc: {type: tapis, base_url: "http://127.0.0.1:9", token_env: T%s}
  inference: {type: sutro, api_url: "http://127.0.0.1:9", api_key_env: K%s}
"""


def config_with(tmp_path: Path, batch: str = "", hpc: str = "", inference: str = "") -> Path:
    path = tmp_path / "reaper.yaml"
    path.write_text(BASE % (batch, hpc, inference), encoding="utf-8")
    return path


def test_durations_become_seconds_and_timeout_sets_both(tmp_path: Path) -> None:
    config = load_config(config_with(tmp_path, ", timeout: 10s, read_timeout: 1m", ", timeout: 2s",
                                     ""))  # fmt: skip
    assert call_timeouts(config.backends["batch"].section) == (10.0, 60.0)
    assert call_timeouts(config.backends["hpc"].section) == (2.0, 2.0)
    defaults = (DEFAULT_CONNECT_TIMEOUT_S, DEFAULT_READ_TIMEOUT_S)
    assert call_timeouts(config.backends["inference"].section) == defaults == (5.0, 30.0)


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (", read_timeout: 0s", "must be longer than zero"),
        (", timeout: 30", "a bare number such as 30 is ambiguous"),
        (", connect_timeout: soon", "must be a duration with units"),
        (", read_timout: 5s", "read_timout"),
    ],
)
def test_bad_timeouts_are_located_errors(tmp_path: Path, option: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(config_with(tmp_path, inference=option))
    (diagnostic,) = exc.value.diagnostics
    assert diagnostic.line == 6 and message in diagnostic.message, diagnostic


def test_each_client_gets_its_timeouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    token = jwt.encode({"exp": 4102444800, "tapis/tenant_id": "t"}, "k" * 32, algorithm="HS256")
    monkeypatch.setenv("T", token)
    monkeypatch.setenv("K", "key")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLEEXAMPLE12")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x" * 40)
    config = load_config(config_with(tmp_path, ", connect_timeout: 3s, read_timeout: 7s",
                                     ", timeout: 4s", ", read_timeout: 9s"))  # fmt: skip
    built = {name: create_backend(name, b.section, tmp_path) for name, b in config.backends.items()}
    try:
        aws = built["batch"]._client.meta.config  # type: ignore[attr-defined]
        assert (aws.connect_timeout, aws.read_timeout) == (3.0, 7.0)
        session = built["hpc"]._client.requests_session  # type: ignore[attr-defined]
        assert session.get_adapter("http://127.0.0.1:9").timeout == (4.0, 4.0)
        assert built["inference"]._timeout == (5.0, 9.0)  # type: ignore[attr-defined]
    finally:
        for backend in built.values():
            backend.close()
