"""The Tapis and Sutro sessions read proxy and CA-bundle settings once, when built, and never
again per request (reaper.backends.http.pin_environment)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from reaper.backends.http import pin_environment
from reaper.backends.sutro import make_session


def test_proxies_from_the_environment_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    session = requests.Session()
    pin_environment(session, "https://sutro.example.com")
    assert session.proxies.get("https") == "http://proxy.example:3128"
    assert session.trust_env is False


def test_no_proxy_covering_the_url_means_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "sutro.example.com")
    session = requests.Session()
    pin_environment(session, "https://sutro.example.com")
    assert "https" not in session.proxies


def test_a_ca_bundle_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/site-ca.pem")
    session = make_session("https://sutro.example.com")
    assert session.verify == "/etc/ssl/site-ca.pem"


def test_a_netrc_entry_cannot_replace_the_api_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine sutro.example.com login someone password hunter2\n")
    monkeypatch.setenv("NETRC", str(netrc))
    session = make_session("https://sutro.example.com")
    request = requests.Request("GET", "https://sutro.example.com/list-jobs",
                               headers={"Authorization": "Key k"})  # fmt: skip
    prepared = session.prepare_request(request)
    assert prepared.headers["Authorization"] == "Key k"
