"""Where a Sutro deployment's API lives: `api_url` normalised the way the official SDK does it.

The SDK (`sutro` on PyPI, `sutro/validation.py` `normalize_api_url`, read at 0.1.67) takes a
deployment origin or that origin's `/v1` prefix and answers `<origin>/v1`; it refuses any other
path, embedded credentials, a query or fragment, plain http except on loopback, and the old
central hosts (`api.sutro.sh` and its siblings): "Direct Sutro Batch API access is no longer
supported". Current docs address `https://YOUR-SUTRO-DEPLOYMENT/v1/list-jobs`
(docs.sutro.sh/reference/api/list-jobs). tests/test_sutro_reference.py holds this module to the
SDK's own function, so an SDK release that changes the rule fails the build.

Pure and SDK-free: `reaper validate` uses it without importing requests."""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit, urlunsplit

API_PREFIX = "/v1"
# Hosts of the retired central API, each with its subdomains (SDK CENTRALIZED_API_HOST_SUFFIXES)
RETIRED_HOSTS = ("api.sutro.sh", "serve.sutro.sh", "api.materialized.dev")
RETIRED_HOST_SUFFIX = "--tensor-factory-fastapi-app.modal.run"  # the SDK refuses these too
EXAMPLE = "https://YOUR-SUTRO-DEPLOYMENT"


class SutroUrlError(ValueError):
    """An `api_url` that no Sutro deployment can have; the message says what to write."""


def normalize_api_url(value: str) -> str:
    """`<scheme>://<host[:port]>/v1` for a deployment origin or its `/v1` prefix.

    Raises SutroUrlError for anything the official SDK would refuse."""
    text = value.strip()
    if not text:
        raise SutroUrlError(f"api_url is empty: give your Sutro deployment's URL ({EXAMPLE})")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SutroUrlError(f"api_url {text!r} is not an absolute http(s) URL ({EXAMPLE})")
    if parts.username is not None or parts.password is not None:
        raise SutroUrlError("api_url must not carry credentials: give the key as api_key_env")
    if parts.query or parts.fragment:
        raise SutroUrlError("api_url must not carry a query string or fragment")
    host = _canonical_host(parts.hostname or "")
    if is_retired_host(host):
        raise SutroUrlError(
            f"api_url {text!r}: direct Sutro Batch API access is no longer supported; give your "
            f"Sutro deployment's URL instead ({EXAMPLE}; reaper adds {API_PREFIX})"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise SutroUrlError(f"api_url {text!r}: use https (plain http only on loopback)")
    path = parts.path.rstrip("/")
    if path not in ("", API_PREFIX):
        raise SutroUrlError(
            f"api_url {text!r}: give the deployment's origin or its {API_PREFIX} prefix, "
            f"not the path {parts.path!r}"
        )
    return urlunsplit((parts.scheme, parts.netloc, API_PREFIX, "", ""))


def is_retired_host(host: str) -> bool:
    """True for the central hosts the SDK no longer talks to, and their subdomains."""
    return host.endswith(RETIRED_HOST_SUFFIX) or any(
        host == retired or host.endswith("." + retired) for retired in RETIRED_HOSTS
    )


def _canonical_host(host: str) -> str:
    """The host as a client resolves it: percent-escapes decoded, lower case, no final dot, an
    internationalised name in its ASCII form — so `API.Sutro.sh.` or an escaped spelling cannot
    slip past the retired-host check (the SDK prepares the URL with requests for the same end)."""
    decoded = unquote(host).lower().rstrip(".")
    try:
        return decoded.encode("idna").decode("ascii")
    except UnicodeError:
        return decoded


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
