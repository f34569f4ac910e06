"""Where the Tapis backend's access token comes from, and how it is renewed while the backend
lives (docs/backends.md, "Tokens").

tapipy reads a token's `exp` but renews it only with a refresh token and client credentials
(tapipy/tapis.py `Operation.__call__` → `refresh_user_tokens`, which needs `client_id` and
`client_key`); a token read once would otherwise expire and every call answer 401 until a
reload. So, before every call, `prepare` renews what can be renewed, and on a 401 `renew` is
tried once before the call fails:

- `token_file`: re-read when the file changes (inode, mtime, size), so that a credential an
  external agent rotates is picked up without a reload; on a 401, re-read regardless.
- `username`/`password`: log in again (the Authenticator's password grant) once the token is
  within `RENEW_BEFORE_S` of its `exp` (read from the JWT payload; no signature check), and on
  a 401. With `client_id`/`client_key`, the login also gave a refresh token, and the renewal
  is tapipy's own (`refresh_user_tokens`, the refresh-token grant); the password grant is the
  fallback when that fails (a refresh token expired or revoked).
- `token_env`: nothing to renew; the process environment does not change.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import jwt
from tapipy.errors import BaseTapyException
from tapipy.tapis import TapisResult

from reaper.backends.credentials import MAX_SECRET_BYTES
from reaper.redact import register_secret
from reaper.untrusted import RefusedFile, read_bounded

logger = logging.getLogger(__name__)

RENEW_BEFORE_S = 60.0  # log in again this long before the token's `exp`


def install_token(client: Any, token: str) -> None:
    """Make `client` send `token` (a JWT string). Raises jwt/KeyError for an unreadable one."""
    client.access_token = client.add_claims_to_token(TapisResult(access_token=token))
    register_secret(token)


def register_tokens(client: Any) -> None:
    """Mask the client's access token and refresh token (if any) in every log line."""
    for token in (client.get_access_jwt(), getattr(client.refresh_token, "refresh_token", None)):
        if isinstance(token, str) and token:
            register_secret(token)


def token_exp(token: str) -> float | None:
    """The `exp` claim of a JWT, read without checking its signature; None if unreadable."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False}, algorithms=["RS256"])
        return float(claims["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


class StaticToken:
    """A token from the environment: nothing to renew."""

    def prepare(self, client: Any) -> None:
        """Nothing to do."""

    def renew(self, client: Any) -> bool:
        """A token from the environment cannot be renewed."""
        return False


class FileToken:
    """A token re-read from `path` whenever the file changes."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token = token
        self._signature = self._stat()
        self._lock = threading.Lock()

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_ino, info.st_mtime_ns, info.st_size)

    def prepare(self, client: Any) -> None:
        """Re-read the file if it changed since it was last read."""
        with self._lock:
            if self._stat() != self._signature:
                self._reload(client)

    def renew(self, client: Any) -> bool:
        """Re-read the file; True when it now holds a different, usable token."""
        with self._lock:
            return self._reload(client)

    def _reload(self, client: Any) -> bool:
        self._signature = self._stat()
        try:
            # Bounded, and never blocking on a FIFO or device swapped in (reaper.untrusted).
            token = read_bounded(self.path, MAX_SECRET_BYTES).decode("utf-8").strip()
        except (OSError, RefusedFile, UnicodeDecodeError) as exc:
            logger.warning("token_file %s unreadable, keeping the token: %s", self.path, exc)
            return False
        if not token or token == self._token:
            return False
        try:
            install_token(client, token)
        except (jwt.PyJWTError, KeyError, TypeError, ValueError, OverflowError):
            logger.warning("token_file %s holds no well-formed JWT; keeping the token", self.path)
            return False
        self._token = token
        logger.info("token_file %s changed: using the new token", self.path)
        return True


class LoginToken:
    """A token from the password grant, renewed by logging in again."""

    def __init__(self, renew_before_s: float = RENEW_BEFORE_S) -> None:
        self.renew_before_s = renew_before_s
        self._lock = threading.Lock()

    def prepare(self, client: Any) -> None:
        """Log in again when the token is within `renew_before_s` of its `exp`."""
        with self._lock:
            exp = token_exp(str(client.get_access_jwt() or ""))
            if exp is None or exp - time.time() < self.renew_before_s:
                self._login(client)

    def renew(self, client: Any) -> bool:
        """Log in again; True when that gave a token."""
        with self._lock:
            return self._login(client)

    def _login(self, client: Any) -> bool:
        if _can_refresh(client) and self._refresh(client):
            return True
        try:
            client.get_tokens()
        except BaseTapyException as exc:
            logger.warning("logging in to Tapis again failed (%s)", _answer_of(exc))
            return False
        token = client.get_access_jwt()
        if isinstance(token, str) and token:
            register_tokens(client)
            return True
        return False

    def _refresh(self, client: Any) -> bool:
        """tapipy's refresh-token grant; True when it gave a new access token."""
        before = client.get_access_jwt()
        try:
            client.refresh_user_tokens()
        except BaseTapyException as exc:
            logger.warning("refreshing the Tapis token failed (%s); logging in again",
                           _answer_of(exc))  # fmt: skip
            return False
        token = client.get_access_jwt()
        if not isinstance(token, str) or not token or token == before:
            return False
        register_tokens(client)
        return True


def _answer_of(exc: BaseTapyException) -> str:
    """`HTTP 401`, or `no answer`: what a failed token request got, never its text."""
    response = getattr(exc, "response", None)
    return f"HTTP {response.status_code}" if response is not None else "no answer"


def _can_refresh(client: Any) -> bool:
    """tapipy can refresh: client credentials and a refresh token from the last login."""
    return bool(client.client_id and client.client_key and client.refresh_token)
