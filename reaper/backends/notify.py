"""Delivering notices through apprise (docs/config.md, "Notifiers"): one URL syntax for Slack,
Teams, Mattermost, email, generic JSON webhooks and about a hundred more.

apprise is an optional extra (`pip install 'reaper[notify]'`) and is imported only here, only
when a notice is sent or a URL checked, so `reaper validate` of a config without notifiers, and
every command of a deployment without them, never imports it.

A notifier URL may carry a secret (a Slack token, a webhook key, an SMTP password). It is read
from its variable or file only when needed, registered for log redaction at once, and never
put in an exception, a log line or an audit field: errors name the notifier instead."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reaper.errors import ReaperError
from reaper.redact import MIN_SECRET_CHARS, register_secret

log = logging.getLogger(__name__)


class NotifyError(ReaperError):
    """A notice could not be delivered, or a notifier's URL not read; the message names the
    notifier, never the URL."""


def read_url(name: str, source: str, ref: str, environ: Mapping[str, str]) -> str:
    """The notifier's URL template from `url` (ref is the URL), `url_env` (ref names the
    variable) or `url_file` (ref is the path), registered for redaction. Raises NotifyError."""
    if source == "url":
        url = ref.strip()
    elif source == "url_env":
        url = environ.get(ref, "").strip()
        if not url:
            raise NotifyError(f"notifier {name}: environment variable {ref} is empty or unset")
    else:
        try:
            url = Path(ref).read_text(encoding="utf-8").strip()
        except OSError as exc:
            message = f"notifier {name}: cannot read url_file {ref}: {exc.strerror}"
            raise NotifyError(message) from None
        if not url:
            raise NotifyError(f"notifier {name}: url_file {ref} is empty")
    register_url(url)
    return url


def register_url(url: str) -> None:
    """Mask the URL, and each part of it that may be a credential, in every log line: the
    password, a "host" without a dot (Slack's `slack://TokenA/...` puts a token there; a real
    host name has dots and stays readable), path segments and query values (tokens of Discord,
    ntfy, webhooks... live there). Parts holding a `{placeholder}` are left out: they are job
    fields, not secrets."""
    register_secret(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        fixed = [parts.password or "", "" if "." in host else host]
    except ValueError:
        return
    pieces = [*fixed, *parts.path.split("/"), *(v for _, v in parse_qsl(parts.query))]
    for piece in pieces:
        if len(piece) >= MIN_SECRET_CHARS and "{" not in piece:
            register_secret(piece)


def _plugin(url: str) -> Any:
    import apprise

    return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def can_parse(url: str) -> bool:
    """True if apprise knows the URL's scheme and accepts its form (no network)."""
    return _plugin(url) is not None


def deliver(name: str, url: str, title: str, body: str, timeout_s: float) -> None:
    """Send one notice, waiting at most about `timeout_s` per network step (apprise's connect
    and read timeouts). Raises NotifyError naming the notifier on any failure."""
    plugin = _plugin(url)
    if plugin is None:
        raise NotifyError(f"notifier {name}: apprise cannot parse its URL")
    # apprise's URLBase reads these for its socket connect and read timeouts (the `cto` and
    # `rto` URL arguments); set here so that the operator's URL needs no extra arguments.
    plugin.socket_connect_timeout = timeout_s
    plugin.socket_read_timeout = timeout_s
    try:
        delivered = plugin.notify(body=body, title=title)
    except Exception as exc:  # a plugin bug must not take the notifier thread down
        raise NotifyError(f"notifier {name}: {type(exc).__name__} while sending") from None
    if not delivered:
        raise NotifyError(f"notifier {name}: delivery failed (see apprise's log lines)")
