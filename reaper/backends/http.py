"""Settings shared by the `requests` sessions of the Tapis and Sutro backends. Imported only with
those backends (it imports requests)."""

from __future__ import annotations

import os

import requests
from requests.utils import get_environ_proxies

__all__ = ["pin_environment"]


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
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle and session.verify is True:
        session.verify = bundle
    session.trust_env = False
