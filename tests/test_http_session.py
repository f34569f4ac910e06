"""The backends' HTTP clients read proxy and CA-bundle settings once, when built, and never again
per request: the Tapis session (reaper.backends.http.pin_environment) and the Sutro client
(reaper.backends.http.HttpClient), which follows requests' rules for them."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import certifi
import pytest
import requests

from reaper.backends.http import HttpClient, TransportError, pin_environment
from reaper.emulators.base import JobSpec, Knobs
from reaper.emulators.sutro import SutroEmulator


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE",
                 "CURL_CA_BUNDLE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_proxies_from_the_environment_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    session = requests.Session()
    pin_environment(session, "https://sutro.example.com")
    assert session.proxies.get("https") == "http://proxy.example:3128"
    assert session.trust_env is False
    assert HttpClient("https://sutro.example.com").proxy == "http://proxy.example:3128"


def test_no_proxy_covering_the_url_means_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "sutro.example.com")
    session = requests.Session()
    pin_environment(session, "https://sutro.example.com")
    assert "https" not in session.proxies
    assert HttpClient("https://sutro.example.com").proxy is None
    assert HttpClient("https://other.example.com").proxy == "http://proxy.example:3128"


def test_a_ca_bundle_from_the_environment_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    assert HttpClient("https://sutro.example.com").ca_bundle == certifi.where()  # as requests
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/site-ca.pem")
    session = requests.Session()
    pin_environment(session, "https://sutro.example.com")
    assert session.verify == "/etc/ssl/site-ca.pem"
    assert HttpClient("https://sutro.example.com").ca_bundle == "/etc/ssl/site-ca.pem"


class _Proxy(BaseHTTPRequestHandler):
    """Answers every request with an empty job list, keeping its request line and headers."""

    seen: ClassVar[list[tuple[str, dict[str, str]]]] = []

    def do_GET(self) -> None:
        self.seen.append((self.requestline, {k.lower(): v for k, v in self.headers.items()}))
        body = b'{"jobs": []}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


def test_calls_go_through_the_proxy_with_its_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An HTTP proxy is asked for the absolute URL, with the Proxy-Authorization that the proxy
    URL's user:password make, and the call's own headers."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        monkeypatch.setenv("HTTP_PROXY", f"http://someone:s%40cret@127.0.0.1:{port}")
        client = HttpClient("http://sutro.invalid")
        answer = client.request(
            "GET", "http://sutro.invalid/v1/list-jobs", {"Authorization": "Key k"}, (2, 5)
        )
        client.close()
    finally:
        server.shutdown()
        server.server_close()
    ((line, headers),) = _Proxy.seen
    assert answer.status_code == 200 and answer.json() == {"jobs": []}
    assert line == "GET http://sutro.invalid/v1/list-jobs HTTP/1.1"
    assert headers["proxy-authorization"] == "Basic c29tZW9uZTpzQGNyZXQ="  # someone:s@cret
    assert headers["authorization"] == "Key k"


def test_a_netrc_entry_cannot_replace_the_api_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    netrc = tmp_path / "netrc"
    with SutroEmulator(Knobs()).start() as emulator:  # type: ignore[attr-defined]
        host = emulator.url.split("//")[1].split(":")[0]
        netrc.write_text(f"machine {host} login someone password hunter2\n")
        monkeypatch.setenv("NETRC", str(netrc))
        emulator.add_job(JobSpec("a", "RUNNING", time.time() - 60, time.time() - 30))
        client = HttpClient(emulator.url)
        answer = client.request("GET", f"{emulator.url}/v1/list-jobs",
                                {"Authorization": f"Key {emulator.api_key}"}, (2, 5))  # fmt: skip
        client.close()
    assert answer.status_code == 200 and len(answer.json()["jobs"]) == 1


def test_no_answer_is_a_transport_error_that_says_whether_it_timed_out() -> None:
    with SutroEmulator(Knobs(hang=True)).start() as emulator:  # type: ignore[attr-defined]
        url = f"{emulator.url}/v1/list-jobs"
        client = HttpClient(url)
        with pytest.raises(TransportError) as hung:
            client.request("GET", url, {}, (1, 0.3))
        client.close()
    with pytest.raises(TransportError) as refused:  # the emulator has stopped: nothing listens
        HttpClient(url).request("GET", url, {}, (1, 1))
    assert (hung.value.timed_out, refused.value.timed_out) == (True, False)
