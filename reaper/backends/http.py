"""HTTP for the Tapis and Sutro backends. Imported only with those backends (it imports requests
and urllib3).

- `pin_environment`: the proxy and CA settings of the `requests` session tapipy sends through.
- `HttpClient`: one urllib3 pool manager; the Sutro backend's client, and what tapipy's
  requests go out through (reaper.backends.tapis.TimeoutAdapter). The calls need none of what
  `requests` adds per call (cookies, hooks, auth and netrc lookups, redirects, environment
  merging), which cost about as much client CPU as the call itself (benchmarks/results.md,
  "Performance work", fifth session)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import certifi
import requests
import urllib3
from requests.utils import get_environ_proxies, select_proxy
from urllib3.exceptions import HTTPError, NewConnectionError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from reaper.backends.base import HTTP_POOL_SIZE

__all__ = ["Answer", "HttpClient", "TransportError", "pin_environment"]


def pin_environment(session: requests.Session, url: str) -> None:
    """Read the environment's proxy and CA-bundle settings for `url` once, now, and stop
    `session` from reading them again on every request.

    Why: with `trust_env` on, requests walks the whole environment up to three times per request
    to resolve proxies (requests/utils.py `resolve_proxies`, `should_bypass_proxies`); on a host
    with a large environment that was a third of the client's CPU time per call. It also looks up
    ~/.netrc, whose credentials would replace the Authorization header a backend sets.
    HTTP(S)_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE keep their meaning; they are
    read when the backend is built rather than per call."""
    session.proxies.update(get_environ_proxies(url))  # {} when NO_PROXY covers the url
    bundle = environ_ca_bundle()
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False


def environ_ca_bundle() -> str | None:
    """The CA bundle (a file or a folder) REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE names, as
    requests reads them."""
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or None


class Answer:
    """What one call answered: its status, headers (case-insensitive) and body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: Mapping[str, str], content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> Any:
        """The body as JSON. Raises ValueError when it is not."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class TransportError(Exception):
    """No answer: the connection could not be made, broke, or timed out (`timed_out`)."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class HttpClient:
    """Calls to one API's host through a pool of kept-alive connections, as many as a sweep has
    calls in flight (HTTP_POOL_SIZE). What it connects through is settled when built: `proxies`
    (requests' form: {"https": url, ...}) and `verify` (True, False or a CA bundle) when given,
    else the environment with requests' rules: HTTP(S)_PROXY and NO_PROXY (a proxy's
    user:password becomes Proxy-Authorization), REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else
    certifi's bundle, as requests verifies by default; ~/.netrc is never read. Nothing is
    retried here (retries are the backend's, one layer only) and redirects are not followed: a
    3xx is an answer like any other, so that a moved API is reported rather than called
    somewhere else with its key. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        *,
        proxies: Mapping[str, str] | None = None,
        verify: bool | str = True,
        pool_size: int = HTTP_POOL_SIZE,
    ) -> None:
        found = get_environ_proxies(base_url) if proxies is None else proxies
        self.proxy: str | None = select_proxy(base_url, dict(found))
        default = environ_ca_bundle() or certifi.where()
        self.ca_bundle = verify if isinstance(verify, str) else default
        options: dict[str, Any] = {
            "maxsize": pool_size,
            "headers": urllib3.make_headers(accept_encoding=True),  # gzip, as requests asks
        }
        if verify is False:
            options["cert_reqs"] = "CERT_NONE"
        else:
            where = "ca_cert_dir" if os.path.isdir(self.ca_bundle) else "ca_certs"
            options.update({"cert_reqs": "CERT_REQUIRED", where: self.ca_bundle})
        self._manager: urllib3.PoolManager = (
            urllib3.ProxyManager(self.proxy, proxy_headers=_proxy_auth(self.proxy), **options)
            if self.proxy
            else urllib3.PoolManager(**options)
        )

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        timeout: tuple[float, float],
        body: bytes | str | None = None,
    ) -> Answer:
        """One call, its whole answer read. Raises TransportError when there is no answer."""
        connect, read = timeout
        try:
            response = self._manager.urlopen(
                method, url, body=body, headers=dict(headers), retries=False, redirect=False,
                timeout=urllib3.Timeout(connect=connect, read=read),
            )  # fmt: skip
        except NewConnectionError as exc:  # a subclass of the connect timeout, and not one
            raise TransportError(f"connection failed: {exc}", timed_out=False) from None
        except Urllib3Timeout as exc:
            raise TransportError(f"timed out: {exc}", timed_out=True) from None
        except (HTTPError, OSError) as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}", timed_out=False) from None
        return Answer(response.status, response.headers, response.data)

    def close(self) -> None:
        self._manager.clear()


def _proxy_auth(proxy: str) -> dict[str, str] | None:
    """Proxy-Authorization for a proxy URL that carries user:password (as requests sends it)."""
    parts = urlsplit(proxy)
    if parts.username is None:
        return None
    login = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return urllib3.make_headers(proxy_basic_auth=login)
